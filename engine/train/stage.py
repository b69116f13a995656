"""The SFT stage, Ray-free: the curated shards of `RUN/curate/` → a trained student in `RUN/train/` (checkpoints,
`metrics.jsonl`, and `final/`, a Hugging Face checkpoint that `transformers` loads and vLLM serves). The cluster
side is a `TrainLauncher` (`actors.train`: Ray Train + DeepSpeed)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from engine.artifacts import begin_stage, is_object_store, resolve, run_path, write_config, write_manifest
from engine.config import RunConfig, config_digest
from engine.curate.tokenizer import load_student_tokenizer
from engine.errors import ArtifactError, ConfigError
from engine.records import Manifest
from engine.train.loop import LoopSpec
from engine.train.config import TINY
from engine.train.metrics import read_metrics
from engine.train.progress import TrainProgress
from engine.train.schedule import StepPlan

log = logging.getLogger(__name__)

FINAL = "final"
BASE = "base"


class Checkpoint(Protocol):
    def as_directory(self) -> AbstractContextManager[str]:
        """The checkpoint as a local directory, for the length of the block."""


class TrainLauncher(Protocol):
    def fit(self, spec: LoopSpec, shard_paths: list[str], storage_path: str) -> Checkpoint:
        """Train (or resume) under `storage_path`/train/; return the last checkpoint."""


@dataclass
class TrainedStudent:
    """A handle on `RUN/train/`: the exported model, its metrics and the manifest."""

    out_dir: str
    manifest: Manifest

    @property
    def final_dir(self) -> str:
        """The Hugging Face checkpoint (`transformers`, `vllm serve`, and an `eval.methods` entry's `checkpoint`)."""
        return run_path(self.out_dir, FINAL)

    @property
    def base_model(self) -> str:
        """The student before SFT: `RUN/train/base/` for the offline tiny model (its random weights, saved at the
        stage's start), else the model the config names (a Hub id or a folder)."""
        from engine.artifacts import exists

        fs, marker = resolve(run_path(self.out_dir, BASE, "config.json"))
        if exists(fs, marker):
            return run_path(self.out_dir, BASE)
        fs, cfg_path = resolve(run_path(self.out_dir, "config.yaml"))
        import yaml

        from engine.artifacts import read_bytes

        return yaml.safe_load(read_bytes(fs, cfg_path))["train"]["student"]["model"]

    def eval_methods(self) -> list:
        """The base student and the SFT student as `eval.methods` entries (`base-student`, `sft-student`)."""
        from engine.config import EvalMethod

        return [EvalMethod(name="base-student", checkpoint=self.base_model),
                EvalMethod(name="sft-student", checkpoint=self.final_dir)]

    def metrics(self) -> list[dict]:
        """One dict per optimizer step: loss, lr, tokens, throughput (and MFU on GPU)."""
        return read_metrics(run_path(self.out_dir, "metrics.jsonl"))

    def load(self) -> Any:
        """The trained model (`transformers.AutoModelForCausalLM`)."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.final_dir)


def curated_shards(cfg: RunConfig) -> tuple[Manifest, list[str]]:
    """The curation manifest of this run and its packed shards; ArtifactError when curation has not finished."""
    from engine.curate.stage import completed
    from pyarrow import fs as pafs

    manifest = completed(cfg)
    if manifest is None:
        raise ArtifactError(f"train: {run_path(cfg.run_dir, 'curate')}/ has no manifest (curation not run or not "
                            "finished); run `synthscale curate --run …` first")
    fs, base = resolve(run_path(cfg.run_dir, "curate", "shards"))
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    paths = sorted(i.path for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))
    if not paths:
        raise ArtifactError(f"train: no packed shards in {run_path(cfg.run_dir, 'curate', 'shards')}/ (the curation "
                            "kept no sample: see its manifest's rejects); curate more trajectories first")
    if is_object_store(fs):
        uri = run_path(cfg.run_dir, "curate", "shards")
        paths = [f"{uri.split('://', 1)[0]}://{p}" for p in paths]
    return manifest, paths


def step_plan(cfg: RunConfig, rows: int) -> StepPlan:
    t = cfg.train
    plan = StepPlan(rows=rows, world_size=t.workers, accumulation=t.gradient_accumulation, epochs=t.epochs,
                    max_steps=t.max_steps, warmup_ratio=t.warmup_ratio)
    if plan.total_steps == 0:
        raise ConfigError(f"train: {rows} packed rows cannot make one optimizer step of {t.workers} workers × "
                          f"{t.gradient_accumulation} rows (train.workers × train.gradient_accumulation); lower them "
                          "or curate more data")
    return plan


def run_train(cfg: RunConfig, launcher: TrainLauncher, *, start_over: bool = False) -> TrainedStudent:
    """The whole stage. Re-running with the same inputs resumes from the last checkpoint (or returns the finished
    result); other inputs or settings are refused unless `start_over`."""
    started = time.time()
    out_dir = run_path(cfg.run_dir, "train")
    curated, shards = curated_shards(cfg)
    student = load_student_tokenizer(cfg.curate.student)
    key = {**cfg.stage_inputs("train"), "curate": curated.config_hash, "tokenizer": student.content_hash}
    done = begin_stage(out_dir, "train", config_digest(key), start_over=start_over, inputs=key)
    if done is not None:
        log.info("run %s: training already done under these inputs and settings; reusing %s", cfg.run_id, out_dir)
        return TrainedStudent(out_dir, done)
    write_config(out_dir, cfg)
    plan = step_plan(cfg, curated.counts.get("rows", 0))
    samples = max(1, curated.counts.get("samples", 1))
    fs, _ = resolve(cfg.run_dir)
    where = cfg.run_dir if is_object_store(fs) else os.path.abspath(cfg.run_dir)  # workers run in other folders
    spec = LoopSpec(cfg.train, plan, vocab_size=len(student.tokenizer),
                    metrics_path=run_path(where, "train", "metrics.jsonl"),
                    run_name=cfg.run_id, mean_sample_tokens=max(1, curated.counts.get("tokens", 0) // samples))
    if cfg.train.student.model == TINY:
        _save_base(cfg, student.tokenizer, run_path(out_dir, BASE))
    with TrainProgress(spec.metrics_path, plan.total_steps, enabled=cfg.train.progress):
        checkpoint = launcher.fit(spec, shards, where)
    with checkpoint.as_directory() as d:
        _export(d, run_path(out_dir, FINAL), student.tokenizer, cfg)
    metrics = read_metrics(run_path(out_dir, "metrics.jsonl"))
    last = metrics[-1] if metrics else {}
    manifest = Manifest(stage="train", run_id=cfg.run_id, config_hash=config_digest(key),
                        wall_time_s=time.time() - started, counts={
                            "steps": plan.total_steps, "workers": plan.world_size, "rows": plan.rows,
                            "rows_left_out_per_epoch": plan.rows_left_out_per_epoch,
                            "tokens": int(last.get("tokens", 0)),
                            "supervised_tokens": int(last.get("supervised_tokens", 0))})
    write_manifest(out_dir, manifest)
    return TrainedStudent(out_dir, manifest)


def _save_base(cfg: RunConfig, tokenizer: Any, uri: str) -> None:
    """The tiny student's initial weights (as training starts from them), for evaluating the base student."""
    from engine.train.student import load_student

    fs, path = resolve(uri)
    model = load_student(cfg.train.student, len(tokenizer), on_gpu=False)
    with tempfile.TemporaryDirectory(prefix="synthscale-base-") as local:
        model.save_pretrained(local, safe_serialization=True)
        tokenizer.save_pretrained(local)
        from pyarrow import fs as pafs

        fs.create_dir(path, recursive=True)
        pafs.copy_files(local, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _export(checkpoint_dir: str, final_uri: str, tokenizer: Any, cfg: RunConfig) -> None:
    from engine.train.export import export_checkpoint

    fs, final = resolve(final_uri)
    if not is_object_store(fs):
        export_checkpoint(checkpoint_dir, final, tokenizer)
        return
    from pyarrow import fs as pafs

    with tempfile.TemporaryDirectory(prefix="synthscale-final-") as local:
        export_checkpoint(checkpoint_dir, local, tokenizer)
        pafs.copy_files(local, final, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def completed(cfg: RunConfig) -> TrainedStudent | None:
    """The finished training of this run, if any."""
    from engine.artifacts import read_manifest

    out_dir = run_path(cfg.run_dir, "train")
    manifest = read_manifest(out_dir)
    return TrainedStudent(out_dir, manifest) if manifest is not None else None
