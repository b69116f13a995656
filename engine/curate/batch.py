"""The curation stage's per-batch work, as pure functions over Arrow tables, so that the in-process executor and Ray
Data's workers run the very same code: trajectory-store rows in, sample rows out (`samples_of_batch`); sample
rows of one shard in, that shard's packed and messages files out (`write_shard_group`).

A sample row carries its tokens, its (possibly truncated) conversation as JSON, and the light columns the
driver needs to plan deduplication and packing (`n_tokens`, `hash`, order keys). Rejects travel as rows too
(`kind = "reject"`, `reason`, `count`), since a Ray Data batch function can only return rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping

import pyarrow as pa

from engine.curate.config import CurateConfig
from engine.curate.conversation import Conversation, build_conversations, record_from_row
from engine.curate.filters import drop_long, sample_hash, truncate
from engine.curate.pack import packed_row
from engine.curate.pipeline import cut_conversation
from engine.curate.shards import MESSAGES_SCHEMA, PACKED_SCHEMA, messages_table, packed_table, write_shard
from engine.curate.tokenize import TokenizedSample, tokenize_conversations
from engine.curate.tokenizer import StudentTokenizer
from engine.trajectories.store import upgrade_table

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


def samples_of_batch(batch: pa.Table, student: StudentTokenizer, cfg: CurateConfig,
                     keep: set[tuple[str, str]] | None) -> pa.Table:
    """Trajectory rows → sample rows. Rows not in `keep` ((shard path, episode id): the driver's record-level
    decisions) are skipped; conversations are built, tokenized, length-filtered and truncated.

    A batch is one or more whole trajectory shards (v1 shards are upgraded here, so stores of mixed versions
    read alike)."""
    if "reasoning_content" not in _message_fields(batch.schema):
        batch = upgrade_table(batch)
    rows = [r for r in batch.to_pylist() if keep is None or (r.get(KEEP_KEY), r["episode_id"]) in keep]
    records = [record_from_row({k: v for k, v in r.items() if k != KEEP_KEY}) for r in rows]
    convs = build_conversations(records, cfg.sample_unit, cfg.reasoning)
    tokenized = tokenize_conversations(convs.items, student)
    short = drop_long(tokenized.items, cfg.filters.max_tokens_drop)
    cut = truncate(short.items, cfg.filters.max_tokens_truncate)
    by_id = {c.sample_id: c for c in convs.items}
    full = {s.sample_id: len(s.input_ids) for s in tokenized.items}
    out = [_sample_row(s, by_id[s.sample_id], full[s.sample_id]) for s in cut.items]
    rejects = Counter(convs.rejects) + Counter(tokenized.rejects) + Counter(short.rejects) + Counter(cut.rejects)
    out += [{"kind": "reject", "reason": reason, "count": n} for reason, n in sorted(rejects.items())]
    return pa.Table.from_pylist(out, schema=SAMPLE_SCHEMA)


def _message_fields(schema: pa.Schema) -> list[str]:
    if "messages" not in schema.names:
        return ["reasoning_content"]  # nothing to upgrade
    return [f.name for f in schema.field("messages").type.value_type]


def _sample_row(sample: TokenizedSample, conv: Conversation, full_length: int) -> dict:
    if len(sample.input_ids) < full_length:  # truncated: keep the conversation that matches the tokens
        conv = cut_conversation(conv, len(sample.turn_spans))
    return {"kind": "sample", "sample_id": sample.sample_id, "episode_id": sample.episode_id,
            "task_id": sample.task_id, "step": sample.step, "n_tokens": len(sample.input_ids),
            "supervised_tokens": sum(sample.loss_mask), "hash": sample_hash(sample),
            "input_ids": sample.input_ids, "loss_mask": sample.loss_mask, "conversation": conv.model_dump_json()}


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
    samples given are those of this shard. Writes `<out_dir>/shards/part-NNNNN.parquet` (packed rows) and
    `<out_dir>/messages/part-NNNNN.parquet` (their conversations, in row order); returns a summary."""
    rows: dict[int, list[tuple[int, dict]]] = {}
    for s in samples.to_pylist():
        _, row, pos = plan[s["sample_id"]]
        rows.setdefault(row, []).append((pos, s))
    packed, convs = [], []
    for row in sorted(rows):
        members = [s for _, s in sorted(rows[row], key=lambda x: x[0])]
        packed.append(packed_row([_tokenized(s) for s in members]))
        convs += [Conversation.model_validate_json(s["conversation"]) for s in members]
    name = f"part-{shard:05d}.parquet"
    write_shard(packed_table(packed), f"{out_dir}/shards/{name}", PACKED_SCHEMA)
    write_shard(messages_table(convs), f"{out_dir}/messages/{name}", MESSAGES_SCHEMA)
    return {"shard": shard, "rows": len(packed), "samples": len(convs), "tokens": sum(len(p.input_ids) for p in packed)}


def _tokenized(row: dict) -> TokenizedSample:
    return TokenizedSample(sample_id=row["sample_id"], episode_id=row["episode_id"], task_id=row["task_id"],
                           step=row["step"], input_ids=row["input_ids"], loss_mask=row["loss_mask"])


def group_by_shard(samples: Iterable[dict], plan: Mapping[str, tuple[int, int, int]]) -> dict[int, list[dict]]:
    """Sample rows by the shard the plan puts them in (samples the plan dropped are left out)."""
    out: dict[int, list[dict]] = {}
    for s in samples:
        if s["sample_id"] in plan:
            out.setdefault(plan[s["sample_id"]][0], []).append(s)
    return out


def conversation_json(conv: Conversation) -> str:
    return json.dumps(conv.model_dump(), ensure_ascii=False)
