"""Attention masks of packed rows (reads `seq_lens` of `engine.curate.shards.PACKED_SCHEMA` rows): samples packed end
to end in one row never attend to each other.

On GPU the varlen (flash) attention kernels get this from `position_ids` restarting per sample; on CPU the
model gets an explicit block-diagonal causal mask, additive (0 where a token may attend, -inf where not).
"""

from __future__ import annotations

import torch


def block_causal_mask(seq_lens: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (1, 1, n, n) additive mask: token i attends to j iff both are in the same sample and j ≤ i.

    >>> m = block_causal_mask([2, 1])
    >>> (m[0, 0] == 0).int().tolist()
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    n = sum(seq_lens)
    mask = torch.full((n, n), torch.finfo(dtype).min, dtype=dtype)
    start = 0
    for length in seq_lens:
        block = torch.ones(length, length, dtype=torch.bool).tril()
        mask[start:start + length, start:start + length].masked_fill_(block, 0.0)
        start += length
    return mask[None, None]


def position_ids(seq_lens: list[int]) -> torch.Tensor:
    """(1, n) positions restarting at 0 for each sample.

    >>> position_ids([3, 2]).tolist()
    [[0, 1, 2, 0, 1]]
    """
    return torch.cat([torch.arange(length) for length in seq_lens])[None]
