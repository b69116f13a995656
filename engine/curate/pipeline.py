"""The curation steps strung together in memory: trajectories in, conversations, tokenized samples and packed rows
out (``Curated``), with every reject counted. The reference order for the Ray Data wiring, and small runs.

Order: record filters (usable, success, per-task cap) → conversations → tokenize (special-token text) →
drop over ``max_tokens_drop`` → truncate to ``max_tokens_truncate`` → exact duplicates → pack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.curate.config import CurateConfig
from engine.curate.conversation import Conversation, build_conversations, record_from_row
from engine.curate.filters import drop_duplicates, drop_long, filter_records, truncate
from engine.curate.kept import Kept, merge_rejects
from engine.curate.pack import Packing, pack_samples
from engine.curate.tokenize import TokenizedSample, check_reasoning_supported, tokenize_conversations
from engine.curate.tokenizer import StudentTokenizer
from engine.records import TrajectoryRecord


@dataclass
class Curated:
    """What curation keeps: each sample's conversation (cut like its tokens), its tokens, and the packed rows."""

    conversations: list[Conversation]
    samples: list[TokenizedSample]
    packing: Packing
    rejects: dict[str, int]
    counts: dict[str, int]


def curate(records: Iterable[TrajectoryRecord | Mapping], student: StudentTokenizer, cfg: CurateConfig) -> Curated:
    """Run every curation step over ``records`` (records or trajectory-store rows)."""
    check_reasoning_supported(cfg.sample_unit, cfg.reasoning, student)
    records = [record_from_row(r) for r in records]
    f = cfg.filters
    kept_records = filter_records(records, f)
    convs = build_conversations(kept_records.items, cfg.sample_unit, cfg.reasoning)
    tokenized = tokenize_conversations(convs.items, student)
    short = drop_long(tokenized.items, f.max_tokens_drop)
    cut = truncate(short.items, f.max_tokens_truncate)
    unique = drop_duplicates(cut.items) if f.dedup else Kept(cut.items)
    packing = pack_samples(unique.items, cfg.pack_tokens)
    by_id = {c.sample_id: c for c in convs.items}
    full_length = {s.sample_id: len(s.input_ids) for s in tokenized.items}
    packed_ids = {i for row in packing.rows for i in row.sample_ids}
    samples = [s for s in unique.items if s.sample_id in packed_ids]
    conversations = [cut_conversation(by_id[s.sample_id], len(s.turn_spans))
                     if len(s.input_ids) < full_length[s.sample_id] else by_id[s.sample_id] for s in samples]
    counts = {
        "records": len(records), "records_kept": len(kept_records.items), "samples": len(samples),
        "rows": len(packing.rows), "tokens": sum(len(s.input_ids) for s in samples),
        "supervised_tokens": sum(sum(s.loss_mask) for s in samples),
    }
    return Curated(conversations=conversations,
                   samples=samples, packing=packing, counts=counts,
                   rejects=merge_rejects(kept_records.rejects, convs.rejects, tokenized.rejects, short.rejects,
                                         cut.rejects, unique.rejects, packing.rejects))


def cut_conversation(conv: Conversation, turns: int) -> Conversation:
    """The conversation through its first ``turns`` supervised turns: what a truncated sample kept.

    >>> c = Conversation(sample_id="e", episode_id="e", task_id="t", supervised=[2, 4], messages=[
    ...     {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "o1"},
    ...     {"role": "assistant", "content": "A2"}, {"role": "user", "content": "o2"}])
    >>> [m["content"] for m in cut_conversation(c, 1).messages], cut_conversation(c, 2).supervised
    (['S', 'T', 'A1'], [2, 4])
    """
    last = conv.supervised[turns - 1]
    return conv.model_copy(update={"messages": conv.messages[: last + 1], "supervised": conv.supervised[:turns]})
