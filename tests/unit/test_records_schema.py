"""The Arrow types derived from the record models, the check for keys without a column, and the versions."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pytest
from pydantic import BaseModel, Field
from typing_extensions import NotRequired, TypedDict

from engine.protocols import Message
from engine.records import (
    MANIFEST_SCHEMA_VERSION,
    TRAJECTORY_SCHEMA_VERSION,
    Manifest,
    ScoreRecord,
    TrajectoryRecord,
)
from engine.trajectories.arrow_schema import arrow_type, plain_row, record_schema, struct_type, unknown_keys
from engine.trajectories.store import JSON_COLUMNS, TRAJECTORY_SCHEMA

S, I, F = pa.string(), pa.int64(), pa.float64()
METRICS = pa.map_(S, F)


class Inner(BaseModel):
    b: bool
    when: float | None = None


class Turn(TypedDict):
    role: str
    extra: NotRequired[str]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, I), (float, F), (str, S), (bool, pa.bool_()), (int | None, I), (Literal["max", "min"], S),
        (list[str], pa.list_(S)), (list[float] | None, pa.list_(F)), (dict[str, float], METRICS),
        (dict[str, float] | None, METRICS), (dict[str, list[int]], pa.map_(S, pa.list_(I))),
        (Inner, pa.struct([("b", pa.bool_()), ("when", F)])), (list[Inner], pa.list_(pa.struct([("b", pa.bool_()),
                                                                                            ("when", F)]))),
        (Turn, pa.struct([("role", S), ("extra", S)])),
    ],
)
def test_arrow_type(annotation, expected):
    assert arrow_type(annotation) == expected


@pytest.mark.parametrize(
    "annotation",
    [dict[str, float | int | str | None], int | str, Literal[1, 2], set[str], tuple[str, ...], dict[int, float], bytes],
)
def test_annotations_without_an_arrow_type_are_refused(annotation):
    with pytest.raises(TypeError, match=r"^no Arrow type for the annotation .*give its column explicitly"):
        arrow_type(annotation)


def test_record_schema_names_the_field_and_takes_overrides():
    class Row(BaseModel):
        name: str = Field(description="documented fields are fields too")
        settings: dict[str, float | str] = {}

    with pytest.raises(TypeError, match=r"^Row\.settings: no Arrow type"):
        record_schema(Row)
    schema = record_schema(Row, overrides={"settings": S}, metadata={b"k": b"v"})
    assert schema.names == ["name", "settings"] and schema.types == [S, S] and schema.metadata == {b"k": b"v"}
    with pytest.raises(ValueError, match=r"overrides \['setings'\] name no field of Row"):
        record_schema(Row, overrides={"setings": S})


def test_struct_type_follows_declaration_order():
    assert struct_type(ScoreRecord).names == list(ScoreRecord.model_fields)
    assert struct_type(Message) == pa.struct([("role", S), ("content", S), ("reasoning_content", S)])


def test_trajectory_schema_keeps_the_v1_columns_and_adds_two_fields():
    v1_messages = [("role", S), ("content", S)]
    v1_scores = [("step", I), ("kind", S), ("validation", METRICS), ("test", METRICS), ("metric", S),
                 ("direction", S), ("grading", S), ("error", S)]
    steps = [("step", I), ("response", S), ("thought", S), ("action", S), ("observation", S), ("reasoning", S),
             ("open_file", S), ("working_dir", S), ("execution_time_s", F), ("model_latency_s", F),
             ("prompt_tokens", I), ("completion_tokens", I), ("cost_usd", F), ("format_errors", pa.list_(S))]
    expected = pa.schema([
        ("schema_version", I), ("run_id", S), ("task_id", S), ("task_hash", S), ("episode_id", S), ("seed", I),
        ("model", S), ("policy", S), ("sampling", S), ("history", S),
        ("messages", pa.list_(pa.struct([*v1_messages, ("reasoning_content", S)]))),
        ("steps", pa.list_(pa.struct(steps))),
        ("scores", pa.list_(pa.struct([*v1_scores, ("artefact", S)]))),
        ("baseline", METRICS), ("metric", S), ("direction", S), ("exit_status", S), ("submission", S),
        ("tokens_sent", I), ("tokens_received", I), ("api_calls", I), ("cost_usd", F), ("wall_time_s", F),
        ("started_at", F), ("infra_error", S),
    ])
    assert TRAJECTORY_SCHEMA.equals(expected)
    assert all(f.nullable for f in TRAJECTORY_SCHEMA)
    assert JSON_COLUMNS == ("sampling", "history")


def test_unknown_keys_gives_the_path_of_every_key_without_a_column():
    schema = pa.schema([("scores", pa.list_(pa.struct([("step", I), ("test", METRICS)]))),
                        ("history", S), ("inner", pa.struct([("b", pa.bool_())]))])
    row = {"scores": [{"step": 0}, {"step": 1, "foo": 2, "test": {"acc": 1.0}}], "history": '{"x": 1}',
           "inner": {"b": True, "c": None}, "bar": None}
    assert unknown_keys(row, schema) == ["scores[1].foo", "inner.c", "bar"]
    assert unknown_keys({"scores": None, "inner": None}, schema) == []


def test_plain_row_keeps_keys_that_model_dump_drops():
    record = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p")
    record.messages.append({"role": "user", "content": "hi", "name": "bob"})
    assert record.model_dump()["messages"] == [{"role": "user", "content": "hi"}]  # why plain_row exists
    row = plain_row(record)
    assert row["messages"] == [{"role": "user", "content": "hi", "name": "bob"}]
    assert row == record.model_dump() | {"messages": row["messages"]}


def test_trajectories_and_manifests_have_their_own_versions():
    assert (TRAJECTORY_SCHEMA_VERSION, MANIFEST_SCHEMA_VERSION) == (2, 1)
    record = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p")
    assert record.schema_version == 2
    assert Manifest(stage="rollouts", run_id="r", config_hash="c").schema_version == 1
