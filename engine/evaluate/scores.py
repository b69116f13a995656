"""Per-run score lists to per-(method, task) tables: reads a runs DataFrame (or trajectory records), writes
the Best Attempt and Best Submission tables (methods × tasks, plus the baseline row) that AUP takes.

The runs DataFrame has one row per episode (``RUN_COLUMNS``):

=============== ==============================================================================
method          the method (model, checkpoint, policy) the run belongs to
task_id         the task
run             run number within (method, task), an int
direction       "max" or "min" (the task's primary metric)
baseline_score  the task's baseline score on the metric AUP uses (test metrics for synthesized tasks)
scores          the run's scores in the order they were produced (validates, then the submission);
                NaN for a scoring that failed
final_score     the run's submission score: its last scoring's when that was a submit or auto-submission,
                NaN otherwise (read by the ``strict`` Best Submission only)
exit_status     MLGym's exit status (``submitted``, ``autosubmission (max_steps)``, …)
infra_error     set when the cluster failed, not the agent: such runs are retried, never counted
=============== ==============================================================================

Best Attempt = best over runs of each run's best score; Best Submission = best over runs of each run's
last score. Two definitions of a run's last score (``SubmissionRule``):

- ``"mlgym"`` (the default, MLGym's): the last *successful* scoring, whether it came from ``validate`` or
  from the submission, as MLGym reads the last entry of ``results.json``'s ``agent`` list (a failed scoring
  adds no entry there). A run whose submission failed after a successful validate keeps that validate's
  score; 19 of MLGym's 672 readable published runs are such runs.
- ``"strict"``: the submission's own score (``final_score``): NaN unless the run's last scoring is a
  successful submit or auto-submission.

>>> runs = pd.DataFrame({"method": ["A", "A"], "task_id": ["t", "t"], "run": [0, 1],
...     "direction": ["max", "max"], "baseline_score": [0.5, 0.5], "scores": [[0.9, 0.6], [0.7]],
...     "final_score": [0.6, 0.7], "exit_status": ["submitted"] * 2, "infra_error": [None, None]})
>>> best_attempt(runs).to_dict()["t"], best_submission(runs).to_dict()["t"]
({'A': 0.9, 'baseline': 0.5}, {'A': 0.7, 'baseline': 0.5})

A run that validated 0.9 and then failed to submit counts 0.9 for MLGym, nothing under ``strict``:

>>> runs.at[1, "scores"], runs.at[1, "final_score"] = [0.9, float("nan")], float("nan")
>>> best_submission(runs).to_dict()["t"]["A"], best_submission(runs, submission="strict").to_dict()["t"]["A"]
(0.9, 0.6)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from engine.errors import ConfigError
from engine.records import TrajectoryRecord

log = logging.getLogger(__name__)

RUN_COLUMNS = ("method", "task_id", "run", "direction", "baseline_score", "scores", "final_score",
               "exit_status", "infra_error")
BASELINE = "baseline"
Kind = Literal["best_attempt", "best_submission"]
SubmissionRule = Literal["mlgym", "strict"]
SUBMISSION_RULES: tuple[SubmissionRule, ...] = ("mlgym", "strict")
KINDS: tuple[Kind, ...] = ("best_attempt", "best_submission")


def check_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Validate a runs DataFrame: required columns, directions, one direction and baseline per task, unique
    (method, task_id, run). Returns it unchanged; raises ConfigError naming what is wrong."""
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise ConfigError(f"runs: missing columns {missing}; a runs table has columns {list(RUN_COLUMNS)}")
    bad = sorted(set(runs["direction"]) - {"max", "min"})
    if bad:
        raise ConfigError(f"runs: unknown directions {bad}; use 'max' or 'min'")
    for col in ("direction", "baseline_score"):
        per_task = runs.groupby("task_id", sort=False)[col].nunique(dropna=False)
        conflicting = list(per_task[per_task > 1].index)
        if conflicting:
            raise ConfigError(f"runs: tasks {conflicting} have more than one {col}; every run of a task must agree")
    dup = runs.duplicated(["method", "task_id", "run"])
    if dup.any():
        first = runs.loc[dup, ["method", "task_id", "run"]].iloc[0].tolist()
        raise ConfigError(f"runs: (method, task_id, run) {first} appears more than once; number runs uniquely")
    return runs


def counted_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that count: those without an ``infra_error`` (the cluster's failures are retried instead)."""
    check_runs(runs)
    infra = runs["infra_error"].map(lambda e: isinstance(e, str) and e != "")
    if infra.any():
        log.info("evaluation: %d runs with an infra_error are not counted", int(infra.sum()))
    return runs.loc[~infra]


def best_of(values: Sequence[float], direction: str) -> float:
    """Best finite value of a list by direction; NaN when there is none.

    >>> best_of([0.3, float("nan"), 0.1], "min")
    0.1
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan
    return max(finite) if direction == "max" else min(finite)


def last_of(values: Sequence[float] | None) -> float:
    """The last finite value of a run's scores (MLGym's last ``agent`` entry); NaN when there is none.

    >>> last_of([0.4, 0.7, float("nan")])
    0.7
    """
    finite = [float(v) for v in (values if values is not None else []) if v is not None and math.isfinite(float(v))]
    return finite[-1] if finite else math.nan


def check_rule(submission: str) -> SubmissionRule:
    if submission not in SUBMISSION_RULES:
        raise ConfigError(f"best submission rule {submission!r}: use 'mlgym' (the last successful scoring, "
                          "validate or submit) or 'strict' (the submission's own score)")
    return submission  # type: ignore[return-value]


def run_values(runs: pd.DataFrame, submission: SubmissionRule = "mlgym") -> pd.DataFrame:
    """The counted runs with two added columns: ``run_best`` (the run's best score, for Best Attempt) and
    ``run_last`` (its last score by ``submission``'s rule, for Best Submission; see the module docstring)."""
    check_rule(submission)
    df = counted_runs(runs).copy()
    df["run_best"] = [best_of(list(s) if s is not None else [], d) for s, d in zip(df["scores"], df["direction"])]
    if submission == "mlgym":
        df["run_last"] = [last_of(list(s) if s is not None else []) for s in df["scores"]]
    else:
        df["run_last"] = pd.to_numeric(df["final_score"], errors="coerce").astype(float)
    return df


def directions_of(runs: pd.DataFrame) -> dict[str, str]:
    """Task → direction, from a runs DataFrame."""
    check_runs(runs)
    return {str(t): str(d) for t, d in runs.groupby("task_id", sort=False)["direction"].first().items()}


def ordered_unique(values: pd.Series) -> list[str]:
    """Distinct values as strings, in order of first appearance."""
    return [str(v) for v in dict.fromkeys(values)]


def _table(runs: pd.DataFrame, column: str, baseline: str, submission: SubmissionRule = "mlgym") -> pd.DataFrame:
    df = run_values(runs, submission)
    methods, tasks = ordered_unique(runs["method"]), ordered_unique(runs["task_id"])
    if baseline in methods:
        raise ConfigError(f"a method is named {baseline!r}, the baseline row's name; rename it or pass baseline=")
    sign = np.where(df["direction"] == "max", 1.0, -1.0)
    df = df.assign(_oriented=sign * df[column].to_numpy(), _sign=sign)
    grouped = df.groupby(["method", "task_id"], sort=False).agg(best=("_oriented", "max"), sign=("_sign", "first"))
    grouped["best"] = grouped["best"] * grouped["sign"]
    wide = grouped["best"].unstack("task_id").reindex(index=methods, columns=tasks)
    base = runs.groupby("task_id", sort=False)["baseline_score"].first().reindex(tasks)
    wide.loc[baseline] = pd.to_numeric(base, errors="coerce").astype(float).to_numpy()
    wide.index.name, wide.columns.name = "method", "task_id"
    wide.attrs["methods"] = [*methods, baseline]
    return wide.astype(float)


def best_attempt(runs: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Methods × tasks: best over a method's runs of each run's best score, plus the baseline row (last).

    A method with no counted run on a task, or no score in any of them, has NaN there (missing).
    """
    return _table(runs, "run_best", baseline)


def best_submission(runs: pd.DataFrame, baseline: str = BASELINE, submission: SubmissionRule = "mlgym") -> pd.DataFrame:
    """Methods × tasks: best over a method's runs of each run's last score, plus the baseline row.

    ``submission``: ``"mlgym"`` (last successful scoring, validate or submit; MLGym's) or ``"strict"`` (the
    submission's own score only)."""
    return _table(runs, "run_last", baseline, submission)


# ---------------------------------------------------------------- from trajectory records


def _score_value(score) -> float:
    """The AUP value of one scoring: the test metric (imported MLGym tasks keep their one metric there too)."""
    return float(score.test[score.metric]) if score.ok else math.nan


def _baseline_for(task_id: str, records: list[TrajectoryRecord], baselines: Mapping[str, float] | None) -> float:
    if baselines is not None and task_id in baselines:
        return float(baselines[task_id])
    for r in records:
        if any(s.grading == "mlgym" for s in r.scores) and r.metric in r.baseline:
            return float(r.baseline[r.metric])  # MLGym grading: one metric dict is both validation and test
    raise ConfigError(
        f"task {task_id}: no test-split baseline score; trajectory records keep only the baseline the agent saw "
        f"(validation), so pass baselines={{'{task_id}': <TaskSpec.baseline_test[metric]>}}")


def runs_from_trajectories(records: Sequence[TrajectoryRecord],
                           method_of: Callable[[TrajectoryRecord], str] = lambda r: r.model,
                           baselines: Mapping[str, float] | None = None) -> pd.DataFrame:
    """A runs DataFrame (``RUN_COLUMNS``) from trajectory records, on the test metrics AUP uses.

    ``method_of`` names each record's method (default: its model). ``baselines``: task → the baseline's
    test-split score; needed for synthesized tasks (separate grading), since a record's ``baseline`` is
    the validation score the agent saw; imported MLGym tasks (one metric) take it from the record.
    Runs are numbered per (method, task) in (seed, episode_id) order. ``scores`` holds every scoring
    (NaN where it failed); ``final_score`` is the last scoring's value when it was a submission (submit or
    auto-submission), else NaN (the ``strict`` Best Submission).
    """
    by_task: dict[str, list[TrajectoryRecord]] = {}
    for r in records:
        by_task.setdefault(r.task_id, []).append(r)
    base = {t: _baseline_for(t, rs, baselines) for t, rs in by_task.items()}
    rows, counters = [], {}
    for r in sorted(records, key=lambda r: (r.seed, r.episode_id)):
        method = method_of(r)
        run = counters[(method, r.task_id)] = counters.get((method, r.task_id), -1) + 1
        last = r.scores[-1] if r.scores else None
        rows.append({
            "method": method, "task_id": r.task_id, "run": run, "direction": r.direction,
            "baseline_score": base[r.task_id],
            "scores": [_score_value(s) for s in r.scores],
            "final_score": _score_value(last) if last is not None and last.kind != "validate" else math.nan,
            "exit_status": r.exit_status, "infra_error": r.infra_error,
        })
    return check_runs(pd.DataFrame(rows, columns=list(RUN_COLUMNS)))
