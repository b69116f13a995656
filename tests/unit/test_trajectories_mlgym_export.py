"""Unit tests for the MLGym export: layout, exact JSON keys and values, run numbering, results.json."""

from __future__ import annotations

import json
import os

from engine.records import ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.mlgym_export import export_mlgym, sanitize_model_name, traj_document


def record(episode_id: str, seed: int, model: str = "Qwen/Qwen3-8B", task_id: str = "irisSpecies",
           infra_error: str | None = None) -> TrajectoryRecord:
    steps = [
        StepRecord(step=0, response="DISCUSSION\nLook.\n```\nopen \"train.py\"\n```", thought="Look.",
                   action='open "train.py"', observation="[File: train.py (3 lines total)]", open_file="train.py",
                   working_dir="/home/agent/workspace", execution_time_s=0.25, reasoning="Read the code first."),
        StepRecord(step=1, response="DISCUSSION\nCheck.\n```\nvalidate\n```", thought="Check.", action="validate",
                   observation="Your code produced a valid submission", open_file=None,
                   working_dir="/home/agent/workspace", execution_time_s=4.5),
    ]
    scores = [
        ScoreRecord(step=1, kind="validate", validation={"accuracy": 0.9}, test={"accuracy": 0.85},
                    metric="accuracy", direction="max"),
        ScoreRecord(step=2, kind="submit", metric="accuracy", direction="max", error="grader crashed"),
        ScoreRecord(step=2, kind="autosubmit", validation=None, test={"accuracy": 0.8}, metric="accuracy",
                    direction="max", grading="mlgym"),
    ]
    messages = [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "Task: classify irises."},
        {"role": "assistant", "content": steps[0].response, "reasoning_content": "Read the code first."},
        {"role": "user", "content": "[File: train.py (3 lines total)]"},
        {"role": "assistant", "content": steps[1].response},
        {"role": "user", "content": "Your code produced a valid submission"},
    ]
    return TrajectoryRecord(
        run_id="r1", task_id=task_id, task_hash="th", episode_id=episode_id, seed=seed, model=model,
        policy="agent", sampling={"temperature": 1.0}, messages=messages, steps=steps, scores=scores,
        baseline={"accuracy": 0.6}, metric="accuracy", direction="max", exit_status="submitted",
        submission="submission.csv", tokens_sent=1000, tokens_received=50, api_calls=2, cost_usd=0.0125,
        wall_time_s=10.0, started_at=100.0 - seed, infra_error=infra_error,
    )


def test_traj_document_keys_and_values():
    doc = traj_document(record("ep-a", 0), environment="synthscale-docker")
    assert list(doc) == ["environment", "trajectory", "history", "info"]
    assert doc["environment"] == "synthscale-docker"
    assert doc["trajectory"][0] == {
        "action": 'open "train.py"',
        "observation": "[File: train.py (3 lines total)]",
        "response": "DISCUSSION\nLook.\n```\nopen \"train.py\"\n```",
        "state": '{"open_file": "train.py", "working_dir": "/home/agent/workspace"}',
        "thought": "Look.",
        "execution_time": 0.25,
    }
    assert json.loads(doc["trajectory"][1]["state"]) == {"open_file": "n/a", "working_dir": "/home/agent/workspace"}
    history = doc["history"]
    assert history[0] == {"role": "system", "content": "You are an agent.", "agent": "primary"}
    assert history[2] == {"role": "assistant", "content": "DISCUSSION\nLook.\n```\nopen \"train.py\"\n```",
                          "agent": "primary", "thought": "Look.", "action": 'open "train.py"'}
    assert history[4]["action"] == "validate" and history[4]["thought"] == "Check."
    assert [set(m) for m in history] == [{"role", "content", "agent"}] * 2 + [
        {"role", "content", "agent", "thought", "action"}, {"role", "content", "agent"}] * 2  # no reasoning_content
    info = doc["info"]
    assert set(info) == {"model_stats", "exit_status", "submission", "score", "synthscale"}
    assert info["model_stats"] == {"total_cost": 0.0125, "instance_cost": 0.0125, "tokens_sent": 1000,
                                   "tokens_received": 50, "api_calls": 2}
    assert info["exit_status"] == "submitted" and info["submission"] == "submission.csv"
    # the agent saw validation metrics; mlgym grading shows its single dict; failed scorings are left out
    assert info["score"] == [{"accuracy": 0.9}, {"accuracy": 0.8}]
    extras = info["synthscale"]
    assert extras["episode_id"] == "ep-a" and extras["seed"] == 0 and extras["infra_error"] is None
    assert extras["test_scores"] == [{"accuracy": 0.85}, {"accuracy": 0.8}]
    assert [s["kind"] for s in extras["scores"]] == ["validate", "submit", "autosubmit"]
    assert extras["scores"][1]["error"] == "grader crashed"


def test_export_layout_numbering_and_results(tmp_path):
    records = [
        record("ep-b", seed=1), record("ep-a", seed=0), record("ep-c", seed=2, infra_error="node lost"),
        record("ep-d", seed=0, model="gpt-5"), record("ep-e", seed=5, task_id="otherTask"),
    ]
    paths = export_mlgym(records, tmp_path / "rollouts", environment="synthscale-local")
    root = tmp_path / "rollouts" / "traj"
    expected_dirs = ["Qwen-Qwen3-8B__irisSpecies__run_0", "Qwen-Qwen3-8B__irisSpecies__run_1",
                     "Qwen-Qwen3-8B__otherTask__run_0", "gpt-5__irisSpecies__run_0"]
    assert sorted(os.listdir(root)) == expected_dirs
    assert sorted(paths) == sorted(str(root / d / f"{d.split('__')[1]}.traj") for d in expected_dirs)
    for d in expected_dirs:
        assert sorted(os.listdir(root / d)) == sorted(["results.json", f"{d.split('__')[1]}.traj"])
    # runs numbered by seed within (model, task); ep-c (infra error) is not exported
    run0 = json.loads((root / "Qwen-Qwen3-8B__irisSpecies__run_0" / "irisSpecies.traj").read_text())
    run1 = json.loads((root / "Qwen-Qwen3-8B__irisSpecies__run_1" / "irisSpecies.traj").read_text())
    assert (run0["info"]["synthscale"]["episode_id"], run1["info"]["synthscale"]["episode_id"]) == ("ep-a", "ep-b")
    assert run0["environment"] == "synthscale-local"
    results = json.loads((root / "Qwen-Qwen3-8B__irisSpecies__run_0" / "results.json").read_text())
    assert results == {"agent": [{"accuracy": 0.9}, {"accuracy": 0.8}], "baseline": {"accuracy": 0.6}}


def test_export_of_nothing_writes_nothing(tmp_path):
    assert export_mlgym([record("x", 0, infra_error="sandbox died")], tmp_path) == []
    assert os.listdir(tmp_path) == []


def test_history_without_steps_keeps_assistant_text_as_thought():
    rec = record("ep-a", 0).model_copy(update={"steps": []})
    assistant = traj_document(rec)["history"][2]
    assert (assistant["thought"], assistant["action"]) == (rec.messages[2]["content"], "")


def test_sanitize_model_name():
    assert sanitize_model_name("Qwen/Qwen3-8B") == "Qwen-Qwen3-8B"
    assert sanitize_model_name("org/sub/model name") == "org-sub-model-name"
    assert sanitize_model_name("gpt-5") == "gpt-5"
