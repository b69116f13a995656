"""The example tasks and the imported MLGym fixtures really run: baselines, graders, heuristic moves and mistakes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.tasks.artefact import grade_output, grader_command, resolve_artefact
from engine.tasks.folder import find_tasks, load_task
from engine.tasks.mlgym import import_mlgym_task
from engine.tasks.spec import TaskSpec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "tasks"
FIXTURE = REPO / "tests" / "fixtures" / "mlgym"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
TASKS = [p.name for p in find_tasks(EXAMPLES)]


def sh(command: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run like a sandbox does: bash -c, stdout and stderr merged, the venv's python first on PATH."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout_s,
    )  # fmt: skip


def replace_lines(text: str, find: str, replace: str) -> str:
    lines, want = text.split("\n"), find.split("\n")
    starts = [i for i in range(len(lines) - len(want) + 1) if lines[i : i + len(want)] == want]
    assert len(starts) == 1, f"{find!r} occurs {len(starts)} times as whole lines"
    i = starts[0]
    return "\n".join(lines[:i] + replace.split("\n") + lines[i + len(want) :])


def grade(spec: TaskSpec, workspace: Path, tmp: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Grade the workspace's artefact in a copy of grader/, as the separate grader sandbox would."""
    files = [p.relative_to(workspace).as_posix() for p in workspace.rglob("*") if p.is_file()]
    artefact = resolve_artefact(spec, files)
    assert artefact in files
    grader = tmp / "grader"
    shutil.rmtree(grader, ignore_errors=True)
    shutil.copytree(spec.grader_dir, grader)
    shutil.copy(workspace / artefact, grader / artefact)
    result = sh(grader_command(spec, artefact), grader)
    assert result.returncode == 0, result.stdout
    return grade_output(spec, result.stdout)


def better(spec: TaskSpec, new: dict[str, float], old: dict[str, float]) -> bool:
    m = spec.config.metric
    return new[m] > old[m] if spec.config.direction == "max" else new[m] < old[m]


def fresh_workspace(spec: TaskSpec, tmp: Path) -> Path:
    workspace = tmp / "workspace"
    shutil.copytree(spec.workspace_dir, workspace)
    return workspace


def plan(spec: TaskSpec) -> dict:
    return yaml.safe_load((spec.root / "heuristic.yaml").read_text())


@pytest.mark.parametrize("name", TASKS)
def test_baseline_scores_match_the_grader(name: str, tmp_path: Path) -> None:
    spec = load_task(EXAMPLES / name)
    workspace = fresh_workspace(spec, tmp_path)
    result = sh(plan(spec)["run"], workspace)
    assert result.returncode == 0, result.stdout
    validation, test = grade(spec, workspace, tmp_path)
    assert validation == pytest.approx(spec.baseline, abs=1e-9)
    assert test == pytest.approx(spec.baseline_test, abs=1e-9)


@pytest.mark.parametrize("name", TASKS)
def test_every_heuristic_move_improves_validation(name: str, tmp_path: Path) -> None:
    spec = load_task(EXAMPLES / name)
    workspace = fresh_workspace(spec, tmp_path)
    steps = plan(spec)
    assert sh(steps["run"], workspace).returncode == 0
    first = previous = grade(spec, workspace, tmp_path)
    for move in steps["moves"]:
        path = workspace / move["file"]
        path.write_text(replace_lines(path.read_text(), move["find"], move["replace"]))
        result = sh(move.get("run") or steps["run"], workspace)
        assert result.returncode == 0, result.stdout
        scores = grade(spec, workspace, tmp_path)
        assert better(spec, scores[0], previous[0]), (move["note"], scores[0], previous[0])
        previous = scores
    assert better(spec, previous[0], first[0]) and better(spec, previous[1], first[1]), (first, previous)


@pytest.mark.parametrize("name", TASKS)
def test_every_heuristic_mistake_breaks_the_run(name: str, tmp_path: Path) -> None:
    spec = load_task(EXAMPLES / name)
    steps = plan(spec)
    assert steps["mistakes"]
    for i, mistake in enumerate(steps["mistakes"]):
        workspace = fresh_workspace(spec, tmp_path / str(i))
        path = workspace / mistake["file"]
        path.write_text(replace_lines(path.read_text(), mistake["find"], mistake["replace"]))
        lint = sh(f"python -m pyflakes {mistake['file']}", workspace)
        run = sh(mistake.get("run") or steps["run"], workspace)
        assert "undefined name" in lint.stdout or run.returncode != 0, (mistake, lint.stdout, run.stdout)


def test_imported_csv_task_runs_mlgym_way(tmp_path: Path) -> None:
    spec = import_mlgym_task(FIXTURE, "regressionKaggleHousePrice", tmp_path / "tasks")
    workspace = fresh_workspace(spec, tmp_path)
    assert sh("python baseline.py", workspace).returncode == 0
    artefact = resolve_artefact(spec, [p.name for p in workspace.iterdir()])
    result = sh(grader_command(spec, artefact), workspace)
    validation, test = grade_output(spec, result.stdout)
    assert validation == test == pytest.approx(spec.baseline, abs=1e-9)
    assert set(validation) == {"rmse", "r2"}


def test_imported_python_task_runs_mlgym_way(tmp_path: Path) -> None:
    spec = import_mlgym_task(FIXTURE, "battleOfSexes", tmp_path / "tasks")
    workspace = fresh_workspace(spec, tmp_path)
    assert resolve_artefact(spec, ["target.py", "evaluate.py"]) == "target.py"
    result = sh(grader_command(spec, "target.py"), workspace)
    validation, _ = grade_output(spec, result.stdout)
    assert validation == {"Score": pytest.approx(spec.baseline["Score"])}
