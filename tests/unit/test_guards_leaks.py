"""Leak probes on small task folders: held-out labels in the workspace, target copies, scores at the ceiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.synth.guards.difficulty import estimate_difficulty
from engine.synth.guards.leaks import ceiling_check, determines, metric_bounds, probe_leaks, score_rejects
from engine.tasks.folder import TaskParts, save_task
from engine.tasks.spec import DatasetConfig, TaskConfig, TaskSpec

GRADER = "import json\nprint(json.dumps({'validation': {'accuracy': 0.5}, 'test': {'accuracy': 0.5}}))\n"


def frames(n_train: int = 60, n_held: int = 30, *, regression: bool = False, seed: int = 0):
    """train (x1, x2, target), validation/test (id, x1, x2) and their labels (id, target)."""
    rng = np.random.default_rng(seed)
    n = n_train + 2 * n_held
    x = rng.normal(size=(n, 2)).round(6)
    y = (3 * x[:, 0] - x[:, 1] + rng.normal(size=n)).round(6) if regression else rng.integers(0, 3, size=n)
    df = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "target": y})
    train = df.iloc[:n_train].reset_index(drop=True)
    held = df.iloc[n_train:].reset_index(drop=True).assign(id=range(n_held * 2))
    val, test = held.iloc[:n_held], held.iloc[n_held:]
    return {
        "train": train, "validation": val[["id", "x1", "x2"]], "test": test[["id", "x1", "x2"]],
        "labels_validation": val[["id", "target"]], "labels_test": test[["id", "target"]],
    }


def csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def make_task(root: Path, f: dict[str, pd.DataFrame], *, extra: dict[str, str] | None = None,
              metric: str = "accuracy", direction: str = "max", baseline: float = 0.5) -> TaskSpec:
    config = TaskConfig(
        id="probe-task", name="Probe task", description="Predict target.\n\n{dataset_docs}",
        dataset_configs=["dataset.yaml"], starter_code=["baseline.py"], baseline_paths=["baseline.py"],
        baseline_scores=[{metric: baseline}], baseline_test_scores=[{metric: baseline}], metric=metric,
        direction=direction, submission_path="submission.csv",
    )
    ds = DatasetConfig(name="probe", description="synthetic", data_path="workspace/data",
                       splits={"train": "train.csv", "validation": "validation.csv", "test": "test.csv"})
    workspace = {"baseline.py": "print('baseline')\n", "data/train.csv": csv(f["train"]),
                 "data/validation.csv": csv(f["validation"]), "data/test.csv": csv(f["test"]), **(extra or {})}
    grader = {"evaluate.py": GRADER, "labels_validation.csv": csv(f["labels_validation"]),
              "labels_test.csv": csv(f["labels_test"])}
    return save_task(TaskParts(config=config, datasets=[ds], workspace=workspace, grader=grader), root)


def reasons(spec: TaskSpec, **kw) -> list[str]:
    return [r.reason for r in probe_leaks(spec, **kw)]


def test_a_clean_classification_task_passes(tmp_path):
    assert probe_leaks(make_task(tmp_path / "t", frames())) == []


def test_a_clean_regression_task_passes(tmp_path):
    spec = make_task(tmp_path / "t", frames(regression=True), metric="rmse", direction="min", baseline=1.3)
    assert probe_leaks(spec) == []


def test_a_copy_of_the_labels_in_the_workspace_is_rejected(tmp_path):
    f = frames()
    spec = make_task(tmp_path / "t", f, extra={"data/val_labels.csv": csv(f["labels_validation"])})
    [reject] = probe_leaks(spec)
    assert (reject.stage, reject.item_id, reject.reason) == ("guard", "probe-task", "labels_in_workspace")
    assert reject.detail == (
        "workspace/data/val_labels.csv is a copy of grader/labels_validation.csv; "
        "workspace/data/val_labels.csv column 'target' holds labels_validation.csv column 'target'")


def test_held_out_labels_relabelled_inside_a_workspace_table_are_found_by_id(tmp_path):
    f = frames()
    names = {0: "low", 1: "mid", 2: "high"}
    hints = f["labels_test"].assign(hint=f["labels_test"]["target"].map(names))[["id", "hint"]]
    spec = make_task(tmp_path / "t", f, extra={"notes/hints.csv": csv(hints.iloc[::-1])})  # other row order
    [reject] = probe_leaks(spec)
    assert reject.reason == "labels_in_workspace"
    assert reject.detail == "workspace/notes/hints.csv column 'hint' holds (relabelled) labels_test.csv column 'target'"


def test_held_out_labels_without_ids_are_found_row_by_row(tmp_path):
    f = frames()
    answers = pd.DataFrame({"answer": f["labels_validation"]["target"].to_numpy() + 10})
    spec = make_task(tmp_path / "t", f, extra={"answers.csv": csv(answers)})
    [reject] = probe_leaks(spec)
    assert reject.detail == (
        "workspace/answers.csv column 'answer' holds (relabelled) labels_validation.csv column 'target'")


def test_held_out_rows_copied_into_train_are_rejected(tmp_path):
    f = frames()
    val_rows = f["validation"].drop(columns="id").assign(target=f["labels_validation"]["target"].to_numpy())
    f["train"] = pd.concat([f["train"], val_rows], ignore_index=True)
    [reject] = probe_leaks(make_task(tmp_path / "t", f))
    assert reject.detail == "30 of 30 rows of workspace/data/validation.csv are also in train with their labels"


def test_a_relabelled_copy_of_the_target_as_a_feature_is_rejected(tmp_path):
    f = frames()
    names = {0: "bronze", 1: "silver", 2: "gold"}
    f["train"] = f["train"].assign(grade=f["train"]["target"].map(names))
    for split in ("validation", "test"):  # a leaky feature ships in every split
        f[split] = f[split].assign(grade=f[f"labels_{split}"]["target"].map(names).to_numpy())
    records = probe_leaks(make_task(tmp_path / "t", f))
    assert [r.reason for r in records] == ["labels_in_workspace", "target_copy"]
    assert records[1].detail == "workspace/data/train.csv column 'grade' is relabelled of target 'target'"
    assert records[0].detail == (
        "workspace/data/test.csv column 'grade' holds (relabelled) labels_test.csv column 'target'; "
        "workspace/data/validation.csv column 'grade' holds (relabelled) labels_validation.csv column 'target'")


@pytest.mark.parametrize("transform, how", [
    (lambda y: y, "a copy"), (lambda y: 2.5 * y - 7, "affine"), (lambda y: np.exp(y / 10), "monotone"),
])
def test_numeric_target_copies_in_train_are_rejected(tmp_path, transform, how):
    f = frames(regression=True)
    f["train"] = f["train"].assign(leak=transform(f["train"]["target"]))
    spec = make_task(tmp_path / "t", f, metric="rmse", direction="min", baseline=1.3)
    [reject] = probe_leaks(spec)
    assert reject.reason == "target_copy"
    assert reject.detail == f"workspace/data/train.csv column 'leak' is {how} of target 'target'"


def test_determines_needs_enough_rows_and_a_full_one_to_one_map():
    t = pd.Series([0, 1, 2] * 10)
    assert determines(pd.Series(["a", "b", "c"] * 10), t) == "relabelled"
    assert determines(pd.Series(["a", "b", "c"] * 3), pd.Series([0, 1, 2] * 3)) is None  # 9 rows: could be chance
    assert determines(pd.Series(["a", "b", "b"] * 10), t) is None  # not one-to-one
    assert determines(pd.Series(["a", "b", None] * 10), t) is None  # does not cover every row
    assert determines(pd.Series(range(30)), t) is None  # an id is not a relabelling
    y = pd.Series(np.linspace(0, 1, 30))
    assert determines(y + np.random.default_rng(0).normal(scale=0.3, size=30), y) is None


def test_baseline_and_constant_submission_at_the_ceiling_are_rejected(tmp_path):
    spec = make_task(tmp_path / "t", frames(), baseline=1.0)
    assert reasons(spec) == ["baseline_at_ceiling"]
    assert probe_leaks(spec)[0].detail == "the baseline's accuracy is at its ceiling on validation, test"
    clean = make_task(tmp_path / "c", frames())
    assert reasons(clean, constant_scores={"accuracy": 1.0}) == ["constant_at_ceiling"]
    assert reasons(clean, constant_scores={"accuracy": 0.34}) == []


def test_measured_baseline_scores_override_task_yaml(tmp_path):
    spec = make_task(tmp_path / "t", frames(), baseline=1.0)
    assert reasons(spec, baseline_scores={"validation": {"accuracy": 0.7}, "test": {"accuracy": 0.65}}) == []
    clean = make_task(tmp_path / "c", frames())
    records = probe_leaks(clean, baseline_scores={"validation": {"accuracy": 0.8}, "test": {"accuracy": 1.0}})
    assert [(r.reason, r.detail) for r in records] == [
        ("baseline_at_ceiling", "the baseline's accuracy is at its ceiling on test")]


def test_score_rejects_for_a_minimised_metric():
    records = score_rejects("t", "rmse", "min", baseline={"validation": {"rmse": 0.0}}, constant={"rmse": 2.0})
    assert [(r.item_id, r.reason) for r in records] == [("t", "baseline_at_ceiling")]


@pytest.mark.parametrize("metric, direction, value, expected", [
    ("accuracy", "max", 1.0, True), ("accuracy", "max", 0.999, False), ("validation_accuracy", "max", 1.0, True),
    ("f1_macro", "max", 1.0, True), ("roc_auc", "max", 1.0, True), ("r2", "max", 1.0, True), ("r2", "max", 0.9, False),
    ("rmse", "min", 0.0, True), ("rmse", "min", 1e-3, False), ("mae", "min", 0.0, True), ("val_loss", "min", 0.0, True),
    ("rmse", "max", 1e9, False), ("Reward Mean", "max", 1e9, False), ("accuracy", "max", None, False),
    ("accuracy", "max", float("nan"), False),
])
def test_ceiling_check(metric, direction, value, expected):
    assert ceiling_check(metric, direction, value) is expected


def test_metric_bounds_know_prefixed_names():
    assert metric_bounds("test_macro_f1") == (0.0, 1.0)
    assert metric_bounds("BLEU Score") is None


def test_difficulty_is_signed_by_direction_and_none_safe():
    def dump(*args):
        return estimate_difficulty(*args).model_dump()

    assert dump("max", 0.6, 0.75) == {"baseline": 0.6, "teacher_best": 0.75, "headroom": 0.75 - 0.6}
    assert dump("min", 2.0, 2.5)["headroom"] == -0.5
    assert dump("min", None, 2.5) == {"baseline": None, "teacher_best": 2.5, "headroom": None}
    assert dump("max", float("nan"), 1.0) == {"baseline": None, "teacher_best": 1.0, "headroom": None}
