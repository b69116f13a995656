"""Curation filters over trajectories (success, baseline, per-task cap) and tokenized samples (length, truncation,
duplicates); each returns what it kept and its drops counted by reason (``Kept``).

Reasons: ``infra_error``, ``no_assistant_turn`` (``engine.curate.conversation``), ``no_successful_score``,
``no_baseline``, ``not_better_than_baseline``, ``over_task_cap``, ``over_max_tokens``, ``no_turn_fits``,
``duplicate``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from engine.curate.config import FilterConfig
from engine.curate.conversation import unusable_reason
from engine.curate.kept import Kept
from engine.curate.tokenize import TokenizedSample
from engine.records import TrajectoryRecord
from engine.trajectories.render import best_score


def success_reason(record: TrajectoryRecord, beat_baseline: bool = False) -> str | None:
    """Why a record fails the success filter, or None: it needs a scoring that produced a score (the paper's
    rule) and, with ``beat_baseline``, a best validation score strictly better than the task's baseline (the
    baseline the agent saw) by the task's direction.

    >>> rec = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p",
    ...     metric="acc", direction="max", baseline={"acc": 0.5}, scores=[{"step": 3, "kind": "submit",
    ...     "validation": {"acc": 0.5}, "test": {"acc": 0.4}, "metric": "acc", "direction": "max"}])
    >>> success_reason(rec), success_reason(rec, beat_baseline=True)
    (None, 'not_better_than_baseline')
    """
    if not record.succeeded:
        return "no_successful_score"
    if not beat_baseline:
        return None
    if record.metric not in record.baseline:
        return "no_baseline"
    best = best_score(record, "visible")
    base = record.baseline[record.metric]
    if best is None or not (best > base if record.direction == "max" else best < base):
        return "not_better_than_baseline"
    return None


def cap_per_task(records: Iterable[TrajectoryRecord], max_per_task: int | None) -> Kept[TrajectoryRecord]:
    """At most ``max_per_task`` records per task: the first by episode id (the same whatever the input order); kept
    records stay in input order.

    >>> recs = [TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id=e, seed=0, model="m", policy="p")
    ...         for e in ["c", "a", "b"]]
    >>> k = cap_per_task(recs, 2)
    >>> [r.episode_id for r in k.items], k.rejects
    (['a', 'b'], {'over_task_cap': 1})
    """
    records = list(records)
    if max_per_task is None:
        return Kept(records)
    per_task: dict[str, int] = {}
    chosen = set()
    for i in sorted(range(len(records)), key=lambda i: records[i].episode_id):
        n = per_task.get(records[i].task_id, 0)
        if n < max_per_task:
            per_task[records[i].task_id] = n + 1
            chosen.add(i)
    dropped = len(records) - len(chosen)
    return Kept([r for i, r in enumerate(records) if i in chosen], {"over_task_cap": dropped} if dropped else {})


def filter_records(records: Iterable[TrajectoryRecord], cfg: FilterConfig) -> Kept[TrajectoryRecord]:
    """The record filters in order: usable (no infra error, an assistant turn), success, per-task cap."""
    def reason(r: TrajectoryRecord) -> str | None:
        return unusable_reason(r) or (success_reason(r, cfg.beat_baseline) if cfg.require_success else None)

    first = Kept.split(records, reason)
    capped = cap_per_task(first.items, cfg.max_per_task)
    return Kept(capped.items, {**first.rejects, **capped.rejects})


def drop_long(samples: Iterable[TokenizedSample], max_tokens: int | None) -> Kept[TokenizedSample]:
    """Drop samples longer than ``max_tokens`` (``over_max_tokens``); None keeps all.

    >>> s = TokenizedSample("e", "e", "t", None, input_ids=[1, 2, 3], loss_mask=[0, 1, 1], turn_spans=[(1, 3)])
    >>> drop_long([s], 2).rejects
    {'over_max_tokens': 1}
    """
    if max_tokens is None:
        return Kept(list(samples))
    return Kept.split(samples, lambda s: "over_max_tokens" if len(s.input_ids) > max_tokens else None)


def truncate_sample(sample: TokenizedSample, max_tokens: int) -> TokenizedSample | None:
    """The sample cut after the last supervised turn that ends within ``max_tokens`` (at its end-of-turn token,
    never mid-message), or None when even the first does not fit. A sample that fits is returned as it is.

    >>> s = TokenizedSample("e", "e", "t", None, input_ids=[10, 11, 12, 13, 14, 15, 16, 17],
    ...                     loss_mask=[0, 0, 1, 1, 0, 0, 1, 1], turn_spans=[(2, 4), (6, 8)])
    >>> t = truncate_sample(s, 7)
    >>> t.input_ids, t.loss_mask, t.turn_spans
    ([10, 11, 12, 13], [0, 0, 1, 1], [(2, 4)])
    >>> truncate_sample(s, 3) is None
    True
    """
    if len(sample.input_ids) <= max_tokens:
        return sample
    spans = [(a, b) for a, b in sample.turn_spans if b <= max_tokens]
    if not spans:
        return None
    cut = spans[-1][1]
    return TokenizedSample(sample.sample_id, sample.episode_id, sample.task_id, sample.step,
                           input_ids=sample.input_ids[:cut], loss_mask=sample.loss_mask[:cut], turn_spans=spans)


def truncate(samples: Iterable[TokenizedSample], max_tokens: int | None) -> Kept[TokenizedSample]:
    """``truncate_sample`` over many; samples that keep no turn are counted as ``no_turn_fits`` (in the step unit,
    any sample over the limit: its one supervised turn is its last message)."""
    if max_tokens is None:
        return Kept(list(samples))
    kept, dropped = [], 0
    for s in samples:
        t = truncate_sample(s, max_tokens)
        if t is None:
            dropped += 1
        else:
            kept.append(t)
    return Kept(kept, {"no_turn_fits": dropped} if dropped else {})


def sample_hash(sample: TokenizedSample) -> str:
    """sha256 of what the student trains on: the token ids and the loss mask.

    >>> sample_hash(TokenizedSample("e", "e", "t", None, input_ids=[1, 2], loss_mask=[0, 1]))[:12]
    '1a2e3b4b8b4b'
    """
    digest = hashlib.sha256(np.asarray(sample.input_ids, dtype="<i4").tobytes())
    digest.update(np.asarray(sample.loss_mask, dtype="i1").tobytes())
    return digest.hexdigest()


def drop_duplicates(samples: Iterable[TokenizedSample]) -> Kept[TokenizedSample]:
    """Exact duplicates (same ``sample_hash``) removed, keeping the first by (episode id, step); ``duplicate``. Kept
    items stay in input order.

    >>> a = TokenizedSample("b", "b", "t", None, input_ids=[1, 2], loss_mask=[0, 1])
    >>> b = TokenizedSample("a", "a", "t", None, input_ids=[1, 2], loss_mask=[0, 1])
    >>> k = drop_duplicates([a, b])
    >>> [s.sample_id for s in k.items], k.rejects
    (['a'], {'duplicate': 1})
    """
    samples = list(samples)
    first: dict[str, int] = {}
    for i in sorted(range(len(samples)), key=lambda i: _order(samples[i])):
        first.setdefault(sample_hash(samples[i]), i)
    chosen = set(first.values())
    dropped = len(samples) - len(chosen)
    return Kept([s for i, s in enumerate(samples) if i in chosen], {"duplicate": dropped} if dropped else {})


def _order(sample: TokenizedSample) -> tuple[str, int]:
    return sample.episode_id, -1 if sample.step is None else sample.step
