"""The MLGym importer on the fake checkout in tests/fixtures/mlgym, and its requirement detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.errors import TaskError, UnsupportedTaskError
from engine.tasks.folder import describe, load_task
from engine.tasks.mlgym import (
    MLGYM_METRICS,
    available_task_ids,
    check_supported,
    import_mlgym_task,
    imported_packages,
    normalize_package,
    parse_requirements,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mlgym"


def test_metric_table_covers_the_13_benchmark_tasks() -> None:
    assert len(MLGYM_METRICS) == 13
    assert MLGYM_METRICS["languageModelingFineWeb"] == ("val_loss", "min")
    assert MLGYM_METRICS["3SATTime"] == ("Time", "min")
    assert MLGYM_METRICS["rlMountainCarContinuous"] == ("Reward Mean", "max")


def test_csv_task_import(tmp_path: Path) -> None:
    spec = import_mlgym_task(FIXTURE, "regressionKaggleHousePrice", tmp_path)
    cfg = spec.config
    assert spec.root == (tmp_path / "regressionKaggleHousePrice").resolve()
    assert (cfg.metric, cfg.direction, cfg.grading) == ("r2", "max", "mlgym")
    assert cfg.task_entrypoint == "CSVSubmissionTasks"
    assert cfg.starter_code == ["baseline.py", "evaluate.py"]
    assert cfg.baseline_paths == ["baseline.py"] and cfg.evaluation_paths == ["evaluate.py"]
    assert cfg.baseline_scores == [{"rmse": 6485.2677862471755, "r2": 0.9739040645876205}]
    assert cfg.requirements == ["numpy", "pandas", "scikit-learn"]
    assert cfg.read_only_paths == ["data"] and cfg.evaluation_read_only is True
    assert spec.read_only_paths == ["data", "evaluate.py"]
    assert (cfg.gpus, cfg.training_timeout, cfg.requirements_path) == (0, 1800, None)
    files = sorted(p.relative_to(spec.workspace_dir).as_posix() for p in spec.workspace_dir.rglob("*") if p.is_file())
    assert files == ["baseline.py", "data/answer.csv", "data/test.csv", "data/train.csv", "data/validation.csv", "evaluate.py"]
    source = FIXTURE / "data" / "regressionKaggleHousePrice"
    assert (spec.workspace_dir / "evaluate.py").read_bytes() == (source / "evaluate.py").read_bytes()
    assert [(d.name, d.data_path, d.is_local, d.train_split.file_regex) for d in spec.datasets] == [
        ("housePrice", "workspace/data", True, "./data/train*")
    ]
    assert describe(spec).startswith("Predict SalePrice for every row of data/test.csv.\nHOUSEPRICE:\nSynthetic house sales.")
    assert load_task(spec.root) == spec


def test_provenance_says_where_it_came_from(tmp_path: Path) -> None:
    spec = import_mlgym_task(FIXTURE, "regressionKaggleHousePrice", tmp_path)
    provenance = json.loads((spec.root / "provenance.json").read_text())
    assert provenance["source"] == "mlgym"
    assert provenance["mlgym_dir"] == str(FIXTURE.resolve())
    assert provenance["task_config"] == "configs/tasks/regressionKaggleHousePrice.yaml"
    assert provenance["dropped_fields"] == {"benchmark_name": "fixtureBench"}
    assert provenance["metric_from"] == "MLGYM_METRICS"


def test_python_task_import(tmp_path: Path) -> None:
    spec = import_mlgym_task(FIXTURE, "battleOfSexes", tmp_path)
    cfg = spec.config
    assert (cfg.task_entrypoint, cfg.submission_path, cfg.metric, cfg.direction) == (
        "PythonSubmissionTasks", "target.py", "Score", "max",
    )  # fmt: skip
    assert cfg.requirements == [] and cfg.read_only_paths == [] and spec.datasets == []
    assert spec.baseline == {"Score": 1.42}
    # MLGym's str.format escapes are undone: our descriptions keep literal braces single.
    assert describe(spec).endswith('The evaluation prints {"Score": <mean payoff per round>}.')


def test_torch_task_is_unsupported_and_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTaskError) as info:
        import_mlgym_task(FIXTURE, "imageClassificationCifar10", tmp_path)
    assert str(info.value).startswith(
        "MLGym task 'imageClassificationCifar10' needs datasets, torch, torchvision, which the task image lacks"
    )
    assert list(tmp_path.iterdir()) == []


def test_unsupported_task_can_be_imported_anyway(tmp_path: Path) -> None:
    spec = import_mlgym_task(FIXTURE, "imageClassificationCifar10", tmp_path, allow_unsupported=True)
    cfg = spec.config
    assert cfg.requirements == ["datasets", "numpy", "pandas", "torch", "torchvision"]
    assert cfg.gpus == 1 and cfg.requirements_path == "requirements.txt" and cfg.use_generic_conda is False
    assert (spec.root / "requirements.txt").read_text().startswith("# fixture")
    assert [(d.data_path, d.is_local) for d in spec.datasets] == [("uoft-cs/cifar10", False)]
    assert json.loads((spec.root / "provenance.json").read_text())["unsupported_packages"] == [
        "datasets", "torch", "torchvision",
    ]  # fmt: skip
    assert check_supported(spec) == ["datasets", "torch", "torchvision"]
    assert check_supported(spec, {"numpy", "pandas", "sklearn", "torch", "torchvision", "datasets"}) == []


def test_image_packages_make_a_task_supported(tmp_path: Path) -> None:
    have = {"numpy", "pandas", "torch", "torchvision", "datasets"}
    assert import_mlgym_task(FIXTURE, "imageClassificationCifar10", tmp_path, have).config.requirements[-1] == "torchvision"
    with pytest.raises(UnsupportedTaskError, match="needs scikit-learn, which"):
        import_mlgym_task(FIXTURE, "regressionKaggleHousePrice", tmp_path, {"numpy", "pandas"})


def test_unknown_task_lists_available_ids(tmp_path: Path) -> None:
    with pytest.raises(TaskError) as info:
        import_mlgym_task(FIXTURE, "blotto", tmp_path)
    assert str(info.value) == (
        f"no MLGym task 'blotto' in {FIXTURE}/configs/tasks; available: battleOfSexes, imageClassificationCifar10, "
        "regressionKaggleHousePrice"
    )


def test_task_found_by_id_field_not_file_name_and_metric_override(tmp_path: Path) -> None:
    repo = tmp_path / "mlgym"
    shutil.copytree(FIXTURE, repo)
    text = (repo / "configs/tasks/battleOfSexes.yaml").read_text().replace("id: battleOfSexes", "id: coordination")
    (repo / "configs/tasks/game.yaml").write_text(text)
    assert available_task_ids(repo)["coordination"] == repo / "configs/tasks/game.yaml"
    with pytest.raises(TaskError, match="'coordination' is not in MLGYM_METRICS .*pass metric= and direction="):
        import_mlgym_task(repo, "coordination", tmp_path / "out")
    with pytest.raises(TaskError, match="no direction known for metric 'Score'"):
        import_mlgym_task(repo, "coordination", tmp_path / "out", metric="Score")
    spec = import_mlgym_task(repo, "coordination", tmp_path / "out", metric="Score", direction="max")
    assert (spec.id, spec.config.metric, spec.config.direction) == ("coordination", "Score", "max")
    assert json.loads((spec.root / "provenance.json").read_text())["metric_from"] == "argument"


def test_bad_mlgym_config_errors_name_the_file(tmp_path: Path) -> None:
    repo = tmp_path / "mlgym"
    shutil.copytree(FIXTURE, repo)
    cfg = repo / "configs/tasks/battleOfSexes.yaml"
    cfg.write_text(cfg.read_text() + "reward_scale: 2\n")
    with pytest.raises(TaskError, match=f"^{cfg}: field 'reward_scale': not an MLGym task field"):
        import_mlgym_task(repo, "battleOfSexes", tmp_path / "out")
    cfg.write_text(cfg.read_text().replace("reward_scale: 2\n", "").replace("data/battleOfSexes/target.py", "data/x.py"))
    with pytest.raises(TaskError, match=f"^{cfg}: field 'starter_code': 'data/x.py' not found in the MLGym checkout"):
        import_mlgym_task(repo, "battleOfSexes", tmp_path / "out")


def test_reimport_needs_overwrite(tmp_path: Path) -> None:
    import_mlgym_task(FIXTURE, "battleOfSexes", tmp_path)
    with pytest.raises(TaskError, match="already exists; pass overwrite=True"):
        import_mlgym_task(FIXTURE, "battleOfSexes", tmp_path)
    assert import_mlgym_task(FIXTURE, "battleOfSexes", tmp_path, overwrite=True).id == "battleOfSexes"


def test_parse_requirements() -> None:
    text = "# c\ntorch>=2.0\nScikit_Learn[all]==1.4 ; python_version>'3'\n-r base.txt\n--index-url x\n\nnumpy  # n\ngymnax @ git+https://x/y\n"
    assert parse_requirements(text) == ["gymnax", "numpy", "scikit-learn", "torch"]


def test_imported_packages_skip_stdlib_local_and_relative() -> None:
    sources = {
        "train.py": "import os, json\nimport numpy as np\nfrom sklearn.linear_model import Ridge\nimport PIL.Image\n",
        "src/model.py": "from . import helpers\nfrom helpers import f\nimport jax.numpy as jnp\nfrom __future__ import annotations\n",
        "broken.py": "def (:\n",
    }
    assert imported_packages(sources, {"helpers", "train", "model"}) == ["jax", "numpy", "pillow", "scikit-learn"]


def test_normalize_package() -> None:
    assert normalize_package("Scikit_Learn") == "scikit-learn"
    assert normalize_package("ruamel.yaml") == "ruamel-yaml"
