"""The `synthscale` CLI end to end: episodes with resume, trajectory display, task check, MLGym import, and
the clear errors bad input gets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.trajectories.store import read_trajectories

ROOT = Path(__file__).resolve().parents[2]
WINE = ROOT / "examples" / "tasks" / "wine-classification"
MLGYM = ROOT / "tests" / "fixtures" / "mlgym"

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


def _run(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_episode_writes_trajectories_resumes_and_shows_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run("episode", "--task", WINE, "-n", "2", "--out", out)
    assert code == 0, text
    assert "2 episodes (2 with a score)" in text
    records = read_trajectories(str(out))
    assert len(records) == 2 and len({r.episode_id for r in records}) == 2
    trajs = sorted((out / "rollouts" / "traj").rglob("*.traj"))
    assert [p.parent.name for p in trajs] == [  # MLGym's folder names: sampling (t 1 by default, p unset: 1), cost limit
        f"synthscale-heuristic__wine-classification__default__t-1.00__p-1.00__c-4.00__install-0__parallel_agents_run_{n}"
        for n in (0, 1)]
    assert (trajs[0].parent / "results.json").is_file()

    code, text = _run("episode", "--task", WINE, "-n", "2", "--out", out)  # all stored: nothing re-run
    assert code == 0 and "2 episodes" in text
    assert len(read_trajectories(str(out))) == 2

    code, text = _run("episode", "--task", WINE, "-n", "2", "--max-steps", "9", "--out", out)
    assert code == 2 and "--start-over" in text  # another config may not resume into this run dir

    code, text = _run("traj", "show", out)
    assert code == 0 and "wine-classification" in text and records[0].episode_id in text
    code, text = _run("traj", "show", out, "--episode", records[0].episode_id[:8])
    assert code == 0 and "validate" in text and "submit" in text
    code, text = _run("traj", "show", out, "--episode", "nope")
    assert code == 2 and "no episode 'nope'" in text


def test_task_check_passes_on_an_example_and_fails_clearly_on_a_broken_one(tmp_path: Path) -> None:
    code, text = _run("task", "check", WINE)
    assert code == 0, text
    assert "ok" in text and "constant" in text

    broken = tmp_path / "broken"
    shutil.copytree(WINE, broken)
    (broken / "workspace" / "baseline.py").write_text("raise SystemExit('boom')\n")
    code, text = _run("task", "check", broken)
    assert code == 1 and "baseline `python baseline.py` failed" in text and "boom" in text


def test_malformed_task_yaml_names_the_file_and_field(tmp_path: Path) -> None:
    broken = tmp_path / "bad"
    shutil.copytree(WINE, broken)
    text = (broken / "task.yaml").read_text().replace("metric:", "metrik:")
    (broken / "task.yaml").write_text(text)
    code, out = _run("task", "check", broken)
    assert code == 2
    assert "task.yaml" in out and "metric" in out


def test_missing_evaluate_py_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "noeval"
    shutil.copytree(WINE, broken)
    (broken / "grader" / "evaluate.py").unlink()
    code, out = _run("episode", "--task", broken, "--out", tmp_path / "r")
    assert code == 2 and "evaluate.py" in out


def test_import_mlgym_task_then_check_it(tmp_path: Path) -> None:
    code, text = _run("task", "import-mlgym", MLGYM, "regressionKaggleHousePrice", "--out", tmp_path)
    assert code == 0, text
    assert "(metric r2, max)" in text
    code, text = _run("task", "check", tmp_path / "regressionKaggleHousePrice")
    assert code == 0, text

    code, text = _run("task", "import-mlgym", MLGYM, "imageClassificationCifar10", "--out", tmp_path)
    assert code == 2 and "torch" in text

    code, text = _run("task", "import-mlgym", MLGYM, "noSuchTask", "--out", tmp_path)
    assert code == 2 and "regressionKaggleHousePrice" in text  # lists what is there


def test_flags_that_the_policy_ignores_are_refused(tmp_path: Path) -> None:
    code, text = _run("episode", "--task", WINE, "--model", "gpt-5", "--out", tmp_path / "r")
    assert code == 2 and "--policy openai" in text


def test_bad_flag_values_name_the_flag(tmp_path: Path) -> None:
    code, text = _run("episode", "--task", WINE, "--policy", "gpt", "--out", tmp_path / "r")
    assert code == 2 and "--policy: Input should be 'heuristic' or 'openai'" in text
