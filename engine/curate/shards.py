"""The curated shards' Arrow schemas, defined once: packed training rows (``PACKED_SCHEMA``) and the chat-messages
table (``MESSAGES_SCHEMA``); builds them from records, writes them atomically as Parquet, reads them back checked.

Packed rows are plain Arrow lists (``list<int32>`` ids, ``list<int8>`` mask; not Ray's tensor extension type),
so Ray Data, ``datasets`` and plain ``pyarrow`` read them alike. The messages table is OpenAI chat format
(``messages: list<struct<role, content, reasoning_content>>``, null reasoning where none) that
``datasets.load_dataset("parquet", data_files=...)`` loads as it is. Each schema carries its name and version
in the footer metadata; a read checks both and every column.

>>> PACKED_SCHEMA.field("input_ids").type, PACKED_SCHEMA.metadata[b"synthscale.schema_version"]
(ListType(list<item: int32>), b'1')
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.artifacts import RERUN_COMMANDS, atomic_write_bytes, resolve
from engine.curate.conversation import Conversation
from engine.curate.pack import PackedRow
from engine.errors import ArtifactError

SHARD_SCHEMA_VERSION = 1
_META_NAME = b"synthscale.schema"
_META_VERSION = b"synthscale.schema_version"
_MAX_LIST_VALUES = 2**31 - 1  # list<> offsets are int32: one array holds at most this many values


def _schema(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={_META_NAME: name.encode(), _META_VERSION: str(SHARD_SCHEMA_VERSION).encode()})


PACKED_SCHEMA = _schema("synthscale.sft_packed", [
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("loss_mask", pa.list_(pa.int8()), nullable=False),
    pa.field("position_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("seq_lens", pa.list_(pa.int32()), nullable=False),
    pa.field("sample_ids", pa.list_(pa.string()), nullable=False),
])
"""One packed training row: ``loss_mask`` 1 on supervised tokens; ``position_ids`` restart per sample;
``seq_lens`` the samples' lengths (they sum to the row's length); ``sample_ids`` the samples, in order."""

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning_content", pa.string())])

MESSAGES_SCHEMA = _schema("synthscale.sft_messages", [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("task_id", pa.string(), nullable=False),
    pa.field("step", pa.int32()),
    pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
    pa.field("supervised", pa.list_(pa.int32()), nullable=False),
])
"""One conversation (``engine.curate.conversation.Conversation``): ``supervised`` indexes the assistant turns
trained on (all of them in the episode unit; only the last in the step unit)."""


def packed_table(rows: Sequence[PackedRow]) -> pa.Table:
    """Rows of ``PACKED_SCHEMA``; ArtifactError when the shard would exceed 2**31 - 1 tokens (write several).

    >>> t = packed_table([PackedRow([5, 6, 8], [0, 1, 1], [0, 1, 0], [2, 1], ["a", "b"])])
    >>> t.column("loss_mask").type, t.to_pylist()[0]["seq_lens"]
    (ListType(list<item: int8>), [2, 1])
    """
    for r in rows:
        if not len(r.input_ids) == len(r.loss_mask) == len(r.position_ids) == sum(r.seq_lens) \
                or len(r.seq_lens) != len(r.sample_ids):
            raise ArtifactError(f"packed row of samples {r.sample_ids[:3]}…: ids, mask, positions and seq_lens "
                                "disagree on its length; build rows with engine.curate.pack")
    total = sum(len(r.input_ids) for r in rows)
    if total > _MAX_LIST_VALUES:
        raise ArtifactError(f"{len(rows)} packed rows hold {total} tokens, over the 2**31 - 1 one Arrow list "
                            "array can hold; write them as several shards")
    columns = {name: [getattr(r, name) for r in rows] for name in PACKED_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=PACKED_SCHEMA)


def messages_table(conversations: Sequence[Conversation]) -> pa.Table:
    """Rows of ``MESSAGES_SCHEMA``, a message without reasoning having a null ``reasoning_content``.

    >>> c = Conversation(sample_id="e", episode_id="e", task_id="t", supervised=[1],
    ...                  messages=[{"role": "user", "content": "T"}, {"role": "assistant", "content": "A"}])
    >>> messages_table([c]).to_pylist()[0]["messages"][1]
    {'role': 'assistant', 'content': 'A', 'reasoning_content': None}
    """
    rows = [c.model_dump() for c in conversations]
    return pa.Table.from_pylist(rows, schema=MESSAGES_SCHEMA)


def check_table(table_schema: pa.Schema, expected: pa.Schema, where: str) -> None:
    """ArtifactError unless ``table_schema`` has ``expected``'s name tag, version and exact columns."""
    meta = table_schema.metadata or {}
    name = expected.metadata[_META_NAME].decode()
    if meta.get(_META_NAME) != expected.metadata[_META_NAME]:
        raise ArtifactError(f"{where}: not a {name} shard (no '{name}' schema tag); remove it or rerun "
                            f"`{RERUN_COMMANDS['curate']}`")
    found = meta.get(_META_VERSION, b"?").decode(errors="replace")
    if found != str(SHARD_SCHEMA_VERSION):
        raise ArtifactError(f"{where}: {name} schema v{found}, expected v{SHARD_SCHEMA_VERSION}; rerun "
                            f"`{RERUN_COMMANDS['curate']} --start-over` or use a new run dir")
    if not table_schema.equals(expected, check_metadata=False):
        want = {f.name: (f.type, f.nullable) for f in expected}
        got = {f.name: (f.type, f.nullable) for f in table_schema}
        diff = sorted(n for n in want.keys() | got.keys() if want.get(n) != got.get(n))
        raise ArtifactError(f"{where}: columns {diff} differ from {name} schema v{SHARD_SCHEMA_VERSION}; rerun "
                            f"`{RERUN_COMMANDS['curate']} --start-over`")


def write_shard(table: pa.Table, path: str | os.PathLike, expected: pa.Schema,
                fs: pafs.FileSystem | None = None, *, compression: str = "zstd") -> str:
    """Check ``table`` against ``expected`` and write it as Parquet, atomically; returns the path written."""
    fs, target = resolve(path, fs)
    check_table(table.schema, expected, target)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression)
    atomic_write_bytes(fs, target, sink.getvalue().to_pybytes())
    return target


def read_shard(path: str | os.PathLike, expected: pa.Schema, fs: pafs.FileSystem | None = None) -> pa.Table:
    """Read a shard written by ``write_shard``, checking its schema tag, version and columns; the table has
    exactly ``expected``'s schema, metadata included."""
    fs, target = resolve(path, fs)
    try:
        with fs.open_input_file(target) as f:
            pf = pq.ParquetFile(f)
            check_table(pf.schema_arrow, expected, target)
            return pf.read().cast(expected)  # Parquet names list items "element": back to the declared schema
    except FileNotFoundError:
        raise ArtifactError(f"{target}: missing; rerun `{RERUN_COMMANDS['curate']}`") from None


def packed_rows(table: pa.Table) -> list[PackedRow]:
    """``PackedRow`` records from a packed table (the inverse of ``packed_table``)."""
    check_table(table.schema, PACKED_SCHEMA, "packed table")
    return [PackedRow(**row) for row in table.to_pylist()]
