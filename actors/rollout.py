"""The rollout stage's Ray worker pool: `RolloutWorker` actors (one per GPU slot, or CPU workers with several
concurrent episodes) over `engine.rollout.worker.EpisodeWorker`, behind the `WorkerPool` seam that
`engine.rollout.stage.RolloutStage` drives. Reads the task folders on the nodes; the workers store episodes.

Failures: a worker that dies (killed, OOM, its node gone) is restarted by Ray (`max_restarts=-1`) and its
lease comes back lost, for the stage to hand out again (`max_task_retries=0`: Ray never re-runs a lease
behind the stage's back); `restart` kills a worker whose lease overran its deadline. The shared rate limiter
is an actor on the driver's node whose handle every worker gets; API keys come from the nodes'
environment, never `runtime_env`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.metrics import RayRolloutMetrics
from actors.ratelimit import ActorLimiter, RateLimiterActor
from engine.config import RunConfig
from engine.errors import EngineError
from engine.models.ratelimit import limits_anything
from engine.rollout.leases import Lease, LeaseDone, LeaseResult, WorkerInfo, WorkerSpec
from engine.rollout.plan import TaskRef
from engine.rollout.worker import ModelFactory

log = logging.getLogger(__name__)

START_ATTEMPTS = 3


@ray.remote(max_restarts=-1, max_task_retries=0)
class RolloutWorker:
    """Owns its GPUs (Ray's assignment) and the task containers pinned to them; plays leases."""

    def __init__(self, shared: tuple, worker_id: str, slots: int, gpu_share: float):
        """`shared`: (RunConfig, task refs, limiter handle or None, model factory or None, after-write hook or
        None), one object-store value for all workers of the stage."""
        from engine.models.factory import make_policy_model
        from engine.models.ratelimit import LimitedModel
        from engine.rollout.worker import EpisodeWorker, TaskCache
        from engine.sandbox import make_runtime

        cfg, refs, limiter, model_factory, after_write = shared
        tasks = TaskCache(refs)
        model, policy = (model_factory or make_policy_model)(cfg, tasks)
        if limiter is not None:
            model = LimitedModel(model, ActorLimiter(limiter))
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        runtime = make_runtime(cfg.sandbox, cfg.run_id)
        runtime.reap_leftovers()  # containers of this worker's previous life (restart after a crash)
        self.worker = EpisodeWorker(
            cfg, tasks, model, runtime, policy=policy, worker_id=worker_id, gpu_ids=self.gpu_ids,
            gpu_share=gpu_share if self.gpu_ids else 0.0, slots=slots,
            observer=RayRolloutMetrics(cfg.run_id, model.name, worker_id), after_write=after_write)

    def info(self) -> dict:
        return {"model": self.worker.model.name, "policy": self.worker.policy, "gpu_ids": self.gpu_ids,
                "node": ray.get_runtime_context().get_node_id()}

    def run_lease(self, lease: Lease) -> LeaseResult:
        return self.worker.run_lease(lease)

    def close(self) -> None:
        self.worker.close()


class RayWorkerPool:
    """`WorkerPool` over RolloutWorker actors on the connected Ray cluster."""

    def __init__(self, cfg: RunConfig, tasks: list[TaskRef], *, model_factory: ModelFactory | None = None,
                 after_write: Callable[[Lease, str], None] | None = None):
        self.cfg = cfg
        self.tasks = tasks
        self.model_factory = model_factory
        self.after_write = after_write
        self.actors: dict[str, ray.actor.ActorHandle] = {}
        self.specs: dict[str, WorkerSpec] = {}
        self.refs: dict[ray.ObjectRef, tuple[int, str]] = {}
        self.limiter: ray.actor.ActorHandle | None = None
        self._init_args: ray.ObjectRef | None = None

    def resources(self) -> tuple[float, float]:
        res = ray.cluster_resources()
        return float(res.get("GPU", 0.0)), float(res.get("CPU", 0.0))

    def start(self, workers: list[WorkerSpec]) -> list[WorkerInfo]:
        r = self.cfg.rollout
        # the limiter lives beside the driver: a worker node going away must not take the shared limiter with it
        if limits_anything(r.rate_limit, r.budget_usd, callers=sum(w.slots for w in workers)):
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            self.limiter = RateLimiterActor.options(num_cpus=0, scheduling_strategy=here).remote(
                r.rate_limit, r.budget_usd, "rollout.budget_usd")
        # constructor arguments live in the object store for as long as this pool holds the ref, so a restarted
        # worker can always be rebuilt (Ray frees them otherwise: ray-project/ray#53727)
        self._init_args = ray.put((self.cfg, self.tasks, self.limiter, self.model_factory, self.after_write))
        self.specs = {w.worker_id: w for w in workers}
        for spec in workers:
            self.actors[spec.worker_id] = self._spawn(spec)
        return [self._ready(spec) for spec in workers]

    def _spawn(self, spec: WorkerSpec) -> ray.actor.ActorHandle:
        r = self.cfg.rollout
        return RolloutWorker.options(
            num_gpus=r.gpus_per_worker if spec.gpu else 0, num_cpus=r.cpus_per_worker, max_concurrency=spec.slots + 1,
        ).remote(self._init_args, spec.worker_id, spec.slots, r.gpus_per_worker)

    def _ready(self, spec: WorkerSpec) -> WorkerInfo:
        """The worker's info once it is up; a worker lost while starting (its node went away) is started anew."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                info = ray.get(self.actors[spec.worker_id].info.remote())
                return WorkerInfo(worker_id=spec.worker_id, **info)
            except RayActorError as e:
                if attempt == START_ATTEMPTS:
                    raise EngineError(f"run {self.cfg.run_id}: rollout worker {spec.worker_id} died while starting, "
                                      f"{START_ATTEMPTS} times (last: {e}); check the workers' logs (`ray logs`)") from None
                log.warning("run %s: rollout worker %s died while starting (%s); starting it again",
                            self.cfg.run_id, spec.worker_id, type(e).__name__)
                self.actors[spec.worker_id] = self._spawn(spec)
        raise AssertionError("unreachable")

    def submit(self, worker_id: str, lease: Lease, ticket: int) -> None:
        self.refs[self.actors[worker_id].run_lease.remote(lease)] = (ticket, worker_id)

    def wait(self, timeout_s: float) -> list[LeaseDone]:
        if not self.refs:
            return []
        ready, rest = ray.wait(list(self.refs), num_returns=1, timeout=timeout_s)
        if ready and rest:  # everything else that is already back, without waiting
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return [self._done(ref) for ref in ready]

    def _done(self, ref: ray.ObjectRef) -> LeaseDone:
        ticket, worker_id = self.refs.pop(ref)
        try:
            return LeaseDone(ticket=ticket, result=ray.get(ref))
        except RayActorError as e:  # died, restarting, or its node is gone
            return LeaseDone(ticket=ticket, error=type(e).__name__, worker_lost=True)
        except RayTaskError as e:  # a bug or a storage failure inside the worker: the stage retries the lease
            log.error("run %s worker %s: lease failed: %s", self.cfg.run_id, worker_id, e)
            return LeaseDone(ticket=ticket, error=str(e).splitlines()[-1] if str(e) else type(e).__name__)

    def restart(self, worker_id: str) -> None:
        ray.kill(self.actors[worker_id], no_restart=False)

    def reap(self) -> int:
        return reap_all_nodes(self.cfg)

    def close(self) -> None:
        closes = [a.close.remote() for a in self.actors.values()]
        try:
            ray.get(closes, timeout=120)
        except (RayActorError, GetTimeoutError) as e:
            log.warning("run %s: closing rollout workers: %s", self.cfg.run_id, e)
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        if self.limiter is not None:
            ray.kill(self.limiter, no_restart=True)
        reap_all_nodes(self.cfg)


@ray.remote(num_cpus=0)
def _reap_node(cfg: RunConfig) -> int:
    from engine.sandbox import make_runtime

    return make_runtime(cfg.sandbox, cfg.run_id).reap_leftovers()


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
