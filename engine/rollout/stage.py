"""The rollout stage, whatever runs its episodes: reads the tasks and what `RUN/rollouts/` holds, hands leases to a
`WorkerPool` and writes `RUN/rollouts/` (episodes, stored by the workers as they end; the MLGym export; the
manifest last).

One class, no Ray: `synthscale episode` and `synthscale rollout --in-process` give it the in-process pool
(`engine.rollout.local_pool`), `synthscale rollout [--address …]` the Ray actors' pool
(`actors.rollout.RayWorkerPool`), and `benchmarks/rollout_sim.py` a pool of simulated workers on a virtual
clock (`clock`, `sleep`). The stage plans (targets from the store, workers from the pool's resources),
hands out leases with `engine.rollout.scheduler.Scheduler`, gives a worker that lost a lease time to
restart (exponential back-off), restarts a worker whose lease overran its deadline, stops on a streak of
infra errors (something systemic: no Docker, a dead endpoint), honours cancel requests and the budget,
then exports and writes the manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Optional
from dataclasses import dataclass

from engine.artifacts import begin_stage, resolve, run_path, write_config, write_json, write_manifest
from engine.config import RunConfig
from engine.errors import EngineError
from engine.protocols import WorkerPool
from engine.records import Manifest
from engine.rollout.control import cancel_requested, clear_cancel
from engine.rollout.export import export_store
from engine.rollout.leases import Lease, LeaseDone, LeaseResult, WorkerSpec
from engine.rollout.observer import StageObserver
from engine.rollout.plan import Projection, TaskRef, lease_timeout_s, plan_targets, plan_workers, project, rollout_manifest
from engine.rollout.scheduler import Scheduler
from engine.rollout.worker import ModelFactory
from engine.trajectories.store import read_trajectory_table

log = logging.getLogger(__name__)

POLL_S = 1.0
MAX_REST_S = 60.0


@dataclass
class _Worker:
    worker_id: str
    gpu: bool
    slots: int
    busy: int = 0
    task: str | None = None
    failures: int = 0  # losses in a row: the worker is restarting, or its node is gone
    resting_until: float = 0.0  # no leases before this (exponential back-off after a loss)


@dataclass
class _InFlight:
    worker: _Worker
    lease: Lease
    attempt: int


class RolloutStage:
    """Runs one rollout stage over a worker pool: `run()` returns the manifest, or None when it stopped early."""

    def __init__(self, cfg: RunConfig, tasks: list[TaskRef], pool: WorkerPool, *,
                 observers: Sequence[StageObserver] = (), clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = POLL_S):
        self.cfg = cfg
        self.tasks = tasks
        self.pool = pool
        self.observers = list(observers)
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s
        self.stage_dir = run_path(cfg.run_dir, "rollouts")
        self.workers: dict[str, _Worker] = {}
        self.inflight: dict[int, _InFlight] = {}
        self.scheduler: Scheduler | None = None
        self._tickets = 0
        self._infra_streak = 0
        self._last_infra = ""
        self.started_at = 0.0
        self.workers_ready_at = 0.0
        self.stats = {"leases": 0, "leases_lost": 0, "episodes_replayed": 0, "workers_restarted": 0}

    # -- lifecycle ------------------------------------------------------------------------------------
    def run(self, *, start_over: bool = False) -> Manifest | None:
        """The whole stage. Returns the manifest, or None when it stopped early (budget, cancel): re-run to resume."""
        cfg = self.cfg
        self.started_at = self.clock()
        begin_stage(self.stage_dir, "rollouts", cfg.stage_hash("rollouts"), start_over=start_over,
                    inputs=cfg.stage_inputs("rollouts"))
        write_config(self.stage_dir, cfg)
        clear_cancel(cfg.run_dir)  # a cancel of an earlier attempt does not stop this one
        if reaped := self.pool.reap():
            log.info("run %s: reaped %d sandboxes left by an earlier crash", cfg.run_id, reaped)
        try:
            self._start_workers()
            self._loop()
        finally:
            self.pool.close()
        sched = self.scheduler
        assert sched is not None
        if sched.stopping:
            wanted = sum(int(p["target"]) for p in sched.progress().values())
            log.warning("run %s: rollout stage stopped (%s) with %d/%d trajectories; re-run to resume",
                        cfg.run_id, sched.stopping, sched.done_total(), wanted)
            return None
        return self._finish(sched)

    def _finish(self, sched: Scheduler) -> Manifest:
        export_store(self.cfg)
        progress = sched.progress()
        failed = [tid for tid, p in progress.items() if p["failed"]]
        if failed:
            log.error("run %s: tasks given up after too many infra failures (rollout.max_infra_failures_per_task): %s;"
                      " `synthscale status %s` shows their errors; re-run to try them again",
                      self.cfg.run_id, failed, self.cfg.run_dir)
        manifest = rollout_manifest(self.cfg, self.clock() - self.started_at, counts_extra={
            **self.stats, "tasks": len(self.tasks), "tasks_failed": len(failed)})
        manifest.rejects.update({f"task_failed:{tid}": int(progress[tid]["infra_failed"]) for tid in failed})
        write_manifest(self.stage_dir, manifest)
        return manifest

    def _start_workers(self) -> None:
        cfg, r = self.cfg, self.cfg.rollout
        gpus, cpus = self.pool.resources()
        plan = plan_workers(cfg, self.tasks, gpus, cpus)
        specs = [WorkerSpec(worker_id=f"g{i}", gpu=True, slots=1) for i in range(plan.gpu_workers)]
        specs += [WorkerSpec(worker_id=f"c{i}", gpu=False, slots=r.episodes_per_cpu_worker)
                  for i in range(plan.gpu_workers, plan.gpu_workers + plan.cpu_workers)]
        self.workers = {s.worker_id: _Worker(s.worker_id, s.gpu, s.slots) for s in specs}
        infos = self.pool.start(specs)
        self.workers_ready_at = self.clock()
        identities = {(i.model, i.policy) for i in infos}
        if len(identities) != 1:
            raise EngineError(f"run {cfg.run_id}: rollout workers disagree on the model/policy: {sorted(identities)}")
        model, policy = identities.pop()
        targets = plan_targets(cfg, self.tasks, model, policy)
        self.scheduler = Scheduler(targets, lease_size=r.lease_size, lease_timeout_s=lease_timeout_s(cfg, self.tasks),
                                   max_infra_failures=r.max_infra_failures_per_task,
                                   max_lease_attempts=r.max_lease_attempts, salt=f"{model}|{policy}",
                                   slots=sum(s.slots for s in specs))
        log.info("run %s: %d GPU and %d CPU rollout workers; %d episodes queued", cfg.run_id, plan.gpu_workers,
                 plan.cpu_workers, self.scheduler.queued_episodes())

    # -- the loop -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        sched = self.scheduler
        assert sched is not None
        while not sched.finished():
            if (reason := cancel_requested(self.cfg.run_dir)) is not None:
                sched.stop(f"cancel requested: {reason}" if reason else "cancel requested")
            now = self.clock()
            self._hand_out(now)
            for o in self.observers:
                o.queued(sched.queued_episodes())
            if not self.inflight:
                if sched.finished():
                    break
                resting = [w.resting_until for w in self.workers.values() if w.resting_until > now]
                if resting:  # every worker that could take the work is restarting: wait for the first
                    self.sleep(max(0.0, min(resting) - now))
                    continue
                raise EngineError(f"run {self.cfg.run_id}: work remains but no worker can take it "
                                  f"({sched.progress()})")
            for done in self.pool.wait(self.poll_s):
                self._collect(done)
            self._expire(self.clock())
        for o in self.observers:
            o.queued(0)

    def _hand_out(self, now: float) -> None:
        sched = self.scheduler
        assert sched is not None
        for w in self.workers.values():
            if w.resting_until > now:
                continue
            while w.busy < w.slots:
                lease = sched.next_lease(w.worker_id, gpu=w.gpu, now=now, prefer_task=w.task)
                if lease is None:
                    break
                self._tickets += 1
                self.inflight[self._tickets] = _InFlight(w, lease, sched.attempt_of(lease.lease_id))
                self.pool.submit(w.worker_id, lease, self._tickets)
                w.busy += 1
                w.task = lease.task_id
                self.stats["leases"] += 1

    def _collect(self, done: LeaseDone) -> None:
        sched = self.scheduler
        assert sched is not None
        job = self.inflight.pop(done.ticket)
        job.worker.busy -= 1
        if done.result is None:  # the worker died, restarts or its node is gone; or the lease failed inside it
            log.warning("run %s worker %s: lost lease %s (%s); re-issuing", self.cfg.run_id, job.worker.worker_id,
                        job.lease.lease_id, done.error)
            self.stats["leases_lost"] += 1
            if done.worker_lost:
                self._rest(job.worker)
            sched.lost(job.lease.lease_id, self.clock(), job.attempt)
            return
        result = done.result
        job.worker.failures = 0
        self.stats["episodes_replayed"] += result.replayed
        self._watch_infra(result)
        sched.complete(result.lease_id, result.outcomes, self.clock(), budget_exhausted=result.budget_exhausted)
        for o in self.observers:
            o.acknowledged(sched, result)

    def _rest(self, worker: _Worker) -> None:
        """Give a worker that lost a lease time to restart before it gets another (1 s, doubling, at most 60 s),
        so a restarting worker does not burn the lease attempts of everything handed to it meanwhile."""
        worker.failures += 1
        worker.resting_until = self.clock() + min(MAX_REST_S, 2.0 ** (worker.failures - 1))

    def _watch_infra(self, result: LeaseResult) -> None:
        """Stop the stage when episodes keep failing for the cluster's reasons: that is systemic, not bad luck."""
        for o in result.outcomes:
            self._infra_streak = self._infra_streak + 1 if o.infra_error else 0
            if o.infra_error:
                self._last_infra = o.infra_error
        if self._infra_streak >= self.cfg.rollout.max_consecutive_infra_errors:
            raise EngineError(
                f"run {self.cfg.run_id}: {self._infra_streak} episodes in a row failed for infrastructure reasons "
                f"(last: {self._last_infra}); fix that and re-run to resume (rollout.max_consecutive_infra_errors)")

    def _expire(self, now: float) -> None:
        sched = self.scheduler
        assert sched is not None
        for lease, worker_id in sched.expired(now):
            log.warning("run %s: lease %s on worker %s overran its deadline; restarting the worker",
                        self.cfg.run_id, lease.lease_id, worker_id)
            sched.lost(lease.lease_id, now)
            self.pool.restart(worker_id)
            self.stats["workers_restarted"] += 1


PoolFactory = Callable[[RunConfig, list[TaskRef], Optional[ModelFactory]], WorkerPool]
"""Builds the pool a stage runs on: `(cfg, tasks, model_factory) -> WorkerPool` (in-process, Ray, …); a None
model factory means the config's own model (`engine.models.factory.make_policy_model`)."""


def dry_run(cfg: RunConfig, tasks: list[TaskRef], make_pool: PoolFactory, *, start_over: bool = False) -> Projection:
    """A pilot of a few episodes of a few tasks into RUN/pilot/, projected to the whole stage on the pool's
    workers (cost and time); writes RUN/pilot/projection.json."""
    r = cfg.rollout
    pilot_dir = run_path(cfg.run_dir, "pilot")
    pilot = cfg.model_copy(update={
        "run_dir": pilot_dir, "run_id": f"{cfg.run_id}-pilot",
        "episodes": cfg.episodes.model_copy(update={"episodes_per_task": r.pilot_episodes})})
    pool = make_pool(pilot, tasks[: r.pilot_tasks], None)
    gpus, cpus = pool.resources()
    plan = plan_workers(cfg, tasks, gpus, cpus)
    manifest = RolloutStage(pilot, tasks[: r.pilot_tasks], pool).run(start_over=start_over)
    table = read_trajectory_table(pilot_dir, columns=["cost_usd", "wall_time_s", "infra_error"])
    rows = [row for row in table.to_pylist() if row["infra_error"] is None]
    slots = plan.gpu_workers + plan.cpu_workers * r.episodes_per_cpu_worker
    projection = project([x["cost_usd"] for x in rows], [x["wall_time_s"] for x in rows], tasks=len(tasks),
                         per_task=cfg.episodes.episodes_per_task, workers=slots, budget_usd=r.budget_usd)
    fs, base = resolve(pilot_dir)
    write_json(fs, f"{base}/projection.json", projection.model_dump())
    log.info("run %s dry run: %s (pilot complete: %s)", cfg.run_id, projection.summary(), manifest is not None)
    return projection
