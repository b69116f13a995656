"""Importing MLGym task configs end to end (tests/fixtures/mlgym): the CLI's flags and one-line stops, Hub datasets
materialised from a loopback Hub, `task check` on a negative MLGym baseline, and heuristic episodes on an imported
game and imported CSV tasks (the generic playbook: inspect, run the baseline, validate, submit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from engine.agent.episode import run_episode
from engine.agent.heuristic import HeuristicModel
from engine.cli import app
from engine.config import AgentConfig, SamplingConfig, SandboxConfig
from engine.protocols import SandboxSpec
from engine.sandbox import make_runtime
from engine.tasks.folder import load_task
from engine.tasks.grading import TaskGrader
from engine.testing.loopback_hub import LoopbackDataset

try:
    from tests.hub_fixtures import TOKEN_ENV, by_id
except ImportError:  # tests/ is not a package
    from hub_fixtures import TOKEN_ENV, by_id

MLGYM = Path(__file__).resolve().parents[1] / "fixtures" / "mlgym"
SANDBOX = dict(memory_mb=2048, pids_limit=128, workspace_mb=64)
FMNIST_TRAIN = b"x,label\n1,3\n2,3\n3,1\n"
FMNIST_TEST = b"x,label\n4,3\n5,1\n"

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


@pytest.fixture(scope="module")
def hub_datasets() -> dict[str, LoopbackDataset]:
    return by_id(LoopbackDataset(id="zalando-datasets/fashion_mnist",
                                 files={"train.csv": FMNIST_TRAIN, "test.csv": FMNIST_TEST}),
                 LoopbackDataset(id="uoft-cs/cifar10", files={"plain_text/test-0.parquet": b"not read"}))


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _hub_config_file(tmp_path: Path, hub) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"synth": {"hub": {"endpoint": hub.endpoint, "token_env": TOKEN_ENV}}}))
    return path


def test_cli_stops_with_one_line_naming_what_is_missing(tmp_path: Path) -> None:
    code, text = _run("task", "import-mlgym", MLGYM, "titanic", "--out", tmp_path)
    assert code == 2 and "pass --metric (its baseline reports Accuracy) and --direction max or min" in text
    code, text = _run("task", "import-mlgym", MLGYM, "titanic", "--out", tmp_path, "--metric", "Accuracy",
                      "--direction", "up")
    assert code == 2 and "--direction 'up': use max or min" in text
    code, text = _run("task", "import-mlgym", MLGYM, "rlMountainCarContinuous", "--out", tmp_path)
    assert code == 2 and "name each with --image-package, or pass --allow-unsupported" in text
    assert "allow_unsupported=" not in text
    code, text = _run("task", "import-mlgym", MLGYM, "imageCaptioningCOCO", "--out", tmp_path)
    assert code == 2 and "make it with MLGym's helper data/imageCaptioningCOCO/_helpers/make_split.py" in text
    code, text = _run("task", "import-mlgym", MLGYM, "imageClassificationFMnist", "--out", tmp_path)
    assert code == 2 and "the Hub dataset zalando-datasets/fashion_mnist: rerun with --materialise" in text
    assert list(tmp_path.iterdir()) == []

    code, text = _run("task", "import-mlgym", MLGYM, "rlMountainCarContinuous", "--out", tmp_path,
                      "--image-package", "gymnax")
    assert code == 0, text
    code, text = _run("task", "import-mlgym", MLGYM, "titanic", "--out", tmp_path, "--metric", "Accuracy",
                      "--direction", "max")
    assert code == 0 and "imported titanicSurvival" in text and "(metric Accuracy, max)" in text


@pytest.mark.usefixtures("hub_env")
def test_materialised_hub_task_imports_and_checks(tmp_path: Path, hub) -> None:
    cfg = _hub_config_file(tmp_path, hub)
    code, text = _run("task", "import-mlgym", MLGYM, "imageClassificationFMnist", "--out", tmp_path / "t",
                      "--materialise", "--config", cfg)
    assert code == 0, text
    spec = load_task(tmp_path / "t" / "imageClassificationFMnist")
    sha = hub.main_sha("zalando-datasets/fashion_mnist")
    assert [(d.data_path, d.is_local, d.revision) for d in spec.datasets] == [
        ("zalando-datasets/fashion_mnist", False, sha)]
    assert (spec.workspace_dir / "zalando-datasets/fashion_mnist/test.csv").read_bytes() == FMNIST_TEST
    assert spec.config.read_only_paths == ["zalando-datasets/fashion_mnist"]
    assert spec.config.starter_code == ["baseline.py", "evaluate.py"]
    provenance = json.loads((spec.root / "provenance.json").read_text())
    assert provenance["hub_datasets"] == {"zalando-datasets/fashion_mnist": sha}
    code, text = _run("task", "check", spec.root)
    assert code == 0 and "{'accuracy': 0.5}" in text, text


@pytest.mark.usefixtures("hub_env")
def test_shared_id_variant_imports_by_file_beside_the_plain_one(tmp_path: Path, hub) -> None:
    cfg, out = _hub_config_file(tmp_path, hub), tmp_path / "t"
    flags = ["--materialise", "--config", cfg, "--image-package", "torch", "--image-package", "torchvision",
             "--image-package", "datasets"]
    for name in ("imageClassificationCifar10", "imageClassificationCifar10L1.yaml"):
        code, text = _run("task", "import-mlgym", MLGYM, name, "--out", out, *flags)
        assert code == 0, text
    plain, variant = load_task(out / "imageClassificationCifar10"), load_task(out / "imageClassificationCifar10L1")
    assert (plain.id, plain.config.baseline_paths) == ("imageClassificationCifar10", ["baseline.py"])
    assert (variant.id, variant.config.baseline_paths, variant.config.metric) == (
        "imageClassificationCifar10L1", [], "accuracy")
    assert json.loads((variant.root / "provenance.json").read_text())["mlgym_id"] == "imageClassificationCifar10"


def test_check_reports_a_negative_mlgym_baseline(tmp_path: Path) -> None:
    code, text = _run("task", "import-mlgym", MLGYM, "blotto", "--out", tmp_path)
    assert code == 0 and "MLGym's baseline: {'Score': -0.3333333333333333}" in text
    code, text = _run("task", "check", tmp_path / "blotto")
    assert code == 0, text
    assert "note: baseline: test metric 'Score' is negative (-0.3333333333333333)" in text and "ok" in text


def test_heuristic_plays_imported_game_and_csv_tasks_to_a_submission(tmp_path: Path) -> None:
    from engine.tasks.mlgym import import_mlgym_task

    tasks = [import_mlgym_task(MLGYM, "blotto", tmp_path),
             import_mlgym_task(MLGYM, "regressionKaggleHousePrice", tmp_path),
             import_mlgym_task(MLGYM, "titanic", tmp_path, metric="Accuracy", direction="max")]
    runtime = make_runtime(SandboxConfig(runtime="local", **SANDBOX), run_id="it-mlgym-import")
    model = HeuristicModel(tasks)
    for task in tasks:
        with runtime.start(SandboxSpec(workspace=task.workspace_dir, read_only_paths=task.read_only_paths)) as sb, \
                TaskGrader(task, runtime, timeout_s=120) as grader:
            rec = run_episode(task, model, sb, grader, AgentConfig(max_steps=10), seed=1, run_id="it",
                              sampling=SamplingConfig(), policy="heuristic")
        assert rec.infra_error is None and rec.exit_status == "submitted", (task.id, rec.exit_status)
        final = rec.scores[-1]
        assert final.kind == "submit" and final.ok, (task.id, final)
        metric = task.config.metric
        assert final.test[metric] == pytest.approx(task.baseline[metric], rel=1e-6), (task.id, final.test)
