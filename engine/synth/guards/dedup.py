"""Near-duplicate removal across synthesized tasks: reads proposals and starter code, returns rejects for duplicates.

Two tasks are duplicates when their exact signature (dataset and config, target, metric, task type) is equal, or
when the MinHash estimate of the Jaccard similarity of their shingles (word 3-grams of the description plus the
starter code) reaches the threshold. One task is kept per cluster: the first added.
"""

from __future__ import annotations

import logging

from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import EngineError
from engine.synth.guards.text import shingles, squash
from engine.synth.records import ProposalRecord, RejectRecord

log = logging.getLogger(__name__)

SHINGLE_WORDS = 3


def task_signature(proposal: ProposalRecord) -> tuple[str, str, str, str, str]:
    """(Hub id, config, target, metric, task type), normalised; a task without a dataset puts its squashed name
    in the dataset slot, so two dataset-free tasks share a signature only when their names agree.

    >>> task_signature(ProposalRecord(proposal_id="p", topic_id="t", topic="x", domain="tabular", name="Wine",
    ...     description="d", task_type="classification", metric="Accuracy", direction="max",
    ...     dataset={"hf_id": "Org/Wine", "input_columns": ["a"], "target_column": "Label"}))
    ('org/wine', '', 'label', 'accuracy', 'classification')
    """
    ds = proposal.dataset
    if ds is None:
        return (f"name:{squash(proposal.name)}", "", "", squash(proposal.metric), proposal.task_type)
    return (ds.hf_id.lower(), (ds.config or "").lower(), ds.target_column.lower(), squash(proposal.metric),
            proposal.task_type)


class Duplicate(BaseModel):
    """Why an item is a duplicate, and of which kept item."""

    model_config = ConfigDict(extra="forbid")
    kept_id: str
    reason: str = Field(description="duplicate_signature or near_duplicate")
    similarity: float = Field(description="1.0 for an equal signature, else the MinHash Jaccard estimate.")


class Deduplicator:
    """Keeps one task per cluster of duplicates, deterministically: the first added wins.

    >>> d = Deduplicator(threshold=0.8, seed=0)
    >>> p = ProposalRecord(proposal_id="p", topic_id="t", topic="x", domain="rl", name="Grid walk",
    ...     description="walk a grid to the goal", task_type="control", metric="return", direction="max",
    ...     needs_dataset=False)
    >>> d.add("a", p, "print(1)"), d.add("b", p, "print(1)")
    (None, 'a')
    """

    def __init__(self, threshold: float, num_perm: int = 128, seed: int = 0):
        if not 0 < threshold <= 1:
            raise EngineError(f"dedup threshold {threshold!r} is outside (0, 1]; use e.g. synth.dedup_threshold 0.8")
        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = seed
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[tuple[str, ...], str] = {}
        self._hashes: dict[str, MinHash] = {}
        self._order: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._order)

    def minhash(self, proposal: ProposalRecord, starter_code: str) -> MinHash:
        """MinHash of the word 3-grams of the description and of the starter code."""
        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        for s in sorted(shingles(proposal.description, SHINGLE_WORDS) | {
                "code:" + x for x in shingles(starter_code, SHINGLE_WORDS)}):
            m.update(s.encode("utf-8"))
        return m

    def find(self, proposal: ProposalRecord, starter_code: str = "", *,
             minhash: MinHash | None = None) -> Duplicate | None:
        """The kept item this one duplicates (the earliest added when several match), or None."""
        kept = self._signatures.get(task_signature(proposal))
        if kept is not None:
            return Duplicate(kept_id=kept, reason="duplicate_signature", similarity=1.0)
        m = minhash or self.minhash(proposal, starter_code)
        # LSH gives candidates; the Jaccard estimate confirms them, and insertion order breaks ties.
        close = [(self._order[k], k, m.jaccard(self._hashes[k])) for k in self._lsh.query(m)]
        close = sorted(c for c in close if c[2] >= self.threshold)
        if close:
            return Duplicate(kept_id=close[0][1], reason="near_duplicate", similarity=close[0][2])
        return None

    def check(self, item_id: str, proposal: ProposalRecord, starter_code: str = "") -> RejectRecord | None:
        """Keep the item (None) unless it duplicates a kept one: then the `dedup` reject that says which."""
        dup = self.find(proposal, starter_code)
        if dup is not None:
            log.info("task %s dropped: %s of %s", item_id, dup.reason, dup.kept_id)
            return RejectRecord(stage="dedup", item_id=item_id, reason=dup.reason,
                                detail=f"{item_id} duplicates {dup.kept_id} (similarity {dup.similarity:.2f})")
        self.add(item_id, proposal, starter_code)
        return None

    def add(self, item_id: str, proposal: ProposalRecord, starter_code: str = "") -> str | None:
        """Keep the item unless it duplicates a kept one; returns that kept item's id, or None when kept."""
        if item_id in self._order:
            raise EngineError(f"item {item_id!r} was already added to the deduplicator; give every task a unique id")
        m = self.minhash(proposal, starter_code)
        dup = self.find(proposal, starter_code, minhash=m)
        if dup is not None:
            return dup.kept_id
        self._order[item_id] = len(self._order)
        self._signatures[task_signature(proposal)] = item_id
        self._hashes[item_id] = m
        self._lsh.insert(item_id, m)
        return None
