"""Unit tests for the MLGym export: the golden file (MLGym's exact format), layout, run numbering, results.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.records import ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.mlgym_export import (
    export_mlgym,
    mlgym_json,
    mlgym_split,
    results_document,
    sanitize_model_name,
    traj_document,
)

WS = "/home/agent/workspace"
GOLDEN = (Path(__file__).resolve().parents[1] / "fixtures" / "traj" / "mlgym"
          / "tinyModel__blotto__default__t-0.00__p-0.95__c-4.00__install-0__parallel_agents_run_1")


def blotto_record() -> TrajectoryRecord:
    """The episode of the golden blotto.traj as our rollouts store it (state after the action, bare thought and
    action, a final step of three format errors, MLGym grading)."""
    golden = json.loads((GOLDEN / "blotto.traj").read_text())
    history, traj = golden["history"], golden["trajectory"]
    steps = [
        StepRecord(step=0, response=traj[0]["response"], thought="Read the strategy first.",
                   action='open "strategy.py"',
                   observation=traj[0]["observation"], open_file=f"{WS}/strategy.py", working_dir=WS,
                   execution_time_s=0.41, reasoning="Look before editing."),
        StepRecord(step=1, response=traj[1]["response"], thought="Score it as it is: an even split.", action="validate",
                   observation=traj[1]["observation"], open_file=f"{WS}/strategy.py", working_dir=WS,
                   execution_time_s=6.25),
        StepRecord(step=2, response=traj[2]["response"], thought="", action="", observation="",
                   format_errors=[traj[2]["response"]] * 3),
    ]
    messages = [{"role": m["role"], "content": m["content"]} for m in history[:6]]
    messages[2]["reasoning_content"] = "Look before editing."
    scores = [
        ScoreRecord(step=1, kind="validate", validation={"Score": -0.0835}, test={"Score": -0.0835}, metric="Score",
                    direction="max", grading="mlgym", artefact="target.py"),
        ScoreRecord(step=3, kind="autosubmit", validation={"Score": 0.0123}, test={"Score": 0.0123}, metric="Score",
                    direction="max", grading="mlgym", artefact="target.py"),
    ]
    return TrajectoryRecord(
        run_id="r1", task_id="blotto", task_hash="th", episode_id="ep-blotto", seed=1, model="tinyModel",
        policy="openai", sampling={"temperature": 0.0, "top_p": 0.95}, messages=messages, steps=steps, scores=scores,
        baseline={"Score": -0.24797001481056213}, metric="Score", direction="max",
        exit_status="autosubmission (exit_format)", submission="target.py", tokens_sent=5120, tokens_received=380,
        api_calls=6, cost_usd=0.0421, wall_time_s=30.0, started_at=100.0)


def shape(value):
    """Keys in order and value types, recursively: what MLGym's readers depend on."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def test_export_matches_the_golden_mlgym_file_field_by_field():
    doc = traj_document(blotto_record(), environment="synthscale-docker", run=1)
    golden = json.loads((GOLDEN / "blotto.traj").read_text())
    assert list(doc) == ["environment", "trajectory", "history", "info", "synthscale"]  # one extra key, last
    mlgym_part = {k: v for k, v in doc.items() if k != "synthscale"}
    assert shape(mlgym_part) == shape(golden)  # keys, their order, types
    for i, (got, want) in enumerate(zip(mlgym_part["trajectory"], golden["trajectory"])):
        assert got == want, f"trajectory[{i}]"
    for i, (got, want) in enumerate(zip(mlgym_part["history"], golden["history"])):
        assert got == want, f"history[{i}]"
    assert mlgym_part["info"] == golden["info"]
    assert mlgym_part == golden
    # byte for byte as MLGym writes it (json.dumps indent 2, ASCII escapes, no final newline), extras aside
    assert mlgym_json(mlgym_part) == (GOLDEN / "blotto.traj").read_bytes()
    assert mlgym_json(results_document(blotto_record())) == (GOLDEN / "results.json").read_bytes()


def test_extras_hold_what_mlgym_fields_cannot():
    extras = traj_document(blotto_record(), environment="synthscale-docker", run=1)["synthscale"]
    assert (extras["episode_id"], extras["seed"], extras["task_hash"], extras["environment"]) == (
        "ep-blotto", 1, "th", "synthscale-docker")
    assert extras["test_scores"] == [{"Score": -0.0835}, {"Score": 0.0123}]
    assert [s["kind"] for s in extras["scores"]] == ["validate", "autosubmit"]
    assert extras["message_count"] == 6 and extras["reasoning_content"] == [[2, "Look before editing."]]
    assert extras["steps"][0]["thought"] == "Read the strategy first." and extras["submission"] == "target.py"


def test_submission_is_set_only_when_the_episode_ended_on_a_successful_submission():
    rec = blotto_record()
    failed = rec.scores[-1].model_copy(update={"validation": None, "test": None, "error": "evaluation_format_error"})
    assert traj_document(rec.model_copy(update={"scores": [*rec.scores[:1], failed]}))["info"]["submission"] is None
    assert traj_document(rec.model_copy(update={"scores": rec.scores[:1]}))["info"]["submission"] is None
    assert traj_document(rec)["info"]["submission"] == f"{WS}/target.py"


def test_thought_and_action_are_split_as_mlgym_splits_them():
    assert mlgym_split("DISCUSSION\nGo.\n\n```bash\nls\n```\n\n(Open file: n/a) $") == (
        "DISCUSSION\nGo.\n\n(Open file: n/a) $", "ls\n")
    # nested fences stay inside the action; the last top-level block is the command
    nested = "Edit.\n```\nedit 1:1\n```python\nx = 1\n```\nend_of_edit\n```\n"
    assert mlgym_split(nested) == ("Edit.\n", "edit 1:1\n```python\nx = 1\n```\nend_of_edit\n")
    assert mlgym_split("```\nunclosed") is None


def test_export_layout_numbering_and_results(tmp_path):
    base = blotto_record()
    records = [
        base.model_copy(update={"episode_id": "ep-b", "seed": 1}),
        base.model_copy(update={"episode_id": "ep-a", "seed": 0}),
        base.model_copy(update={"episode_id": "ep-c", "seed": 2, "infra_error": "node lost"}),
        base.model_copy(update={"episode_id": "ep-d", "seed": 0, "model": "org/gpt-5"}),
        base.model_copy(update={"episode_id": "ep-e", "seed": 5, "task_id": "otherTask", "baseline": {}}),
    ]
    paths = export_mlgym(records, tmp_path / "rollouts", environment="synthscale-local")
    root = tmp_path / "rollouts" / "traj"
    def folder(model: str, task: str, n: int) -> str:  # MLGym's: sampling and cost limit in the name
        return f"{model}__{task}__default__t-0.00__p-0.95__c-4.00__install-0__parallel_agents_run_{n}"

    expected_dirs = [folder("org-gpt-5", "blotto", 0), folder("tinyModel", "blotto", 0),
                     folder("tinyModel", "blotto", 1), folder("tinyModel", "otherTask", 0)]
    assert sorted(os.listdir(root)) == expected_dirs
    assert sorted(paths) == sorted(str(root / d / f"{d.split('__')[1]}.traj") for d in expected_dirs)
    for d in expected_dirs:
        assert sorted(os.listdir(root / d)) == sorted(["results.json", f"{d.split('__')[1]}.traj"])
    # runs numbered by seed within (model, task), agent primary_<run>; ep-c (infra error) is not exported
    run0 = json.loads((root / folder("tinyModel", "blotto", 0) / "blotto.traj").read_text())
    run1 = json.loads((root / folder("tinyModel", "blotto", 1) / "blotto.traj").read_text())
    assert (run0["synthscale"]["episode_id"], run1["synthscale"]["episode_id"]) == ("ep-a", "ep-b")
    assert {m["agent"] for m in run0["history"]} == {"primary_0"} and {m["agent"] for m in run1["history"]} == {
        "primary_1"}
    assert run0["environment"] == "mlgym_main" and run0["synthscale"]["environment"] == "synthscale-local"
    assert (root / folder("tinyModel", "blotto", 1) / "blotto.traj").read_bytes() == mlgym_json(
        traj_document(records[0], "synthscale-local", run=1))
    results = json.loads((root / folder("tinyModel", "blotto", 0) / "results.json").read_text())
    assert list(results) == ["agent", "baseline"]
    assert results == {"agent": [{"Score": -0.0835}, {"Score": 0.0123}], "baseline": {"Score": -0.24797001481056213}}
    # MLGym writes no baseline key for a task without baseline scores
    no_base = json.loads((root / folder("tinyModel", "otherTask", 0) / "results.json").read_text())
    assert no_base == {"agent": [{"Score": -0.0835}, {"Score": 0.0123}]}


def test_export_of_nothing_writes_nothing(tmp_path):
    assert export_mlgym([blotto_record().model_copy(update={"infra_error": "sandbox died"})], tmp_path) == []
    assert os.listdir(tmp_path) == []


def test_history_without_steps_keeps_assistant_text_as_thought():
    rec = blotto_record().model_copy(update={"steps": []})
    assistant = traj_document(rec)["history"][2]
    assert (assistant["thought"], assistant["action"]) == (rec.messages[2]["content"], "")
    assert list(assistant) == ["role", "content", "thought", "action", "agent"]


def test_sanitize_model_name():
    assert sanitize_model_name("Qwen/Qwen3-8B") == "Qwen-Qwen3-8B"
    assert sanitize_model_name("org/sub/model name") == "org-sub-model-name"
    assert sanitize_model_name("gpt-5") == "gpt-5"


def test_export_import_round_trip_gives_back_the_record(tmp_path):
    from engine.trajectories.importers import ImportOptions, read_trajectory_file

    original = blotto_record()
    [path] = export_mlgym([original], tmp_path)
    back = read_trajectory_file(Path(path), ImportOptions(run_id="other"))
    for name in TrajectoryRecord.model_fields:  # messages with their reasoning, steps, scores, ids, …
        assert getattr(back, name) == getattr(original, name), name


def test_traj_show_reads_our_export_and_the_golden_mlgym_file(tmp_path):
    from engine.cli.traj import load_records
    from engine.trajectories.render import render_summary, render_trajectory

    [path] = export_mlgym([blotto_record()], tmp_path)
    ours = load_records(Path(path))
    assert [r.episode_id for r in ours] == ["ep-blotto"]
    assert [r.episode_id for r in load_records(tmp_path)] == ["ep-blotto"]  # a folder of exported .traj files
    mlgym = load_records(GOLDEN / "blotto.traj")
    assert (mlgym[0].model, mlgym[0].exit_status, len(mlgym[0].steps)) == (
        "tinyModel", "autosubmission (exit_format)", 3)
    text = render_trajectory(mlgym[0])
    assert "exit_format" in text and "Score=-0.24797" in text and "autosubmit @ step 2" in text
    assert "ep-blotto" in render_summary(ours)
