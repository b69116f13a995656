"""AUP on hand-computable tables: feasibility, ratios, caps, the τ axis, the left Riemann sum, validation."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.evaluate import aup as aup_module
from engine.evaluate import scores as scores_module
from engine.evaluate.aup import aup_batch, compute_aup, compute_aup_pair, performance_profiles, tau_grid

NAN = float("nan")


def _table(columns: dict[str, list[float]], index: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns, index=index)


def test_one_task_by_hand() -> None:
    # max task: A = 2, baseline = 1. Ratios A 1, baseline 2/1 = 2; worst feasible 2 → tau_cap = ceil(2.1) = 3,
    # axis end ceil(10·log10 3 = 4.77)/10 = 0.5, grid step h = 0.5/499. A's ρ is 1 from τ = 0: AUP = 0.5.
    # The baseline is reached at log10 2 = 0.30103, first grid point k = ceil(0.30103/h = 300.43) = 301:
    # AUP = Σ_{i=301}^{498} h = 198 h.
    aup = compute_aup(_table({"t": [2.0, 1.0]}, ["A", "baseline"]), {"t": "max"}, "baseline")
    assert aup["A"] == pytest.approx(0.5, abs=1e-12)
    assert aup["baseline"] == pytest.approx(198 * 0.5 / 499, abs=1e-12)
    assert aup.attrs["tau_max"] == 0.5 and aup.attrs["excluded_tasks"] == []
    assert aup.attrs["methods"] == ["A", "baseline"]


def test_mixed_table_by_hand() -> None:
    # t_max (max):    A 0.8, B 0.4 (worse than the baseline: infeasible), C missing, baseline 0.5.
    #                 feasible ratios A 1, baseline 0.8/0.5 = 1.6; B, C get 1.05·1.6 = 1.68; cap ceil(1.68) = 2.
    # t_min (min):    A 2, B 1, C −0.5 (negative: infeasible), baseline 4.
    #                 ratios A 2/1 = 2, B 1, baseline 4; C gets 1.05·4 = 4.2; cap ceil(4.2) = 5.
    # t_single (max): A missing, B −1, C 0.1 (worse than 0.2), baseline 0.2: only the baseline is feasible,
    #                 ratio 1; the others get 1.05; cap ceil(1.05) = 2.
    # t_none (max):   A −1, B missing, C −2, baseline missing: no feasible method → left out.
    # Axis end: max(log10 2, log10 5, log10 2) = 0.69897 → 0.7; h = 0.7/499. A task reached at log ratio r
    # (first grid index k = ceil(r/h)) adds (499 − k)·h; AUP is the mean over the 3 included tasks.
    #   log10 1.68 = 0.225309 → k = ceil(160.61) = 161     log10 2 = 0.301030 → k = ceil(214.59) = 215
    #   log10 1.05 = 0.021189 → k = ceil(15.10)  = 16      log10 4.2 = 0.623249 → k = ceil(444.29) = 445
    #   log10 1.6  = 0.204120 → k = ceil(145.51) = 146     log10 4 = 0.602060 → k = ceil(429.18) = 430
    #   A:        t_max 0 (499), t_min 215 (284), t_single 16 (483)  → 1266/3 · h
    #   B:        161 (338),     0 (499),         16 (483)           → 1320/3 · h
    #   C:        161 (338),     445 (54),        16 (483)           →  875/3 · h
    #   baseline: 146 (353),     430 (69),        0 (499)            →  921/3 · h
    scores = _table({"t_max": [0.8, 0.4, NAN, 0.5], "t_min": [2.0, 1.0, -0.5, 4.0],
                     "t_single": [NAN, -1.0, 0.1, 0.2], "t_none": [-1.0, NAN, -2.0, NAN]},
                    ["A", "B", "C", "baseline"])
    directions = {"t_max": "max", "t_min": "min", "t_single": "max", "t_none": "max"}
    aup = compute_aup(scores, directions, "baseline")
    h = 0.7 / 499
    expected = {"A": 1266 / 3 * h, "B": 1320 / 3 * h, "C": 875 / 3 * h, "baseline": 921 / 3 * h}
    assert aup.to_dict() == pytest.approx(expected, abs=1e-12)
    assert aup.attrs["excluded_tasks"] == ["t_none"]
    assert aup.attrs["tau_max"] == pytest.approx(0.7)

    result = performance_profiles(scores, directions, "baseline")
    assert result.feasible.loc["B", "t_max"] == False  # noqa: E712 (numpy bool)
    assert result.feasible.loc["C", "t_min"] == False  # noqa: E712
    assert result.feasible.loc["baseline", "t_single"] == True  # noqa: E712
    assert list(result.log_ratios.columns) == ["t_max", "t_min", "t_single"]
    assert result.log_ratios.loc["C", "t_min"] == pytest.approx(math.log10(4.2))
    # the plotted curves integrate to the same numbers, and ρ(0) is the share of tasks a method is best on
    riemann = (np.diff(result.tau)[:, None] * result.rho.to_numpy()[:-1]).sum(axis=0)
    assert riemann == pytest.approx([expected[m] for m in result.methods], abs=1e-12)
    assert result.rho.iloc[0].to_dict() == pytest.approx({"A": 1 / 3, "B": 1 / 3, "C": 0.0, "baseline": 1 / 3})
    assert len(result.tau) == 500 and result.tau[0] == 0.0 and result.tau[-1] == pytest.approx(0.7)


def test_tau_max_overrides_the_axis() -> None:
    # as in test_one_task_by_hand but on [0, 1]: h = 1/499, baseline k = ceil(0.30103·499 = 150.21) = 151
    aup = compute_aup(_table({"t": [2.0, 1.0]}, ["A", "baseline"]), {"t": "max"}, "baseline", tau_max=1.0)
    assert aup.to_dict() == pytest.approx({"A": 1.0, "baseline": 348 / 499}, abs=1e-12)
    with pytest.raises(ConfigError, match="tau_max"):
        compute_aup(_table({"t": [2.0, 1.0]}, ["A", "baseline"]), {"t": "max"}, "baseline", tau_max=0.0)


def test_pair_shares_the_larger_axis() -> None:
    directions = {"t": "min"}
    ba = _table({"t": [1.0, 4.0]}, ["A", "baseline"])  # baseline ratio 4 → cap 5 → axis 0.7
    bs = _table({"t": [2.0, 4.0]}, ["A", "baseline"])  # baseline ratio 2 → cap 3 → axis 0.5
    pair = compute_aup_pair(ba, bs, directions, "baseline")
    assert pair.tau_max == pytest.approx(0.7)
    assert pair.best_submission.tau_max == pytest.approx(0.7)
    alone = compute_aup(bs, directions, "baseline")
    assert alone.attrs["tau_max"] == pytest.approx(0.5)
    shared = compute_aup(bs, directions, "baseline", tau_max=0.7)
    assert pair.best_submission.aup.to_dict() == pytest.approx(shared.to_dict(), abs=1e-15)
    # baseline on BS: log10 2 on a 0.7 axis: k = ceil(214.59) = 215 → (499 − 215)·0.7/499
    assert pair.table().loc["baseline", "best_submission"] == pytest.approx(284 * 0.7 / 499, abs=1e-12)
    assert pair.table().attrs["methods"] == ["A", "baseline"]
    with pytest.raises(ConfigError, match="differ"):
        compute_aup_pair(ba, _table({"t": [1.0, 4.0]}, ["B", "baseline"]), directions, "baseline")


def test_zero_scores_tie_and_infinite_ratios_are_infeasible() -> None:
    # max task where every score is 0: all tie at the best, ratio 1 (not 0/0): every AUP is the axis end.
    # cap ceil(1.05) = 2 → axis ceil(3.01)/10 = 0.4.
    aup = compute_aup(_table({"t": [0.0, 0.0]}, ["A", "baseline"]), {"t": "max"}, "baseline")
    assert aup.to_dict() == pytest.approx({"A": 0.4, "baseline": 0.4})
    # min task with best 0: B = 0.5 and the baseline's 1 have infinite ratios → infeasible (1.05); A is 1.
    # log10 1.05 = 0.021189 on h = 0.4/499: k = ceil(26.43) = 27 → (499 − 27)·h.
    aup = compute_aup(_table({"t": [0.0, 0.5, 1.0]}, ["A", "B", "baseline"]), {"t": "min"}, "baseline")
    assert aup.to_dict() == pytest.approx({"A": 0.4, "B": 472 * 0.4 / 499, "baseline": 472 * 0.4 / 499}, abs=1e-12)


def test_no_feasible_task_at_all_gives_nan_and_lists_the_tasks() -> None:
    aup = compute_aup(_table({"t": [-1.0, NAN]}, ["A", "baseline"]), {"t": "max"}, "baseline")
    assert aup.isna().all()
    assert aup.attrs["excluded_tasks"] == ["t"]


@pytest.mark.parametrize(("directions", "baseline", "message"), [
    ({"t": "up", "u": "max"}, "baseline", "unknown values {'t': 'up'}"),
    ({"t": "max"}, "baseline", "no direction for tasks ['u']"),
    ({"t": "max", "u": "min"}, "base", "'base' is not a row"),
])
def test_bad_input_names_the_problem(directions: dict, baseline: str, message: str) -> None:
    scores = _table({"t": [1.0, 2.0], "u": [1.0, 2.0]}, ["A", "baseline"])
    with pytest.raises(ConfigError) as err:
        compute_aup(scores, directions, baseline)
    assert message in str(err.value)


def test_non_numeric_and_duplicate_rows_are_rejected() -> None:
    with pytest.raises(ConfigError, match="non-numeric"):
        compute_aup(_table({"t": ["high", 1.0]}, ["A", "baseline"]), {"t": "max"}, "baseline")
    with pytest.raises(ConfigError, match="duplicate method rows \\['A'\\]"):
        compute_aup(_table({"t": [1.0, 1.0, 2.0]}, ["A", "A", "baseline"]), {"t": "max"}, "baseline")


def test_batched_aup_equals_the_riemann_sum_of_the_profiles() -> None:
    # the fast path (grid index from ceil(r/step), corrected) against ρ built on the grid and summed
    rng = np.random.default_rng(0)
    ends = np.array([0.3, 0.4, 0.7, 1.0, 1.3] * 4)
    lr = rng.uniform(0, 1.5, size=(len(ends), 4, 6))
    for b, end in enumerate(ends):  # log ratios exactly on grid points, and at 0
        lr[b, 0, :4] = tau_grid(end)[rng.integers(0, 500, size=4)]
        lr[b, 1, 0] = 0.0
    included = rng.random((len(ends), 6)) > 0.2
    got = aup_batch(lr, included, ends)
    for b, end in enumerate(ends):
        tau, cols = tau_grid(end), np.flatnonzero(included[b])
        rho = (lr[b][:, cols][:, :, None] <= tau).mean(axis=1)
        assert got[b] == pytest.approx((np.diff(tau) * rho[:, :-1]).sum(axis=1), abs=1e-12)


@pytest.mark.parametrize("module", [aup_module, scores_module], ids=lambda m: m.__name__)
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def _naive_aup(log_ratios: list[float], tau_max: float) -> float:
    """MLGym's left Riemann sum, point by point over the 500-point axis (one method, its tasks' log10 ratios)."""
    tau = np.linspace(0.0, tau_max, 500)
    rho = [sum(r <= t for r in log_ratios) / len(log_ratios) for t in tau]
    return sum((tau[i + 1] - tau[i]) * rho[i] for i in range(499))


def test_negative_baseline_task_as_mlgym_treats_it() -> None:
    # blotto (max): its baseline scores −0.248. MLGym marks every negative score infeasible, on this task as on
    # any other, so the baseline itself is infeasible, and so is C at −0.1 though it beats the baseline.
    # Feasible: A 0.24 and B 0.12; best 0.24, ratios A 1, B 0.24/0.12 = 2 (the worst feasible ratio).
    # C and the baseline get 1.05 · 2 = 2.1; tau_cap = ceil(2.1) = 3; axis end ceil(10·log10 3)/10 = 0.5,
    # h = 0.5/499. B is reached at log10 2 = 0.30103 → k = ceil(300.43) = 301, AUP (499 − 301)·h;
    # C and the baseline at log10 2.1 = 0.32222 → k = ceil(321.58) = 322, AUP (499 − 322)·h.
    table = _table({"blotto": [0.24, 0.12, -0.1, -0.248]}, ["A", "B", "C", "baseline"])
    result = performance_profiles(table, {"blotto": "max"}, "baseline")
    assert result.feasible["blotto"].to_dict() == {"A": True, "B": True, "C": False, "baseline": False}
    assert (10 ** result.log_ratios["blotto"]).round(12).to_dict() == {"A": 1.0, "B": 2.0, "C": 2.1, "baseline": 2.1}
    h = 0.5 / 499
    assert result.tau_max == 0.5
    assert result.aup.to_dict() == pytest.approx({"A": 0.5, "B": 198 * h, "C": 177 * h, "baseline": 177 * h},
                                                 abs=1e-12)
    for method in ["A", "B", "C", "baseline"]:
        assert result.aup[method] == pytest.approx(_naive_aup([result.log_ratios.at[method, "blotto"]], 0.5),
                                                   abs=1e-12)


def test_negative_baseline_task_beside_a_positive_one() -> None:
    # blotto as above plus t (max): A 2, B 1, C 4, baseline 1 → ratios A 2, B 4, C 1, baseline 4; worst 4,
    # tau_cap ceil(4.2) = 5. Axis end: ceil(10·log10 5 = 6.99)/10 = 0.7 (blotto's cap 3 is smaller).
    table = _table({"blotto": [0.24, 0.12, -0.1, -0.248], "t": [2.0, 1.0, 4.0, 1.0]}, ["A", "B", "C", "baseline"])
    aup = compute_aup(table, {"blotto": "max", "t": "max"}, "baseline")
    assert aup.attrs["tau_max"] == 0.7 and aup.attrs["excluded_tasks"] == []
    ratios = {"A": [1.0, 2.0], "B": [2.0, 4.0], "C": [2.1, 1.0], "baseline": [2.1, 4.0]}
    for method, rs in ratios.items():
        assert aup[method] == pytest.approx(_naive_aup([math.log10(r) for r in rs], 0.7), abs=1e-12), method


def test_a_task_where_every_score_is_negative_is_left_out() -> None:
    # every method below 0 on blotto: none is feasible (MLGym's script stops on such a task with a NaN cap;
    # we leave it out and list it), and t alone decides the AUP
    table = _table({"blotto": [-0.01, -0.2, -0.248], "t": [2.0, 1.0, 1.0]}, ["A", "B", "baseline"])
    aup = compute_aup(table, {"blotto": "max", "t": "max"}, "baseline")
    assert aup.attrs["excluded_tasks"] == ["blotto"]
    alone = compute_aup(_table({"t": [2.0, 1.0, 1.0]}, ["A", "B", "baseline"]), {"t": "max"}, "baseline")
    assert aup.to_dict() == pytest.approx(alone.to_dict(), abs=1e-12)
