"""Unit tests for rollout progress (engine/rollout/status.py) and the cancel marker (engine/rollout/control.py)."""

from __future__ import annotations

import json

import pytest

from engine.artifacts import write_config, write_manifest
from engine.config import EpisodeConfig, RunConfig
from engine.errors import ArtifactError
from engine.records import Manifest, TrajectoryRecord
from engine.rollout.control import cancel_requested, clear_cancel, request_cancel
from engine.rollout.status import infra_error_kind, render_status, rollout_status
from engine.trajectories.store import TrajectoryWriter


def rec(task: str, episode: str, exit_status: str = "submitted", cost: float = 0.0,
        infra: str | None = None) -> TrajectoryRecord:
    return TrajectoryRecord(run_id="r1", task_id=task, task_hash="h", episode_id=episode, seed=0, model="m",
                            policy="p", exit_status=exit_status, cost_usd=cost, infra_error=infra, started_at=1.0)


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "r1"
    cfg = RunConfig(run_id="r1", run_dir=str(run), episodes=EpisodeConfig(episodes_per_task=3))
    write_config(run / "rollouts", cfg)
    writer = TrajectoryWriter(str(run))
    writer.write([rec("a", "a0", cost=0.25), rec("a", "a1", "autosubmission (max_steps)", cost=0.5),
                  rec("a", "a2", "", cost=0.125, infra="SandboxError: container 3f died")])
    writer.write([rec("b", "b0", cost=1.0), rec("b", "b1", "", infra="ModelError: 503 after 6 retries"),
                  rec("b", "b2", "", infra="SandboxError: node lost: oom"),
                  rec("a", "a2", "submitted", cost=0.0625)])  # a retry replaces a2's infra failure
    return run


def test_status_counts_per_task_and_totals(run_dir):
    s = rollout_status(str(run_dir))
    assert s.run_id == "r1" and s.episodes_per_task == 3
    assert [t.task_id for t in s.tasks] == ["a", "b"]
    a, b = s.tasks
    assert (a.target, a.done, a.infra_failures, a.remaining) == (3, 3, 0, 0)
    assert a.exit_statuses == {"submitted": 2, "autosubmission (max_steps)": 1}
    assert a.cost_usd == 0.25 + 0.5 + 0.0625
    assert (b.done, b.infra_failures, b.remaining) == (1, 2, 2)
    assert b.exit_statuses == {"submitted": 1}
    assert (s.done, s.infra_failures, s.target) == (4, 2, 6)
    assert s.exit_statuses == {"submitted": 3, "autosubmission (max_steps)": 1}
    assert list(s.infra_errors.items()) == [("ModelError", 1), ("SandboxError", 1)]
    assert s.cost_usd == 0.25 + 0.5 + 0.0625 + 1.0
    assert not s.complete and not s.cancel_requested and s.cancel_reason is None


def test_status_sees_manifest_and_cancel(run_dir):
    write_manifest(run_dir / "rollouts", Manifest(stage="rollouts", run_id="r1", config_hash="x"))
    request_cancel(str(run_dir), "over budget")
    s = rollout_status(str(run_dir))
    assert s.complete and s.cancel_requested and s.cancel_reason == "over budget"
    text = render_status(s)
    assert "complete, cancel requested (over budget)" in text


def test_render_status_table(run_dir):
    lines = render_status(rollout_status(str(run_dir))).splitlines()
    assert lines[0] == f"run r1 ({run_dir}): incomplete"
    assert lines[2].split() == ["a", "3/3", "0", "0.8125", "submitted:", "2,", "autosubmission", "(max_steps):", "1"]
    assert lines[3].split()[:4] == ["b", "1/3", "2", "1.0000"]
    assert lines[4].split()[:4] == ["total", "4/6", "2", "1.8125"]
    assert lines[5] == "infra errors by kind: ModelError: 1, SandboxError: 1"


def test_status_of_an_empty_run_without_config(tmp_path):
    with pytest.raises(ArtifactError, match="no rollouts/ in it"):
        rollout_status(str(tmp_path / "nothing"))
    (tmp_path / "rollouts").mkdir()
    s = rollout_status(str(tmp_path))
    assert (s.tasks, s.done, s.target, s.run_id, s.complete) == ([], 0, None, None, False)
    assert "(no episodes stored yet)" in render_status(s)


def test_status_without_config_has_no_target(tmp_path):
    TrajectoryWriter(str(tmp_path)).write([rec("t", "e0")])
    s = rollout_status(str(tmp_path))
    assert s.tasks[0].target is None and s.tasks[0].remaining is None and s.target is None
    assert render_status(s).splitlines()[2].split()[:2] == ["t", "1"]


def test_bad_config_names_the_file(tmp_path):
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "config.yaml").write_text("episodes: {episodes_per_task: -1}\n")
    with pytest.raises(ArtifactError, match=r"rollouts/config.yaml: not a valid RunConfig"):
        rollout_status(str(tmp_path))


def test_infra_error_kind():
    assert infra_error_kind("SandboxError: container died: exit 137") == "SandboxError"
    assert infra_error_kind("timeout") == "timeout"
    assert infra_error_kind(": nothing before") == "unknown"


def test_cancel_marker_round_trip(tmp_path):
    run = str(tmp_path / "r")
    assert cancel_requested(run) is None
    assert clear_cancel(run) is False
    path = request_cancel(run, "stop please")
    assert path == str(tmp_path / "r" / "rollouts" / "cancel.json")
    data = json.loads((tmp_path / "r" / "rollouts" / "cancel.json").read_text())
    assert data["reason"] == "stop please" and "@" in data["by"]
    assert cancel_requested(run) == "stop please"
    request_cancel(run)
    assert cancel_requested(run) == ""
    assert [p.name for p in (tmp_path / "r" / "rollouts").iterdir()] == ["cancel.json"]  # no temp file left
    assert clear_cancel(run) is True
    assert cancel_requested(run) is None


def test_malformed_cancel_marker_is_an_artifact_error(tmp_path):
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "cancel.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="not a cancel request"):
        cancel_requested(str(tmp_path))


def test_status_names_the_tasks_the_stage_gave_up(run_dir):
    # b: 2 infra failures stored, 4 counted (2 lost leases the store never sees); c: given up with nothing stored
    write_manifest(run_dir / "rollouts", Manifest(stage="rollouts", run_id="r1", config_hash="x",
                                                  rejects={"task_failed:b": 4, "task_failed:c": 3, "other": 1}))
    s = rollout_status(str(run_dir))
    assert s.complete and s.given_up == {"b": 4, "c": 3}
    assert [(t.task_id, t.given_up, t.done, t.infra_failures) for t in s.tasks] == [
        ("a", None, 3, 0), ("b", 4, 1, 2), ("c", 3, 0, 0)]
    assert s.tasks[1].infra_errors == {"ModelError": 1, "SandboxError": 1}
    assert render_status(s) == "\n".join([
        f"run r1 ({run_dir}): complete, 2 tasks given up",
        "task          done  infra     cost $  exit statuses",
        "a              3/3      0     0.8125  submitted: 2, autosubmission (max_steps): 1",
        "b              1/3      2     1.0000  submitted: 1",
        "c              0/3      0     0.0000",
        "total          4/9      2     1.8125  submitted: 3, autosubmission (max_steps): 1",
        "infra errors by kind: ModelError: 1, SandboxError: 1",
        "given up after too many infra failures (rollout.max_infra_failures_per_task; a re-run tries them again):",
        "  b: 4 infra failures; stored: ModelError: 1, SandboxError: 1",
        "  c: 3 infra failures; stored: none",
    ])


def test_one_task_given_up_is_singular(run_dir):
    write_manifest(run_dir / "rollouts", Manifest(stage="rollouts", run_id="r1", config_hash="x",
                                                  rejects={"task_failed:a": 1}))
    assert render_status(rollout_status(str(run_dir))).splitlines()[0] == f"run r1 ({run_dir}): complete, 1 task given up"


def test_status_sets_aside_an_unreadable_shard_and_lists_it(run_dir, caplog):
    shards = sorted((run_dir / "rollouts" / "trajectories").glob("part-*.parquet"))
    shards[1].write_bytes(b"not parquet")  # b0, b1, b2 and a retry of a2 are lost
    with caplog.at_level("WARNING"):
        s = rollout_status(str(run_dir))
    moved = str(run_dir / "rollouts" / "trajectories" / "corrupt" / shards[1].name)
    assert f"{shards[1]}: not a readable trajectory shard" in caplog.text
    assert s.set_aside == [moved] and [t.task_id for t in s.tasks] == ["a"]
    assert (s.done, s.infra_failures) == (2, 1)
    assert render_status(s).splitlines()[-3:] == [
        "infra errors by kind: SandboxError: 1",
        "unreadable shards set aside (1; their episodes are missing until `synthscale episode` or `synthscale "
        "rollout` plays them again):",
        f"  {moved}",
    ]
    assert rollout_status(str(run_dir)).set_aside == [moved]  # listed by later calls too
