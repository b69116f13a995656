"""The training loop one data-parallel rank runs, Ray-free: it talks to its cluster through a `TrainSession`
(`actors.train.RaySession` under Ray Train), and to DeepSpeed.

Per optimizer step every rank takes `gradient_accumulation` packed rows. The loss is the mean over the supervised
tokens of the whole global batch: the ranks first agree on that count (one all-reduce), then each micro-batch's
backward gets its sum of token losses × world × accumulation / count, which DeepSpeed's division by the
accumulation steps and averaging over ranks turn into exactly Σ token losses / count. A mean of per-row means
would weigh a short sample's tokens more than a long one's.

Packed samples never attend to each other: on GPU flash attention's varlen kernels read the sample boundaries from
`position_ids`; elsewhere the model gets the block-diagonal causal mask of the row's `seq_lens`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol

from engine.train.config import TrainConfig
from engine.train.metrics import MetricsLog, Trackers, flops_per_token, peak_flops
from engine.train.schedule import StepPlan, lr_factor

log = logging.getLogger(__name__)

CHECKPOINT_TAG = "ds"
STATE_FILE = "train_state.json"
MODEL_CONFIG_DIR = "model_config"
"""Inside every checkpoint: the model's Hugging Face config (rank 0), which the export rebuilds the model from."""


@dataclass
class TrainState:
    """Where training stands; rank 0 writes it into every checkpoint, and a resume starts from it."""

    step: int = 0
    epoch: int = 0
    rows_done: int = 0  # rows of this epoch each rank has used
    tokens: int = 0  # all ranks, since the start
    supervised_tokens: int = 0


class TrainSession(Protocol):
    """What a rank needs from the cluster around it."""

    rank: int
    world_size: int

    def rows(self, epoch: int) -> Iterator[Mapping[str, Any]]:
        """This rank's packed rows of `epoch`, in the same order every time it is asked (a resume relies on it)."""

    def restored(self) -> AbstractContextManager[str | None]:
        """The directory of the checkpoint to resume from (None: a fresh start), for the length of the block."""

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        """Report a step's metrics (every rank, same step), and the checkpoint each rank wrote into its own dir."""


@dataclass(frozen=True)
class LoopSpec:
    """Everything a rank needs besides its session: the config, the step plan and the student's vocabulary."""

    cfg: TrainConfig
    plan: StepPlan
    vocab_size: int
    metrics_path: str | None = None  # RUN/train/metrics.jsonl (rank 0 writes it)
    run_name: str = "run"
    mean_sample_tokens: int = 4096  # the attention term of the FLOPs per token (MFU)


def row_inputs(row: Mapping[str, Any], device: Any, on_gpu: bool) -> dict:
    """A packed row as model inputs: ids and positions (1, n); on CPU also the block-diagonal additive mask."""
    import torch

    from engine.train.attention import block_causal_mask
    from engine.train.loss import supervised_positions

    ids = torch.as_tensor(row["input_ids"], dtype=torch.long, device=device)[None]
    mask = torch.as_tensor(row["loss_mask"], dtype=torch.long, device=device)[None]
    inputs = {"input_ids": ids, "position_ids": torch.as_tensor(row["position_ids"], dtype=torch.long,
                                                                  device=device)[None], "use_cache": False}
    if not on_gpu:
        inputs["attention_mask"] = block_causal_mask([int(n) for n in row["seq_lens"]]).to(device)
    positions, targets = supervised_positions(ids, mask)
    keep = positions if positions.numel() else torch.zeros(1, dtype=torch.long, device=device)
    return {"inputs": {**inputs, "logits_to_keep": keep}, "targets": targets, "tokens": int(ids.shape[1])}


def train(session: TrainSession, spec: LoopSpec) -> TrainState:
    """Train until the plan's last step (resuming where the session's checkpoint left off); returns the state."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from engine.train.deepspeed_config import deepspeed_config
    from engine.train.loss import token_loss_sum
    from engine.train.student import load_student

    cfg, plan = spec.cfg, spec.plan
    on_gpu = cfg.use_gpu and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    torch.manual_seed(cfg.seed)
    model = load_student(cfg.student, spec.vocab_size, on_gpu=on_gpu)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    bf16 = on_gpu and cfg.student.dtype in ("auto", "bfloat16")
    schedule = partial(lr_factor, total=plan.total_steps, warmup=plan.warmup_steps, min_ratio=cfg.min_lr_ratio)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(cfg, world_size=session.world_size, bf16=bf16),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule), dist_init_required=False)
    state = TrainState()
    with session.restored() as ckpt:
        if ckpt is not None:
            engine.load_checkpoint(ckpt, tag=CHECKPOINT_TAG)
            with open(os.path.join(ckpt, STATE_FILE)) as f:
                state = TrainState(**json.load(f))
            log.info("rank %d: resumed at step %d (epoch %d, row %d)", session.rank, state.step, state.epoch,
                     state.rows_done)
    scale = session.world_size * cfg.gradient_accumulation
    resumed_from = state.step
    flops = flops_per_token(model.config, context=spec.mean_sample_tokens) if on_gpu else 0.0
    peak = peak_flops(torch.cuda.get_device_name(device), cfg.peak_tflops) if on_gpu else 0.0
    sink = MetricsLog(spec.metrics_path, state.step) if session.rank == 0 and spec.metrics_path else None
    trackers = Trackers(cfg.report_to, spec.run_name, cfg.model_dump(mode="json")) if session.rank == 0 else None
    epoch_rows = plan.steps_per_epoch * cfg.gradient_accumulation
    while state.step < plan.total_steps:
        rows = session.rows(state.epoch)
        for _ in range(state.rows_done):
            next(rows)
        while state.rows_done < epoch_rows and state.step < plan.total_steps:
            started, lr = time.perf_counter(), engine.get_lr()[0]
            group = [row_inputs(next(rows), device, on_gpu) for _ in range(cfg.gradient_accumulation)]
            counts = torch.tensor([sum(g["targets"].numel() for g in group), sum(g["tokens"] for g in group)],
                                  dtype=torch.float64, device=device)
            dist.all_reduce(counts)
            supervised, tokens = int(counts[0].item()), int(counts[1].item())
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            for g in group:
                out = engine(**g["inputs"])
                total = token_loss_sum(out.logits, g["targets"])
                engine.backward(total * (scale / max(supervised, 1)))
                engine.step()
                loss_sum += total.detach().double()
            dist.all_reduce(loss_sum)
            seconds = time.perf_counter() - started
            state.step += 1
            state.rows_done += cfg.gradient_accumulation
            state.tokens += tokens
            state.supervised_tokens += supervised
            metrics = step_metrics(state, spec, loss=loss_sum.item() / max(supervised, 1),
                                   lr=lr, seconds=seconds, tokens=tokens, supervised=supervised,
                                   grad_norm=engine.get_global_grad_norm(), world_size=session.world_size,
                                   flops=flops, peak=peak)
            metrics["resumed_from"] = resumed_from
            last = state.step == plan.total_steps
            if sink is not None:
                sink.write(metrics, force=last or state.step % cfg.checkpoint_every == 0)
            if trackers is not None:
                trackers.log(metrics)
            if state.step % cfg.checkpoint_every == 0 or last:
                _checkpoint(session, engine, model, state, metrics)
            else:
                session.report(metrics, None)
        if state.rows_done >= epoch_rows:
            state.epoch, state.rows_done = state.epoch + 1, 0
    if trackers is not None:
        trackers.close()
    return state


def step_metrics(state: TrainState, spec: LoopSpec, *, loss: float, lr: float, seconds: float, tokens: int,
                 supervised: int, grad_norm: Any, world_size: int, flops: float = 0.0, peak: float = 0.0) -> dict:
    """One step's metrics (the same on every rank: every figure is global)."""
    per_gpu = tokens / seconds / world_size if seconds > 0 else 0.0
    metrics = {"step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr, "step_seconds": seconds,
               "tokens": state.tokens, "supervised_tokens": state.supervised_tokens,
               "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
               "supervised_tokens_per_s": supervised / seconds if seconds > 0 else 0.0,
               "tokens_per_s_per_worker": per_gpu, "total_steps": spec.plan.total_steps}
    if grad_norm is not None and math.isfinite(float(grad_norm)):
        metrics["grad_norm"] = float(grad_norm)
    if peak > 0 and flops > 0:
        metrics["mfu"] = per_gpu * flops / peak
    return metrics


def _checkpoint(session: TrainSession, engine: Any, model: Any, state: TrainState, metrics: dict) -> None:
    """Every rank saves its ZeRO shard into a directory of its own; rank 0 adds the train state and the model's
    config; the session gathers them into one checkpoint."""
    with tempfile.TemporaryDirectory(prefix="synthscale-ckpt-") as d:
        engine.save_checkpoint(d, tag=CHECKPOINT_TAG)
        if session.rank == 0:
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump(asdict(state), f)
            model.config.save_pretrained(os.path.join(d, MODEL_CONFIG_DIR))
        session.report({**metrics, "checkpoint": True}, d)
