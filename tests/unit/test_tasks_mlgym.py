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
    hub_ids_in_code,
    import_mlgym_task,
    imported_packages,
    normalize_package,
    parse_requirements,
    resolve_task_config,
)
from engine.tasks.check import baseline_command

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


def _stop_line(tmp_path: Path, task: str, **kw) -> str:
    with pytest.raises(UnsupportedTaskError) as info:
        import_mlgym_task(FIXTURE, task, tmp_path, **kw)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    text = str(info.value)
    assert "\n" not in text
    return text


def test_hub_task_names_the_dataset_first_and_the_packages_with_cli_flags(tmp_path: Path) -> None:
    assert _stop_line(tmp_path, "imageClassificationCifar10") == (
        "MLGym task 'imageClassificationCifar10' (configs/tasks/imageClassificationCifar10.yaml) cannot be imported; "
        "it needs the Hub dataset uoft-cs/cifar10: rerun with --materialise to download it into the workspace through "
        "huggingface_hub (needs network; set HF_TOKEN for a gated dataset); and packages the task image lacks "
        "(datasets, torch, torchvision): add them to the task image and name each with --image-package, or pass "
        "--allow-unsupported to import it anyway"
    )
    # forcing past packages does not write a Hub id nothing has fetched
    assert _stop_line(tmp_path, "imageClassificationCifar10", allow_unsupported=True).endswith(
        "needs the Hub dataset uoft-cs/cifar10: rerun with --materialise to download it into the workspace through "
        "huggingface_hub (needs network; set HF_TOKEN for a gated dataset)")


def test_missing_data_folder_names_the_helper_that_makes_it(tmp_path: Path) -> None:
    assert _stop_line(tmp_path, "imageCaptioningCOCO") == (
        "MLGym task 'imageCaptioningCOCO' (configs/tasks/imageCaptioningCOCO.yaml) cannot be imported; it needs the "
        "data folder data/imageCaptioningCOCO/data (configs/datasets/coco.yaml), which the checkout lacks: make it "
        "with MLGym's helper data/imageCaptioningCOCO/_helpers/make_split.py"
    )
    repo = tmp_path / "mlgym"
    shutil.copytree(FIXTURE, repo)
    shutil.rmtree(repo / "data/imageCaptioningCOCO/_helpers")
    with pytest.raises(UnsupportedTaskError, match="which the checkout lacks and no MLGym helper makes: put the "):
        import_mlgym_task(repo, "imageCaptioningCOCO", tmp_path / "out")


def test_missing_package_names_the_flags_and_image_packages_or_the_flag_import_it(tmp_path: Path) -> None:
    assert _stop_line(tmp_path, "rlMountainCarContinuous").endswith(
        "it needs packages the task image lacks (gymnax): add them to the task image and name each with "
        "--image-package, or pass --allow-unsupported to import it anyway")
    have = {"numpy", "pandas", "gymnax"}
    spec = import_mlgym_task(FIXTURE, "rlMountainCarContinuous", tmp_path / "a", have)
    assert (spec.config.task_entrypoint, spec.config.requirements) == ("ModelSubmissionTasks", ["gymnax"])
    assert spec.baseline == {"Reward Mean": -12.5, "Reward Std": 3.0}
    forced = import_mlgym_task(FIXTURE, "rlMountainCarContinuous", tmp_path / "b", allow_unsupported=True)
    assert json.loads((forced.root / "provenance.json").read_text())["unsupported_packages"] == ["gymnax"]
    assert check_supported(forced) == ["gymnax"] and check_supported(forced, have) == []


def test_game_with_negative_baseline_keeps_mlgyms_metric_exactly(tmp_path: Path) -> None:
    spec = import_mlgym_task(FIXTURE, "blotto", tmp_path)
    assert (spec.config.metric, spec.config.direction, spec.config.submission_path) == ("Score", "max", "target.py")
    assert spec.baseline == {"Score": -0.3333333333333333}
    assert spec.config.baseline_paths == ["evaluate.py"] and spec.read_only_paths == ["evaluate.py"]


def test_shared_id_imports_by_config_file(tmp_path: Path) -> None:
    plain = resolve_task_config(FIXTURE, "imageClassificationCifar10")
    variant = resolve_task_config(FIXTURE, "imageClassificationCifar10L1.yaml")
    assert (plain.path.name, plain.task_id) == ("imageClassificationCifar10.yaml", "imageClassificationCifar10")
    assert (variant.path.name, variant.mlgym_id, variant.task_id) == (
        "imageClassificationCifar10L1.yaml", "imageClassificationCifar10", "imageClassificationCifar10L1")
    assert resolve_task_config(FIXTURE, "imageClassificationCifar10L1") == variant
    assert resolve_task_config(FIXTURE, FIXTURE / "configs/tasks/imageClassificationCifar10L1.yaml") == variant
    assert available_task_ids(FIXTURE)["imageClassificationCifar10"] == plain.path
    assert _stop_line(tmp_path, "imageClassificationCifar10L1", allow_unsupported=True).startswith(
        "MLGym task 'imageClassificationCifar10L1' (configs/tasks/imageClassificationCifar10L1.yaml) cannot be")
    repo = tmp_path / "mlgym"
    shutil.copytree(FIXTURE, repo)
    (repo / "configs/tasks/imageClassificationCifar10.yaml").rename(repo / "configs/tasks/cifarPlain.yaml")
    with pytest.raises(TaskError, match="^MLGym id 'imageClassificationCifar10' is shared by cifarPlain.yaml, "
                                        "imageClassificationCifar10L1.yaml; name the config file instead$"):
        resolve_task_config(repo, "imageClassificationCifar10")


def test_task_outside_the_benchmark_needs_metric_and_direction(tmp_path: Path) -> None:
    assert _stop_line(tmp_path, "titanic") == (
        "MLGym task 'titanicSurvival' (configs/tasks/titanic.yaml) cannot be imported; it needs a metric: "
        "'titanicSurvival' is not one of the 13 MLGym-Bench tasks whose metrics are known; pass --metric (its "
        "baseline reports Accuracy) and --direction max or min"
    )
    assert _stop_line(tmp_path, "titanicSurvival", metric="accuracy", direction="max").endswith(
        "it needs a metric its baseline_scores has: --metric 'accuracy' is not one of Accuracy")
    assert _stop_line(tmp_path, "titanic", metric="Accuracy").endswith(
        "the direction of metric 'Accuracy': pass --direction max or min")
    spec = import_mlgym_task(FIXTURE, "titanic", tmp_path, metric="Accuracy", direction="max")
    assert (spec.id, spec.config.baseline_paths, spec.config.sample_submission) == (
        "titanicSurvival", [], "sample_submission.csv")
    assert baseline_command(spec) == "cp sample_submission.csv submission.csv"


def test_every_problem_of_a_config_is_in_its_one_line(tmp_path: Path) -> None:
    repo = tmp_path / "mlgym"
    shutil.copytree(FIXTURE, repo)
    cfg = repo / "configs/tasks/battleOfSexes.yaml"
    text = cfg.read_text().replace("task_entrypoint: PythonSubmissionTasks", "task_entrypoint: BaseMLTask")
    cfg.write_text(text.replace("training_timeout", "dataset_configs:\n  - datasets/nope.yaml\ntraining_timeout"))
    with pytest.raises(UnsupportedTaskError) as info:
        import_mlgym_task(repo, "battleOfSexes", tmp_path / "out")
    assert str(info.value) == (
        "MLGym task 'battleOfSexes' (configs/tasks/battleOfSexes.yaml) cannot be imported; it needs a runnable task "
        "class: task_entrypoint 'BaseMLTask' is none of CSVSubmissionTasks, ModelSubmissionTasks, LMSubmissionTasks, "
        "PythonSubmissionTasks; and the dataset config configs/datasets/nope.yaml, which the checkout lacks: write it "
        "(name, description, data_path, is_local) or use a checkout that has it"
    )


def test_hub_ids_in_code() -> None:
    code = {"a.py": "from datasets import load_dataset\nx = load_dataset('SetFit/mnli')\n"
                    "import datasets\ny = datasets.load_dataset('multi_nli', split='test')\n"
                    "z = load_dataset('csv', data_files='a.csv')\nw = load_dataset('./local')\n",
            "b.py": "def (:\n"}
    assert hub_ids_in_code(code) == ["SetFit/mnli", "multi_nli"]


def test_unknown_task_lists_available_ids(tmp_path: Path) -> None:
    with pytest.raises(TaskError) as info:
        import_mlgym_task(FIXTURE, "prisonersDilemma", tmp_path)
    assert str(info.value) == (
        f"no MLGym task 'prisonersDilemma' in {FIXTURE}/configs/tasks; available: battleOfSexes, blotto, "
        "imageCaptioningCOCO, imageClassificationCifar10, imageClassificationCifar10L1, imageClassificationFMnist, "
        "regressionKaggleHousePrice, rlMountainCarContinuous, titanicSurvival"
    )


def test_task_found_by_id_field_not_file_name_and_metric_override(tmp_path: Path) -> None:
    repo = tmp_path / "mlgym"
    shutil.copytree(FIXTURE, repo)
    text = (repo / "configs/tasks/battleOfSexes.yaml").read_text().replace("id: battleOfSexes", "id: coordination")
    (repo / "configs/tasks/game.yaml").write_text(text)
    assert available_task_ids(repo)["coordination"] == repo / "configs/tasks/game.yaml"
    with pytest.raises(TaskError, match="'coordination' is not one of the 13 MLGym-Bench .*pass --metric "
                                        r"\(its baseline reports Score\) and --direction max or min$"):
        import_mlgym_task(repo, "coordination", tmp_path / "out")
    with pytest.raises(TaskError, match="the direction of metric 'Score': pass --direction max or min$"):
        import_mlgym_task(repo, "coordination", tmp_path / "out", metric="Score")
    spec = import_mlgym_task(repo, "game.yaml", tmp_path / "out", metric="Score", direction="max")
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
    with pytest.raises(UnsupportedTaskError, match="it needs its starter_code data/x.py, which the checkout lacks"):
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
