"""MLGym's AUP: reads a methods × tasks score table (plus metric directions), writes AUP values and profiles.

Definition (docs/design.md, "Evaluation"; MLGym's), per task, over every method including the baseline row:

1. a score is *infeasible* when it is missing, negative, or worse than the baseline's score on that task
   (strictly: below it on a ``max`` task, above it on a ``min`` task);
2. the *ratio* of a feasible score is ``best/score`` (max) or ``score/best`` (min), ``best`` being the best
   feasible score; a score equal to the best has ratio 1 (so 0/0 ties are 1), and an infinite ratio (a 0
   on a max task whose best is positive, a positive score on a min task whose best is 0) is infeasible;
3. infeasible scores get ``1.05 ×`` the task's worst feasible ratio; the task's cap is
   ``tau_cap = ceil(1.05 × worst feasible ratio)``;
4. the τ axis is 500 evenly spaced points from 0 to ``max over tasks of log10(tau_cap)`` rounded up to one
   decimal (or ``tau_max`` when given); ``ρ_m(τ)`` is the share of tasks with ``log10(ratio) ≤ τ``;
5. ``AUP_m = Σ over the 499 intervals of (τ[i+1] − τ[i]) · ρ_m(τ[i])`` (left Riemann sum).

A task with no feasible method is left out (listed in ``excluded_tasks`` and logged). AUP is relative to
the set of methods compared: every result carries that set (``methods``, ``series.attrs["methods"]``).

Example: one max task, method A scores 2, the baseline 1. A's ratio is 1, the baseline's 2; worst feasible
ratio 2, so tau_cap = ceil(2.1) = 3 and the axis ends at ceil(10·log10 3)/10 = 0.5. A's profile is 1
everywhere: AUP 0.5. The baseline reaches the task at τ = log10 2 = 0.30103, grid index
ceil(0.30103 · 499 / 0.5) = 301, so its AUP is 0.5 − τ[301] = 0.5 · (499 − 301) / 499 = 0.198397.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.errors import ConfigError

log = logging.getLogger(__name__)

N_TAU_POINTS = 500
INFEASIBLE_FACTOR = 1.05
DIRECTIONS = ("max", "min")


@dataclass
class AUPResult:
    """AUP of a set of methods, with everything needed to explain or plot it.

    ``aup``: AUP per method (index = methods, baseline included). ``tau``: the τ axis (500 points).
    ``rho``: ρ_m(τ) per method (index = τ, columns = methods). ``log_ratios``: log10 ratio per method and
    included task after filling infeasible entries. ``feasible``: the feasibility mask (methods × all
    tasks). ``excluded_tasks``: tasks where no method was feasible. ``methods``: the compared set.
    """

    aup: pd.Series
    tau: np.ndarray
    rho: pd.DataFrame
    log_ratios: pd.DataFrame
    feasible: pd.DataFrame
    excluded_tasks: list[str]
    methods: list[str]
    tau_max: float
    baseline: str

    @property
    def method_set(self) -> str:
        """The compared set as text, for table captions: ``"A, B, baseline"``."""
        return ", ".join(self.methods)


@dataclass
class AUPPair:
    """Best Attempt and Best Submission AUP of one method set on one shared τ axis (the larger of the two)."""

    best_attempt: AUPResult
    best_submission: AUPResult
    tau_max: float
    methods: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per method: ``best_attempt`` and ``best_submission`` AUP (attrs name the method set)."""
        df = pd.DataFrame({"best_attempt": self.best_attempt.aup, "best_submission": self.best_submission.aup})
        df.index.name = "method"
        df.attrs["methods"] = list(self.methods)
        return df


# ---------------------------------------------------------------- validation


def check_table(scores: pd.DataFrame, directions: dict[str, str], baseline: str) -> np.ndarray:
    """Validate a score table against its directions and baseline; return the values as floats (±inf → NaN).

    Raises ConfigError naming the unknown direction values, the tasks without a direction, the missing
    baseline row, duplicate names or non-numeric scores.
    """
    if not isinstance(scores, pd.DataFrame) or scores.shape[1] == 0 or scores.shape[0] == 0:
        raise ConfigError("scores: expected a DataFrame with one row per method and one column per task; got an "
                          "empty table")
    for axis, names in (("method rows", scores.index), ("task columns", scores.columns)):
        dup = sorted({str(n) for n in names[names.duplicated()]})
        if dup:
            raise ConfigError(f"scores: duplicate {axis} {dup}; give each a unique name")
    bad = {t: d for t, d in directions.items() if d not in DIRECTIONS}
    if bad:
        raise ConfigError(f"directions: unknown values {bad}; each task's direction must be 'max' or 'min'")
    missing = [str(t) for t in scores.columns if t not in directions]
    if missing:
        raise ConfigError(f"directions: no direction for tasks {missing}; add each as \"max\" or \"min\"")
    if baseline not in scores.index:
        rows = list(map(str, scores.index))
        raise ConfigError(f"baseline {baseline!r} is not a row of the score table (rows: {rows}); "
                          "pass the name of the baseline row")
    try:
        values = scores.apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"scores: non-numeric entry ({e}); use numbers, or leave a cell empty for a missing "
                          "score") from None
    if np.isinf(values).any():
        log.warning("scores: %d infinite entries treated as missing", int(np.isinf(values).sum()))
        values = np.where(np.isinf(values), np.nan, values)
    return values


# ---------------------------------------------------------------- the batched core


def log_ratios_batch(values: np.ndarray, is_max: np.ndarray, base_idx: int) -> tuple[np.ndarray, ...]:
    """Feasibility, filled log10 ratios and log10 caps for a batch of tables.

    ``values``: (B, M, T) scores; ``is_max``: (T,) bools; ``base_idx``: the baseline's row. Returns
    ``(log_ratio (B, M, T), feasible (B, M, T), log_cap (B, T), included (B, T))``; entries of tasks that
    are not included (no feasible method) are NaN.
    """
    sign = np.where(is_max, 1.0, -1.0)
    base = values[:, base_idx:base_idx + 1, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        worse = sign * (values - base) < 0  # a NaN baseline makes nothing "worse"
        feasible = np.isfinite(values) & (values >= 0) & ~worse
        best = sign * np.max(np.where(feasible, sign * values, -np.inf), axis=1, keepdims=True)
        ratio = np.where(is_max, best / values, values / best)
        ratio = np.where(values == best, 1.0, ratio)
        feasible &= np.isfinite(ratio)
        included = feasible.any(axis=1)
        worst = np.max(np.where(feasible, ratio, -np.inf), axis=1)
        worst = np.where(included, worst, np.nan)
        filled = np.where(feasible, ratio, INFEASIBLE_FACTOR * worst[:, None, :])
        log_cap = np.log10(np.ceil(INFEASIBLE_FACTOR * worst))
        return np.log10(filled), feasible, log_cap, included


def axis_max(log_cap: np.ndarray) -> np.ndarray:
    """Largest log10 cap over tasks rounded up to one decimal, per batch row (NaN where no task is included).

    >>> float(axis_max(np.array([[math.log10(2), math.log10(3)]]))[0])
    0.5
    """
    with np.errstate(invalid="ignore"):
        top = np.nanmax(np.where(np.isnan(log_cap), -np.inf, log_cap), axis=-1)
    top = np.where(np.isfinite(top), top, np.nan)
    # round(…, 9) so that 10·log10(10) == 10.000000000000002 style noise cannot push the axis a step up
    return np.ceil(np.round(top * 10, 9)) / 10


def tau_grid(tau_max: float | np.ndarray) -> np.ndarray:
    """The τ axis: ``N_TAU_POINTS`` evenly spaced points from 0 to ``tau_max`` (a batch gives (B, 500))."""
    return np.linspace(0.0, tau_max, N_TAU_POINTS, axis=-1)


def _grid_point(k: np.ndarray, step: np.ndarray, end: np.ndarray) -> np.ndarray:
    """τ[k] of ``tau_grid(end)`` without building it: ``k·step`` (as linspace computes it), ``end`` at
    k = 499, +inf past the axis."""
    return np.where(k >= N_TAU_POINTS, np.inf, np.where(k >= N_TAU_POINTS - 1, end, k * step))


def aup_batch(log_ratio: np.ndarray, included: np.ndarray, tau_max: np.ndarray) -> np.ndarray:
    """AUP (B, M) from log ratios (B, M, T), the included-task mask (B, T) and each row's axis end (B,).

    The left Riemann sum telescopes: a task reached at grid index k (the first τ[k] ≥ log ratio)
    contributes Σ_{i=k}^{498} (τ[i+1] − τ[i]) = τ[499] − τ[k] to the sum of ρ's numerator; k = 500 (never
    reached) contributes 0. k is ceil(r / step), corrected by one either way against the grid's own values.
    """
    ends = np.asarray(tau_max, dtype=float)
    end = np.where(np.isfinite(ends), ends, 0.0)[:, None, None]
    step = end / (N_TAU_POINTS - 1)
    r = np.where(np.isnan(log_ratio), 0.0, log_ratio)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.clip(np.ceil(np.where(step > 0, r / step, np.where(r > 0, np.inf, 0.0))), 0, N_TAU_POINTS)
    k = k.astype(np.int64)
    k = np.where((k > 0) & (_grid_point(k - 1, step, end) >= r), k - 1, k)
    k = np.where((k < N_TAU_POINTS) & (_grid_point(k, step, end) < r), k + 1, k)
    contrib = np.where(k >= N_TAU_POINTS, 0.0, end - _grid_point(k, step, end))
    inc = included[:, None, :]
    n_inc = inc.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        aup = np.where(inc, contrib, 0.0).sum(axis=-1) / n_inc
    return np.where((n_inc > 0) & np.isfinite(ends)[:, None], aup, np.nan)


# ---------------------------------------------------------------- the public API


def _needed_tau_max(scores: pd.DataFrame, directions: dict[str, str], baseline: str) -> float:
    values = check_table(scores, directions, baseline)
    is_max = np.array([directions[t] == "max" for t in scores.columns])
    _, _, log_cap, _ = log_ratios_batch(values[None], is_max, list(scores.index).index(baseline))
    return float(axis_max(log_cap)[0])


def performance_profiles(scores: pd.DataFrame, directions: dict[str, str], baseline: str,
                         tau_max: float | None = None) -> AUPResult:
    """AUP, τ axis and ρ curves of every method (rows of ``scores``, baseline included) over its tasks.

    ``scores``: one row per method, one column per task, NaN for a missing score. ``directions``: task →
    "max" | "min". ``tau_max``: the axis end to use instead of the table's own (to share an axis).
    """
    values = check_table(scores, directions, baseline)
    if tau_max is not None and not (math.isfinite(tau_max) and tau_max > 0):
        raise ConfigError(f"tau_max={tau_max}: must be a positive number (the end of the log10 τ axis)")
    methods = [str(m) for m in scores.index]
    tasks = [str(t) for t in scores.columns]
    is_max = np.array([directions[t] == "max" for t in scores.columns])
    lr, feas, log_cap, inc = log_ratios_batch(values[None], is_max, methods.index(str(baseline)))
    excluded = [t for t, ok in zip(tasks, inc[0]) if not ok]
    if excluded:
        log.warning("AUP over %s: no feasible method on tasks %s; they are left out", methods, excluded)
    own_max = float(axis_max(log_cap)[0])
    end = own_max if tau_max is None else float(tau_max)
    if tau_max is not None and np.isfinite(own_max) and tau_max < own_max:
        log.warning("tau_max=%s is below this table's own axis end %s: profiles are cut short", tau_max, own_max)
    aup = aup_batch(lr, inc, np.array([end]))[0]
    kept = [i for i, ok in enumerate(inc[0]) if ok]
    log_ratios = pd.DataFrame(lr[0][:, kept], index=methods, columns=[tasks[i] for i in kept])
    tau = tau_grid(end) if np.isfinite(end) else np.zeros(N_TAU_POINTS)
    rho_values = (log_ratios.to_numpy()[:, :, None] <= tau[None, None, :]).mean(axis=1) if kept else \
        np.zeros((len(methods), N_TAU_POINTS))
    series = pd.Series(aup, index=methods, name="aup")
    series.index.name = "method"
    series.attrs.update(methods=methods, excluded_tasks=excluded, tau_max=end, baseline=str(baseline))
    return AUPResult(
        aup=series, tau=tau, rho=pd.DataFrame(rho_values.T, index=pd.Index(tau, name="tau"), columns=methods),
        log_ratios=log_ratios, feasible=pd.DataFrame(feas[0], index=methods, columns=tasks),
        excluded_tasks=excluded, methods=methods, tau_max=end, baseline=str(baseline))


def compute_aup(scores: pd.DataFrame, directions: dict[str, str], baseline: str,
                tau_max: float | None = None) -> pd.Series:
    """AUP per method, exactly as MLGym computes it (see the module docstring).

    Returns a Series indexed by method (baseline included) whose ``attrs`` hold ``methods`` (the compared
    set), ``excluded_tasks`` (no feasible method), ``tau_max`` (the axis end used) and ``baseline``.

    >>> t = pd.DataFrame({"t": [2.0, 1.0]}, index=["A", "baseline"])
    >>> compute_aup(t, {"t": "max"}, "baseline").round(6).to_dict()
    {'A': 0.5, 'baseline': 0.198397}
    """
    return performance_profiles(scores, directions, baseline, tau_max).aup


def compute_aup_pair(best_attempt_df: pd.DataFrame, best_submission_df: pd.DataFrame, directions: dict[str, str],
                     baseline: str, tau_max: float | None = None) -> AUPPair:
    """Best Attempt and Best Submission AUP on one τ axis: the larger of the two tables' own axis ends
    (or ``tau_max`` when given). Both tables must hold the same methods."""
    if set(map(str, best_attempt_df.index)) != set(map(str, best_submission_df.index)):
        raise ConfigError(f"Best Attempt rows {list(best_attempt_df.index)} and Best Submission rows "
                          f"{list(best_submission_df.index)} differ; compare the same method set in both")
    if tau_max is None:
        ends = [_needed_tau_max(df, directions, baseline) for df in (best_attempt_df, best_submission_df)]
        finite = [e for e in ends if np.isfinite(e)]
        tau_max = max(finite) if finite else None
    ba = performance_profiles(best_attempt_df, directions, baseline, tau_max)
    bs = performance_profiles(best_submission_df.loc[best_attempt_df.index], directions, baseline, tau_max)
    return AUPPair(best_attempt=ba, best_submission=bs, tau_max=ba.tau_max, methods=ba.methods)
