"""`synthscale import-traj` end to end (no Ray, no sandbox): MLGym and mini-swe-agent files into a run's store, shown
by `traj show`, re-imported without duplicates; task folders, options and bad input as the CLI reports them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from engine.cli import app
from engine.trajectories.store import read_trajectories, shard_paths

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "traj"
WINE = ROOT / "examples" / "tasks" / "wine-classification"
BOS_DIR = (FIXTURES / "mlgym"
           / "tinyModel__battleOfSexes__default__t-0.00__p-0.95__c-4.00__install-0__parallel_agents_run_0")


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_import_show_and_reimport(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, text = _run("import-traj", FIXTURES, "--run", run)
    assert code == 0, text
    assert f"imported 5 episodes (3 with a score) from 5 files into {run}/rollouts/trajectories (1 shard)" in text
    records = read_trajectories(str(run))
    assert sorted((r.task_id, r.policy) for r in records) == [
        ("battleOfSexes", "imported:mlgym"), ("blotto", "imported:mlgym"), ("demo__calc-1", "imported:mini-swe-agent"),
        ("imageClassificationCifar10", "imported:mlgym"), ("regressionKaggleHousePrice", "imported:mlgym")]
    assert {r.run_id for r in records} == {"run"}

    code, text = _run("traj", "show", run)
    assert code == 0, text
    assert "5 episodes" in text and "battleOfSexes" in text and "3 with a successful scoring" in text
    bos = next(r for r in records if r.task_id == "battleOfSexes")
    code, text = _run("traj", "show", run, "--episode", bos.episode_id[:8])
    assert code == 0 and "policy: imported:mlgym" in text and "validate @ step 2" in text

    shards = shard_paths(str(run))
    code, text = _run("import-traj", FIXTURES, "--run", run)
    assert code == 0, text
    assert "imported 0 episodes (0 with a score) from 5 files" in text and "5 already stored" in text
    assert shard_paths(str(run)) == shards


def test_task_folder_and_options(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, text = _run("import-traj", BOS_DIR / "battleOfSexes.traj", "--run", run, "--task-id", "wine-classification",
                      "--task", WINE, "--model", "m1", "--source", "mlgym-bench")
    assert code == 0, text
    (rec,) = read_trajectories(str(run))
    assert (rec.task_id, rec.model, rec.policy, rec.metric, rec.direction) == (
        "wine-classification", "m1", "imported:mlgym-bench", "accuracy", "max")
    assert len(rec.task_hash) == 16 and rec.baseline == {"Score": 1.0226699113845825}  # results.json beside it wins

    code, text = _run("import-traj", FIXTURES, "--run", tmp_path / "r2", "--metric", "Score")
    assert code == 2 and "--metric and --direction go together" in text
    code, text = _run("import-traj", FIXTURES, "--run", tmp_path / "r2", "--metric", "Score", "--direction", "up")
    assert code == 2 and "--direction: Input should be 'max' or 'min'" in text


def test_unknown_metric_is_noted(tmp_path: Path) -> None:
    src = tmp_path / "src" / "m__myGame__run_0"
    src.mkdir(parents=True)
    shutil.copy(BOS_DIR / "battleOfSexes.traj", src / "myGame.traj")
    code, text = _run("import-traj", tmp_path / "src", "--run", tmp_path / "run")
    assert code == 0, text
    assert "note: no primary metric known for myGame" in text


def test_bad_input_is_listed_and_exits_nonzero_only_when_nothing_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.traj").write_text("not json")
    (bad / "b.traj").write_bytes(b"\xff\xfe{}")
    (bad / "c.traj").write_text(json.dumps({"environment": "x", "info": {}}))
    run = tmp_path / "run"
    code, text = _run("import-traj", bad, "--run", run)
    assert code == 2, text
    assert "rejected 3 of 3 files (1 not_a_trajectory, 1 not_json, 1 not_utf8)" in text
    assert f"{bad / 'c.traj'}: not_a_trajectory: lacks 'trajectory' and 'history'" in text
    assert "none of its 3 files could be imported" in text
    assert shard_paths(str(run)) == []

    shutil.copytree(FIXTURES, bad / "good")
    code, text = _run("import-traj", bad, "--run", run)
    assert code == 0, text
    assert "imported 5 episodes" in text and "rejected 3 of 8 files" in text

    empty = tmp_path / "empty"
    empty.mkdir()
    code, text = _run("import-traj", empty, "--run", run)
    assert code == 2 and f"{empty}: no .traj or .traj.json files in it or below" in text
    assert len(read_trajectories(str(run))) == 5  # nothing stored is lost
