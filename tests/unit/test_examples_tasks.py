"""The hand-written example tasks load, keep held-out labels out of the workspace, and their heuristic plans apply."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from engine.agent.heuristic import HeuristicPlan
from engine.synth.procedural.common import python_grader
from engine.tasks.folder import describe, find_tasks, load_task
from engine.tasks.mlgym import check_supported

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"
NAMES = ["diabetes-regression", "iterated-game-strategy", "wine-classification"]
# The example game's parameters of the shared Python-submission grader template; its setup is its own.
GAME_GRADER = dict(
    task_id="iterated-game-strategy", summary="plays strategy.py against hidden opponents",
    score_doc=("The score is the mean payoff per round over every match of the validation seeds and of the held-out "
               "test seeds. Payoffs are 0..5, so the score is never negative."),
    module_file="strategy.py", function="strategy", signature="strategy(history)", action="playing the strategy",
    stdlib=["numbers", "random"],
)


def replace_lines(text: str, find: str, replace: str) -> str:
    lines, want = text.split("\n"), find.split("\n")
    starts = [i for i in range(len(lines) - len(want) + 1) if lines[i : i + len(want)] == want]
    assert len(starts) == 1, f"{find!r} occurs {len(starts)} times as whole lines"
    i = starts[0]
    return "\n".join(lines[:i] + replace.split("\n") + lines[i + len(want) :])


def test_examples_are_found() -> None:
    assert [p.name for p in find_tasks(EXAMPLES)] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_with_separate_grading_and_default_image(name: str) -> None:
    spec = load_task(EXAMPLES / name)
    assert spec.id == name
    assert spec.config.grading == "separate"
    assert spec.baseline and spec.baseline_test
    assert spec.config.metric in spec.baseline and spec.config.metric in spec.baseline_test
    assert check_supported(spec) == []
    text = describe(spec)
    assert "{dataset_docs}" not in text and "SUBMISSION FORMAT" in text


@pytest.mark.parametrize(("name", "target"), [("wine-classification", "label"), ("diabetes-regression", "target")])
def test_tabular_example_keeps_labels_out_of_the_workspace(name: str, target: str) -> None:
    spec = load_task(EXAMPLES / name)
    data = spec.workspace_dir / "data"
    assert target in pd.read_csv(data / "train.csv").columns
    for split in ("validation", "test"):
        inputs = pd.read_csv(data / f"{split}.csv")
        labels = pd.read_csv(spec.grader_dir / f"labels_{split}.csv")
        assert target not in inputs.columns and list(labels.columns) == ["id", target]
        assert inputs["id"].tolist() == labels["id"].tolist()
    assert not list(spec.workspace_dir.rglob("labels_*"))
    assert spec.config.direction == ("max" if name.startswith("wine") else "min")


@pytest.mark.parametrize("name", NAMES)
def test_heuristic_plan_applies_in_order_and_mistakes_apply_anywhere(name: str) -> None:
    spec = load_task(EXAMPLES / name)
    plan = HeuristicPlan.load(spec)
    assert len(plan.moves) >= 2 and 1 <= len(plan.mistakes) <= 2
    files = {m.file: (spec.workspace_dir / m.file).read_text() for m in plan.moves + plan.mistakes}
    for step in range(len(plan.moves) + 1):
        for mistake in plan.mistakes:  # a mistake's target survives every move, so it can be made at any point
            replace_lines(files[mistake.file], mistake.find, mistake.replace)
        if step < len(plan.moves):
            move = plan.moves[step]
            files[move.file] = replace_lines(files[move.file], move.find, move.replace)
            ast.parse(files[move.file])
            assert move.note
    assert files["strategy.py" if name.startswith("iterated") else "baseline.py"] != (
        spec.workspace_dir / plan.moves[0].file
    ).read_text()


def test_game_grader_is_the_shared_template_rendered() -> None:
    """evaluate.py is prompts/graders/python_submission.j2 around the game's own setup, so the harness cannot drift."""
    text = (EXAMPLES / "iterated-game-strategy" / "grader" / "evaluate.py").read_text()
    head, tail = python_grader(**GAME_GRADER, setup="@SETUP@").split("@SETUP@")
    setup = text[len(head) : len(text) - len(tail)] if text.startswith(head) and text.endswith(tail) else ""
    assert "def play_match(" in setup and "def load_strategy(" not in setup
    # on a failure, re-render the file: python_grader(**GAME_GRADER, setup=<its constants, opponents and score>)
    assert text == python_grader(**GAME_GRADER, setup=setup)
