"""Shared pieces of the rollout-stage tests: model factories and fault hooks that Ray workers can unpickle
(`register_pickle_by_value`), the stage over either pool, and the exactly-once check."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from engine.artifacts import resolve
from engine.config import RunConfig
from engine.errors import ModelError
from engine.rollout.plan import TaskRef
from engine.rollout.stage import RolloutStage
from engine.tasks.folder import load_tasks
from engine.testing.playbook import PlaybookModel
from engine.trajectories.store import shard_paths

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"
QUICK = ["echo CVD=${CUDA_VISIBLE_DEVICES:-none}", "python baseline.py", "submit"]


class PlaybookFactory:
    """Builds the worker's model: a playbook, optionally failing its first call once per marker (an outage)."""

    def __init__(self, commands: list[str], *, delay_s: float = 0.0, cost_per_call_usd: float = 0.0,
                 fail_once_marker: str | None = None, fail_always: bool = False):
        self.commands, self.delay_s, self.cost = commands, delay_s, cost_per_call_usd
        self.fail_once_marker, self.fail_always = fail_once_marker, fail_always

    def __call__(self, cfg, tasks):
        model = PlaybookModel(self.commands, delay_s=self.delay_s, cost_per_call_usd=self.cost)
        if self.fail_once_marker:
            model = FailOnce(model, self.fail_once_marker)
        if self.fail_always:
            model = DeadEndpoint(model)
        return model, "playbook"


class FailOnce:
    """The first call anywhere (a marker file decides) fails like an endpoint outage; the rest pass through."""

    def __init__(self, model, marker: str):
        self.model, self.marker, self.name = model, marker, model.name

    def complete(self, messages, params):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.model.complete(messages, params)
        os.close(fd)
        raise ModelError("loopback endpoint outage (injected)")

    async def acomplete(self, messages, params):
        return self.complete(messages, params)


class DeadEndpoint:
    """Every call fails like an endpoint that is down."""

    def __init__(self, model):
        self.name = model.name

    def complete(self, messages, params):
        raise ModelError("loopback endpoint down (injected)")

    async def acomplete(self, messages, params):
        return self.complete(messages, params)


class DieAfterWrite:
    """Kills the worker process right after it stored its `after`-th episode of a lease (before it acknowledges
    the lease), once (a marker file decides); with `log`, appends every stored episode's path to that file, so a
    test can tell that no episode was played (and stored) twice."""

    def __init__(self, marker: str, after: int = 1, log: str | None = None, crash: bool = False):
        self.marker, self.after, self.log, self.crash = marker, after, log, crash
        self.written: Counter[str] = Counter()

    def __call__(self, lease, path) -> None:
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{path}\n")
        self.written[lease.lease_id] += 1
        if self.written[lease.lease_id] < self.after:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, lease.lease_id.encode())
        os.close(fd)
        if self.crash:  # in-process workers: a crash inside the lease, not of the whole test process
            raise RuntimeError("worker crashed (injected)")
        os._exit(1)


def task_refs(cfg: RunConfig) -> list[TaskRef]:
    return [TaskRef.of(t) for t in load_tasks(list(cfg.episodes.tasks))]


def ray_stage(cfg: RunConfig, *, model_factory=None, after_write=None, **stage_kw) -> RolloutStage:
    """The rollout stage of `cfg` over Ray actors (the connected cluster)."""
    from actors.rollout import RayWorkerPool

    refs = task_refs(cfg)
    return RolloutStage(cfg, refs, RayWorkerPool(cfg, refs, model_factory=model_factory, after_write=after_write),
                        **stage_kw)


def local_stage(cfg: RunConfig, *, model_factory=None, after_write=None, gpu_ids=None, **stage_kw) -> RolloutStage:
    """The rollout stage of `cfg` over threads of this process."""
    from engine.rollout.local_pool import InProcessPool

    refs = task_refs(cfg)
    pool = InProcessPool(cfg, refs, model_factory=model_factory, after_write=after_write, gpu_ids=gpu_ids)
    return RolloutStage(cfg, refs, pool, **stage_kw)


def written_twice(log: str) -> list[str]:
    """Episode shards that a DieAfterWrite log saw stored more than once (episodes played again)."""
    lines = Path(log).read_text().split() if Path(log).exists() else []
    return [p for p, c in Counter(lines).items() if c > 1]


def rollout_config(run_dir: Path | str, *, tasks: list[str] = ("wine-classification", "diabetes-regression"), n: int = 4,
                   max_steps: int = 6, runtime: str = "local", **rollout) -> RunConfig:
    return RunConfig.model_validate({
        "run_id": str(run_dir).rstrip("/").rsplit("/", 1)[-1], "run_dir": str(run_dir),
        "episodes": {"tasks": [str(EXAMPLES / t) for t in tasks], "episodes_per_task": n},
        "agent": {"max_steps": max_steps}, "sandbox": {"runtime": runtime},
        "rollout": {"progress": False, "lease_size": 2, **rollout},
    })


def _read(run_dir: str, path: str, columns: list[str]):
    fs, _ = resolve(run_dir)
    return pq.read_table(path, columns=columns, filesystem=fs)


def raw_episode_ids(run_dir: str) -> list[str]:
    """Episode ids of every stored row, duplicates included (no dedup on read)."""
    return [e for p in shard_paths(run_dir) for e in _read(run_dir, p, ["episode_id"]).column(0).to_pylist()]


def assert_exactly_once(cfg: RunConfig) -> dict[str, int]:
    """No episode stored twice, and every task holds exactly its target of clean trajectories."""
    ids = raw_episode_ids(cfg.run_dir)
    dups = [e for e, c in Counter(ids).items() if c > 1]
    assert not dups, f"episodes stored more than once: {dups}"
    rows = [_read(cfg.run_dir, p, ["task_id", "infra_error", "seed"]).to_pylist() for p in shard_paths(cfg.run_dir)]
    clean = Counter(r["task_id"] for shard in rows for r in shard if r["infra_error"] is None)
    assert set(clean.values()) == {cfg.episodes.episodes_per_task}, clean
    return dict(clean)
