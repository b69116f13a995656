"""Runs leases of episodes on reused task sandboxes and writes each lease's shard (`RUN/rollouts/trajectories/`).

`EpisodeWorker` is what a Ray rollout actor wraps (`actors/rollout.py`), and it is usable without Ray. It
holds up to `slots` sandboxes (one per concurrent episode), each pinned to the worker's GPUs and kept for
the task it was started for: episodes of one task reuse it with `reset()` between them. An episode that
fails for the cluster's reasons (sandbox or endpoint) is retried on a fresh sandbox up to R times; the
record of the last try is kept with its `infra_error`. A lease whose shard already exists is acknowledged
from the shard without running anything (its earlier holder died between writing and acknowledging).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.agent.episode import episode_id, run_episode
from engine.config import RunConfig
from engine.errors import BudgetExceededError, EngineError, SandboxError
from engine.protocols import ChatModel, Completion, Message, Runtime, Sandbox, SamplingParams, SandboxSpec
from engine.records import TrajectoryRecord
from engine.rollout.observer import NullObserver, RolloutObserver
from engine.rollout.scheduler import EpisodeOutcome, Lease, LeaseResult
from engine.tasks.grading import TaskGrader
from engine.tasks.spec import TaskSpec
from engine.trajectories.store import read_lease_shard, write_lease_shard

log = logging.getLogger(__name__)

GRADING_TIMEOUT_S = 600.0
_OUTCOME_COLUMNS = ["seed", "episode_id", "exit_status", "infra_error", "cost_usd", "wall_time_s"]


class StageBudgetSpent(EngineError):
    """The stage's shared budget ran out mid-episode: the episode is dropped (not stored) and the stage stops."""


class BudgetGuard:
    """A ChatModel wrapper turning the shared limiter's BudgetExceededError into StageBudgetSpent, which the
    agent loop does not catch (it would otherwise auto-submit the episode as if the agent ran out of money)."""

    def __init__(self, model: ChatModel):
        self.model = model
        self.name = model.name

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        try:
            return self.model.complete(messages, params)
        except BudgetExceededError as e:
            raise StageBudgetSpent(str(e)) from None

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion:
        try:
            return await self.model.acomplete(messages, params)
        except BudgetExceededError as e:
            raise StageBudgetSpent(str(e)) from None


@dataclass
class _Slot:
    task: TaskSpec
    grader: TaskGrader
    sandbox: Sandbox | None = None
    fresh: bool = True  # just started: no reset needed before the first episode


@dataclass
class _Pool:
    """Idle sandboxes by task, and how many exist; guarded by one lock (episodes may run concurrently)."""

    idle: dict[str, list[_Slot]] = field(default_factory=dict)
    count: int = 0
    live: int = 0  # sandboxes started and not yet closed (the active-containers gauge)
    lock: threading.Lock = field(default_factory=threading.Lock)


class EpisodeWorker:
    """Plays leases: `run_lease(lease) -> LeaseResult`, thread-safe up to `slots` concurrent leases."""

    def __init__(self, cfg: RunConfig, tasks: dict[str, TaskSpec], model: ChatModel, runtime: Runtime, *,
                 policy: str, worker_id: str = "w0", gpu_ids: list[str] | None = None, gpu_share: float = 0.0,
                 slots: int = 1, observer: RolloutObserver | None = None,
                 after_write: Callable[[Lease, str], None] | None = None):
        self.cfg = cfg
        self.tasks = tasks
        self.model = BudgetGuard(model)
        self.runtime = runtime
        self.policy = policy
        self.worker_id = worker_id
        self.gpu_ids = list(gpu_ids or [])
        self.gpu_share = gpu_share
        self.slots = slots
        self.observer = observer or NullObserver()
        self.after_write = after_write
        self._pool = _Pool()

    # -- leases ---------------------------------------------------------------------------------------
    def run_lease(self, lease: Lease) -> LeaseResult:
        done = read_lease_shard(self.cfg.run_dir, lease.lease_id, columns=_OUTCOME_COLUMNS)
        if done is not None:
            log.info("run %s lease %s: shard already written; acknowledging it", self.cfg.run_id, lease.lease_id)
            return LeaseResult(lease_id=lease.lease_id, worker_id=self.worker_id, replayed=True,
                               outcomes=[EpisodeOutcome(**row) for row in done.to_pylist()])
        task = self.tasks[lease.task_id]
        records: list[TrajectoryRecord] = []
        budget_spent = False
        slot = self._checkout(task)
        try:
            for seed in lease.seeds:
                try:
                    records.append(self._episode(slot, seed))
                except StageBudgetSpent as e:
                    log.warning("run %s: %s; stopping the lease", self.cfg.run_id, e)
                    budget_spent = True
                    break
        finally:
            self._checkin(slot)
        shard = None
        if records:
            shard = write_lease_shard(self.cfg.run_dir, lease.lease_id, records)
            if self.after_write is not None:
                self.after_write(lease, shard)
        return LeaseResult(
            lease_id=lease.lease_id, worker_id=self.worker_id, shard=shard, budget_exhausted=budget_spent,
            outcomes=[EpisodeOutcome(**{k: getattr(r, k) for k in _OUTCOME_COLUMNS}) for r in records])

    def _episode(self, slot: _Slot, seed: int) -> TrajectoryRecord:
        """One episode, retried on a fresh sandbox while it fails for infrastructure reasons."""
        task, retries = slot.task, self.cfg.rollout.max_infra_retries
        rec: TrajectoryRecord | None = None
        for attempt in range(retries + 1):
            started = time.monotonic()
            try:
                sandbox = self._ready(slot)
                rec = run_episode(task, self.model, sandbox, slot.grader, self.cfg.agent, seed=seed,
                                  run_id=self.cfg.run_id, sampling=self.cfg.model.sampling, policy=self.policy,
                                  time_limit_s=self.cfg.rollout.episode_timeout_s, on_step=self.observer.step)
            except SandboxError as e:  # the sandbox would not start or reset
                rec = self._infra_record(task, seed, f"SandboxError: {e}")
            self._account(rec, time.monotonic() - started)
            if rec.infra_error is None:
                break
            self.observer.infra_error(rec.infra_error.split(":", 1)[0])
            self._discard(slot)  # a dead container or grader: the next try starts fresh ones
            if attempt < retries:
                log.warning("run %s task %s seed %d: infra error (%s); retry %d/%d", self.cfg.run_id, task.id,
                            seed, rec.infra_error, attempt + 1, retries)
        assert rec is not None
        self.observer.episode(rec)
        return rec

    def _account(self, rec: TrajectoryRecord, wall_s: float) -> None:
        if self.gpu_ids:
            busy = sum(s.execution_time_s for s in rec.steps)
            self.observer.gpu_seconds(held_s=wall_s * self.gpu_share, busy_s=min(busy, wall_s) * self.gpu_share)

    def _infra_record(self, task: TaskSpec, seed: int, error: str) -> TrajectoryRecord:
        task_hash = task.content_hash()
        return TrajectoryRecord(
            run_id=self.cfg.run_id, task_id=task.id, task_hash=task_hash, seed=seed, model=self.model.name,
            episode_id=episode_id(task_hash, self.model.name, self.policy, seed), policy=self.policy,
            sampling=self.cfg.model.sampling.model_dump(), baseline=task.baseline, metric=task.config.metric,
            direction=task.config.direction, exit_status="exit_error", infra_error=error)

    # -- sandboxes ------------------------------------------------------------------------------------
    def _checkout(self, task: TaskSpec) -> _Slot:
        with self._pool.lock:
            idle = self._pool.idle.get(task.id)
            if idle:
                return idle.pop()
            victim = None
            if self._pool.count >= self.slots:  # make room: drop an idle sandbox of another task
                victim = next((lst.pop() for lst in self._pool.idle.values() if lst), None)
                self._pool.count -= victim is not None
            self._pool.count += 1
        if victim is not None:
            self._discard(victim)
        labels = {"run_id": self.cfg.run_id, "task_id": task.id, "worker": self.worker_id}
        return _Slot(task=task, grader=TaskGrader(task, self.runtime, timeout_s=GRADING_TIMEOUT_S, labels=labels))

    def _checkin(self, slot: _Slot) -> None:
        with self._pool.lock:
            self._pool.idle.setdefault(slot.task.id, []).append(slot)

    def _ready(self, slot: _Slot) -> Sandbox:
        """The slot's sandbox at the starter state: started if missing, else reset."""
        if slot.sandbox is None:
            spec = SandboxSpec(workspace=slot.task.workspace_dir, read_only_paths=slot.task.read_only_paths,
                               gpu_ids=self.gpu_ids, labels={"run_id": self.cfg.run_id, "task_id": slot.task.id,
                                                            "worker": self.worker_id})
            slot.sandbox, slot.fresh = self.runtime.start(spec), True
            self._live(+1)
        elif not slot.fresh:
            slot.sandbox.reset()
        slot.fresh = False
        return slot.sandbox

    def _discard(self, slot: _Slot) -> None:
        sandbox, slot.sandbox = slot.sandbox, None
        if sandbox is not None:
            self._live(-1)
        for closable in (sandbox, slot.grader):
            try:
                if closable is not None:
                    closable.close()
            except Exception as e:  # a dead container may refuse even to be removed; the reaper gets it
                log.warning("run %s: closing a broken sandbox failed: %s", self.cfg.run_id, e)

    def _live(self, delta: int) -> None:
        with self._pool.lock:
            self._pool.live += delta
            live = self._pool.live
        self.observer.containers(live)

    def close(self) -> None:
        """Close every sandbox (call at the end of the stage)."""
        with self._pool.lock:
            slots = [s for lst in self._pool.idle.values() for s in lst]
            self._pool.idle.clear()
            self._pool.count = 0
        for slot in slots:
            self._discard(slot)
