"""Procedural tasks really run in the local bwrap sandbox: baseline, grader, constant check, and the heuristic moves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from engine.config import SandboxConfig, SynthConfig
from engine.sandbox import make_runtime
from engine.synth.procedural import FAMILIES, ProceduralSource, ProceduralTask
from engine.tasks.check import check_task
from engine.tasks.folder import load_task, save_task
from engine.tasks.grading import TaskGrader

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def runtime():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed; the local runtime needs it")
    return make_runtime(SandboxConfig(), "it-proc")


@pytest.fixture(scope="module")
def drawn() -> dict[str, ProceduralTask]:
    tasks = ProceduralSource(SynthConfig()).draw(len(FAMILIES), seed=0)
    return {t.family: t for t in tasks}


def replace_lines(text: str, find: str, replace: str) -> str:
    lines, want = text.split("\n"), find.split("\n")
    starts = [i for i in range(len(lines) - len(want) + 1) if lines[i: i + len(want)] == want]
    assert len(starts) == 1, f"{find!r} occurs {len(starts)} times as whole lines"
    i = starts[0]
    return "\n".join(lines[:i] + replace.split("\n") + lines[i + len(want):])


def better(metric: str, direction: str, new: dict[str, float], old: dict[str, float]) -> bool:
    return new[metric] > old[metric] if direction == "max" else new[metric] < old[metric]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_task_checks_and_moves_improve(family: str, drawn: dict[str, ProceduralTask], runtime, tmp_path: Path) -> None:
    task = drawn[family]
    spec = save_task(task.parts, tmp_path / "task")
    report = check_task(spec, runtime, timeout_s=TIMEOUT_S)
    assert report.ok, (report.problems, report.baseline_output)
    cfg = spec.config
    before = report.baseline.validation

    improved = tmp_path / "improved"
    shutil.copytree(spec.root, improved)
    plan = yaml.safe_load((spec.root / "heuristic.yaml").read_text())
    assert len(plan["moves"]) >= 2 and plan["mistakes"]
    for move in plan["moves"]:
        path = improved / "workspace" / move["file"]
        path.write_text(replace_lines(path.read_text(), move["find"], move["replace"]))
    after_report = check_task(load_task(improved), runtime, timeout_s=TIMEOUT_S)
    assert after_report.baseline_ran, after_report.baseline_output
    after = after_report.baseline.validation
    assert better(cfg.metric, cfg.direction, after, before), (before, after)


def test_graders_reject_malformed_submissions(drawn: dict[str, ProceduralTask], runtime, tmp_path: Path) -> None:
    csv_task = save_task(drawn["tabular_classification"].parts, tmp_path / "csv")
    bad_csv = tmp_path / "submission.csv"
    bad_csv.write_text("id,label\n0,not-a-class\n")
    game = save_task(drawn["matrix_games"].parts, tmp_path / "game")
    bad_py = tmp_path / "strategy.py"
    bad_py.write_text("def strategy(history):\n    return 'cooperate'\n")
    for spec, artefact in ((csv_task, bad_csv), (game, bad_py)):
        with TaskGrader(spec, runtime, timeout_s=TIMEOUT_S) as grader:
            grade = grader.grade_file(artefact)
        assert grade.error is not None and "submission rejected" in grade.error, grade
