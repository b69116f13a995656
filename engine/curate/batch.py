"""The curation stage's per-batch work, as pure functions over Arrow tables, so that the in-process executor and Ray
Data's workers run the very same code: trajectory-store rows in, sample rows out (`samples_of_batch`); sample
rows of one shard in, that shard's packed and messages files out (`write_shard_group`).

A sample row carries its tokens, its (possibly truncated) conversation as JSON, and the light columns the
driver needs to plan deduplication and packing (`n_tokens`, `hash`, order keys). Rejects travel as rows too
(`kind = "reject"`, `reason`, `count`), since a Ray Data batch function can only return rows.

Tokens move as Arrow list arrays built from numpy (`engine.curate.tokenize.tokenize_arrays`), never as a Python
object per token; a batch's conversations are rendered and tokenized together (one tokenizer call per batch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from engine.curate.config import CurateConfig
from engine.curate.conversation import Conversation, build_conversations, record_from_row
from engine.curate.filters import drop_long, sample_hash, truncate
from engine.curate.pipeline import cut_conversation
from engine.curate.shards import MESSAGES_SCHEMA, PACKED_SCHEMA, messages_table, write_shard
from engine.curate.tokenize import TokenizedSample, tokenize_arrays
from engine.curate.tokenizer import StudentTokenizer
from engine.errors import ArtifactError
from engine.records import TrajectoryRecord
from engine.trajectories.store import TRAJECTORY_SCHEMA, table_to_records, upgrade_table

SAMPLE_SCHEMA = pa.schema([
    ("kind", pa.string()),  # "sample" or "reject"
    ("reason", pa.string()),
    ("count", pa.int64()),
    ("sample_id", pa.string()),
    ("episode_id", pa.string()),
    ("task_id", pa.string()),
    ("step", pa.int32()),
    ("n_tokens", pa.int64()),
    ("supervised_tokens", pa.int64()),
    ("hash", pa.string()),
    ("input_ids", pa.list_(pa.int32())),
    ("loss_mask", pa.list_(pa.int8())),
    ("conversation", pa.string()),  # Conversation as JSON (cut like the tokens)
])
"""Intermediate rows between tokenization and packing (never written to the run dir)."""

KEEP_KEY = "path"  # the shard a row came from: Ray Data's include_paths column, or the local reader's
_MAX_LIST_VALUES = 2**31 - 1  # list<> offsets are int32


def samples_of_batch(batch: pa.Table, student: StudentTokenizer, cfg: CurateConfig,
                     keep: set[tuple[str, str]] | None) -> pa.Table:
    """Trajectory rows → sample rows. Rows not in `keep` ((shard path, episode id): the driver's record-level
    decisions) are skipped; conversations are built, tokenized (all of the batch's at once), length-filtered
    and truncated.

    A batch is one or more whole trajectory shards (v1 shards are upgraded here, so stores of mixed versions
    read alike)."""
    if "reasoning_content" not in _message_fields(batch.schema):
        batch = upgrade_table(batch)
    convs = build_conversations(_records(_kept_rows(batch, keep)), cfg.sample_unit, cfg.reasoning)
    tokenized = tokenize_arrays(convs.items, student)
    short = drop_long(tokenized.items, cfg.filters.max_tokens_drop)
    cut = truncate(short.items, cfg.filters.max_tokens_truncate)
    by_id = {c.sample_id: c for c in convs.items}
    full = {s.sample_id: len(s.input_ids) for s in tokenized.items}
    rejects = Counter(convs.rejects) + Counter(tokenized.rejects) + Counter(short.rejects) + Counter(cut.rejects)
    reject_rows = pa.Table.from_pylist([{"kind": "reject", "reason": reason, "count": n}
                                        for reason, n in sorted(rejects.items())], schema=SAMPLE_SCHEMA)
    return pa.concat_tables([_sample_table(cut.items, by_id, full), reject_rows])


def _kept_rows(batch: pa.Table, keep: set[tuple[str, str]] | None) -> pa.Table:
    if keep is None:
        return batch
    n = batch.num_rows
    paths = batch.column(KEEP_KEY).to_pylist() if KEEP_KEY in batch.column_names else [None] * n
    chosen = [(p, e) in keep for p, e in zip(paths, batch.column("episode_id").to_pylist())]
    return batch if all(chosen) else batch.filter(pa.array(chosen, pa.bool_()))


def _records(batch: pa.Table) -> list[TrajectoryRecord]:
    """The batch's records, checked as the store checks them. A batch in the store's own layout is converted
    whole (its `steps` left out: a step only repeats what the messages hold); any other, row by row
    (`record_from_row`: each row cast to the store's schema, errors naming the episode)."""
    table = batch.drop_columns([KEEP_KEY]) if KEEP_KEY in batch.column_names else batch
    if not table.schema.equals(TRAJECTORY_SCHEMA, check_metadata=False):
        return [record_from_row(r) for r in table.to_pylist()]
    return table_to_records(table.drop_columns(["steps"]))


def _message_fields(schema: pa.Schema) -> list[str]:
    if "messages" not in schema.names:
        return ["reasoning_content"]  # nothing to upgrade
    return [f.name for f in schema.field("messages").type.value_type]


def _sample_table(samples: Sequence[TokenizedSample], convs: Mapping[str, Conversation],
                  full_length: Mapping[str, int]) -> pa.Table:
    """Sample rows (kind "sample") of tokenized samples holding numpy arrays (`tokenize_arrays`)."""
    def conversation(s: TokenizedSample) -> str:
        conv = convs[s.sample_id]
        if len(s.input_ids) < full_length[s.sample_id]:  # truncated: keep the conversation that matches the tokens
            conv = cut_conversation(conv, len(s.turn_spans))
        return conv.model_dump_json()

    lengths = [len(s.input_ids) for s in samples]
    columns = {
        "kind": pa.array(["sample"] * len(samples), pa.string()),
        "reason": pa.nulls(len(samples), pa.string()), "count": pa.nulls(len(samples), pa.int64()),
        "sample_id": [s.sample_id for s in samples], "episode_id": [s.episode_id for s in samples],
        "task_id": [s.task_id for s in samples], "step": pa.array([s.step for s in samples], pa.int32()),
        "n_tokens": pa.array(lengths, pa.int64()),
        "supervised_tokens": pa.array([int(np.count_nonzero(s.loss_mask)) for s in samples], pa.int64()),
        "hash": [sample_hash(s) for s in samples],
        "input_ids": _lists([s.input_ids for s in samples], lengths, np.int32),
        "loss_mask": _lists([s.loss_mask for s in samples], lengths, np.int8),
        "conversation": [conversation(s) for s in samples],
    }
    return pa.Table.from_pydict(columns, schema=SAMPLE_SCHEMA)


def _lists(arrays: Sequence, lengths: Sequence[int], dtype) -> pa.ListArray:
    """One Arrow list per array (numpy arrays or lists), without a Python object per value."""
    offsets = _offsets(lengths)
    values = np.concatenate([np.asarray(a, dtype=dtype) for a in arrays]) if arrays else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _offsets(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _MAX_LIST_VALUES:
        raise ArtifactError(f"{len(lengths)} lists hold {offsets[-1]} values, over the 2**31 - 1 one Arrow list "
                            "array can hold; curate smaller batches (fewer trajectory shards per batch)")
    return offsets.astype(np.int32)


def rejects_of(table: pa.Table) -> dict[str, int]:
    """The reject counts carried by sample rows."""
    counts: Counter[str] = Counter()
    for reason, n in zip(table.column("reason").to_pylist(), table.column("count").to_pylist()):
        if reason is not None:
            counts[reason] += n
    return dict(counts)


def write_shard_group(samples: pa.Table, plan: Mapping[str, tuple[int, int, int]], out_dir: str,
                      shard: int) -> dict:
    """Write shard `shard` of the packed data: `plan` maps a sample id to (shard, row, position in row); the
    samples given are those of this shard. Writes `<out_dir>/shards/part-NNNNN.parquet` (packed rows, as
    `engine.curate.pack.packed_row` builds them, in row order) and `<out_dir>/messages/part-NNNNN.parquet` (their
    conversations, in row order); returns a summary."""
    ids = samples.column("sample_id").to_pylist()
    where = [plan[i][1:] for i in ids]
    order = np.array(sorted(range(len(ids)), key=where.__getitem__), dtype=np.int64)
    tokens, lengths = _gather(samples.column("input_ids"), order, np.int32)
    mask, _ = _gather(samples.column("loss_mask"), order, np.int8)
    rows = np.array([where[i][0] for i in order], dtype=np.int64)
    packed = packed_rows_table(tokens, mask, lengths, [ids[i] for i in order], rows)
    texts = samples.column("conversation").to_pylist()
    convs = [Conversation.model_validate_json(texts[i]) for i in order]
    name = f"part-{shard:05d}.parquet"
    write_shard(packed, f"{out_dir}/shards/{name}", PACKED_SCHEMA)
    write_shard(messages_table(convs), f"{out_dir}/messages/{name}", MESSAGES_SCHEMA)
    return {"shard": shard, "rows": packed.num_rows, "samples": len(convs), "tokens": int(lengths.sum())}


def packed_rows_table(input_ids: np.ndarray, loss_mask: np.ndarray, lengths: np.ndarray, sample_ids: Sequence[str],
                      rows: np.ndarray) -> pa.Table:
    """Rows of `PACKED_SCHEMA` from samples already in packing order: their tokens and masks end to end, their
    lengths, ids and packed rows (non-decreasing). Each row is its samples end to end, positions restarting per
    sample, as `pack.packed_row` builds it, in columns.

    >>> t = packed_rows_table(np.array([5, 6, 7, 8, 9, 4]), np.array([0, 1, 1, 0, 1, 1]), np.array([3, 2, 1]),
    ...                       ["a", "b", "c"], np.array([0, 0, 3]))
    >>> t.num_rows, t.to_pydict()["position_ids"], t.to_pydict()["seq_lens"], t.to_pydict()["sample_ids"]
    (2, [[0, 1, 2, 0, 1], [0]], [[3, 2], [1]], [['a', 'b'], ['c']])
    >>> t.to_pydict()["input_ids"], t.to_pydict()["loss_mask"]
    ([[5, 6, 7, 8, 9], [4]], [[0, 1, 1, 0, 1], [1]])
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    sample_at = _offsets(lengths)
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, np.int64)
    row_samples = np.r_[first, len(rows)].astype(np.int32)
    row_tokens = pa.array(sample_at[row_samples])
    positions = np.arange(int(sample_at[-1]), dtype=np.int32) - np.repeat(sample_at[:-1], lengths)
    columns = [pa.ListArray.from_arrays(row_tokens, pa.array(np.asarray(input_ids, dtype=np.int32))),
               pa.ListArray.from_arrays(row_tokens, pa.array(np.asarray(loss_mask, dtype=np.int8))),
               pa.ListArray.from_arrays(row_tokens, pa.array(positions)),
               pa.ListArray.from_arrays(pa.array(row_samples), pa.array(lengths.astype(np.int32))),
               pa.ListArray.from_arrays(pa.array(row_samples), pa.array(list(sample_ids), pa.string()))]
    return pa.Table.from_arrays(columns, schema=PACKED_SCHEMA)


def _gather(column: pa.ChunkedArray, order: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The values of the lists of a list column taken in `order`, end to end (as `dtype`), and the lists' lengths."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = lists.offsets.to_numpy()
    values = lists.values.to_numpy(zero_copy_only=False)
    starts, ends = offsets[:-1][order], offsets[1:][order]
    parts = [values[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
    flat = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
    return flat, (ends - starts).astype(np.int64)
