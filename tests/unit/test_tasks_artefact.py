"""Submission artefact rules per entrypoint: resolution, grader commands, metrics parsing and splitting."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import engine.tasks.artefact as artefact_module
from engine.errors import GradingError, TaskError
from engine.tasks.artefact import (
    MissingArtefactError,
    grade_output,
    grader_command,
    parse_metrics,
    resolve_artefact,
    split_metrics,
)
from engine.tasks.spec import TaskConfig, TaskSpec


def spec(entrypoint: str = "CSVSubmissionTasks", **fields: object) -> TaskSpec:
    config = TaskConfig(id="t", name="t", description="d", metric="acc", task_entrypoint=entrypoint, **fields)
    return TaskSpec(root=Path("/tasks/t"), config=config)


def test_docstring_examples() -> None:
    assert doctest.testmod(artefact_module).failed == 0


@pytest.mark.parametrize(
    ("entrypoint", "fields", "files", "expected"),
    [
        ("CSVSubmissionTasks", {}, ["baseline.py", "submission.csv"], "submission.csv"),
        ("CSVSubmissionTasks", {}, [], "submission.csv"),
        ("CSVSubmissionTasks", {"submission_path": "out/preds.csv"}, ["./out/preds.csv"], "out/preds.csv"),
        ("ModelSubmissionTasks", {}, ["src/config.yaml", "train.py", "b.yaml", "a.yaml"], "a.yaml"),
        ("ModelSubmissionTasks", {}, ["./src/config.yaml", "train.py"], "src/config.yaml"),
        ("ModelSubmissionTasks", {"submission_path": "cfg/model.yaml"}, [], "cfg/model.yaml"),
        ("PythonSubmissionTasks", {"submission_path": "strategy.py"}, ["strategy.py"], "strategy.py"),
        ("LMSubmissionTasks", {}, ["train.py"], None),
    ],
)
def test_resolve_artefact(entrypoint: str, fields: dict, files: list[str], expected: str | None) -> None:
    assert resolve_artefact(spec(entrypoint, **fields), files) == expected


def test_model_task_without_yaml_is_a_missing_artefact() -> None:
    with pytest.raises(MissingArtefactError, match=r"\*\.yaml config of your trained model"):
        resolve_artefact(spec("ModelSubmissionTasks"), ["train.py", "notes.yml"])
    assert issubclass(MissingArtefactError, GradingError)


def test_python_task_without_submission_path_is_a_task_error() -> None:
    with pytest.raises(TaskError, match="field 'submission_path': required for PythonSubmissionTasks"):
        resolve_artefact(spec("PythonSubmissionTasks"), ["target.py"])


@pytest.mark.parametrize(
    ("entrypoint", "fields", "artefact", "expected"),
    [
        ("CSVSubmissionTasks", {}, "submission.csv", "python evaluate.py --submission_file submission.csv"),
        ("CSVSubmissionTasks", {}, "my sub.csv", "python evaluate.py --submission_file 'my sub.csv'"),
        ("ModelSubmissionTasks", {}, "src/config.yaml", "python evaluate.py --config_fname src/config.yaml"),
        ("PythonSubmissionTasks", {"submission_path": "s.py"}, "s.py", "python evaluate.py"),
        ("LMSubmissionTasks", {}, None, "torchrun --nproc_per_node=1 --standalone evaluate.py"),
        ("LMSubmissionTasks", {"gpus": 4}, None, "torchrun --nproc_per_node=4 --standalone evaluate.py"),
        (
            "CSVSubmissionTasks",
            {"grading": "mlgym", "evaluation_paths": ["eval/evaluate.py"]},
            "submission.csv",
            "python eval/evaluate.py --submission_file submission.csv",
        ),
    ],
)
def test_grader_command(entrypoint: str, fields: dict, artefact: str | None, expected: str) -> None:
    assert grader_command(spec(entrypoint, **fields), artefact) == expected


def test_grader_command_gpu_override_and_missing_artefact() -> None:
    assert grader_command(spec("LMSubmissionTasks", gpus=2), None, gpus=8) == (
        "torchrun --nproc_per_node=8 --standalone evaluate.py"
    )
    with pytest.raises(GradingError, match="needs the artefact's path"):
        grader_command(spec(), None)


def test_parse_metrics_whole_stdout_for_csv_and_python() -> None:
    assert parse_metrics("CSVSubmissionTasks", ' {"acc": 0.5, "n": 3}\n') == {"acc": 0.5, "n": 3}
    nested = '{"validation": {"acc": 0.5}, "test": {"acc": 0.25}}'
    assert parse_metrics("PythonSubmissionTasks", nested) == {"validation": {"acc": 0.5}, "test": {"acc": 0.25}}
    with pytest.raises(GradingError, match=r"^evaluation printed no JSON metrics \(Expecting value at line 1 column 1\)"):
        parse_metrics("CSVSubmissionTasks", 'warning: slow\n{"acc": 0.5}')


def test_parse_metrics_first_brace_line_for_model_and_lm() -> None:
    out = "epoch 1\n  {\"Reward Mean\": -3.5, \"Reward Std\": 1}\n{\"ignored\": 1}\n"
    assert parse_metrics("ModelSubmissionTasks", out) == {"Reward Mean": -3.5, "Reward Std": 1}
    assert parse_metrics("LMSubmissionTasks", 'x\n{"val_loss": 3.2}') == {"val_loss": 3.2}


def test_parse_metrics_no_json_messages_carry_the_output() -> None:
    with pytest.raises(GradingError) as info:
        parse_metrics("ModelSubmissionTasks", "Traceback: boom\n")
    assert str(info.value) == (
        "evaluation printed no JSON metrics (no line starts with '{'); the evaluation script must print the "
        "metrics as one JSON object. Output:\nTraceback: boom"
    )
    with pytest.raises(GradingError, match=r"Output:\n\(empty\)$"):
        parse_metrics("CSVSubmissionTasks", "  \n")


def test_parse_metrics_not_an_object() -> None:
    with pytest.raises(GradingError, match=r"^evaluation output is JSON but not an object \(got a list: \[0\.5\]\)"):
        parse_metrics("CSVSubmissionTasks", "[0.5]")


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        ('{"acc": "high"}', "non-numeric metric 'acc': 'high'"),
        ('{"acc": true}', "non-numeric metric 'acc': True"),
        ('{"acc": null}', "non-numeric metric 'acc': None"),
        ('{"validation": {"acc": [1]}}', "non-numeric metric 'validation.acc': [1]"),
        ('{"acc": NaN}', "non-finite metric 'acc': nan"),
        ('{"test": {"acc": Infinity}}', "non-finite metric 'test.acc': inf"),
    ],
)
def test_parse_metrics_rejects_bad_values(stdout: str, message: str) -> None:
    with pytest.raises(GradingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_metrics("CSVSubmissionTasks", stdout)


def test_split_metrics_separate() -> None:
    obj = {"validation": {"acc": 0.5, "n": 2}, "test": {"acc": 0}}
    validation, test = split_metrics(obj, "separate", "acc")
    assert validation == {"acc": 0.5, "n": 2.0} and test == {"acc": 0.0}
    assert isinstance(test["acc"], float)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"validation": {"acc": 0.5}}, "grader output lacks ['test']; a separate grader prints exactly"),
        ({"acc": 0.5}, "grader output lacks ['validation', 'test']"),
        ({"validation": {"acc": 1}, "test": {"acc": 1}, "n": 3}, "grader output has unexpected keys ['n']"),
        ({"validation": 0.5, "test": {"acc": 1}}, "grader output's 'validation' is 0.5; it must be a non-empty object"),
        ({"validation": {}, "test": {"acc": 1}}, "grader output's 'validation' is {}; it must be a non-empty object"),
        ({"validation": {"acc": 1}, "test": {"f1": 1}}, "grader output lacks the primary metric 'acc' in 'test'"),
        (
            {"validation": {"acc": 1}, "test": {"acc": -0.5}},
            "grader output's test.acc is -0.5, negative; task metrics must be non-negative: report the metric with a "
            "documented offset",
        ),
    ],
)
def test_split_metrics_separate_errors(obj: dict, message: str) -> None:
    with pytest.raises(GradingError) as info:
        split_metrics(obj, "separate", "acc")
    assert str(info.value).startswith(message)


def test_split_metrics_mlgym_is_flat_and_may_be_negative() -> None:
    validation, test = split_metrics({"Reward Mean": -12.5, "Reward Std": 3}, "mlgym", "Reward Mean")
    assert validation == test == {"Reward Mean": -12.5, "Reward Std": 3.0}
    assert validation is not test
    with pytest.raises(GradingError, match=r"nests objects under \['validation'\]"):
        split_metrics({"validation": {"a": 1}}, "mlgym")
    with pytest.raises(GradingError, match="lacks the primary metric 'Score' in the output"):
        split_metrics({"score": 1}, "mlgym", "Score")


def test_grade_output_uses_the_task() -> None:
    separate = spec()
    assert grade_output(separate, '{"validation": {"acc": 0.9}, "test": {"acc": 0.8}}') == ({"acc": 0.9}, {"acc": 0.8})
    mlgym = spec("ModelSubmissionTasks", grading="mlgym")
    assert grade_output(mlgym, 'log\n{"acc": 0.7}') == ({"acc": 0.7}, {"acc": 0.7})
