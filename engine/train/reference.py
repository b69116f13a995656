"""A plain PyTorch training loop in one process, no DeepSpeed and no Ray: the reference the distributed path is
checked against (its losses, step by step) and timed against (`benchmarks/sft_cpu.py`).

It takes the same optimizer steps as `engine.train.loop.train` on `plan.world_size` ranks without shuffling: rank r
holds rows [r × rows_per_rank, (r + 1) × rows_per_rank) in shard order (the driver's equal split), and step k of an
epoch uses rows [k × accumulation, (k + 1) × accumulation) of every rank; the loss is the mean over the step's
supervised tokens, the optimizer PyTorch's AdamW, the schedule and clipping the same."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from engine.train.config import TrainConfig
from engine.train.schedule import StepPlan, lr_factor


def step_rows(rows: Sequence[Mapping[str, Any]], plan: StepPlan, epoch_step: int) -> list[Mapping[str, Any]]:
    """The rows of one optimizer step (all ranks).

    >>> [r["i"] for r in step_rows([{"i": i} for i in range(9)], StepPlan(9, 2, 2, 1), 1)]
    [2, 3, 6, 7]
    """
    per_rank, k = plan.rows_per_rank, plan.accumulation
    return [rows[r * per_rank + epoch_step * k + j] for r in range(plan.world_size) for j in range(k)]


def train_reference(rows: Sequence[Mapping[str, Any]], cfg: TrainConfig, plan: StepPlan,
                    vocab_size: int) -> list[dict]:
    """Trains a fresh student as `plan` says; returns per step {"step", "loss", "supervised_tokens", "seconds"}."""
    import torch

    from engine.train.loop import row_inputs
    from engine.train.loss import token_loss_sum
    from engine.train.student import load_student

    torch.manual_seed(cfg.seed)
    model = load_student(cfg.student, vocab_size, on_gpu=False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_factor, total=plan.total_steps, warmup=plan.warmup_steps, min_ratio=cfg.min_lr_ratio))
    out: list[dict] = []
    device = torch.device("cpu")
    for step in range(plan.total_steps):
        started = time.perf_counter()
        group = [row_inputs(r, device, on_gpu=False) for r in step_rows(rows, plan, step % plan.steps_per_epoch)]
        supervised = sum(g["targets"].numel() for g in group)
        total = 0.0
        for g in group:
            loss = token_loss_sum(model(**g["inputs"]).logits, g["targets"])
            (loss / max(supervised, 1)).backward()
            total += loss.item()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        out.append({"step": step + 1, "loss": total / max(supervised, 1), "supervised_tokens": supervised,
                    "tokens": sum(g["tokens"] for g in group), "seconds": time.perf_counter() - started})
    return out
