"""Task code generation with a scripted teacher: parsing, debug prompts, import checks, the task folder it makes,
and the fixture's code really running on a tiny dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.agent.heuristic import HeuristicPlan
from engine.errors import EngineError
from engine.testing.scripted import ScriptedModel
from engine.protocols import SampleKey
from engine.synth.codegen import (DataSummary, GeneratedCode, apply_move, check_imports, clip_log, generate_task_code,
                                  import_name, requirements_of, task_id_for, to_task_parts)
from engine.synth.records import DatasetProposal, ProposalRecord
from engine.tasks.folder import describe, load_task, save_task
from engine.tasks.spec import DatasetConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "teacher"))
import replies  # noqa: E402  (tests/fixtures/teacher/replies.py)

PACKAGES = ["numpy", "pandas", "scikit-learn"]
PROPOSAL = ProposalRecord(
    proposal_id="0123456789abcdef", topic_id="t0", topic="Predicting rain", domain="tabular",
    name="Next-day rain prediction", description="Predict rain from weather; accuracy, higher is better.",
    task_type="classification", metric="accuracy", direction="max", needs_dataset=True,
    dataset=DatasetProposal(hf_id="example-org/weather-rain", input_columns=replies.FEATURES, target_column="rain"))


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "materialised"
    replies.write_tiny_dataset(root)
    return root


@pytest.fixture
def summary(data_root: Path) -> DataSummary:
    return DataSummary.model_validate(replies.data_summary_dict(data_root))


def test_reply_is_parsed_and_the_prompt_states_the_contract(summary):
    model = ScriptedModel([replies.codegen_reply()])
    code, call = generate_task_code(model, PROPOSAL, summary, image_packages=PACKAGES, key="gen-0123-0")
    assert call.calls == 1 and call.errors == []
    assert code == GeneratedCode.model_validate(replies.codegen_dict())
    assert code.files["baseline.py"] == replies.BASELINE_PY and code.task.training_timeout == 300
    prompt = model.calls[0][0][0]["content"]
    for needle in ("holds only the Python standard library and: numpy, pandas, scikit-learn", "--submission_file PATH",
                   '{"validation": {"<metric>": value}, "test": {"<metric>": value}}', "non-negative",
                   "data/train.csv: 160 rows; columns: temperature_c, humidity_pct, pressure_hpa, wind_kmh, rain",
                   "grader/labels_test.csv: 60 rows; columns: id, rain", "target column `rain`",
                   "Next-day rain prediction", "heuristic_moves"):
        assert needle in prompt, needle
    assert model.calls[0][1].sample_key == SampleKey(episode_id="gen-0123-0", step=0, attempt=0)


def test_debug_prompt_shows_the_error_log_and_previous_files(summary):
    previous = GeneratedCode.model_validate(replies.codegen_dict("import_typo"))
    log = "Traceback (most recent call last):\nImportError: cannot import name 'DecisionTreeClasifier'"
    model = ScriptedModel([replies.codegen_reply("working")])
    code, _ = generate_task_code(model, PROPOSAL, summary, image_packages=PACKAGES, key="gen-0123-1",
                                 previous=previous, error_log=log)
    assert code.files["baseline.py"] == replies.BASELINE_PY
    prompt = model.calls[0][0][0]["content"]
    assert log in prompt
    assert "----- baseline.py -----\n" + replies.BASELINE_PY_IMPORT_TYPO.strip() + "\n----- end of baseline.py" in prompt
    assert "----- evaluate.py -----" in prompt and "Repair it." in prompt
    with pytest.raises(EngineError, match="both previous and error_log"):
        generate_task_code(model, PROPOSAL, summary, image_packages=PACKAGES, key="k", previous=previous)


def test_moves_that_do_not_apply_are_reasked_with_the_reason(summary):
    bad = replies.codegen_dict()
    bad["heuristic_moves"][1]["find"] = "    return DecisionTreeClassifier(max_depth=9, random_state=0)"
    model = ScriptedModel([json.dumps(bad), json.dumps(bad)])
    code, call = generate_task_code(model, PROPOSAL, summary, image_packages=PACKAGES, key="k")
    assert code is None and call.calls == 2
    assert call.error.startswith("the JSON does not match the schema: (root): Value error, heuristic_moves[1].find "
                                 "is not a run of whole lines of baseline.py")


def test_evaluate_may_not_import_workspace_helpers():
    reply = replies.codegen_dict()
    reply["files"]["helpers.py"] = "def f():\n    return 1\n"
    reply["files"]["evaluate.py"] = "import helpers\n" + reply["files"]["evaluate.py"]
    with pytest.raises(ValueError, match=r"evaluate.py imports \['helpers'\]"):
        GeneratedCode.model_validate(reply)


def test_apply_move_matches_whole_lines_only():
    assert apply_move("a = 1\nb = 2\n", "b = 2", "b = 3\nc = 4") == "a = 1\nb = 3\nc = 4\n"
    assert apply_move("a = 12\n", "a = 1", "a = 2") is None


def test_check_imports_and_requirements():
    files = {"baseline.py": "import os\nimport torch\nfrom sklearn.tree import X\nimport helpers\n",
             "helpers.py": "from . import x\nimport numpy as np\n"}
    assert check_imports(files, PACKAGES) == [
        "baseline.py:2: imports 'torch', which the task image does not hold; use only the standard library and: "
        "numpy, pandas, scikit-learn"]
    assert check_imports(files, PACKAGES + ["torch>=2.1"]) == []
    assert check_imports({"x.py": "def f(:\n"}, PACKAGES) == ["x.py:1: syntax error: invalid syntax"]
    assert requirements_of(files) == ["numpy", "scikit-learn", "torch"]
    assert import_name("Pillow") == "PIL" and import_name("python_dateutil") == "dateutil"
    assert check_imports(replies.codegen_dict("disallowed_import")["files"], PACKAGES)[0].startswith(
        "baseline.py:4: imports 'xgboost'")


def test_clip_log_keeps_head_and_tail():
    text = "H" * 50 + "M" * 1000 + "T" * 100
    clipped = clip_log(text, max_chars=200)
    assert clipped.startswith("H" * 40) and clipped.endswith("T" * 100)
    assert "[... 950 characters omitted ...]" in clipped
    assert clip_log("short") == "short"


def _parts(data_root: Path, summary: DataSummary, code: GeneratedCode, **kw):
    data_files = {f"data/{n}": data_root / "workspace" / "data" / n for n in ("train.csv", "validation.csv", "test.csv")}
    grader_files = {n: data_root / "grader" / n for n in ("labels_validation.csv", "labels_test.csv")}
    dataset = DatasetConfig(name="weather-rain", description="Daily weather measurements and whether it rained.",
                            data_path="example-org/weather-rain", is_local=False, revision="abc123",
                            splits={"train": "train.csv", "validation": "validation.csv", "test": "test.csv"})
    return to_task_parts(code, PROPOSAL, data_files, grader_files, dataset, data=summary, **kw)


def test_task_parts_round_trip_through_save_and_load(tmp_path, data_root, summary):
    code = GeneratedCode.model_validate(replies.codegen_dict())
    code.files["helpers.py"] = "def clip(x):\n    return max(0, x)\n"
    spec = save_task(_parts(data_root, summary, code), tmp_path / "task")
    cfg = spec.config
    assert cfg.id == task_id_for(PROPOSAL) == "next-day-rain-prediction-01234567"
    assert (cfg.name, cfg.metric, cfg.direction, cfg.training_timeout) == ("Next-day rain prediction", "accuracy", "max", 300)
    assert (cfg.starter_code, cfg.baseline_paths, cfg.evaluation_paths) == (["baseline.py", "helpers.py"], ["baseline.py"], ["evaluate.py"])
    assert (cfg.grading, cfg.requirements, cfg.read_only_paths) == ("separate", ["pandas", "scikit-learn"], ["data"])
    assert cfg.dataset_configs == ["dataset.yaml"] and spec.datasets[0].revision == "abc123"
    assert sorted(p.name for p in spec.workspace_dir.rglob("*") if p.is_file()) == [
        "baseline.py", "helpers.py", "test.csv", "train.csv", "validation.csv"]
    assert sorted(p.name for p in spec.grader_dir.iterdir()) == ["evaluate.py", "labels_test.csv", "labels_validation.csv"]
    text = describe(spec)
    assert text.startswith(replies.TASK_FIELDS["description"])
    assert "WEATHER-RAIN:\nDaily weather measurements" in text
    assert "data/train.csv: 160 rows" in text and "labels_test" not in text
    assert "columns id,rain and one row for every row of data/validation.csv AND data/test.csv" in text
    plan = HeuristicPlan.load(spec)
    assert plan.run == "python baseline.py" and plan.mistakes == []
    assert [(m.file, m.find, m.replace, m.run) for m in plan.moves] == [
        (m["file"], m["find"], m["replace"], "python baseline.py") for m in replies.MOVES]
    assert load_task(spec.root) == spec
    assert yaml.safe_load((spec.root / "heuristic.yaml").read_text())["mistakes"] == []
    assert _parts(data_root, summary, code, task_id="rain-7").config.id == "rain-7"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


