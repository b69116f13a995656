"""Unit tests for the trajectory store: exact round trip, shards, dedup, resume ids, schema checks."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import ArtifactError
from engine.records import SCHEMA_VERSION, HistoryConfig, ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.store import (
    TRAJECTORY_SCHEMA,
    TrajectoryWriter,
    read_trajectories,
    read_trajectory_table,
    records_to_table,
    shard_paths,
    stored_episode_ids,
    table_to_records,
)


def full_record(episode_id: str = "ep-1", infra_error: str | None = None, **kw) -> TrajectoryRecord:
    """A record that sets every field, with unicode, None values and empty lists/dicts."""
    steps = [
        StepRecord(step=0, response="DISCUSSION\nlook 👀\n```\nls\n```", thought="look 👀", action="ls",
                   observation="data/  train.py", reasoning="hidden chain ∑", open_file=None,
                   working_dir="/home/agent/workspace", execution_time_s=0.125, model_latency_s=1.5,
                   prompt_tokens=1200, completion_tokens=30, cost_usd=0.00123, format_errors=["no block", "два"]),
        StepRecord(step=1, response="", thought="", action="validate", observation="", reasoning=None,
                   open_file="train.py", working_dir="", format_errors=[]),
    ]
    scores = [
        ScoreRecord(step=1, kind="validate", validation={"accuracy": 0.8125, "f1": 0.5}, test={"accuracy": 0.75},
                    metric="accuracy", direction="max", grading="separate", error=None),
        ScoreRecord(step=2, kind="autosubmit", validation=None, test=None, metric="accuracy", direction="max",
                    grading="mlgym", error="submission.csv not found"),
        ScoreRecord(step=2, kind="submit", validation={}, test={"accuracy": 0.0}, metric="accuracy",
                    direction="min"),
    ]
    fields = dict(
        run_id="run-ü", task_id="task_α", task_hash="th123", episode_id=episode_id, seed=2**40 + 7,
        model="Qwen/Qwen3-8B", policy="mlgym-agent",
        sampling={"temperature": 1.0, "top_p": 0.95, "max_tokens": 4096, "reasoning_effort": "low", "seed": None,
                  "one_as_int": 1},
        history=HistoryConfig(keep_last_observations=3, max_observation_chars=1234),
        messages=[{"role": "system", "content": "Ты агент ✓"}, {"role": "user", "content": ""},
                  {"role": "assistant", "content": "DISCUSSION\nlook 👀\n```\nls\n```"}],
        steps=steps, scores=scores, baseline={"accuracy": 0.5, "loss": 1.25}, metric="accuracy", direction="max",
        exit_status="autosubmission (max_steps)", submission="submission.csv", tokens_sent=2400,
        tokens_received=60, api_calls=2, cost_usd=0.0025, wall_time_s=33.3, started_at=1700000000.123456,
        infra_error=infra_error,
    )
    fields.update(kw)
    return TrajectoryRecord(**fields)


def bare_record(episode_id: str, **kw) -> TrajectoryRecord:
    fields = dict(run_id="r", task_id="t", task_hash="h", episode_id=episode_id, seed=0, model="m", policy="p",
                  started_at=1.0)
    return TrajectoryRecord(**(fields | kw))


def test_schema_has_one_column_per_record_field():
    assert TRAJECTORY_SCHEMA.names == list(TrajectoryRecord.model_fields)
    assert TRAJECTORY_SCHEMA.metadata[b"synthscale.schema_version"] == str(SCHEMA_VERSION).encode()


def test_table_round_trip_is_exact():
    records = [full_record(), full_record("ep-2", infra_error="node lost ✗", submission=None, baseline={}),
               bare_record("ep-3")]
    table = records_to_table(records)
    assert table.schema.equals(TRAJECTORY_SCHEMA, check_metadata=True)
    back = table_to_records(table)
    assert back == records
    assert [r.model_dump(mode="json") for r in back] == [r.model_dump(mode="json") for r in records]
    assert type(back[0].sampling["one_as_int"]) is int and type(back[0].sampling["temperature"]) is float
    assert back[0].scores[2].validation == {} and back[0].scores[1].validation is None


def test_parquet_round_trip_is_exact(tmp_path):
    records = [full_record(), bare_record("ep-3")]
    TrajectoryWriter(tmp_path).write(records)
    assert read_trajectories(tmp_path) == records


def test_empty_table_round_trip():
    assert table_to_records(records_to_table([])) == []


def test_message_with_extra_keys_is_refused_on_write():
    record = bare_record("ep-x", messages=[{"role": "user", "content": "hi", "name": "bob"}])
    with pytest.raises(ArtifactError, match=r"episode ep-x \(task t\): message 0 has keys \['content', 'name', 'role'\]"):
        records_to_table([record])


def test_writer_writes_one_shard_per_call_and_no_tmp_files(tmp_path):
    writer = TrajectoryWriter(str(tmp_path))
    first = writer.write([bare_record("a"), bare_record("b")])
    second = writer.write([bare_record("c")])
    assert writer.write([]) is None
    assert shard_paths(tmp_path) == [first, second]
    assert sorted(os.listdir(tmp_path / "rollouts" / "trajectories")) == sorted(
        os.path.basename(p) for p in (first, second))
    assert [r.episode_id for r in read_trajectories(tmp_path)] == ["a", "b", "c"]
    assert pq.read_table(first).num_rows == 2


def test_duplicate_shard_never_yields_duplicate_episodes(tmp_path):
    writer = TrajectoryWriter(tmp_path)
    writer.write([bare_record("a", exit_status="submitted"), bare_record("b")])
    writer.write([bare_record("a", exit_status="second copy"), bare_record("c")])
    records = read_trajectories(tmp_path)
    assert [(r.episode_id, r.exit_status) for r in records] == [("a", "submitted"), ("b", ""), ("c", "")]
    assert stored_episode_ids(tmp_path) == {"a", "b", "c"}


def test_retried_episode_replaces_its_infra_error(tmp_path):
    writer = TrajectoryWriter(tmp_path)
    writer.write([bare_record("a", infra_error="sandbox died"), bare_record("b", infra_error="node lost")])
    assert stored_episode_ids(tmp_path) == set()
    assert stored_episode_ids(tmp_path, include_infra_errors=True) == {"a", "b"}
    writer.write([bare_record("a", exit_status="submitted")])
    records = read_trajectories(tmp_path)
    assert [(r.episode_id, r.infra_error, r.exit_status) for r in records] == [  # store order of kept rows
        ("b", "node lost", ""), ("a", None, "submitted")]
    assert stored_episode_ids(tmp_path) == {"a"}


def test_read_selected_columns_is_deduplicated(tmp_path):
    writer = TrajectoryWriter(tmp_path)
    writer.write([bare_record("a", seed=1), bare_record("b", seed=2)])
    writer.write([bare_record("a", seed=9)])
    table = read_trajectory_table(tmp_path, columns=["seed"])
    assert table.column_names == ["seed"]
    assert table.column("seed").to_pylist() == [1, 2]


def test_empty_store(tmp_path):
    assert read_trajectories(tmp_path / "nothing") == []
    assert stored_episode_ids(tmp_path / "nothing") == set()
    assert read_trajectory_table(tmp_path, columns=["episode_id"]).num_rows == 0


def _shard_dir(tmp_path):
    path = tmp_path / "rollouts" / "trajectories"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_shard_with_another_schema_version_is_refused(tmp_path):
    table = records_to_table([bare_record("a")])
    meta = dict(table.schema.metadata) | {b"synthscale.schema_version": str(SCHEMA_VERSION + 1).encode()}
    shard = _shard_dir(tmp_path) / "part-0001.parquet"
    pq.write_table(table.replace_schema_metadata(meta), shard)
    with pytest.raises(ArtifactError) as info:
        read_trajectories(tmp_path)
    assert str(info.value) == (f"{shard}: trajectory schema v{SCHEMA_VERSION + 1}, expected v{SCHEMA_VERSION}; "
                               "rerun `synthscale episode --start-over` or use a new run dir")
    with pytest.raises(ArtifactError, match="trajectory schema v"):
        stored_episode_ids(tmp_path)


def test_foreign_parquet_file_is_refused(tmp_path):
    shard = _shard_dir(tmp_path) / "part-0001.parquet"
    pq.write_table(pa.table({"episode_id": ["a"]}), shard)
    with pytest.raises(ArtifactError, match=rf"^{shard}: not a synthscale trajectory shard"):
        read_trajectories(tmp_path)


def test_shard_with_changed_columns_is_refused(tmp_path):
    table = records_to_table([bare_record("a")])
    changed = table.drop_columns(["api_calls"]).replace_schema_metadata(table.schema.metadata)
    shard = _shard_dir(tmp_path) / "part-0001.parquet"
    pq.write_table(changed, shard)
    with pytest.raises(ArtifactError, match=rf"^{shard}: columns \['api_calls'\] differ from trajectory schema v"):
        read_trajectories(tmp_path)


def test_temporary_files_are_ignored(tmp_path):
    TrajectoryWriter(tmp_path).write([bare_record("a")])
    (_shard_dir(tmp_path) / "part-0002.parquet.tmp-deadbeef").write_bytes(b"partial")
    assert [r.episode_id for r in read_trajectories(tmp_path)] == ["a"]
