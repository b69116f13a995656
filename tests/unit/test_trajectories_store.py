"""Unit tests for the trajectory store: exact round trip of every field, refused keys, shards, dedup, resume
ids, schema checks, and v1 shards read as v2 data."""

from __future__ import annotations

import json
import os
import typing

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from typing_extensions import is_typeddict

from engine.errors import ArtifactError
from engine.records import TRAJECTORY_SCHEMA_VERSION, HistoryConfig, ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.arrow_schema import record_fields
from engine.trajectories.store import (
    TRAJECTORY_SCHEMA,
    TRAJECTORY_SCHEMA_V1,
    TrajectoryWriter,
    read_trajectories,
    read_trajectory_table,
    reasoning_onto_messages,
    records_to_table,
    shard_paths,
    stored_episode_ids,
    table_to_records,
)

ALWAYS_DEFAULT = {("TrajectoryRecord", "schema_version")}
"""Fields the store only accepts at their default (it writes records of its own version only)."""


def full_record(episode_id: str = "ep-1", infra_error: str | None = "sandbox lost ✗", **kw) -> TrajectoryRecord:
    """A record in which every field of every record type is set, somewhere, to a value other than its
    default (``test_full_record_sets_every_field`` checks it), with unicode, None values and empty lists/dicts."""
    steps = [
        StepRecord(step=1, response="DISCUSSION\nlook 👀\n```\nls\n```", thought="look 👀", action="ls",
                   observation="data/  train.py", reasoning="hidden chain ∑", open_file="train.py",
                   working_dir="/home/agent/workspace", execution_time_s=0.125, model_latency_s=1.5,
                   prompt_tokens=1200, completion_tokens=30, cost_usd=0.00123, format_errors=["no block", "два"]),
        StepRecord(step=2, response="", thought="", action="validate", observation="", reasoning=None,
                   open_file=None, working_dir="", format_errors=[]),
    ]
    scores = [
        ScoreRecord(step=1, kind="validate", validation={"accuracy": 0.8125, "f1": 0.5}, test={"accuracy": 0.75},
                    metric="accuracy", direction="max", grading="mlgym", error="partly graded ✗",
                    artefact="out/submission ü.csv"),
        ScoreRecord(step=2, kind="autosubmit", validation=None, test=None, metric="accuracy", direction="max",
                    grading="separate", error="submission.csv not found"),
        ScoreRecord(step=2, kind="submit", validation={}, test={"accuracy": 0.0}, metric="accuracy",
                    direction="min"),
    ]
    fields = dict(
        run_id="run-ü", task_id="task_α", task_hash="th123", episode_id=episode_id, seed=2**40 + 7,
        model="Qwen/Qwen3-8B", policy="mlgym-agent",
        sampling={"temperature": 1.0, "top_p": 0.95, "max_tokens": 4096, "reasoning_effort": "low", "seed": None,
                  "one_as_int": 1},
        history=HistoryConfig(keep_last_observations=3, max_observation_chars=1234, omitted_note="synthscale-v1"),
        messages=[{"role": "system", "content": "Ты агент ✓"}, {"role": "user", "content": ""},
                  {"role": "assistant", "content": "DISCUSSION\nlook 👀\n```\nls\n```",
                   "reasoning_content": "hidden chain ∑"},
                  {"role": "user", "content": "data/  train.py"},
                  {"role": "assistant", "content": "", "reasoning_content": ""}],
        steps=steps, scores=scores, baseline={"accuracy": 0.5, "loss": 1.25}, metric="accuracy", direction="min",
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


def _instances(value, annotation, found: dict[type, list]) -> None:
    """Collect, by record type (BaseModel or TypedDict), every record inside ``value``, guided by its annotation."""
    if value is None:
        return
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is None and (is_typeddict(annotation) or (
            isinstance(annotation, type) and issubclass(annotation, BaseModel))):
        found.setdefault(annotation, []).append(value)
        for name, sub in record_fields(annotation).items():
            if isinstance(value, dict):
                _instances(value.get(name), sub, found)
            else:
                _instances(getattr(value, name), sub, found)
    elif isinstance(value, list):
        for item in value:
            _instances(item, args[0], found)
    elif isinstance(value, dict) and len(args) == 2:
        for item in value.values():
            _instances(item, args[1], found)
    elif len(args) == 1:  # X | None, NotRequired[X]
        _instances(value, args[0], found)


def fields_left_at_default(record: TrajectoryRecord) -> set[tuple[str, str]]:
    """(record type, field) pairs that no record inside ``record`` sets to a value other than the default
    (for a TypedDict, other than absent), for every record type its annotations name."""
    found: dict[type, list] = {}
    _instances(record, TrajectoryRecord, found)
    left = set()
    for kind, items in found.items():
        for name in record_fields(kind):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                info = kind.model_fields[name]
                default = None if info.is_required() else info.get_default(call_default_factory=True)
                if info.is_required() or any(getattr(i, name) != default for i in items):
                    continue
            elif any(name in i for i in items):
                continue
            left.add((kind.__name__, name))
    return left


def test_full_record_sets_every_field():
    """A field added to a record fails here until ``full_record`` sets it, and then the round trips check it."""
    record = full_record()
    found: dict[type, list] = {}
    _instances(record, TrajectoryRecord, found)
    assert {k.__name__ for k in found} == {"TrajectoryRecord", "HistoryConfig", "Message", "StepRecord", "ScoreRecord"}
    assert fields_left_at_default(record) == ALWAYS_DEFAULT
    assert ("ScoreRecord", "artefact") in fields_left_at_default(bare_record("x", scores=record.scores[1:]))


def test_schema_has_one_column_per_record_field():
    assert TRAJECTORY_SCHEMA.names == list(TrajectoryRecord.model_fields)
    assert TRAJECTORY_SCHEMA.metadata[b"synthscale.schema_version"] == b"2" == str(TRAJECTORY_SCHEMA_VERSION).encode()


def test_table_round_trip_is_exact():
    records = [full_record(), full_record("ep-2", infra_error=None, submission=None, baseline={}),
               bare_record("ep-3")]
    table = records_to_table(records)
    assert table.schema.equals(TRAJECTORY_SCHEMA, check_metadata=True)
    back = table_to_records(table)
    assert back == records
    assert [r.model_dump(mode="json") for r in back] == [r.model_dump(mode="json") for r in records]
    assert type(back[0].sampling["one_as_int"]) is int and type(back[0].sampling["temperature"]) is float
    assert back[0].scores[2].validation == {} and back[0].scores[1].validation is None
    assert back[0].scores[0].artefact == "out/submission ü.csv"
    assert [set(m) for m in back[0].messages[:4]] == [{"role", "content"}] * 2 + [
        {"role", "content", "reasoning_content"}, {"role", "content"}]  # absent stays absent
    assert back[0].messages[4]["reasoning_content"] == ""


def test_parquet_round_trip_is_exact(tmp_path):
    records = [full_record(), bare_record("ep-3")]
    TrajectoryWriter(tmp_path).write(records)
    assert read_trajectories(tmp_path) == records


def test_empty_table_round_trip():
    assert table_to_records(records_to_table([])) == []


def test_key_without_a_column_is_refused_on_write():
    record = bare_record("ep-x", messages=[{"role": "user", "content": "hi"}])
    record.messages.append({"role": "user", "content": "hi", "name": "bob"})  # appends are not validated
    with pytest.raises(ArtifactError) as info:
        records_to_table([record])
    assert str(info.value) == (
        "episode ep-x (task t): messages[1].name not in trajectory schema v2; remove the key, or add it as a "
        "field of its record in engine/records.py (the store's columns follow the records)")


def test_message_with_unknown_keys_is_refused_by_the_record():
    with pytest.raises(ValueError, match="name"):
        bare_record("ep-x", messages=[{"role": "user", "content": "hi", "name": "bob"}])
    with pytest.raises(ValueError, match="reasoning_content"):
        bare_record("ep-x", messages=[{"role": "assistant", "content": "hi", "reasoning_content": None}])


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


def test_shard_of_an_unknown_schema_version_is_refused(tmp_path):
    table = records_to_table([bare_record("a")])
    meta = dict(table.schema.metadata) | {b"synthscale.schema_version": b"3"}
    shard = _shard_dir(tmp_path) / "part-0001.parquet"
    pq.write_table(table.replace_schema_metadata(meta), shard)
    with pytest.raises(ArtifactError) as info:
        read_trajectories(tmp_path)
    assert str(info.value) == (f"{shard}: trajectory schema v3, expected v2 (v1 is upgraded on read); "
                               "rerun `synthscale episode --start-over` or use a new run dir")
    with pytest.raises(ArtifactError, match="trajectory schema v3"):
        stored_episode_ids(tmp_path)
    with pytest.raises(ArtifactError, match="schema v3, this store reads v1 and v2"):
        table_to_records(table.replace_schema_metadata(meta))


def test_shard_tagged_with_the_wrong_version_is_refused(tmp_path):
    table = records_to_table([bare_record("a")])
    shard = _shard_dir(tmp_path) / "part-0001.parquet"
    pq.write_table(table.replace_schema_metadata(TRAJECTORY_SCHEMA_V1.metadata), shard)
    with pytest.raises(ArtifactError, match=rf"^{shard}: columns \['messages', 'scores'\] differ from trajectory "
                                            r"schema v1; rerun"):
        read_trajectories(tmp_path)


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


_S, _I, _F = pa.string(), pa.int64(), pa.float64()
_METRICS = pa.map_(_S, _F)
V1_SCHEMA = pa.schema(
    [
        ("schema_version", _I), ("run_id", _S), ("task_id", _S), ("task_hash", _S), ("episode_id", _S),
        ("seed", _I), ("model", _S), ("policy", _S), ("sampling", _S), ("history", _S),
        ("messages", pa.list_(pa.struct([("role", _S), ("content", _S)]))),
        ("steps", pa.list_(pa.struct([
            ("step", _I), ("response", _S), ("thought", _S), ("action", _S), ("observation", _S), ("reasoning", _S),
            ("open_file", _S), ("working_dir", _S), ("execution_time_s", _F), ("model_latency_s", _F),
            ("prompt_tokens", _I), ("completion_tokens", _I), ("cost_usd", _F), ("format_errors", pa.list_(_S)),
        ]))),
        ("scores", pa.list_(pa.struct([
            ("step", _I), ("kind", _S), ("validation", _METRICS), ("test", _METRICS), ("metric", _S),
            ("direction", _S), ("grading", _S), ("error", _S),
        ]))),
        ("baseline", _METRICS), ("metric", _S), ("direction", _S), ("exit_status", _S), ("submission", _S),
        ("tokens_sent", _I), ("tokens_received", _I), ("api_calls", _I), ("cost_usd", _F), ("wall_time_s", _F),
        ("started_at", _F), ("infra_error", _S),
    ],
    metadata={b"synthscale.schema": b"synthscale.trajectories", b"synthscale.schema_version": b"1"},
)
"""The store's layout before v2, as the code of v1 wrote it by hand."""


def _v1_step(step: int, response: str, action: str, reasoning: str | None, format_errors=()) -> dict:
    return dict(step=step, response=response, thought="", action=action, observation=f"out {step}" if action else "",
                reasoning=reasoning, open_file=None, working_dir="/w", execution_time_s=0.5, model_latency_s=1.0,
                prompt_tokens=10, completion_tokens=5, cost_usd=0.01, format_errors=list(format_errors))


def _v1_row(episode_id: str, steps: list[dict], infra_error: str | None = None) -> dict:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"}]
    for s in steps:
        if s["action"]:  # the v1 loop appended a turn for every step that produced an action
            messages += [{"role": "assistant", "content": s["response"]}, {"role": "user", "content": s["observation"]}]
    score = dict(step=len(steps), kind="autosubmit", validation=[("acc", 0.5)], test=None, metric="acc",
                 direction="max", grading="separate", error=None)
    return dict(schema_version=1, run_id="r", task_id="t", task_hash="h", episode_id=episode_id, seed=3, model="m",
                policy="p", sampling=json.dumps({"temperature": 1.0}),
                history=json.dumps({"keep_last_observations": 5, "max_observation_chars": 20000}),
                messages=messages, steps=steps, scores=[score], baseline=[("acc", 0.25)], metric="acc",
                direction="max", exit_status="autosubmission (exit_format)", submission=None, tokens_sent=30,
                tokens_received=15, api_calls=3, cost_usd=0.03, wall_time_s=9.0, started_at=5.0,
                infra_error=infra_error)


def _write_v1_shard(tmp_path) -> str:
    rows = [
        _v1_row("v1-a", [_v1_step(0, "R0", "ls", "think 0"), _v1_step(1, "R1", "pwd", None),
                         _v1_step(2, "R2", "cat x", "think 2", ["bad"]),  # re-asked, then acted
                         _v1_step(3, "bad again", "", None, ["bad", "bad again"])]),  # format errors: no turn
        _v1_row("v1-b", [_v1_step(0, "R0", "ls", None)], infra_error="node lost"),
    ]
    shard = _shard_dir(tmp_path) / "part-0000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=V1_SCHEMA), shard)
    return str(shard)


def _expected_v1_a() -> TrajectoryRecord:
    """What v1-a reads as: v2 data, its steps' reasoning on their assistant turns."""
    steps = [StepRecord(**_v1_step(0, "R0", "ls", "think 0")), StepRecord(**_v1_step(1, "R1", "pwd", None)),
             StepRecord(**_v1_step(2, "R2", "cat x", "think 2", ["bad"])),
             StepRecord(**_v1_step(3, "bad again", "", None, ["bad", "bad again"]))]
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
                {"role": "assistant", "content": "R0", "reasoning_content": "think 0"},
                {"role": "user", "content": "out 0"},
                {"role": "assistant", "content": "R1"}, {"role": "user", "content": "out 1"},
                {"role": "assistant", "content": "R2", "reasoning_content": "think 2"},
                {"role": "user", "content": "out 2"}]
    return TrajectoryRecord(
        schema_version=2, run_id="r", task_id="t", task_hash="h", episode_id="v1-a", seed=3, model="m", policy="p",
        sampling={"temperature": 1.0}, history=HistoryConfig(omitted_note="synthscale-v1"),  # v1 episodes saw the old note
        messages=messages, steps=steps,
        scores=[ScoreRecord(step=4, kind="autosubmit", validation={"acc": 0.5}, metric="acc", direction="max")],
        baseline={"acc": 0.25}, metric="acc", direction="max", exit_status="autosubmission (exit_format)",
        tokens_sent=30, tokens_received=15, api_calls=3, cost_usd=0.03, wall_time_s=9.0, started_at=5.0)


def test_v1_layout_is_the_frozen_one():
    assert TRAJECTORY_SCHEMA_V1.equals(V1_SCHEMA, check_metadata=True)


def test_v1_shard_reads_as_v2_data(tmp_path):
    _write_v1_shard(tmp_path)
    TrajectoryWriter(tmp_path).write([bare_record("v2-c")])
    records = read_trajectories(tmp_path)
    assert [r.episode_id for r in records] == ["v1-a", "v1-b", "v2-c"]
    assert records[0] == _expected_v1_a()
    assert records[1].messages[2] == {"role": "assistant", "content": "R0"}  # no reasoning: no key
    assert records[1].scores[0].artefact is None
    table = read_trajectory_table(tmp_path)
    assert table.schema.equals(TRAJECTORY_SCHEMA) and table.schema.metadata == TRAJECTORY_SCHEMA.metadata
    assert table.column("schema_version").to_pylist() == [2, 2, 2]
    TrajectoryWriter(tmp_path / "again").write(records)  # upgraded records are v2 records
    assert read_trajectories(tmp_path / "again") == records


def test_v1_shard_read_by_columns(tmp_path):
    _write_v1_shard(tmp_path)
    assert read_trajectory_table(tmp_path, columns=["seed"]).column("seed").to_pylist() == [3, 3]
    messages = read_trajectory_table(tmp_path, columns=["messages"])
    assert messages.column_names == ["messages"]
    assert messages.schema.field("messages").type == TRAJECTORY_SCHEMA.field("messages").type
    assert messages.column("messages").to_pylist()[0][2] == {
        "role": "assistant", "content": "R0", "reasoning_content": "think 0"}
    scores = read_trajectory_table(tmp_path, columns=["scores", "steps"])
    assert scores.column_names == ["scores", "steps"]
    assert scores.column("scores").to_pylist()[0][0]["artefact"] is None
    assert stored_episode_ids(tmp_path) == {"v1-a"}
    assert stored_episode_ids(tmp_path, include_infra_errors=True) == {"v1-a", "v1-b"}


def test_v1_table_read_with_pyarrow_upgrades_in_table_to_records(tmp_path):
    shard = _write_v1_shard(tmp_path)
    assert table_to_records(pq.read_table(shard))[0] == _expected_v1_a()
    with pytest.raises(ArtifactError, match="'messages' are upgraded from its 'steps'; read both columns"):
        table_to_records(pq.read_table(shard, columns=["messages"]))


def test_reasoning_is_not_copied_onto_turns_that_do_not_match_the_steps(caplog):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
                {"role": "assistant", "content": "something else"}, {"role": "user", "content": "o"}]
    steps = [_v1_step(0, "R0", "ls", "think 0")]
    assert reasoning_onto_messages(messages, steps, "ep-9") == messages
    assert "episode ep-9: 1 assistant messages do not match its 1 steps" in caplog.text
    two_steps = [_v1_step(0, "something else", "ls", "think 0"), _v1_step(1, "R1", "pwd", "think 1")]
    assert reasoning_onto_messages(messages, two_steps) == messages  # a missing turn that was not a format failure


# -- unreadable shards: set aside, reported, skipped ------------------------------------------------------------------

def _store_with_a_corrupt_episode(tmp_path):
    """A store of episodes a, b (per-episode shards) and c, d (one writer shard), with b's shard truncated."""
    from engine.trajectories.episode_shards import write_episode

    write_episode(tmp_path, bare_record("a"))
    victim = write_episode(tmp_path, bare_record("b"))
    TrajectoryWriter(tmp_path).write([bare_record("c"), bare_record("d", infra_error="SandboxError: gone")])
    with open(victim, "r+b") as f:
        f.truncate(100)
    return victim


def test_readers_set_an_unreadable_shard_aside_and_go_on(tmp_path, caplog):
    from engine.trajectories.store import set_aside_shards

    victim = _store_with_a_corrupt_episode(tmp_path)
    moved = str(_shard_dir(tmp_path) / "corrupt" / "part-ep-b.parquet")
    with caplog.at_level("WARNING", logger="engine.trajectories.store"):
        table = read_trajectory_table(tmp_path, columns=["episode_id"])
    assert table.column("episode_id").to_pylist() == ["c", "d", "a"]  # shards in name order
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{victim}: not a readable trajectory shard (")
    assert f"; moved to {moved} (nothing deleted) and skipped: its episodes are missing from the store; re-run " \
           "the rollout stage (`synthscale episode`, or `synthscale rollout`) to play them again" in warning
    assert not os.path.exists(victim) and os.path.getsize(moved) == 100  # moved whole, never deleted
    assert set_aside_shards(tmp_path) == [moved]
    caplog.clear()
    assert [r.episode_id for r in read_trajectories(tmp_path)] == ["c", "d", "a"]  # corrupt/ is not listed
    assert stored_episode_ids(tmp_path) == {"a", "c"} and not caplog.records


def test_resume_readers_set_aside_too(tmp_path, caplog):
    from engine.trajectories.episode_shards import stored_outcomes

    victim = _store_with_a_corrupt_episode(tmp_path)
    with caplog.at_level("WARNING"):
        assert stored_outcomes(tmp_path, ["a", "b", "x"], ["seed", "infra_error"]) == {
            "a": {"seed": 0, "infra_error": None}}  # b is missing: the worker plays it again
    assert "not a readable trajectory shard" in caplog.text and not os.path.exists(victim)

    victim = _store_with_a_corrupt_episode(tmp_path / "again")
    assert stored_episode_ids(tmp_path / "again", include_infra_errors=True) == {"a", "c", "d"}
    assert not os.path.exists(victim)


def test_a_name_set_aside_before_is_kept(tmp_path):
    from engine.trajectories.store import set_aside_shards

    _store_with_a_corrupt_episode(tmp_path)
    read_trajectory_table(tmp_path)
    _store_with_a_corrupt_episode(tmp_path)  # b stored again, and corrupted again
    read_trajectory_table(tmp_path)
    corrupt = _shard_dir(tmp_path) / "corrupt"
    assert [p.rsplit("/", 1)[-1] for p in set_aside_shards(tmp_path)] == ["part-ep-b.parquet", "part-ep-b.parquet.1"]
    assert sorted(p.name for p in corrupt.iterdir()) == ["part-ep-b.parquet", "part-ep-b.parquet.1"]


def test_read_stores_raises_unless_asked_to_set_aside(tmp_path):
    from engine.errors import CorruptArtifactError
    from engine.trajectories.store import read_stores

    victim = _store_with_a_corrupt_episode(tmp_path)
    with pytest.raises(CorruptArtifactError) as info:
        read_stores([tmp_path], ["episode_id"])
    assert info.value.path == victim and str(info.value).startswith(f"{victim}: not a readable trajectory shard (")
    assert os.path.exists(victim)
    assert read_stores([tmp_path], ["episode_id"], set_aside=True).num_rows == 3


def test_a_shard_that_cannot_be_moved_is_skipped_with_a_warning(tmp_path, caplog, monkeypatch):
    import engine.trajectories.store as store

    def refuse(fs, path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(store, "set_aside", refuse)
    victim = _store_with_a_corrupt_episode(tmp_path)
    with caplog.at_level("WARNING"):
        assert read_trajectory_table(tmp_path, columns=["episode_id"]).num_rows == 3
    assert f"{victim}: not a readable trajectory shard" in caplog.text
    assert "it could not be set aside ([Errno 13] Permission denied" in caplog.text
    assert os.path.exists(victim)


def test_a_shard_gone_since_it_was_listed_is_skipped(tmp_path, monkeypatch):
    import engine.trajectories.store as store

    TrajectoryWriter(tmp_path).write([bare_record("a")])
    listed = store._list_shards
    monkeypatch.setattr(store, "_list_shards", lambda fs, base: [*listed(fs, base), f"{base}/part-gone.parquet"])
    assert read_trajectory_table(tmp_path, columns=["episode_id"]).num_rows == 1
    assert stored_episode_ids(tmp_path) == {"a"}


def test_a_shard_of_another_schema_is_refused_not_set_aside(tmp_path):
    shard = _shard_dir(tmp_path) / "part-0001.parquet"
    pq.write_table(pa.table({"episode_id": ["a"]}), shard)
    with pytest.raises(ArtifactError, match="not a synthscale trajectory shard"):
        read_trajectory_table(tmp_path)
    assert shard.exists() and not (_shard_dir(tmp_path) / "corrupt").exists()


def test_records_stored_before_the_note_wording_was_recorded_rebuild_their_old_prompts(tmp_path):
    # a v2 row whose history JSON lacks omitted_note: its episodes saw the old elision note
    import json as _json

    from engine.agent.history import build_prompt
    from engine.trajectories.store import records_to_table, table_to_records

    rec = full_record("old", history=HistoryConfig(keep_last_observations=3))
    table = records_to_table([rec])
    history = _json.loads(table.column("history")[0].as_py())
    history.pop("omitted_note")
    table = table.set_column(table.schema.get_field_index("history"), "history",
                             pa.array([_json.dumps(history)], pa.string()))
    [back] = table_to_records(table)
    assert back.history.omitted_note == "synthscale-v1"
    assert table_to_records(records_to_table([rec]))[0].history.omitted_note == "mlgym"
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": "o"}, {"role": "assistant", "content": "B"}, {"role": "user", "content": "p"}]
    assert build_prompt(msgs, 1, back.history.omitted_note)[3]["content"] == "Old environment output: (1 line omitted)"
    assert build_prompt(msgs, 1)[3]["content"] == "Old output omitted (1 lines)"
