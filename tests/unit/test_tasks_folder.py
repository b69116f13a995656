"""Task folder loading, validation errors, atomic saving, discovery and the agent-facing description."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import TaskError
from engine.tasks.folder import (
    TaskParts,
    describe,
    find_tasks,
    load_task,
    save_task,
)
from engine.tasks.spec import DatasetConfig, TaskConfig

TASK_YAML = """\
id: toy
name: Toy task
description: |-
  Predict y.
  {dataset_docs}
  Submit submission.csv.
dataset_configs:
  - dataset.yaml
starter_code:
  - baseline.py
baseline_paths:
  - baseline.py
baseline_scores:
  - {acc: 0.5}
metric: acc
"""

DATASET_YAML = """\
name: toyData
description: |
  Two columns, x and y.
data_path: workspace/data
splits:
  train: train.csv
"""


def make_task(root: Path, task_yaml: str = TASK_YAML, *, grader: bool = True) -> Path:
    (root / "workspace" / "data").mkdir(parents=True)
    (root / "workspace" / "baseline.py").write_text("print('hi')\n")
    (root / "workspace" / "data" / "train.csv").write_text("x,y\n1,2\n")
    (root / "task.yaml").write_text(task_yaml)
    (root / "dataset.yaml").write_text(DATASET_YAML)
    if grader:
        (root / "grader").mkdir()
        (root / "grader" / "evaluate.py").write_text("print('{}')\n")
    return root


def load_error(root: Path) -> str:
    with pytest.raises(TaskError) as info:
        load_task(root)
    return str(info.value)


def test_load_reads_config_and_datasets(tmp_path: Path) -> None:
    spec = load_task(make_task(tmp_path / "toy"))
    assert spec.id == "toy"
    assert spec.root == (tmp_path / "toy").resolve()
    assert spec.config.metric == "acc" and spec.config.direction == "max" and spec.config.grading == "separate"
    assert [d.name for d in spec.datasets] == ["toyData"]
    assert spec.baseline == {"acc": 0.5}
    assert spec.baseline_test == {}


def test_describe_fills_dataset_docs_mlgym_style(tmp_path: Path) -> None:
    spec = load_task(make_task(tmp_path / "toy"))
    assert describe(spec) == "Predict y.\nTOYDATA:\nTwo columns, x and y.\nSubmit submission.csv."


def test_describe_joins_several_datasets_with_blank_lines_and_keeps_other_braces(tmp_path: Path) -> None:
    spec = load_task(make_task(tmp_path / "toy", TASK_YAML.replace("Submit submission.csv.", 'Print {"acc": 1}.')))
    second = DatasetConfig(name="b", description="second", data_path="hub/b", is_local=False)
    spec = spec.model_copy(update={"datasets": [*spec.datasets, second]})
    assert describe(spec) == 'Predict y.\nTOYDATA:\nTwo columns, x and y.\n\nB:\nsecond\nPrint {"acc": 1}.'


def test_missing_field_names_file_field_and_fix(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML.replace("metric: acc\n", ""))
    assert load_error(root) == f"{root}/task.yaml: field 'metric': Field required; add the primary metric key"


def test_unknown_field_suggests_the_close_one(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML + "metrc: acc\n")
    assert load_error(root) == f"{root}/task.yaml: field 'metrc': unknown field; remove it (did you mean 'metric'?)"


def test_wrong_type_names_the_bad_value(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML + "training_timeout: soon\n")
    message = load_error(root)
    assert message.startswith(f"{root}/task.yaml: field 'training_timeout': Input should be a valid integer")
    assert "(got 'soon'); fix the value (Seconds for commands that run python/training.)" in message


def test_bad_direction_is_rejected(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML + "direction: up\n")
    assert "field 'direction': Input should be 'max' or 'min' (got 'up')" in load_error(root)


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", "id: toy\nname: [unclosed\nmetric: acc\n")
    message = load_error(root)
    assert message.startswith(f"{root}/task.yaml: malformed YAML at line ")
    assert message.endswith("; fix the YAML syntax")


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", "- id: toy\n")
    assert load_error(root) == f"{root}/task.yaml: expected a mapping of fields, got a YAML list"


def test_empty_task_yaml(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", "")
    assert load_error(root) == f"{root}/task.yaml: empty; expected a mapping of fields"


def test_missing_evaluate_py_for_separate_grading(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", grader=False)
    assert load_error(root).startswith(f"{root}/grader/evaluate.py: not found (field 'grading' is 'separate')")


def test_mlgym_grading_needs_evaluation_paths_in_workspace(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML + "grading: mlgym\n", grader=False)
    assert load_error(root) == (
        f"{root}/task.yaml: field 'evaluation_paths': 'evaluate.py' not found in {root}/workspace/; "
        "grading 'mlgym' runs it in the workspace"
    )
    (root / "workspace" / "evaluate.py").write_text("print('{}')\n")
    assert load_task(root).config.grading == "mlgym"


def test_missing_workspace(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy")
    for p in sorted((root / "workspace").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (root / "workspace").rmdir()
    (root / "dataset.yaml").write_text(DATASET_YAML.replace("splits:\n  train: train.csv\n", "").replace("workspace/data", "."))
    assert load_error(root) == (
        f"{root}: no workspace/ folder; a task folder needs workspace/ with the agent's starting files"
    )


def test_missing_starter_file(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy")
    (root / "workspace" / "baseline.py").unlink()
    assert load_error(root) == (
        f"{root}/task.yaml: field 'starter_code': 'baseline.py' not found in {root}/workspace/; "
        "add the file or remove the entry"
    )


def test_path_escaping_the_folder_is_rejected(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML.replace("  - baseline.py\nbaseline_paths", "  - ../x.py\nbaseline_paths"))
    assert "field 'starter_code': '../x.py' must be a relative path inside the task folder" in load_error(root)


def test_python_task_needs_submission_path(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML + "task_entrypoint: PythonSubmissionTasks\n")
    assert load_error(root) == (
        f"{root}/task.yaml: field 'submission_path': required for PythonSubmissionTasks; "
        "name the Python file the agent edits"
    )


def test_baseline_scores_must_hold_the_metric(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML.replace("{acc: 0.5}", "{f1: 0.5}"))
    assert "field 'baseline_scores': first entry {'f1': 0.5} lacks the primary metric 'acc'" in load_error(root)


def test_dataset_errors_name_the_dataset_file(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy")
    (root / "dataset.yaml").write_text(DATASET_YAML.replace("name: toyData\n", ""))
    assert load_error(root) == (
        f"{root}/dataset.yaml: field 'name': Field required; add a short human-readable name"
    )
    (root / "dataset.yaml").write_text(DATASET_YAML.replace("train.csv", "missing.csv"))
    assert load_error(root) == (
        f"{root}/dataset.yaml: field 'splits.train': 'missing.csv' not found in {root}/workspace/data/; add the file"
    )
    (root / "dataset.yaml").unlink()
    assert load_error(root) == (
        f"{root}/task.yaml: field 'dataset_configs': 'dataset.yaml' not found in {root}; add the file or remove the entry"
    )


def test_not_a_task_folder(tmp_path: Path) -> None:
    assert load_error(tmp_path) == f"{tmp_path}/task.yaml: not found; a task folder holds task.yaml"


def test_find_tasks_single_folder_or_parent(tmp_path: Path) -> None:
    b = make_task(tmp_path / "b")
    a = make_task(tmp_path / "a")
    (tmp_path / ".a.tmp-123").mkdir()
    (tmp_path / ".a.tmp-123" / "task.yaml").write_text(TASK_YAML)
    (tmp_path / "notes").mkdir()
    assert find_tasks(tmp_path) == [a, b]
    assert find_tasks(a) == [a]
    with pytest.raises(TaskError, match="no task folders inside"):
        find_tasks(tmp_path / "notes")
    with pytest.raises(TaskError, match="not found; pass a task folder"):
        find_tasks(tmp_path / "nope")


def parts() -> TaskParts:
    config = TaskConfig(
        id="made", name="Made", description="Do it.\n{dataset_docs}", dataset_configs=["dataset.yaml"],
        starter_code=["baseline.py"], baseline_paths=["baseline.py"], metric="acc",
    )  # fmt: skip
    dataset = DatasetConfig(name="d", description="rows", data_path="workspace/data")
    return TaskParts(
        config=config,
        datasets=[dataset],
        workspace={"baseline.py": "print(1)\n", "data/train.csv": b"x\n1\n"},
        grader={"evaluate.py": "print('{}')\n"},
        files={"heuristic.yaml": "moves: []\n"},
        provenance={"source": "test"},
    )


def test_save_parts_writes_a_loadable_folder(tmp_path: Path) -> None:
    spec = save_task(parts(), tmp_path / "made")
    assert spec.config == parts().config
    assert describe(spec) == "Do it.\nD:\nrows"
    assert (tmp_path / "made" / "workspace" / "data" / "train.csv").read_bytes() == b"x\n1\n"
    assert (tmp_path / "made" / "heuristic.yaml").read_text() == "moves: []\n"
    assert json.loads((tmp_path / "made" / "provenance.json").read_text()) == {"source": "test"}
    assert "description: |-\n  Do it.\n  {dataset_docs}\n" in (tmp_path / "made" / "task.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    save_task(parts(), tmp_path / "made")
    with pytest.raises(TaskError, match="already exists; pass overwrite=True"):
        save_task(parts(), tmp_path / "made")
    changed = parts()
    changed.config = changed.config.model_copy(update={"name": "Changed"})
    assert save_task(changed, tmp_path / "made", overwrite=True).config.name == "Changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]


def test_save_of_an_invalid_task_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = parts()
    broken.grader = {}
    with pytest.raises(TaskError) as info:
        save_task(broken, tmp_path / "made")
    assert str(info.value).startswith(f"{tmp_path / 'made'}/grader/evaluate.py: not found")
    assert list(tmp_path.iterdir()) == []


def test_save_spec_copies_folder_and_rewrites_configs(tmp_path: Path) -> None:
    spec = load_task(make_task(tmp_path / "toy"))
    spec.config.name = "Renamed"
    copy = save_task(spec, tmp_path / "copy")
    assert copy.config.name == "Renamed"
    assert copy.datasets == spec.datasets
    assert (tmp_path / "copy" / "grader" / "evaluate.py").read_text() == "print('{}')\n"
    assert load_task(tmp_path / "toy").config.name == "Toy task"


def test_read_only_paths(tmp_path: Path) -> None:
    root = make_task(tmp_path / "toy", TASK_YAML + "grading: mlgym\nread_only_paths: [data]\n", grader=False)
    (root / "workspace" / "evaluate.py").write_text("")
    assert load_task(root).read_only_paths == ["data", "evaluate.py"]
    spec = load_task(make_task(tmp_path / "sep", TASK_YAML + "read_only_paths: [data]\n"))
    assert spec.read_only_paths == ["data"]
