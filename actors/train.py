"""SFT on Ray Train: a `TorchTrainer` whose workers run `engine.train.loop.train` (DeepSpeed inside each worker, on the
process group Ray Train set up: gloo on CPU, NCCL on GPU). Ray wiring only.

Data: the curated shards as a Ray Data dataset, read in order and split by the driver into equal parts held in the
object store (`ordered_parts`), one per rank, read through `ray.train.get_dataset_shard`: no rank reads the whole
dataset, and a restarted worker group gets the same rows in the same order, so a resume continues exactly where the
checkpoint left off. Checkpoints: every rank
reports its ZeRO shard; Ray Train gathers them in `RUN/train/checkpoint_*/`, keeps the newest `keep_checkpoints`,
restarts failed worker groups from the latest (`FailureConfig`), and a new driver with the same run picks it up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray
import ray.train
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from engine.errors import TrainingError
from engine.redact import redact
from engine.train.loop import LoopSpec, train

TRAIN_DIR_NAME = "train"
SHUFFLE_BUFFER_ROWS = 64
"""Rows a rank's local shuffle draws from (each row is up to `curate.pack_tokens` tokens)."""


class RaySession:
    """`engine.train.loop.TrainSession` inside a Ray Train worker."""

    def __init__(self, spec: LoopSpec):
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.shard = ray.train.get_dataset_shard(rank_dataset(self.rank))
        self.spec = spec

    def rows(self, epoch: int) -> Iterator[dict]:
        cfg = self.spec.cfg
        shuffle = {"local_shuffle_buffer_size": SHUFFLE_BUFFER_ROWS,
                   "local_shuffle_seed": cfg.seed * 100_003 + epoch} if cfg.shuffle_rows else {}
        for batch in self.shard.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2, **shuffle):
            yield {k: v[0] for k, v in batch.items()}

    @contextmanager
    def restored(self):
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as d:
            yield d

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


def rank_dataset(rank: int) -> str:
    return f"rank_{rank}"


def ordered_parts(shard_paths: list[str], world_size: int) -> list:
    """The packed rows read once, in shard order, and split into `world_size` equal parts (the remainder left out)
    before any worker starts: a split inside Ray Train would wait for CPUs the workers hold, and Ray Data's
    streaming split hands blocks to whichever rank asks first, so a restarted run would not see the same rows."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    dataset = ray.data.read_parquet(shard_paths).select_columns(["input_ids", "loss_mask", "position_ids", "seq_lens"])
    return dataset.split(world_size, equal=True)


def train_worker(config: dict) -> None:
    """The function every Ray Train worker runs."""
    spec: LoopSpec = config["spec"]
    if not spec.cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is first imported
    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar per row otherwise, in every log
    train(RaySession(spec), spec)


class RayTrainLauncher:
    """`engine.train.stage.TrainLauncher` on the connected Ray cluster."""

    def fit(self, spec: LoopSpec, shard_paths: list[str], storage_path: str):
        """Runs (or resumes) the training of `spec` over the packed shards; returns the last checkpoint."""
        from ray.train import TrainingFailedError

        cfg = spec.cfg
        parts = ordered_parts(shard_paths, cfg.workers)
        resources = {"CPU": cfg.cpus_per_worker, **cfg.resources_per_worker}
        if cfg.use_gpu:
            resources["GPU"] = cfg.gpus_per_worker
        trainer = TorchTrainer(
            train_worker, train_loop_config={"spec": spec},
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(name=TRAIN_DIR_NAME, storage_path=storage_path,
                                 failure_config=FailureConfig(max_failures=cfg.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            datasets={rank_dataset(r): part for r, part in enumerate(parts)},
            dataset_config=DataConfig(datasets_to_split=[]))
        try:
            result = trainer.fit()
        except TrainingFailedError as e:
            raise TrainingError(f"training failed after {cfg.max_failures} restart(s) (train.max_failures): "
                                f"{redact(str(e))[-2000:]}; fix the cause and run the same command again to resume "
                                "from the last checkpoint") from None
        if result.checkpoint is None:
            raise TrainingError(f"training under {storage_path}/{TRAIN_DIR_NAME} ended without a checkpoint")
        return result.checkpoint
