"""The rollout stage on a Ray cluster: rollout worker actors (one per GPU slot, or CPU workers with several
concurrent episodes) over `engine.rollout.worker.EpisodeWorker`, driven by `engine.rollout.scheduler.Scheduler`.
Reads the tasks, writes `RUN/rollouts/` (lease shards, MLGym export, manifest last).

Failures: a worker that dies (killed, OOM, its node gone) is restarted by Ray (`max_restarts=-1`) and its
leases are handed out again by the scheduler (`max_task_retries=0`: Ray never re-runs a lease behind our
back); a lease overrunning its deadline gets its worker killed and restarted. The shared rate limiter is an
actor whose handle every worker gets; API keys come from the nodes' environment, never `runtime_env`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.metrics import DriverMetrics, RayRolloutMetrics
from actors.ratelimit import ActorLimiter, RateLimiterActor
from engine.artifacts import begin_stage, write_config, write_manifest
from engine.config import RunConfig
from engine.errors import EngineError
from engine.protocols import ChatModel
from engine.records import Manifest
from engine.rollout.control import cancel_requested, clear_cancel
from engine.rollout.plan import lease_timeout_s, plan_targets, plan_workers, rollout_manifest
from engine.rollout.scheduler import Lease, LeaseResult, Scheduler
from engine.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

ModelFactory = Callable[[RunConfig, list[TaskSpec]], tuple[ChatModel, str]]
POLL_S = 1.0


def default_model_factory(cfg: RunConfig, tasks: list[TaskSpec]) -> tuple[ChatModel, str]:
    from engine.runner import make_chat_model

    return make_chat_model(cfg, tasks)


@ray.remote(max_restarts=-1, max_task_retries=0)
class RolloutWorker:
    """Owns its GPUs (Ray's assignment) and the task containers pinned to them; plays leases."""

    def __init__(self, shared: tuple, worker_id: str, slots: int, gpu_share: float):
        """`shared`: (RunConfig, task folders, limiter handle or None, model factory or None, after-write hook or
        None), one object-store value for all workers of the stage."""
        from engine.models.ratelimit import LimitedModel
        from engine.rollout.worker import EpisodeWorker
        from engine.runner import make_runtime
        from engine.tasks.folder import load_task

        cfg, task_dirs, limiter, model_factory, after_write = shared
        tasks = [load_task(Path(d)) for d in task_dirs]
        model, policy = (model_factory or default_model_factory)(cfg, tasks)
        if limiter is not None:
            model = LimitedModel(model, ActorLimiter(limiter))
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        runtime = make_runtime(cfg)
        runtime.reap_leftovers()  # containers of this worker's previous life (restart after a crash)
        self.identity = (model.name, policy)
        self.worker = EpisodeWorker(
            cfg, {t.id: t for t in tasks}, model, runtime, policy=policy, worker_id=worker_id,
            gpu_ids=self.gpu_ids, gpu_share=gpu_share if self.gpu_ids else 0.0, slots=slots,
            observer=RayRolloutMetrics(cfg.run_id, model.name, worker_id), after_write=after_write)

    def info(self) -> dict:
        return {"model": self.identity[0], "policy": self.identity[1], "gpu_ids": self.gpu_ids,
                "node_id": ray.get_runtime_context().get_node_id()}

    def run_lease(self, lease: Lease) -> LeaseResult:
        return self.worker.run_lease(lease)

    def close(self) -> None:
        self.worker.close()


@dataclass
class _Worker:
    actor: ray.actor.ActorHandle
    worker_id: str
    gpu: bool
    slots: int
    busy: int = 0
    task: str | None = None
    failures: int = 0  # losses in a row: the worker is restarting, or its node is gone
    resting_until: float = 0.0  # no leases before this (exponential backoff after a loss)


@dataclass
class _InFlight:
    worker: _Worker
    lease: Lease
    attempt: int


class RolloutDriver:
    """Runs one rollout stage: start workers, hand out leases, collect acknowledgements, recover from failures."""

    def __init__(self, cfg: RunConfig, tasks: list[TaskSpec], *, model_factory: ModelFactory | None = None,
                 after_write: Callable[[Lease, str], None] | None = None,
                 progress: Callable[[Scheduler, LeaseResult], None] | None = None):
        self.cfg = cfg
        self.tasks = tasks
        self.model_factory = model_factory
        self.after_write = after_write
        self.progress = progress
        self.workers: list[_Worker] = []
        self.inflight: dict[ray.ObjectRef, _InFlight] = {}
        self.limiter = None
        self.scheduler: Scheduler | None = None
        self._init_args: ray.ObjectRef | None = None
        self._infra_streak = 0
        self._last_infra = ""
        self.stats = {"leases": 0, "leases_lost": 0, "leases_replayed": 0, "workers_killed": 0}

    # -- lifecycle ------------------------------------------------------------------------------------
    def run(self, *, start_over: bool = False) -> Manifest | None:
        """The whole stage. Returns the manifest, or None when it stopped early (budget, cancel): re-run to resume."""
        started = time.time()
        stage_dir = f"{self.cfg.run_dir.rstrip('/')}/rollouts"
        begin_stage(stage_dir, "rollouts", self.cfg.config_hash(), start_over=start_over)
        write_config(stage_dir, self.cfg)
        clear_cancel(self.cfg.run_dir)  # a cancel of an earlier attempt does not stop this one
        reap_all_nodes(self.cfg)
        try:
            self._start_workers()
            self._loop()
        finally:
            self._shutdown()
        sched = self.scheduler
        assert sched is not None
        if sched.stopping:
            log.warning("run %s: rollout stage stopped (%s) with %d/%d trajectories; re-run to resume",
                        self.cfg.run_id, sched.stopping, sched.done_total(), sum(t["target"] for t in sched.progress().values()))
            return None
        from engine.rollout.export import export_store

        export_store(self.cfg)
        progress = sched.progress()
        failed = [tid for tid, p in progress.items() if p["failed"]]
        if failed:
            log.error("run %s: tasks given up after too many infra failures (rollout.max_infra_failures_per_task): %s;"
                      " `synthscale status %s` shows their errors; re-run to try them again",
                      self.cfg.run_id, failed, self.cfg.run_dir)
        manifest = rollout_manifest(self.cfg, time.time() - started, counts_extra={
            **self.stats, "tasks": len(self.tasks), "tasks_failed": len(failed)})
        manifest.rejects.update({f"task_failed:{tid}": progress[tid]["infra_failed"] for tid in failed})
        write_manifest(stage_dir, manifest)
        return manifest

    def _start_workers(self) -> None:
        cfg, r = self.cfg, self.cfg.rollout
        res = ray.cluster_resources()
        plan = plan_workers(cfg, self.tasks, res.get("GPU", 0.0), res.get("CPU", 0.0))
        # the limiter lives beside the driver: a worker node going away must not take the shared limiter with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.limiter = RateLimiterActor.options(num_cpus=0, scheduling_strategy=here).remote(r.rate_limit, r.budget_usd)
        # constructor arguments live in the object store for as long as this stage holds the ref, so a
        # restarted worker can always be rebuilt (Ray frees them otherwise: ray-project/ray#53727)
        self._init_args = ray.put((cfg, [str(t.root) for t in self.tasks], self.limiter, self.model_factory,
                                   self.after_write))
        kinds = [True] * plan.gpu_workers + [False] * plan.cpu_workers
        self.workers = [self._spawn(f"{'g' if gpu else 'c'}{i}", gpu) for i, gpu in enumerate(kinds)]
        infos = [self._ready(w) for w in self.workers]
        identities = {(i["model"], i["policy"]) for i in infos}
        if len(identities) != 1:
            raise EngineError(f"rollout workers disagree on the model/policy: {sorted(identities)}")
        model, policy = identities.pop()
        targets = plan_targets(cfg, self.tasks, model, policy)
        self.scheduler = Scheduler(targets, lease_size=r.lease_size, lease_timeout_s=lease_timeout_s(cfg, self.tasks),
                                   max_infra_failures=r.max_infra_failures_per_task,
                                   max_lease_attempts=r.max_lease_attempts, salt=f"{model}|{policy}")
        log.info("run %s: %d GPU and %d CPU rollout workers; %d episodes queued", cfg.run_id, plan.gpu_workers,
                 plan.cpu_workers, self.scheduler.queued_episodes())

    def _spawn(self, worker_id: str, gpu: bool) -> _Worker:
        r = self.cfg.rollout
        slots = 1 if gpu else r.episodes_per_cpu_worker
        actor = RolloutWorker.options(
            num_gpus=r.gpus_per_worker if gpu else 0, num_cpus=r.cpus_per_worker, max_concurrency=slots + 1,
        ).remote(self._init_args, worker_id, slots, r.gpus_per_worker)
        return _Worker(actor=actor, worker_id=worker_id, gpu=gpu, slots=slots)

    def _ready(self, worker: _Worker, attempts: int = 3) -> dict:
        """The worker's info once it is up; a worker lost while starting (its node went away) is started anew."""
        for attempt in range(1, attempts + 1):
            try:
                return ray.get(worker.actor.info.remote())
            except RayActorError as e:
                if attempt == attempts:
                    raise EngineError(f"run {self.cfg.run_id}: rollout worker {worker.worker_id} died while starting, "
                                      f"{attempts} times (last: {e}); check the workers' logs (`ray logs`)") from None
                log.warning("run %s: rollout worker %s died while starting (%s); starting it again",
                            self.cfg.run_id, worker.worker_id, type(e).__name__)
                worker.actor = self._spawn(worker.worker_id, worker.gpu).actor
        raise AssertionError("unreachable")

    def _shutdown(self) -> None:
        closes = [w.actor.close.remote() for w in self.workers]
        try:
            ray.get(closes, timeout=120)
        except (RayActorError, GetTimeoutError) as e:
            log.warning("run %s: closing rollout workers: %s", self.cfg.run_id, e)
        for w in self.workers:
            ray.kill(w.actor, no_restart=True)
        if self.limiter is not None:
            ray.kill(self.limiter, no_restart=True)
        reap_all_nodes(self.cfg)

    # -- the loop -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        sched = self.scheduler
        assert sched is not None
        metrics = DriverMetrics(self.cfg.run_id)
        while not sched.finished():
            if (reason := cancel_requested(self.cfg.run_dir)) is not None:
                sched.stop(f"cancel requested: {reason}" if reason else "cancel requested")
            self._hand_out(time.time())
            metrics.set_queued(sched.queued_episodes())
            if not self.inflight:
                if sched.finished():
                    break
                resting = [w.resting_until for w in self.workers if w.resting_until > time.time()]
                if resting:  # every worker that could take the work is restarting: wait for the first
                    time.sleep(max(0.0, min(resting) - time.time()))
                    continue
                raise EngineError(f"run {self.cfg.run_id}: work remains but no worker can take it "
                                  f"({sched.progress()})")
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=POLL_S)
            for ref in ready:
                self._collect(ref)
            self._expire(time.time())
        metrics.set_queued(0)

    def _hand_out(self, now: float) -> None:
        sched = self.scheduler
        assert sched is not None
        for w in self.workers:
            if w.resting_until > now:
                continue
            while w.busy < w.slots:
                lease = sched.next_lease(w.worker_id, gpu=w.gpu, now=now, prefer_task=w.task)
                if lease is None:
                    break
                ref = w.actor.run_lease.remote(lease)
                self.inflight[ref] = _InFlight(w, lease, sched.attempt_of(lease.lease_id))
                w.busy += 1
                w.task = lease.task_id
                self.stats["leases"] += 1

    def _collect(self, ref: ray.ObjectRef) -> None:
        sched = self.scheduler
        assert sched is not None
        job = self.inflight.pop(ref)
        job.worker.busy -= 1
        try:
            result: LeaseResult = ray.get(ref)
        except RayActorError as e:  # died, restarting, or its node is gone: the lease goes out again
            log.warning("run %s worker %s: lost lease %s (%s); re-issuing", self.cfg.run_id, job.worker.worker_id,
                        job.lease.lease_id, type(e).__name__)
            self.stats["leases_lost"] += 1
            self._rest(job.worker)
            sched.lost(job.lease.lease_id, time.time(), job.attempt)
            return
        except RayTaskError as e:  # a bug or a storage failure inside the worker: retry the lease, then give up
            log.error("run %s worker %s: lease %s failed: %s", self.cfg.run_id, job.worker.worker_id,
                      job.lease.lease_id, e)
            self.stats["leases_lost"] += 1
            sched.lost(job.lease.lease_id, time.time(), job.attempt)
            return
        job.worker.failures = 0
        self.stats["leases_replayed"] += result.replayed
        self._watch_infra(result)
        sched.complete(result.lease_id, result.outcomes, time.time(), budget_exhausted=result.budget_exhausted)
        if self.progress is not None:
            self.progress(sched, result)

    def _rest(self, worker: _Worker) -> None:
        """Give a worker that lost a lease time to restart before it gets another (1 s, doubling, at most 60 s),
        so a restarting actor does not burn the lease attempts of everything handed to it meanwhile."""
        worker.failures += 1
        worker.resting_until = time.time() + min(60.0, 2.0 ** (worker.failures - 1))

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
            worker = next(w for w in self.workers if w.worker_id == worker_id)
            log.warning("run %s: lease %s on worker %s overran its deadline; restarting the worker",
                        self.cfg.run_id, lease.lease_id, worker_id)
            sched.lost(lease.lease_id, now)
            ray.kill(worker.actor, no_restart=False)
            self.stats["workers_killed"] += 1


@ray.remote(num_cpus=0)
def _reap_node(cfg: RunConfig) -> int:
    from engine.runner import make_runtime

    return make_runtime(cfg).reap_leftovers()


def reap_all_nodes(cfg: RunConfig) -> int:
    """Remove sandboxes that dead processes of this run left on any node (stage start and end)."""
    refs = [_reap_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(cfg)
            for n in ray.nodes() if n["Alive"]]
    removed = 0
    for ref in refs:
        try:
            removed += ray.get(ref, timeout=300)
        except Exception as e:  # a node going away mid-reap is not a reason to stop the stage
            log.warning("run %s: reaping a node failed: %s", cfg.run_id, e)
    return removed
