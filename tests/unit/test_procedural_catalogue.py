"""The procedural catalogue: family selection, deterministic distinct draws, parameter spaces, and saved folders."""

from __future__ import annotations

import doctest
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.agent.heuristic import HeuristicPlan, _signature
from engine.config import SynthConfig
from engine.errors import ConfigError, TaskError
from engine.synth.procedural import FAMILIES, ProceduralSource, build_task, common, select_families, tabular
from engine.synth.procedural.common import Candidate, improving_chain, params_key, python_grader
from engine.synth.procedural.matrix_games import MLGYM_ROW_PAYOFFS, is_mlgym_game, payoffs
from engine.synth.procedural.tabular_supervised import CLASSIFICATION, REGRESSION
from engine.tasks.artefact import parse_metrics, split_metrics
from engine.tasks.folder import load_task, save_task

FAST = ["matrix_games", "timeseries_forecasting"]  # families whose builds take well under a second


def test_six_families_with_domains() -> None:
    assert sorted(FAMILIES) == ["control", "digits_classification", "matrix_games", "tabular_classification",
                                "tabular_regression", "timeseries_forecasting"]
    assert {f.domain for f in FAMILIES.values()} == {"tabular", "time-series", "vision", "rl", "game-theory"}


def test_tabular_families_are_one_module_parametrised_by_kind() -> None:
    assert (FAMILIES["tabular_classification"].task_type, FAMILIES["tabular_regression"].task_type) == (
        "classification", "regression")
    assert (CLASSIFICATION.target, CLASSIFICATION.metrics, REGRESSION.target, REGRESSION.metrics) == (
        "label", ("accuracy", "macro_f1"), "target", ("rmse", "mae"))
    # the grid's axes, in this order, fix which parameters a seed draws
    assert list(REGRESSION.grid()) == ["dataset", "metric", "train_fraction", "noise_columns", "baseline", "constraint"]
    assert FAMILIES["tabular_classification"].count() == 7 * 2 * 3 * 3 * 3 * 3
    assert FAMILIES["tabular_regression"].count() == 10 * 2 * 3 * 3 * 3 * 3
    assert FAMILIES["tabular_regression"].space(random.Random(0)) == {  # as before the two families were merged
        "dataset": "macro_realinv", "metric": "mae", "train_fraction": 0.45, "noise_columns": 6, "baseline": "stump",
        "constraint": "no_ensembles"}


@pytest.mark.parametrize("module", [common, tabular], ids=lambda m: m.__name__)
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert (result.failed, result.attempted > 0) == (0, True)


def test_unknown_family_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as e:
        ProceduralSource(SynthConfig(families=["tabular_classification", "atari"]))
    assert "['atari']" in str(e.value) and "matrix_games" in str(e.value)
    with pytest.raises(ConfigError):
        select_families([])


def test_filter_keeps_catalogue_order() -> None:
    assert select_families(["matrix_games", "control"]) == ["control", "matrix_games"]
    assert select_families(None) == list(FAMILIES)


def test_counts_sum_to_several_hundred() -> None:
    counts = {name: f.count() for name, f in FAMILIES.items()}
    assert all(c >= 100 for c in counts.values()), counts
    assert sum(counts.values()) >= 300


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_space_is_deterministic_and_json_like(name: str) -> None:
    family = FAMILIES[name]
    a = [family.space(random.Random(7)) for _ in range(3)]
    b = [family.space(random.Random(7)) for _ in range(3)]
    assert a == b
    for params in a:
        assert yaml.safe_load(yaml.safe_dump(params)) == params
        assert params_key(name, params) == params_key(name, dict(reversed(list(params.items()))))


def test_draw_is_deterministic_and_distinct() -> None:
    source = ProceduralSource(SynthConfig(families=["timeseries_forecasting"]))
    first = source.draw(5, seed=3)
    again = source.draw(5, seed=3)
    assert [t.proposal.proposal_id for t in first] == [t.proposal.proposal_id for t in again]
    assert [t.parts.config.id for t in first] == [t.parts.config.id for t in again]
    keys = [params_key(t.family, t.params) for t in first]
    assert len(set(keys)) == 5
    assert {t.proposal.proposal_id for t in source.draw(5, seed=4)} != set(keys)


def test_draw_goes_round_robin_over_the_chosen_families() -> None:
    tasks = ProceduralSource(SynthConfig(families=FAST)).draw(3, seed=0)
    assert [t.family for t in tasks] == ["timeseries_forecasting", "matrix_games", "timeseries_forecasting"]


def test_proposal_is_filled_from_the_family() -> None:
    task = ProceduralSource(SynthConfig(families=["matrix_games"])).draw(1, seed=0)[0]
    p = task.proposal
    assert p.proposal_id == params_key("matrix_games", task.params)
    assert (p.topic_id, p.domain, p.task_type, p.metric, p.direction) == (
        "procedural-matrix_games", "game-theory", "game", "score", "max")
    assert p.description == task.parts.config.description
    assert task.parts.provenance["source"] == "procedural"
    assert task.parts.provenance["params"]["family"] == "matrix_games"


def test_no_mountaincar_continuous_and_no_mlgym_payoffs_in_a_large_draw() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        params = FAMILIES["matrix_games"].space(rng)
        assert not is_mlgym_game(params["kind"], tuple(params["payoffs"]))
        mine = payoffs(params["kind"], tuple(params["payoffs"]))[0]
        assert mine not in MLGYM_ROW_PAYOFFS
    for _ in range(500):
        assert "Continuous" not in FAMILIES["control"].space(rng)["env"]


def test_mlgym_games_are_recognised_even_relabelled() -> None:
    assert is_mlgym_game("dilemma", (3, 0, 5, 1))
    assert is_mlgym_game("coordination", (2, 1, 0))
    assert not is_mlgym_game("dilemma", (3, 0, 6, 1))
    with pytest.raises(TaskError):
        build_task("matrix_games", {"kind": "dilemma", "payoffs": [3, 0, 5, 1], "opponents": ["copycat"] * 5,
                                    "rounds": [20, 60], "tremble": 0.0})


def test_mountaincar_continuous_is_refused() -> None:
    with pytest.raises(TaskError):
        build_task("control", {"env": "MountainCarContinuous-v0", "physics": {}, "max_steps": 200, "episodes": 5,
                               "noise_level": 0})


def test_improving_chain_picks_strictly_better_steps() -> None:
    base = Candidate("b", "b", 0.5)
    cands = [Candidate(str(s), str(s), s) for s in (0.4, 0.6, 0.6, 0.7, 0.8, 0.9)]
    chain = improving_chain(base, cands, "max")
    assert [c.score for c in chain] == [0.6, 0.8, 0.9]
    assert [c.score for c in improving_chain(Candidate("b", "b", 0.95), cands, "min")] == [0.9, 0.7, 0.4]
    with pytest.raises(TaskError):
        improving_chain(base, [Candidate("x", "x", 0.9)], "max")
    with pytest.raises(TaskError):
        improving_chain(base, cands, "min")


def test_built_parts_save_and_load(tmp_path: Path) -> None:
    for task in ProceduralSource(SynthConfig(families=FAST)).draw(2, seed=1):
        spec = save_task(task.parts, tmp_path / task.parts.config.id)
        again = load_task(spec.root)
        assert again.config == task.parts.config
        assert again.config.baseline_scores == [] and again.config.baseline_test_scores == []
        assert (spec.grader_dir / "evaluate.py").is_file()
        plan = yaml.safe_load((spec.root / "heuristic.yaml").read_text())
        assert len(plan["moves"]) >= 2 and plan["mistakes"]
        text = (spec.workspace_dir / plan["moves"][0]["file"]).read_text()
        assert plan["moves"][0]["find"] in text
        assert "{dataset_docs}" not in again.config.description or again.datasets
        assert HeuristicPlan.load(again).run
        # the heuristic policy tells tasks apart by the longest of their first lines: the one naming the task
        assert _signature(again) == f"Task {spec.id}: {spec.config.name}."
        if task.family == "timeseries_forecasting":  # the future values are only in grader/
            for split in ("validation", "test"):
                assert (spec.workspace_dir / "data" / f"{split}.csv").read_text().splitlines()[0] == "id,t,date"
                assert (spec.grader_dir / f"labels_{split}.csv").read_text().splitlines()[0] == "id,value"


TOY_GRADER = dict(task_id="toy", summary="sums act over the seeds", score_doc="The score is the sum.",
                  module_file="policy.py", function="act", signature="act(seed)", action="running the policy",
                  setup="VALIDATION_SEEDS, TEST_SEEDS = [1, 2], [10]\n\n\ndef score(act, seeds):\n"
                        "    return float(sum(act(s) for s in seeds))\n")


@pytest.mark.parametrize(("policy", "rc", "out"), [
    ("print('noise')\ndef act(seed):\n    print('chatter')\n    return 2 * seed\n", 0,
     {"validation": {"score": 6.0}, "test": {"score": 20.0}}),
    (None, 1, "submission rejected: policy.py not found"),
    ("raise RuntimeError('boom')\n", 1, "submission rejected: importing policy.py raised RuntimeError: boom"),
    ("def policy(seed):\n    return 0\n", 1, "submission rejected: policy.py defines no function act(seed)"),
    ("def act(seed):\n    return 1 / 0\n", 1,
     "submission rejected: running the policy raised ZeroDivisionError: division by zero"),
])  # fmt: skip
def test_python_grader_prints_only_the_metrics_or_rejects(policy: str | None, rc: int, out, tmp_path: Path) -> None:
    (tmp_path / "evaluate.py").write_text(python_grader(**TOY_GRADER))
    if policy is not None:
        (tmp_path / "policy.py").write_text(policy)
    run = subprocess.run([sys.executable, "evaluate.py"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert run.returncode == rc, run.stderr
    if rc == 0:  # what the submission prints never reaches the grader's output
        assert (run.stdout.count("\n"), run.stderr) == (1, "")
        assert split_metrics(parse_metrics("PythonSubmissionTasks", run.stdout), "separate", "score") == (
            out["validation"], out["test"])
    else:
        assert (run.stdout, run.stderr.strip()) == ("", out)
