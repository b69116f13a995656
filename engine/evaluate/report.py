"""The evaluation report: reads a runs DataFrame (or ``EVAL_DIR/scores.parquet``), writes ``EVAL_DIR/``
``scores.parquet``, ``aup.csv``, per-task tables (``per_task.csv``, ``best_attempt.csv``,
``best_submission.csv``, ``win_matrix.csv``, ``exit_status.csv``, ``relative_change.csv``), ``profile.png``
and a self-contained ``report.html``; ``build_report`` returns an ``EvalReport`` that renders inline in a
notebook. ``EVAL_DIR`` is a local path or a pyarrow.fs URI (s3://…). Every table names its method set.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.artifacts import atomic_write_bytes, join, read_bytes, resolve
from engine.errors import ArtifactError, ConfigError
from engine.evaluate.aup import AUPPair, compute_aup_pair
from engine.evaluate.scores import (BASELINE, RUN_COLUMNS, SubmissionRule, best_attempt, best_submission, check_runs,
                                    directions_of)
from engine.evaluate.stats import RelativeChange, bootstrap_aup, exit_status_breakdown, relative_change, win_matrix

log = logging.getLogger(__name__)

SCORES_NAME = "scores.parquet"
SCORES_SCHEMA = pa.schema([
    ("method", pa.string()), ("task_id", pa.string()), ("run", pa.int64()), ("direction", pa.string()),
    ("baseline_score", pa.float64()), ("scores", pa.list_(pa.float64())), ("final_score", pa.float64()),
    ("exit_status", pa.string()), ("infra_error", pa.string()),
])


# ---------------------------------------------------------------- scores.parquet


def write_scores(runs: pd.DataFrame, eval_dir: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> str:
    """Write the runs DataFrame as ``EVAL_DIR/scores.parquet`` (``SCORES_SCHEMA`` first, extra columns
    after it, as pandas types them), atomically; return its path."""
    check_runs(runs)
    fs, base = resolve(eval_dir, filesystem)
    data = {}
    for f in SCORES_SCHEMA:
        col = runs[f.name]
        if f.name == "scores":  # NaN (a failed scoring) stays NaN, not null
            data[f.name] = pa.array(col.map(lambda s: [float(v) for v in s] if s is not None else []).tolist(),
                                    type=f.type, from_pandas=False)
            continue
        if f.name in ("infra_error", "exit_status"):
            col = col.map(lambda s: s if isinstance(s, str) else None)
        data[f.name] = pa.array(col.tolist(), type=f.type, from_pandas=True)
    table = pa.table(data, schema=SCORES_SCHEMA)
    extra = [c for c in runs.columns if c not in RUN_COLUMNS]
    if extra:
        more = pa.Table.from_pandas(runs[extra], preserve_index=False)
        for name in extra:
            table = table.append_column(name, more[name])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    path = join(base, SCORES_NAME)
    atomic_write_bytes(fs, path, sink.getvalue().to_pybytes())
    return path


def read_scores(eval_dir: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> pd.DataFrame:
    """Read ``EVAL_DIR/scores.parquet`` back into a runs DataFrame (``scores`` as lists of floats)."""
    fs, base = resolve(eval_dir, filesystem)
    path = join(base, SCORES_NAME)
    try:
        table = pq.read_table(io.BytesIO(read_bytes(fs, path)))
    except pa.ArrowInvalid as e:
        raise ArtifactError(f"{path}: not a readable Parquet file ({e}); rerun `synthscale eval`") from None
    missing = [f.name for f in SCORES_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: missing columns {missing}; rerun `synthscale eval` to rewrite it")
    df = table.to_pandas()
    df["scores"] = df["scores"].map(lambda s: [math.nan if v is None else float(v) for v in s]
                                    if s is not None else [])
    return df


# ---------------------------------------------------------------- the report object


SUBMISSION_NOTE = {
    "mlgym": "A run's Best Submission score is its last successful scoring, validate or submit (MLGym's rule).",
    "strict": "A run's Best Submission score is its submission's own score (strict rule: a run whose last scoring "
              "is not a successful submission has none).",
}


@dataclass
class EvalReport:
    """Everything in the report; renders inline in a notebook (``_repr_html_``)."""

    methods: list[str]
    aup: pd.DataFrame
    best_attempt: pd.DataFrame
    best_submission: pd.DataFrame
    per_task: pd.DataFrame
    exit_status: pd.DataFrame
    wins: pd.DataFrame
    relative: list[RelativeChange]
    excluded_tasks: dict[str, list[str]]
    profile_png: bytes
    paths: dict[str, str] = field(default_factory=dict)
    submission: str = "mlgym"

    @property
    def title(self) -> str:
        return f"synthscale evaluation: {', '.join(self.methods)}"

    def _repr_html_(self) -> str:
        return render_body(self)


def _fmt(df: pd.DataFrame) -> str:
    return df.to_html(float_format=lambda x: f"{x:.4f}", na_rep="–", border=0, classes="table")


def render_body(report: EvalReport) -> str:
    """The report's HTML body: tables and the profile plot embedded as base64 PNG."""
    set_text = html.escape(", ".join(report.methods))
    img = base64.b64encode(report.profile_png).decode("ascii")
    parts = [f"<h1>{html.escape(report.title)}</h1>",
             f"<p>AUP is relative to the set of methods compared: <b>{set_text}</b>.</p>",
             "<h2>AUP</h2>", _fmt(report.aup)]
    if "best_attempt_low" in report.aup.columns:
        parts.append("<p>Intervals: percentile bootstrap over each (method, task)'s runs. Best Attempt and Best "
                     "Submission are maxima over runs, which a bootstrap cannot exceed: read the intervals as the "
                     "spread due to which runs happened.</p>")
    if report.relative:
        items = "".join(f"<li>{html.escape(r.describe())}</li>" for r in report.relative)
        parts += ["<h2>Relative change</h2>", f"<ul>{items}</ul>"]
    for kind, tasks in report.excluded_tasks.items():
        if tasks:
            parts.append(f"<p>{kind}: no feasible method on {html.escape(', '.join(tasks))}; left out.</p>")
    parts += [f'<h2>Performance profiles</h2><img alt="performance profiles" src="data:image/png;base64,{img}"/>',
              "<h2>Best Attempt per task</h2>", _fmt(report.best_attempt),
              "<h2>Best Submission per task</h2>", f"<p>{html.escape(SUBMISSION_NOTE[report.submission])}</p>",
              _fmt(report.best_submission),
              "<h2>Tasks won (row beats column, Best Attempt)</h2>", _fmt(report.wins),
              "<h2>Exit statuses (runs)</h2>", _fmt(report.exit_status),
              "<h2>Per task</h2>", _fmt(report.per_task.set_index(["task_id", "method"]))]
    return "\n".join(parts)


def render_html(report: EvalReport) -> str:
    """A self-contained HTML page (no external files) of the report."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(report.title)}</title>"
            f"<style>{style}</style></head><body>\n{render_body(report)}\n</body></html>\n")


def plot_profiles(pair: AUPPair, title: str) -> bytes:
    """PNG of the Best Attempt and Best Submission performance profiles (ρ vs log10 τ) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("Best Attempt", pair.best_attempt), ("Best Submission", pair.best_submission))
    for ax, (name, result) in zip(axes, panels):
        for m in result.methods:
            ax.step(result.tau, result.rho[m].to_numpy(), where="post", label=f"{m} (AUP {result.aup[m]:.3f})")
        ax.set_title(name)
        ax.set_xlabel("τ (log10 of the ratio to the best)")
        ax.set_xlim(0, pair.tau_max if np.isfinite(pair.tau_max) else 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    axes[0].set_ylabel("ρ(τ): share of tasks")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


# ---------------------------------------------------------------- building it


def _per_task(pair: AUPPair, ba: pd.DataFrame, bs: pd.DataFrame, directions: dict[str, str]) -> pd.DataFrame:
    """Long table: one row per (task, method) with both scores, feasibility and log10 ratios."""
    rows = []
    for task in ba.columns:
        for m in ba.index:
            row = {"task_id": task, "direction": directions[task], "method": m,
                   "best_attempt": ba.loc[m, task], "best_submission": bs.loc[m, task]}
            for kind, res in (("best_attempt", pair.best_attempt), ("best_submission", pair.best_submission)):
                row[f"{kind}_feasible"] = bool(res.feasible.loc[m, task])
                lr = res.log_ratios
                row[f"{kind}_log10_ratio"] = float(lr.loc[m, task]) if task in lr.columns else np.nan
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["methods"] = list(map(str, ba.index))
    return df


def _aup_table(pair: AUPPair, runs: pd.DataFrame, baseline: str, n_resamples: int, seed: int,
               confidence: float, compare: list[tuple[str, str]],
               submission: SubmissionRule = "mlgym") -> tuple[pd.DataFrame, list[RelativeChange]]:
    table = pair.table()
    relative: list[RelativeChange] = []
    if n_resamples > 0:
        boot = bootstrap_aup(runs, n_resamples=n_resamples, seed=seed, baseline=baseline, confidence=confidence,
                             tau_max=pair.tau_max if np.isfinite(pair.tau_max) else None, submission=submission)
        for kind in ("best_attempt", "best_submission"):
            ci = boot.interval(kind)
            table[f"{kind}_low"], table[f"{kind}_high"] = ci["low"], ci["high"]
        relative = [relative_change(boot, a, b, kind) for a, b in compare
                    for kind in ("best_attempt", "best_submission")]
    table = table[[c for c in ("best_attempt", "best_attempt_low", "best_attempt_high", "best_submission",
                               "best_submission_low", "best_submission_high") if c in table.columns]]
    table["tau_max"] = pair.tau_max
    table["method_set"] = ", ".join(pair.methods)
    table.attrs["methods"] = list(pair.methods)
    return table, relative


def _default_compare(methods: list[str], baseline: str) -> list[tuple[str, str]]:
    models = [m for m in methods if m != baseline]
    return [(models[0], m) for m in models[1:]]


def build_report(runs: pd.DataFrame, eval_dir: str | os.PathLike, *, baseline: str = BASELINE,
                 n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 compare: list[tuple[str, str]] | None = None, filesystem: pafs.FileSystem | None = None,
                 submission: SubmissionRule = "mlgym") -> EvalReport:
    """Score the runs and write the whole report into ``eval_dir`` (``scores.parquet`` included).

    ``submission``: a run's Best Submission score, ``"mlgym"`` (its last successful scoring, validate or
    submit, as MLGym reads ``results.json``) or ``"strict"`` (its submission's own score).
    ``compare``: (a, b) pairs for the relative AUP change (b vs a); default: every method vs the first.
    ``n_resamples=0`` skips the bootstrap (no intervals, no relative-change intervals).
    """
    ba, bs = best_attempt(runs, baseline), best_submission(runs, baseline, submission)
    directions = directions_of(runs)
    pair = compute_aup_pair(ba, bs, directions, baseline)
    methods = list(pair.methods)
    compare = _default_compare(methods, baseline) if compare is None else compare
    for a, b in compare:
        if a not in methods or b not in methods:
            raise ConfigError(f"compare ({a!r}, {b!r}): both must be in the method set {methods}")
    aup, relative = _aup_table(pair, runs, baseline, n_resamples, seed, confidence, compare, submission)
    report = EvalReport(
        methods=methods, aup=aup, best_attempt=ba, best_submission=bs, per_task=_per_task(pair, ba, bs, directions),
        exit_status=exit_status_breakdown(runs), wins=win_matrix(ba, directions), relative=relative,
        excluded_tasks={"Best Attempt": pair.best_attempt.excluded_tasks,
                        "Best Submission": pair.best_submission.excluded_tasks},
        profile_png=b"", submission=submission)
    report.profile_png = plot_profiles(pair, report.title)
    report.paths = _write_all(report, runs, eval_dir, filesystem)
    log.info("evaluation report for %s written to %s", ", ".join(methods), os.fspath(eval_dir))
    return report


def _write_all(report: EvalReport, runs: pd.DataFrame, eval_dir: str | os.PathLike,
               filesystem: pafs.FileSystem | None) -> dict[str, str]:
    fs, base = resolve(eval_dir, filesystem)
    paths = {"scores": write_scores(runs, base, filesystem=fs)}
    tables = {"aup": report.aup, "best_attempt": report.best_attempt, "best_submission": report.best_submission,
              "per_task": report.per_task, "win_matrix": report.wins, "exit_status": report.exit_status}
    if report.relative:
        tables["relative_change"] = pd.DataFrame([vars(r) | {"methods": ", ".join(r.methods)} for r in report.relative])
    for name, df in tables.items():
        index = name not in ("per_task", "relative_change")
        paths[name] = join(base, f"{name}.csv")
        atomic_write_bytes(fs, paths[name], df.to_csv(index=index).encode("utf-8"))
    paths["profile"] = join(base, "profile.png")
    atomic_write_bytes(fs, paths["profile"], report.profile_png)
    paths["html"] = join(base, "report.html")
    atomic_write_bytes(fs, paths["html"], render_html(report).encode("utf-8"))
    return paths
