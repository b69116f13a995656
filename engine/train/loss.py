"""The SFT loss: cross-entropy on supervised tokens only (reads a row's logits, input ids and loss mask).

The mean is over the supervised tokens of the whole global batch — not a mean of per-sample means, which would
weigh a short sample's tokens more than a long one's. So each step returns the *sum* of token losses and the
token count; the caller divides the sum by the count of the global batch (all ranks, all micro-batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_token_loss(logits: torch.Tensor, input_ids: torch.Tensor,
                          loss_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropy over supervised targets, how many there are) for one (1, n) row.

    Token t+1 is predicted from position t; it counts when `loss_mask[t+1]` is 1, so a sample's first token,
    which follows the previous sample in a packed row, is never a target unless supervised (and a supervised
    first token does not occur: a sample starts with its prompt).

    >>> logits = torch.zeros(1, 3, 4); ids = torch.tensor([[0, 1, 2]]); mask = torch.tensor([[0, 1, 1]])
    >>> total, n = supervised_token_loss(logits, ids, mask)
    >>> round(total.item() / n, 4), n  # uniform logits: log(4) per token
    (1.3863, 2)
    """
    targets = input_ids[:, 1:]
    weights = loss_mask[:, 1:].to(logits.dtype)
    losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                             reduction="none")
    return (losses * weights.reshape(-1)).sum(), int(weights.sum().item())


def supervised_positions(input_ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions whose logits predict a supervised token, those tokens) of one (1, n) row: the model need compute
    logits only there (`logits_to_keep`), which on a 150K-word vocabulary is most of the activation memory saved.

    >>> supervised_positions(torch.tensor([[7, 8, 9, 4]]), torch.tensor([[0, 0, 1, 1]]))
    (tensor([1, 2]), tensor([9, 4]))
    """
    positions = torch.nonzero(loss_mask[0, 1:], as_tuple=True)[0]
    return positions, input_ids[0, positions + 1]


def token_loss_sum(logits_at: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy of the logits kept at `supervised_positions` ((1, k, V) or (k, V)) against `targets`."""
    logits_at = logits_at.reshape(-1, logits_at.size(-1))
    if targets.numel() == 0:  # a row with nothing supervised still joins the backward pass (every rank must)
        return logits_at.sum() * 0.0
    return F.cross_entropy(logits_at.float(), targets, reduction="sum")
