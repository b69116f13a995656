"""Curated shards: the schemas, write/read round trips, refusals of foreign or stale shards, and `datasets` loading."""

from __future__ import annotations

import doctest

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.curate import shards as shards_module
from engine.curate.conversation import Conversation
from engine.curate.pack import PackedRow
from engine.curate.shards import (
    MESSAGES_SCHEMA,
    PACKED_SCHEMA,
    messages_table,
    packed_rows,
    packed_table,
    read_shard,
    write_shard,
)
from engine.errors import ArtifactError

ROWS = [PackedRow([5, 6, 7, 8, 9], [0, 1, 1, 0, 1], [0, 1, 2, 0, 1], [3, 2], ["a", "b/0"]),
        PackedRow([151644, 151645], [0, 1], [0, 1], [2], ["c"])]
CONVS = [
    Conversation(sample_id="e/1", episode_id="e", task_id="t", step=1, supervised=[2], messages=[
        {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
        {"role": "assistant", "content": "A", "reasoning_content": "R"}]),
    Conversation(sample_id="f", episode_id="f", task_id="u", supervised=[2], messages=[
        {"role": "system", "content": "S"}, {"role": "user", "content": "T"}, {"role": "assistant", "content": "B"},
        {"role": "user", "content": "o"}]),
]


def test_schemas_are_plain_arrow_lists_with_a_versioned_tag():
    assert [(f.name, str(f.type)) for f in PACKED_SCHEMA] == [
        ("input_ids", "list<item: int32>"), ("loss_mask", "list<item: int8>"), ("position_ids", "list<item: int32>"),
        ("seq_lens", "list<item: int32>"), ("sample_ids", "list<item: string>")]
    assert [(f.name, str(f.type)) for f in MESSAGES_SCHEMA] == [
        ("sample_id", "string"), ("episode_id", "string"), ("task_id", "string"), ("step", "int32"),
        ("messages", "list<item: struct<role: string, content: string, reasoning_content: string>>"),
        ("supervised", "list<item: int32>")]
    assert PACKED_SCHEMA.metadata == {b"synthscale.schema": b"synthscale.sft_packed", b"synthscale.schema_version": b"1"}
    assert MESSAGES_SCHEMA.metadata[b"synthscale.schema"] == b"synthscale.sft_messages"


def test_packed_rows_round_trip(tmp_path):
    path = write_shard(packed_table(ROWS), tmp_path / "packed" / "part-00000.parquet", PACKED_SCHEMA)
    table = read_shard(path, PACKED_SCHEMA)
    assert table.schema.equals(PACKED_SCHEMA, check_metadata=True)
    assert packed_rows(table) == ROWS
    assert [p.name for p in (tmp_path / "packed").iterdir()] == ["part-00000.parquet"]  # no temporary left


def test_messages_round_trip(tmp_path):
    path = write_shard(messages_table(CONVS), tmp_path / "messages.parquet", MESSAGES_SCHEMA)
    rows = read_shard(path, MESSAGES_SCHEMA).to_pylist()
    assert rows[0] == {"sample_id": "e/1", "episode_id": "e", "task_id": "t", "step": 1, "supervised": [2],
                       "messages": [{"role": "system", "content": "S", "reasoning_content": None},
                                    {"role": "user", "content": "T", "reasoning_content": None},
                                    {"role": "assistant", "content": "A", "reasoning_content": "R"}]}
    assert (rows[1]["step"], rows[1]["task_id"], len(rows[1]["messages"])) == (None, "u", 4)


def test_inconsistent_rows_are_refused():
    bad = PackedRow([1, 2, 3], [0, 1, 1], [0, 1], [3], ["a"])
    with pytest.raises(ArtifactError, match=r"packed row of samples \['a'\]…: ids, mask, positions and seq_lens disagree"):
        packed_table([bad])


def test_foreign_stale_or_reshaped_shards_are_refused(tmp_path):
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"input_ids": [[1]]}), foreign)
    with pytest.raises(ArtifactError, match="foreign.parquet: not a synthscale.sft_packed shard"):
        read_shard(foreign, PACKED_SCHEMA)
    stale = tmp_path / "stale.parquet"
    table = packed_table(ROWS)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"synthscale.schema_version": b"0"}), stale)
    with pytest.raises(ArtifactError, match=r"stale.parquet: synthscale.sft_packed schema v0, expected v1; rerun "
                                            r"`synthscale curate --start-over`"):
        read_shard(stale, PACKED_SCHEMA)
    reshaped = table.set_column(1, pa.field("loss_mask", pa.list_(pa.int32()), nullable=False),
                                pa.array([[0, 1, 1, 0, 1], [0, 1]], pa.list_(pa.int32())))
    with pytest.raises(ArtifactError, match=r"columns \['loss_mask'\] differ from synthscale.sft_packed schema v1"):
        write_shard(reshaped, tmp_path / "reshaped.parquet", PACKED_SCHEMA)
    with pytest.raises(ArtifactError, match="missing.parquet: missing; rerun `synthscale curate`"):
        read_shard(tmp_path / "missing.parquet", PACKED_SCHEMA)


def test_datasets_loads_both_tables_as_they_are(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets not installed: pip install -e '.[test]'")
    messages = write_shard(messages_table(CONVS), tmp_path / "messages.parquet", MESSAGES_SCHEMA)
    ds = datasets.load_dataset("parquet", data_files=messages, split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 2
    assert ds[0]["messages"][2] == {"role": "assistant", "content": "A", "reasoning_content": "R"}
    assert ds[1]["messages"][2] == {"role": "assistant", "content": "B", "reasoning_content": None}
    packed = write_shard(packed_table(ROWS), tmp_path / "packed.parquet", PACKED_SCHEMA)
    dp = datasets.load_dataset("parquet", data_files=packed, split="train", cache_dir=str(tmp_path / "cache"))
    assert dp.features["input_ids"].feature.dtype == "int32"
    assert dp.features["loss_mask"].feature.dtype == "int8"
    assert dp[0] == {"input_ids": [5, 6, 7, 8, 9], "loss_mask": [0, 1, 1, 0, 1], "position_ids": [0, 1, 2, 0, 1],
                     "seq_lens": [3, 2], "sample_ids": ["a", "b/0"]}


def test_docstring_examples():
    result = doctest.testmod(shards_module)
    assert result.failed == 0 and result.attempted > 0
