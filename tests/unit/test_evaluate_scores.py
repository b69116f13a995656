"""Best Attempt and Best Submission from per-run score lists, and runs from trajectory records (test metrics)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.evaluate.scores import (RUN_COLUMNS, best_attempt, best_submission, directions_of, run_values,
                                    runs_from_trajectories)
from engine.records import ScoreRecord, TrajectoryRecord

NAN = float("nan")


def _run(method, task, run, scores, final, direction="max", baseline=0.5, exit_status="submitted", infra=None):
    return {"method": method, "task_id": task, "run": run, "direction": direction, "baseline_score": baseline,
            "scores": scores, "final_score": final, "exit_status": exit_status, "infra_error": infra}


def _runs() -> pd.DataFrame:
    return pd.DataFrame([
        # acc (max): A's best attempt is run 0's validate 0.9; its best submission is run 1's 0.7
        _run("A", "acc", 0, [0.9, 0.6], 0.6),
        _run("A", "acc", 1, [0.7], 0.7),
        # a cluster failure with a better score: retried, not counted
        _run("A", "acc", 2, [0.99], 0.99, exit_status="", infra="sandbox lost"),
        # B: a failed scoring (NaN) inside the list, and a run whose submission failed (final NaN)
        _run("B", "acc", 0, [NAN, 0.8], 0.8),
        _run("B", "acc", 1, [0.85, NAN], NAN, exit_status="autosubmission (max_steps)"),
        # loss (min): best is the smallest
        _run("A", "loss", 0, [3.0, 2.0, 2.5], 2.5, direction="min", baseline=4.0),
        _run("B", "loss", 0, [1.5], 1.5, direction="min", baseline=4.0),
        _run("B", "loss", 1, [], NAN, direction="min", baseline=4.0, exit_status="autosubmission (exit_format)"),
    ])


def test_best_attempt_and_best_submission_from_run_lists() -> None:
    runs = _runs()
    ba, bs = best_attempt(runs), best_submission(runs)
    assert list(ba.index) == ["A", "B", "baseline"] and list(ba.columns) == ["acc", "loss"]
    assert ba.to_dict() == {"acc": {"A": 0.9, "B": 0.85, "baseline": 0.5},
                            "loss": {"A": 2.0, "B": 1.5, "baseline": 4.0}}
    # MLGym's rule: B's run 1 validated 0.85 and then failed to submit; its last successful scoring counts
    assert bs.to_dict() == {"acc": {"A": 0.7, "B": 0.85, "baseline": 0.5},
                            "loss": {"A": 2.5, "B": 1.5, "baseline": 4.0}}
    # strict: only a run's own submission counts, so B's best submission is run 0's 0.8
    strict = best_submission(runs, submission="strict")
    assert strict.to_dict() == {"acc": {"A": 0.7, "B": 0.8, "baseline": 0.5},
                                "loss": {"A": 2.5, "B": 1.5, "baseline": 4.0}}
    assert directions_of(runs) == {"acc": "max", "loss": "min"}
    values = run_values(runs)
    assert len(values) == 7  # the infra-error run is dropped
    empty_run = values["run"].eq(1) & values["method"].eq("B") & values["task_id"].eq("loss")
    assert values.loc[empty_run, "run_best"].isna().all()
    assert values.loc[empty_run, "run_last"].isna().all()


def test_best_submission_rules_differ_only_when_the_last_scoring_is_not_a_submission() -> None:
    runs = pd.DataFrame([
        _run("A", "t", 0, [0.6, 0.9], NAN, exit_status="evaluation_format_error (submit)"),  # validate last: 0.9
        _run("A", "t", 1, [0.7, NAN], NAN, exit_status="submission_not_found (max_steps)"),   # last success 0.7
        _run("B", "t", 0, [0.4, 0.5], 0.5),                                                # submitted 0.5
    ])
    mlgym = run_values(runs)["run_last"].tolist()
    strict = run_values(runs, "strict")["run_last"].tolist()
    assert mlgym == [0.9, 0.7, 0.5]
    assert math.isnan(strict[0]) and math.isnan(strict[1]) and strict[2] == 0.5
    assert best_submission(runs).loc["A", "t"] == 0.9
    assert math.isnan(best_submission(runs, submission="strict").loc["A", "t"])
    with pytest.raises(ConfigError, match="best submission rule 'last'"):
        best_submission(runs, submission="last")


def test_a_method_without_any_score_on_a_task_is_missing() -> None:
    runs = pd.DataFrame([_run("A", "acc", 0, [0.9], 0.9), _run("B", "other", 0, [NAN], NAN, baseline=1.0)])
    ba = best_attempt(runs)
    assert math.isnan(ba.loc["B", "acc"]) and math.isnan(ba.loc["A", "other"]) and math.isnan(ba.loc["B", "other"])
    assert ba.loc["baseline", "other"] == 1.0


@pytest.mark.parametrize(("change", "message"), [
    (lambda df: df.drop(columns=["final_score"]), "missing columns ['final_score']"),
    (lambda df: df.assign(direction=["max"] * 5 + ["up"] * 3), "unknown directions ['up']"),
    (lambda df: df.assign(baseline_score=[0.5, 0.6] + [0.5] * 3 + [4.0] * 3),
     "tasks ['acc'] have more than one baseline_score"),
    (lambda df: df.assign(run=0), "appears more than once"),
])
def test_bad_runs_are_rejected(change, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        best_attempt(change(_runs()))
    assert message in str(err.value)


def test_a_method_named_like_the_baseline_is_refused() -> None:
    runs = pd.DataFrame([_run("baseline", "acc", 0, [0.9], 0.9)])
    with pytest.raises(ConfigError, match="baseline row's name"):
        best_attempt(runs)
    assert list(best_attempt(runs, baseline="ref").index) == ["baseline", "ref"]


def _score(step, kind, val, test, grading="separate", error=None) -> ScoreRecord:
    return ScoreRecord(step=step, kind=kind, validation=None if val is None else {"rmse": val},
                       test=None if test is None else {"rmse": test}, metric="rmse", direction="min",
                       grading=grading, error=error)


def _record(task, seed, model, scores, baseline, exit_status="submitted", infra=None) -> TrajectoryRecord:
    return TrajectoryRecord(run_id="r", task_id=task, task_hash="h", episode_id=f"{task}-{model}-{seed}", seed=seed,
                            model=model, policy="p", scores=scores, baseline=baseline, metric="rmse",
                            direction="min", exit_status=exit_status, infra_error=infra)


def test_runs_from_trajectories_use_test_metrics_and_the_test_baseline() -> None:
    records = [
        _record("syn", 1, "m", [_score(3, "validate", 1.0, 1.4), _score(9, "submit", 0.9, 1.2)], {"rmse": 2.0}),
        _record("syn", 0, "m", [_score(3, "validate", 1.1, 1.3), _score(5, "autosubmit", None, None, error="no file")],
                {"rmse": 2.0}, exit_status="autosubmission (max_steps)"),
        _record("syn", 2, "m", [_score(3, "validate", 0.8, 1.1)], {"rmse": 2.0}, exit_status="", infra="model down"),
        _record("imp", 0, "m", [_score(4, "submit", 0.7, 0.7, grading="mlgym")], {"rmse": 0.95}),
    ]
    with pytest.raises(ConfigError, match="task syn: no test-split baseline"):
        runs_from_trajectories(records)
    runs = runs_from_trajectories(records, baselines={"syn": 2.5})
    assert list(runs.columns) == list(RUN_COLUMNS)
    syn = runs[runs["task_id"] == "syn"].set_index("run")
    assert syn["scores"].map(lambda s: [x if not math.isnan(x) else None for x in s]).to_dict() == {
        0: [1.3, None], 1: [1.4, 1.2], 2: [1.1]}  # ordered by seed; test metrics, not validation
    assert math.isnan(syn.loc[0, "final_score"]) and syn.loc[1, "final_score"] == 1.2
    assert math.isnan(syn.loc[2, "final_score"])  # its last scoring was a validate, no submission
    assert set(runs["baseline_score"]) == {2.5, 0.95}  # imported MLGym task: its one metric from the record
    assert best_attempt(runs).to_dict() == {"syn": {"m": 1.2, "baseline": 2.5}, "imp": {"m": 0.7, "baseline": 0.95}}
    by_model = runs_from_trajectories(records, method_of=lambda r: f"{r.model}-sft", baselines={"syn": 2.5})
    assert set(by_model["method"]) == {"m-sft"}


def test_eval_config_defaults_to_mlgyms_best_submission_and_rejects_other_rules() -> None:
    from pydantic import ValidationError

    from engine.config import EvalConfig

    assert EvalConfig().best_submission == "mlgym"
    assert EvalConfig(best_submission="strict").best_submission == "strict"
    with pytest.raises(ValidationError):
        EvalConfig(best_submission="last")
