"""Packed rows train exactly as their samples alone: on a tiny Qwen3, the loss over a packed row (block-diagonal
causal mask, positions restarting per sample) equals the loss of its samples run one by one, summed over
supervised tokens; without the mask it does not."""

from __future__ import annotations

import random

import pytest
import torch

from engine.curate.pack import packed_row
from engine.curate.tokenize import TokenizedSample
from engine.train.attention import block_causal_mask, position_ids
from engine.train.loss import supervised_token_loss
from engine.train.student import tiny_qwen3

VOCAB = 512


def _samples(n: int, seed: int = 0) -> list[TokenizedSample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(4, 12)
        mask = [0] * (length // 2) + [1] * (length - length // 2)  # a prompt, then a supervised turn
        out.append(TokenizedSample(sample_id=f"s{i}", episode_id=f"e{i}", task_id="t", step=None,
                                   input_ids=[rng.randrange(VOCAB) for _ in range(length)], loss_mask=mask))
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_qwen3(VOCAB).eval()


def _loss(model, ids, mask, **kw):
    with torch.no_grad():
        logits = model(torch.tensor([ids]), **kw).logits
    return supervised_token_loss(logits, torch.tensor([ids]), torch.tensor([mask]))


def test_a_packed_row_has_the_loss_of_its_samples_alone(model):
    samples = _samples(4)
    row = packed_row(samples)
    total, n = _loss(model, row.input_ids, row.loss_mask, position_ids=position_ids(row.seq_lens),
                     attention_mask=block_causal_mask(row.seq_lens))
    alone = [_loss(model, s.input_ids, s.loss_mask) for s in samples]
    assert n == sum(k for _, k in alone) == sum(sum(s.loss_mask) - s.loss_mask[0] for s in samples)
    assert total.item() / n == pytest.approx(sum(t.item() for t, _ in alone) / n, abs=1e-5)


def test_without_the_mask_samples_see_each_other(model):
    samples = _samples(4)
    row = packed_row(samples)
    total, n = _loss(model, row.input_ids, row.loss_mask, position_ids=position_ids(row.seq_lens))
    alone = sum(_loss(model, s.input_ids, s.loss_mask)[0].item() for s in samples)
    assert abs(total.item() - alone) > 1e-3
