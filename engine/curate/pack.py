"""Packs tokenized samples into training rows of a token budget (first-fit decreasing), writing ``PackedRow`` records.

A row concatenates whole samples (never split, never merged: each keeps its own segment); ``position_ids``
restart at 0 for each sample and ``seq_lens`` lists the samples' lengths, so a varlen attention kernel
(FlashAttention's ``cu_seqlens``, or position-id-aware packing in transformers) never attends across samples.
Rows are not padded: a trainer that wants fixed shapes pads to the budget with loss 0. A sample longer than
the budget is a counted reject, ``over_pack_budget`` (``CurateConfig`` refuses length limits above the budget,
so it happens only with both length filters off).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.curate.tokenize import TokenizedSample


@dataclass
class PackedRow:
    """One training row: whole samples end to end."""

    input_ids: list[int]
    loss_mask: list[int]
    position_ids: list[int]
    seq_lens: list[int]
    sample_ids: list[str]


@dataclass
class Packing:
    """Packed rows, rejects by reason, and the budget they were packed to."""

    rows: list[PackedRow]
    budget: int
    rejects: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(len(r.input_ids) for r in self.rows)

    @property
    def efficiency(self) -> float:
        """Sample tokens / slots (rows × budget): 1.0 means no padding at all; 0.0 for no rows."""
        return self.tokens / (len(self.rows) * self.budget) if self.rows else 0.0


def first_fit_decreasing(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Bins of sample indices: longest first (ties: lower index first), each into the first bin with room.
    Bins are in the order they were opened; indices within a bin in input order. O(n log n).

    >>> first_fit_decreasing([5, 3, 6, 2, 4], 8)
    [[2, 3], [0, 1], [4]]
    """
    n = len(lengths)
    bad = [x for x in lengths if not 0 < x <= budget]
    if bad:
        raise ValueError(f"lengths must be in 1..{budget} (the budget), got {bad[:5]}")
    size = 1
    while size < n:
        size *= 2
    room = [0] * (2 * size)  # a max-tree over the bins' free room; unopened bins have the whole budget
    room[size:size + n] = [budget] * n
    for node in range(size - 1, 0, -1):
        room[node] = max(room[2 * node], room[2 * node + 1])
    bins: list[list[int]] = []
    for i in sorted(range(n), key=lambda i: (-lengths[i], i)):
        node = 1
        while node < size:  # descend to the leftmost bin with room for this sample
            node = 2 * node if room[2 * node] >= lengths[i] else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(i)
        room[node] -= lengths[i]
        node //= 2
        while node:
            room[node] = max(room[2 * node], room[2 * node + 1])
            node //= 2
    return [sorted(b) for b in bins]


def packed_row(samples: Sequence[TokenizedSample]) -> PackedRow:
    """Samples end to end, position ids restarting per sample.

    >>> a = TokenizedSample("a", "a", "t", None, input_ids=[5, 6, 7], loss_mask=[0, 1, 1])
    >>> b = TokenizedSample("b", "b", "t", None, input_ids=[8, 9], loss_mask=[0, 1])
    >>> r = packed_row([a, b])
    >>> r.input_ids, r.loss_mask, r.position_ids, r.seq_lens, r.sample_ids
    ([5, 6, 7, 8, 9], [0, 1, 1, 0, 1], [0, 1, 2, 0, 1], [3, 2], ['a', 'b'])
    """
    row = PackedRow([], [], [], [], [])
    for s in samples:
        row.input_ids.extend(s.input_ids)
        row.loss_mask.extend(s.loss_mask)
        row.position_ids.extend(range(len(s.input_ids)))
        row.seq_lens.append(len(s.input_ids))
        row.sample_ids.append(s.sample_id)
    return row


def pack_samples(samples: Iterable[TokenizedSample], budget: int) -> Packing:
    """Pack samples into rows of at most ``budget`` tokens; longer samples are counted as ``over_pack_budget``.

    >>> ss = [TokenizedSample(str(i), str(i), "t", None, input_ids=[i] * n, loss_mask=[1] * n)
    ...       for i, n in enumerate([5, 3, 6, 2, 4, 9])]
    >>> p = pack_samples(ss, 8)
    >>> [r.sample_ids for r in p.rows], p.rejects, p.efficiency
    ([['2', '3'], ['0', '1'], ['4']], {'over_pack_budget': 1}, 0.8333333333333334)
    """
    samples = list(samples)
    fits = [s for s in samples if len(s.input_ids) <= budget]
    over = len(samples) - len(fits)
    bins = first_fit_decreasing([len(s.input_ids) for s in fits], budget)
    return Packing(rows=[packed_row([fits[i] for i in b]) for b in bins], budget=budget,
                   rejects={"over_pack_budget": over} if over else {})
