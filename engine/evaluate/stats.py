"""Statistics beyond MLGym: reads a runs DataFrame (see scores.py), writes bootstrap intervals of AUP, the
relative AUP change between two methods with its interval, per-task win/loss tables and exit-status counts.

AUP is relative to the set of methods compared, so every result names that set (``methods``,
``attrs["methods"]``).

Bootstrap: each resample draws, for every (method, task), as many runs as it has, with replacement, and
recomputes the whole AUP (feasibility, ratios, τ axis: Best Attempt and Best Submission share the larger
axis within each resample) from them; the baseline row is fixed. The percentile interval is reported.
With ``aggregate="best"`` (MLGym's Best Attempt / Best Submission) the per-cell statistic is a maximum
over runs, and a bootstrap of a maximum can never exceed the observed best: read those intervals as the
spread due to which runs happened, not as a coverage guarantee. ``aggregate="mean"`` (the mean over runs
that produced a score: the expected single run) is a smooth statistic whose percentile interval has
close to nominal coverage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from engine.errors import ConfigError
from engine.evaluate.aup import aup_batch, axis_max, log_ratios_batch
from engine.evaluate.scores import BASELINE, KINDS, Kind, SubmissionRule, ordered_unique, counted_runs, run_values

Aggregate = Literal["best", "mean"]
_COLUMN = {"best_attempt": "run_best", "best_submission": "run_last"}


@dataclass
class BootstrapAUP:
    """AUP on all runs (``point``: methods × kinds) and ``n_resamples`` bootstrap AUPs per kind
    (``samples[kind]``: resamples × methods, columns ``methods``, baseline last)."""

    methods: list[str]
    point: pd.DataFrame
    samples: dict[str, pd.DataFrame]
    aggregate: str
    confidence: float
    seed: int

    def interval(self, kind: Kind = "best_attempt") -> pd.DataFrame:
        """Per method: ``aup`` (all runs), ``low``, ``high`` (percentile interval at ``confidence``)."""
        alpha = (1 - self.confidence) / 2
        q = self.samples[kind].quantile([alpha, 1 - alpha])
        df = pd.DataFrame({"aup": self.point[kind], "low": q.iloc[0], "high": q.iloc[1]})
        df.index.name = "method"
        df.attrs["methods"] = list(self.methods)
        return df


@dataclass
class RelativeChange:
    """(AUP_b − AUP_a) / AUP_a (the paper's "+9%") with its paired bootstrap percentile interval."""

    method_a: str
    method_b: str
    kind: str
    point: float
    low: float
    high: float
    confidence: float
    methods: list[str]

    def describe(self) -> str:
        pct = int(round(self.confidence * 100))
        return (f"{self.method_b} vs {self.method_a} ({self.kind}): {self.point:+.1%} "
                f"[{pct}% CI {self.low:+.1%}, {self.high:+.1%}] among {', '.join(self.methods)}")


# ---------------------------------------------------------------- bootstrap


def _cells(values: pd.DataFrame, methods: list[str], tasks: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per kind, a (M, T, R_max) array of per-run values (from ``run_values``) padded with NaN, and the run
    counts (M, T)."""
    mi = pd.Index(methods).get_indexer(values["method"].astype(str))
    ti = pd.Index(tasks).get_indexer(values["task_id"].astype(str))
    slot = values.groupby(["method", "task_id"], sort=False).cumcount().to_numpy()
    n = np.zeros((len(methods), len(tasks)), dtype=int)
    np.add.at(n, (mi, ti), 1)
    r_max = max(int(n.max(initial=0)), 1)
    out = {}
    for kind, col in _COLUMN.items():
        arr = np.full((len(methods), len(tasks), r_max), np.nan)
        arr[mi, ti, slot] = values[col].to_numpy(dtype=float)
        out[kind] = arr
    return out, n


def _aggregate(vals: np.ndarray, mask: np.ndarray, sign: np.ndarray, how: str) -> np.ndarray:
    """Per cell over the last axis: the best (by direction) or the mean of the valid finite values; NaN if none."""
    ok = mask & np.isfinite(vals)
    with np.errstate(invalid="ignore", divide="ignore"):
        if how == "best":
            best = np.max(np.where(ok, sign[..., None] * vals, -np.inf), axis=-1)
            return np.where(np.isfinite(best), sign * best, np.nan)
        total = np.where(ok, vals, 0.0).sum(axis=-1)
        count = ok.sum(axis=-1)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _aup_pair(tables: dict[str, np.ndarray], is_max: np.ndarray, base_idx: int,
              tau_max: float | None) -> dict[str, np.ndarray]:
    """AUP (B, M) per kind for a batch of tables, Best Attempt and Best Submission sharing each row's axis."""
    parts = {k: log_ratios_batch(v, is_max, base_idx) for k, v in tables.items()}
    if tau_max is None:
        ends = np.fmax(*[axis_max(p[2]) for p in parts.values()])
    else:
        ends = np.full(next(iter(tables.values())).shape[0], float(tau_max))
    return {k: aup_batch(p[0], p[3], ends) for k, p in parts.items()}


@dataclass
class _Cells:
    """Per-run values of every (method, task) cell, the baseline row and the task directions."""

    values: dict[str, np.ndarray]  # kind → (M, T, R_max), NaN-padded
    n: np.ndarray                   # (M, T) run counts
    base: np.ndarray                # (T,) baseline scores
    is_max: np.ndarray              # (T,)

    def tables(self, index: np.ndarray, aggregate: str,
               task_idx: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(B, M + 1, T) tables per kind from run indices (B, M, T, R_max), baseline row last, and the
        matching is_max; ``task_idx`` (B, T) picks (resampled) task columns."""
        mask = index < self.n[None, :, :, None]
        sign = np.broadcast_to(np.where(self.is_max, 1.0, -1.0), mask.shape[:3])
        out = {}
        for kind, arr in self.values.items():
            agg = _aggregate(np.take_along_axis(arr[None], index, axis=3), mask, sign, aggregate)
            full = np.concatenate([agg, np.broadcast_to(self.base, (agg.shape[0], 1, agg.shape[2]))], axis=1)
            out[kind] = full if task_idx is None else np.take_along_axis(full, task_idx[:, None, :], axis=2)
        is_max = self.is_max[None, None, :] if task_idx is None else self.is_max[task_idx][:, None, :]
        return out, is_max


def _prepare(runs: pd.DataFrame, baseline: str, submission: SubmissionRule = "mlgym") -> tuple[list[str], _Cells]:
    counted = run_values(runs, submission)  # the same rows and columns as best_attempt(runs): all runs name the set
    methods, tasks = ordered_unique(runs["method"]), ordered_unique(runs["task_id"])
    if baseline in methods:
        raise ConfigError(f"a method is named {baseline!r}, the baseline row's name; rename it or pass baseline=")
    values, n = _cells(counted, methods, tasks)
    per_task = runs.groupby("task_id", sort=False)[["direction", "baseline_score"]].first().reindex(tasks)
    return methods, _Cells(values=values, n=n, base=per_task["baseline_score"].to_numpy(dtype=float),
                           is_max=(per_task["direction"] == "max").to_numpy())


def bootstrap_aup(runs: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, baseline: str = BASELINE,
                  aggregate: Aggregate = "best", resample_tasks: bool = False, tau_max: float | None = None,
                  confidence: float = 0.95, chunk: int = 250, submission: SubmissionRule = "mlgym") -> BootstrapAUP:
    """Bootstrap AUP (Best Attempt and Best Submission) by resampling runs per (method, task).

    ``submission``: each run's Best Submission score, MLGym's rule or ``strict`` (see ``engine.evaluate.scores``).
    ``resample_tasks`` also resamples the tasks with replacement (tasks as a sample of a population).
    ``tau_max`` fixes the τ axis instead of recomputing it per resample. Resamples are drawn ``chunk`` at a
    time (bounded memory). Seeded: same inputs, seed and chunk, same result.
    """
    if aggregate not in ("best", "mean"):
        raise ConfigError(f"aggregate={aggregate!r}: use 'best' (MLGym's) or 'mean' (mean over runs)")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ConfigError(f"n_resamples={n_resamples}, confidence={confidence}: "
                          "need n_resamples ≥ 1 and 0 < confidence < 1")
    methods, cells = _prepare(runs, baseline, submission)
    names, (M, T, r_max) = [*methods, baseline], cells.values["best_attempt"].shape
    identity = np.broadcast_to(np.arange(r_max), (1, M, T, r_max))
    point = _aup_pair(*cells.tables(identity, aggregate, None), M, tau_max)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        index = np.floor(rng.random((b, M, T, r_max)) * cells.n[None, :, :, None]).astype(int)
        task_idx = rng.integers(0, T, (b, T)) if resample_tasks else None
        for kind, aup in _aup_pair(*cells.tables(index, aggregate, task_idx), M, tau_max).items():
            samples[kind].append(aup)
    point_df = pd.DataFrame({k: point[k][0] for k in KINDS}, index=pd.Index(names, name="method"))
    point_df.attrs["methods"] = names
    return BootstrapAUP(methods=names, point=point_df, aggregate=aggregate, confidence=confidence, seed=seed,
                        samples={k: pd.DataFrame(np.concatenate(v), columns=names) for k, v in samples.items()})


def relative_change(boot: BootstrapAUP, method_a: str, method_b: str, kind: Kind = "best_attempt") -> RelativeChange:
    """(AUP_b − AUP_a) / AUP_a on all runs, with the percentile interval over the same (paired) resamples
    (a resample where AUP_a is 0 has no ratio and is left out of the interval)."""
    for m in (method_a, method_b):
        if m not in boot.methods:
            raise ConfigError(f"method {m!r} is not in the compared set {boot.methods}")
    a, b = boot.samples[kind][method_a].to_numpy(), boot.samples[kind][method_b].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (b - a) / a
    rel = rel[np.isfinite(rel)]
    alpha = (1 - boot.confidence) / 2
    low, high = (np.quantile(rel, [alpha, 1 - alpha]) if rel.size else (np.nan, np.nan))
    pa, pb = boot.point.loc[method_a, kind], boot.point.loc[method_b, kind]
    point = (pb - pa) / pa if pa else float("nan")
    return RelativeChange(method_a=method_a, method_b=method_b, kind=kind, point=float(point), low=float(low),
                          high=float(high), confidence=boot.confidence, methods=list(boot.methods))


# ---------------------------------------------------------------- tables


def _valid(x: pd.Series) -> pd.Series:
    return x.notna() & (x >= 0)


def win_loss(table: pd.DataFrame, directions: dict[str, str], method_a: str, method_b: str) -> pd.DataFrame:
    """Per task: both methods' scores (from a methods × tasks table) and the ``winner``: a method's name,
    ``"tie"``, or ``""`` when neither has a valid (present, non-negative) score. A valid score beats an
    invalid one."""
    for m in (method_a, method_b):
        if m not in table.index:
            raise ConfigError(f"method {m!r} is not a row of the table (rows: {list(table.index)})")
    a, b = table.loc[method_a].astype(float), table.loc[method_b].astype(float)
    sign = pd.Series({t: 1.0 if directions[t] == "max" else -1.0 for t in table.columns})
    va, vb = _valid(a), _valid(b)
    better_a = (va & ~vb) | (va & vb & (sign * a > sign * b))
    better_b = (vb & ~va) | (va & vb & (sign * b > sign * a))
    winner = np.where(better_a, method_a, np.where(better_b, method_b, np.where(va & vb, "tie", "")))
    df = pd.DataFrame({method_a: a, method_b: b, "direction": [directions[t] for t in table.columns],
                       "winner": winner}, index=table.columns)
    df.index.name = "task_id"
    df.attrs["methods"] = list(map(str, table.index))
    return df


def win_matrix(table: pd.DataFrame, directions: dict[str, str]) -> pd.DataFrame:
    """Methods × methods: the number of tasks on which the row method beats the column method."""
    names = [str(m) for m in table.index]
    out = pd.DataFrame(0, index=pd.Index(names, name="method"), columns=names)
    for a in names:
        for b in names:
            if a != b:
                out.loc[a, b] = int((win_loss(table, directions, a, b)["winner"] == a).sum())
    out.attrs["methods"] = names
    return out


def exit_status_breakdown(runs: pd.DataFrame) -> pd.DataFrame:
    """Methods × exit statuses: counted runs per status, plus ``infra_error`` (runs retried, not counted)."""
    counted = counted_runs(runs)
    methods = ordered_unique(runs["method"])
    status = counted["exit_status"].fillna("").replace("", "(none)")
    table = pd.crosstab(counted["method"], status).reindex(methods, fill_value=0)
    infra = runs.loc[~runs.index.isin(counted.index)].groupby("method").size()
    table["infra_error"] = infra.reindex(methods, fill_value=0).astype(int)
    table.index.name, table.columns.name = "method", None
    table.attrs["methods"] = methods
    return table
