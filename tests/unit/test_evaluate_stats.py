"""Bootstrap intervals of AUP (coverage on simulated experiments), the relative change, win/loss, exit statuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.evaluate.aup import compute_aup, compute_aup_pair
from engine.evaluate.scores import best_attempt, best_submission, directions_of
from engine.evaluate.stats import bootstrap_aup, exit_status_breakdown, relative_change, win_loss, win_matrix

# The generative model of the coverage test: 6 tasks (max, min alternating), methods A and B, a fixed
# baseline. Each run scores Normal(mu, 0.1·mu). A is clearly best on three tasks and B on the others (ties
# would make the estimand non-smooth); every worst feasible ratio is the baseline's 2, so each cap is
# ceil(2.1) = 3 and the axis ends at 0.5 in every experiment. The estimand is the AUP of the mean run
# (aggregate="mean"): the true value is compute_aup on the table of the mu.
MU = {"A": [10.0, 4.0, 10.0, 4.4, 9.0, 4.6], "B": [8.0, 5.0, 9.5, 4.0, 10.0, 4.0]}
BASE = [5.0, 8.0, 5.0, 8.0, 5.0, 8.0]
DIRECTIONS = ["max", "min"] * 3
TASKS = [f"t{i}" for i in range(6)]


def _simulate(rng: np.random.Generator, n_runs: int) -> pd.DataFrame:
    rows = []
    for method, mus in MU.items():
        for t, mu in enumerate(mus):
            for r, x in enumerate(rng.normal(mu, 0.1 * mu, size=n_runs)):
                rows.append({"method": method, "task_id": TASKS[t], "run": r, "direction": DIRECTIONS[t],
                             "baseline_score": BASE[t], "scores": [float(x)], "final_score": float(x),
                             "exit_status": "submitted", "infra_error": None})
    return pd.DataFrame(rows)


def test_bootstrap_intervals_cover_the_true_aup_about_95_percent_of_the_time() -> None:
    truth_table = pd.DataFrame({t: [MU["A"][i], MU["B"][i], BASE[i]] for i, t in enumerate(TASKS)},
                               index=["A", "B", "baseline"])
    truth = compute_aup(truth_table, dict(zip(TASKS, DIRECTIONS)), "baseline")
    true_rel = (truth["B"] - truth["A"]) / truth["A"]
    assert 0.40 < truth["A"] < 0.49 and 0.40 < truth["B"] < 0.49  # both lose somewhere: non-trivial estimands
    rng = np.random.default_rng(12345)
    hits = {"A": 0, "B": 0, "rel": 0}
    widths = []
    n_experiments = 200
    for e in range(n_experiments):
        boot = bootstrap_aup(_simulate(rng, 20), n_resamples=300, seed=e, aggregate="mean")
        ci = boot.interval("best_attempt")
        for m in ("A", "B"):
            hits[m] += ci.loc[m, "low"] <= truth[m] <= ci.loc[m, "high"]
        rel = relative_change(boot, "A", "B")
        hits["rel"] += rel.low <= true_rel <= rel.high
        widths.append(ci.loc["B", "high"] - ci.loc["B", "low"])
    coverage = {k: v / n_experiments for k, v in hits.items()}
    assert all(0.88 <= c <= 0.99 for c in coverage.values()), coverage
    assert np.median(widths) > 0.005  # intervals with real width, many grid steps (0.5/499) wide


def _runs() -> pd.DataFrame:
    return _simulate(np.random.default_rng(7), 6)


def test_point_estimate_is_mlgym_aup_and_the_bootstrap_is_seeded() -> None:
    runs = _runs()
    boot = bootstrap_aup(runs, n_resamples=50, seed=3)
    pair = compute_aup_pair(best_attempt(runs), best_submission(runs), directions_of(runs), "baseline")
    for kind in ("best_attempt", "best_submission"):
        assert boot.point[kind].to_dict() == pytest.approx(pair.table()[kind].to_dict(), abs=1e-12)
    assert boot.methods == ["A", "B", "baseline"] and boot.point.attrs["methods"] == boot.methods
    again = bootstrap_aup(runs, n_resamples=50, seed=3)
    assert again.samples["best_attempt"].equals(boot.samples["best_attempt"])
    other = bootstrap_aup(runs, n_resamples=50, seed=4)
    assert not other.samples["best_attempt"].equals(boot.samples["best_attempt"])
    ci = boot.interval("best_submission")
    assert (ci["low"] <= ci["high"]).all() and ci.attrs["methods"] == ["A", "B", "baseline"]


def test_identical_runs_give_a_degenerate_interval() -> None:
    runs = _runs()
    runs["scores"] = runs.apply(lambda r: [MU[r["method"]][TASKS.index(r["task_id"])]], axis=1)
    runs["final_score"] = runs["scores"].str[0]
    boot = bootstrap_aup(runs, n_resamples=40, seed=0, resample_tasks=False)
    ci = boot.interval()
    assert (ci["low"] == ci["aup"]).all() and (ci["high"] == ci["aup"]).all()
    tasks = bootstrap_aup(runs, n_resamples=40, seed=0, resample_tasks=True).interval()
    assert (tasks["high"] - tasks["low"]).loc[["A", "B"]].min() > 0  # resampling tasks does vary it


def test_relative_change_of_a_dominating_method() -> None:
    runs = _runs()
    better = runs[runs["method"] == "A"].copy()
    better["method"] = "A+"
    sign = better["direction"].map({"max": 1.3, "min": 1 / 1.3})
    better["scores"] = [[s[0] * k] for s, k in zip(better["scores"], sign)]
    better["final_score"] = better["scores"].str[0]
    boot = bootstrap_aup(pd.concat([runs, better], ignore_index=True), n_resamples=200, seed=1)
    rel = relative_change(boot, "A", "A+")
    pa, pb = boot.point.loc["A", "best_attempt"], boot.point.loc["A+", "best_attempt"]
    assert rel.point == pytest.approx((pb - pa) / pa)
    assert 0 < rel.low <= rel.point <= rel.high
    assert rel.methods == ["A", "B", "A+", "baseline"] and "A+ vs A" in rel.describe()
    with pytest.raises(ConfigError, match="not in the compared set"):
        relative_change(boot, "A", "C")


def test_win_loss_and_the_win_matrix() -> None:
    table = pd.DataFrame({"a": [0.9, 0.8, 0.5], "b": [2.0, 1.0, 3.0], "c": [np.nan, 0.3, 0.1],
                          "d": [-1.0, np.nan, 0.2], "e": [0.4, 0.4, 0.1]}, index=["A", "B", "baseline"])
    directions = {"a": "max", "b": "min", "c": "max", "d": "max", "e": "max"}
    wl = win_loss(table, directions, "A", "B")
    assert wl["winner"].to_dict() == {"a": "A", "b": "B", "c": "B", "d": "", "e": "tie"}
    assert wl.attrs["methods"] == ["A", "B", "baseline"]
    wins = win_matrix(table, directions)
    assert wins.loc["A", "B"] == 1 and wins.loc["B", "A"] == 2 and wins.loc["baseline", "A"] == 2
    assert wins.loc["A", "baseline"] == 3 and wins.loc["A", "A"] == 0


def test_exit_status_breakdown_counts_runs_and_infra_errors() -> None:
    runs = _runs().head(4).copy()
    runs["exit_status"] = ["submitted", "autosubmission (max_steps)", "submitted", ""]
    runs["infra_error"] = [None, None, None, "sandbox lost"]
    table = exit_status_breakdown(runs)
    assert table.loc["A"].to_dict() == {"autosubmission (max_steps)": 1, "submitted": 2, "infra_error": 1}
    assert table.attrs["methods"] == ["A"]
