"""Plays leases on reused task sandboxes and stores each episode as it ends (`RUN/rollouts/trajectories/part-ep-*.parquet`).

`EpisodeWorker` is what every worker pool runs: a thread of the in-process pool, or a Ray actor
(`actors/rollout.py`). It holds up to `slots` sandboxes (one per concurrent episode), each pinned to the
worker's GPUs and kept for the task it was started for: episodes of one task reuse it with `reset()`
between them. An episode that fails for the cluster's reasons (sandbox or endpoint) is retried on a fresh
sandbox up to `rollout.max_infra_retries` times; the record of the last try is kept with its `infra_error`.
Each finished episode is stored at once under its episode id (`engine.trajectories.episode_shards`; the write
overlaps the start of the next episode and completes before the one after, and before the lease is
acknowledged), and a lease's episodes already stored (an earlier holder died mid-lease) are acknowledged
from the store instead of being played again. Between episodes the sandbox and the grader are reset in the
background, so the next episode starts at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.agent.episode import episode_id, run_episode
from engine.config import RunConfig
from engine.errors import BudgetExceededError, EngineError, SandboxError, TaskError
from engine.protocols import ChatModel, Completion, Message, Runtime, Sandbox, SamplingParams, SandboxSpec
from engine.records import TrajectoryRecord
from engine.redact import redact
from engine.rollout.leases import EpisodeOutcome, Lease, LeaseResult
from engine.rollout.observer import NullObserver, RolloutObserver
from engine.rollout.plan import TaskRef
from engine.tasks.folder import load_task
from engine.tasks.grading import TaskGrader
from engine.tasks.spec import TaskSpec
from engine.trajectories.episode_shards import stored_outcomes, write_episode

log = logging.getLogger(__name__)

GRADING_TIMEOUT_S = 600.0
_OUTCOME_COLUMNS = ["seed", "episode_id", "exit_status", "infra_error", "cost_usd", "wall_time_s"]


class StageBudgetSpent(EngineError):
    """The stage's shared budget ran out mid-episode: the episode is dropped (not stored) and the stage stops."""


class WorkerClosed(EngineError):
    """The worker was closed (its pool stopped or restarted it) while a lease was running; the lease is lost."""


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


class TaskCache:
    """The stage's tasks as one worker sees them: each folder loaded once, on first use, and checked against the
    content hash the stage planned with (a node with another copy of the folder would mix two tasks' episodes)."""

    def __init__(self, refs: list[TaskRef]):
        self.refs = {r.task_id: r for r in refs}
        self._loaded: dict[str, TaskSpec] = {}
        self._lock = threading.Lock()

    def get(self, task_id: str) -> TaskSpec:
        with self._lock:
            if task_id not in self._loaded:
                ref = self.refs[task_id]
                spec = load_task(Path(ref.root))
                if spec.content_hash() != ref.task_hash:
                    raise TaskError(f"{ref.root}: this copy of task {task_id} has content hash {spec.content_hash()}, "
                                    f"the stage planned with {ref.task_hash}; every node must see the same task "
                                    "folders (a shared filesystem or one image): sync them and re-run")
                self._loaded[task_id] = spec
            return self._loaded[task_id]

    def all(self) -> list[TaskSpec]:
        """Every task, loaded (the offline heuristic policy needs them all to recognise a task from its prompt)."""
        return [self.get(task_id) for task_id in self.refs]


ModelFactory = Callable[[RunConfig, TaskCache], "tuple[ChatModel, str]"]
"""Builds a worker's model and names the policy recorded on its trajectories: `(cfg, tasks) -> (model, policy)`."""


@dataclass
class _Slot:
    task: TaskSpec
    grader: TaskGrader
    sandbox: Sandbox | None = None
    fresh: bool = True  # at the starter state: no reset needed before the next episode
    prepared: cf.Future | None = None  # the background reset of sandbox and grader, joined before the next use


@dataclass
class _Pool:
    """Idle sandboxes by task, and how many exist; guarded by one lock (episodes may run concurrently)."""

    idle: dict[str, list[_Slot]] = field(default_factory=dict)
    busy: list[_Slot] = field(default_factory=list)
    count: int = 0
    live: int = 0  # sandboxes started and not yet closed (the active-containers gauge)
    lock: threading.Lock = field(default_factory=threading.Lock)


class EpisodeWorker:
    """Plays leases: `run_lease(lease) -> LeaseResult`, thread-safe up to `slots` concurrent leases."""

    def __init__(self, cfg: RunConfig, tasks: TaskCache, model: ChatModel, runtime: Runtime, *,
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
        self.after_write = after_write  # tests: called after each stored episode (fault injection)
        self._pool = _Pool()
        self._closed = False
        # resets happen here, off the critical path: the next episode's sandbox while this one's record is
        # stored and the lease goes back, the grader while the agent works
        self._prep = cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"prep-{worker_id}")
        self._writer = cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"store-{worker_id}")

    # -- leases ---------------------------------------------------------------------------------------
    def run_lease(self, lease: Lease) -> LeaseResult:
        """Play the lease's episodes that are not stored yet, storing each as it ends."""
        task = self.tasks.get(lease.task_id)
        ids = {seed: episode_id(task.content_hash(), self.model.name, self.policy, seed) for seed in lease.seeds}
        stored = stored_outcomes(self.cfg.run_dir, list(ids.values()), _OUTCOME_COLUMNS)
        if stored:
            log.info("run %s lease %s: %d of %d episodes already stored; playing the rest", self.cfg.run_id,
                     lease.lease_id, len(stored), len(lease.seeds))
        outcomes = {seed: EpisodeOutcome(**stored[eid]) for seed, eid in ids.items() if eid in stored}
        todo = [seed for seed in lease.seeds if seed not in outcomes]
        budget_spent = False
        writing: cf.Future | None = None  # the last episode's write, overlapping the next episode
        if todo:
            slot = self._checkout(task)
            try:
                for seed in todo:
                    if self._closed:
                        raise WorkerClosed(f"worker {self.worker_id} closed during lease {lease.lease_id}")
                    try:
                        rec = self._episode(slot, seed)
                    except StageBudgetSpent as e:
                        log.warning("run %s: %s; stopping the lease", self.cfg.run_id, e)
                        budget_spent = True
                        break
                    if writing is not None:
                        writing.result()  # stored before the next goes (a failed write ends the lease here)
                    writing = self._writer.submit(self._store, lease, rec)
                    outcomes[seed] = EpisodeOutcome(**{k: getattr(rec, k) for k in _OUTCOME_COLUMNS})
            finally:
                self._checkin(slot)
            if writing is not None:
                writing.result()
        return LeaseResult(lease_id=lease.lease_id, worker_id=self.worker_id, replayed=len(stored),
                           budget_exhausted=budget_spent,
                           outcomes=[outcomes[s] for s in lease.seeds if s in outcomes])

    def _store(self, lease: Lease, rec: TrajectoryRecord) -> None:
        path = write_episode(self.cfg.run_dir, rec)
        if self.after_write is not None:
            self.after_write(lease, path)

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
                if self._closed:  # this worker's own close() took the sandbox away: the lease is lost, not the episode
                    raise WorkerClosed(f"worker {self.worker_id} closed during an episode") from None
                rec = self._infra_record(task, seed, f"SandboxError: {redact(str(e), env_names=[self.cfg.model.api_key_env])}")
            self._account(rec, time.monotonic() - started)
            if rec.infra_error is not None and self._closed:
                raise WorkerClosed(f"worker {self.worker_id} closed during an episode")
            if rec.infra_error is None:
                self._prepare_next(slot)
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
    def _labels(self, task: TaskSpec) -> dict[str, str]:
        return {"run_id": self.cfg.run_id, "task_id": task.id, "worker": self.worker_id}

    def _checkout(self, task: TaskSpec) -> _Slot:
        with self._pool.lock:
            idle = self._pool.idle.get(task.id)
            if idle:
                slot = idle.pop()
                self._pool.busy.append(slot)
                return slot
            victim = None
            if self._pool.count >= self.slots:  # make room: drop an idle sandbox of another task
                victim = next((lst.pop() for lst in self._pool.idle.values() if lst), None)
                self._pool.count -= victim is not None
            self._pool.count += 1
        if victim is not None:
            self._discard(victim)
        slot = _Slot(task=task, grader=TaskGrader(task, self.runtime, timeout_s=GRADING_TIMEOUT_S,
                                                  labels=self._labels(task)))
        with self._pool.lock:
            self._pool.busy.append(slot)
        return slot

    def _checkin(self, slot: _Slot) -> None:
        with self._pool.lock:
            self._pool.busy.remove(slot)
            self._pool.idle.setdefault(slot.task.id, []).append(slot)
        if self._closed:
            self.close()

    def _ready(self, slot: _Slot) -> Sandbox:
        """The slot's sandbox at the starter state: started if missing, else reset (or the background reset
        joined; its SandboxError is this episode's, as a reset's would be)."""
        if self._closed:
            raise WorkerClosed(f"worker {self.worker_id} is closed")
        self._join(slot)
        if slot.sandbox is None:
            spec = SandboxSpec(workspace=slot.task.workspace_dir, read_only_paths=slot.task.read_only_paths,
                               gpu_ids=self.gpu_ids, labels=self._labels(slot.task))
            slot.sandbox, slot.fresh = self.runtime.start(spec), True
            self._live(+1)
            slot.prepared = self._prep.submit(slot.grader.prepare)  # the grader starts while the agent works
        elif not slot.fresh:
            slot.sandbox.reset()
        slot.fresh = False
        return slot.sandbox

    def _prepare_next(self, slot: _Slot) -> None:
        """After a clean episode (its grading done): reset sandbox and grader in the background, so the next
        episode starts at once. `_ready` joins it; a sandbox is never reset while it runs a command."""
        self._join(slot)
        sandbox = slot.sandbox
        if sandbox is None or self._closed:
            return

        def prepare() -> None:
            sandbox.reset()
            slot.grader.prepare()

        slot.prepared = self._prep.submit(prepare)
        slot.fresh = True

    def _join(self, slot: _Slot) -> None:
        prepared, slot.prepared = slot.prepared, None
        if prepared is not None:
            prepared.result()

    def _discard(self, slot: _Slot) -> None:
        try:
            self._join(slot)
        except Exception as e:  # a failed background reset: the sandbox is being thrown away anyway
            log.info("run %s: background reset of a discarded sandbox failed: %s", self.cfg.run_id, e)
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
        """Close every sandbox: the end of the stage, or a pool restarting a worker whose lease overran its
        deadline. A lease still running loses its sandbox, and ends (lost, `WorkerClosed`) before its next try."""
        self._closed = True
        with self._pool.lock:
            slots = [s for lst in self._pool.idle.values() for s in lst]
            self._pool.idle.clear()
            self._pool.count -= len(slots)
            running = [s.sandbox for s in self._pool.busy if s.sandbox is not None]
        for slot in slots:
            self._discard(slot)
        for sandbox in running:  # its episode fails at its next command, then the lease ends
            try:
                sandbox.close()
            except Exception as e:
                log.warning("run %s: closing a running sandbox failed: %s", self.cfg.run_id, e)
        self._prep.shutdown(wait=False)
        self._writer.shutdown(wait=True)  # what was played is stored
