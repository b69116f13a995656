"""`synthscale eval` end to end on a local Ray cluster: two policies served by ModelServer actors as loopback
OpenAI-compatible servers (the heuristic policy, which really scores, and a weaker one that submits the
baseline), R runs per example task through the rollout engine, and a report whose numbers this test
recomputes from scores.parquet."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.config import RunConfig
from engine.evaluate.aup import compute_aup_pair
from engine.evaluate.report import read_scores
from engine.evaluate.scores import best_attempt, best_submission, directions_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"
TASKS = [EXAMPLES / "wine-classification", EXAMPLES / "diabetes-regression"]
pytestmark = pytest.mark.timeout(900)


def _served(name: str, *extra: str) -> dict:
    argv = [sys.executable, "-m", "engine.cli", "serve-heuristic", *[a for t in TASKS for a in ("--task", str(t))],
            "--host", "{host}", "--port", "{port}", "--name", name, *extra]
    return {"name": name, "serve": {"backend": "command", "model": name, "command": argv, "host": "127.0.0.1",
                                    "gpus_per_server": 0, "cpus_per_server": 0.5, "startup_timeout_s": 120}}


RAY_RESOURCES = {"num_cpus": 4}


def test_eval_serves_two_policies_and_reports_numbers_recomputable_from_scores(tmp_path, local_ray):
    cfg = RunConfig.model_validate({
        "run_id": "ev", "run_dir": str(tmp_path / "ev"), "agent": {"max_steps": 30},
        "rollout": {"progress": False, "cpu_workers": 2, "episodes_per_cpu_worker": 1, "lease_size": 1},
        "eval": {"tasks": [str(t) for t in TASKS], "runs_per_task": 2, "bootstrap_resamples": 50,
                 "methods": [_served("heuristic"), _served("weak", "--max-moves", "0")]},
    })
    config = tmp_path / "eval.yaml"
    config.write_text(cfg.to_yaml())
    result = CliRunner().invoke(app, ["eval", "--config", str(config)])
    assert result.exit_code == 0, result.output
    eval_dir = tmp_path / "ev" / "eval"
    for name in ("scores.parquet", "aup.csv", "per_task.csv", "profile.png", "report.html", "manifest.json"):
        assert (eval_dir / name).is_file(), name

    runs = read_scores(str(eval_dir))
    assert sorted(runs["method"].unique()) == ["heuristic", "weak"]
    assert runs.groupby(["method", "task_id"]).size().tolist() == [2, 2, 2, 2]
    pair = compute_aup_pair(best_attempt(runs), best_submission(runs), directions_of(runs), "baseline")
    aup = pd.read_csv(eval_dir / "aup.csv", index_col="method")
    for kind in ("best_attempt", "best_submission"):
        assert aup[kind].to_dict() == pytest.approx(pair.table()[kind].to_dict(), abs=1e-9)
    # the policy that improves on the baseline beats the one that submits it
    assert aup.loc["heuristic", "best_attempt"] > aup.loc["weak", "best_attempt"]
    assert "heuristic" in (eval_dir / "report.html").read_text()

    again = CliRunner().invoke(app, ["eval", "--config", str(config)])  # resume: nothing left to run
    assert again.exit_code == 0, again.output
    assert len(read_scores(str(eval_dir))) == len(runs)
