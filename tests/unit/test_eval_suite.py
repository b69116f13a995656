"""The evaluation suite: listed task folders plus MLGym tasks imported from a checkout (the fake one in
tests/fixtures/mlgym), and the config errors around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import RunConfig
from engine.errors import ConfigError, TaskError
from engine.evaluate.stage import eval_suite

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mlgym"


def _cfg(tmp_path, **eval_section) -> RunConfig:
    return RunConfig.model_validate({"run_dir": str(tmp_path / "run"), "eval": eval_section})


def test_listed_folders_and_named_mlgym_tasks_make_the_suite(tmp_path):
    cfg = _cfg(tmp_path, tasks=[str(ROOT / "examples/tasks/wine-classification")], mlgym_dir=str(FIXTURE),
               mlgym_tasks=["regressionKaggleHousePrice"])
    tasks = eval_suite(cfg)
    assert [t.id for t in tasks] == ["wine-classification", "regressionKaggleHousePrice"]
    assert tasks[1].root == tmp_path / "run" / "eval" / "suite" / "regressionKaggleHousePrice"
    assert tasks[1].config.grading == "mlgym"


def test_an_unknown_mlgym_task_named_explicitly_is_an_error(tmp_path):
    with pytest.raises(TaskError, match="no MLGym task 'nope'"):
        eval_suite(_cfg(tmp_path, mlgym_dir=str(FIXTURE), mlgym_tasks=["nope"]))


def test_an_empty_suite_and_tasks_without_a_checkout_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="suite is empty"):
        eval_suite(_cfg(tmp_path))
    with pytest.raises(ConfigError, match="mlgym_dir is not"):
        _cfg(tmp_path, mlgym_tasks=["x"])


def test_method_names_must_be_unique_and_not_the_baseline(tmp_path):
    m = {"name": "a", "model": {"provider": "heuristic"}}
    with pytest.raises(ConfigError, match="appear twice"):
        _cfg(tmp_path, methods=[m, m])
    with pytest.raises(ConfigError, match="baseline row"):
        _cfg(tmp_path, methods=[{**m, "name": "baseline"}])
    with pytest.raises(ConfigError, match="exactly one of"):
        _cfg(tmp_path, methods=[{"name": "b"}])



def test_the_default_mlgym_suite_is_mlgym_bench_without_its_variants(tmp_path, monkeypatch):
    # the fixture checkout holds bench tasks beside variants (an L1 config sharing CIFAR-10's id, titanic): only the
    # bench ids are tried by default; the others need naming
    import engine.tasks.mlgym as mlgym

    tried: list[str] = []
    real = mlgym.import_mlgym_task

    def recording(mlgym_dir, task_id, out):
        tried.append(task_id)
        return real(mlgym_dir, task_id, out)

    monkeypatch.setattr(mlgym, "import_mlgym_task", recording)
    tasks = eval_suite(_cfg(tmp_path, mlgym_dir=str(FIXTURE)))
    assert {"imageClassificationCifar10L1", "titanicSurvival"} <= set(mlgym.available_task_ids(FIXTURE))
    assert tried and set(tried) <= set(mlgym.MLGYM_METRICS)
    assert {t.id for t in tasks} <= set(tried)
