"""The rollout stage's in-process worker pool: `EpisodeWorker`s on threads of this process, each GPU worker owning
GPUs of this machine (`local_gpu_ids`), all model calls through one shared `RateLimiter` (rate limits and the
stage's budget). What `synthscale episode` and `synthscale rollout --in-process` run on; the Ray pool
(`actors/rollout.py`) is the same workers as actors.

Ctrl-C: the stage's `finally` calls `close()` while the KeyboardInterrupt propagates. It closes every sandbox (a
running command dies, so its lease ends at its next step), then waits for the leases in flight to end (a model
call or a grading already running finishes first; it says so), so that each closes its grader and stores nothing
half-done; a second Ctrl-C stops the wait. Leases run on daemon threads, so one still inside a model call can never
hold up the process's exit."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable

from engine.config import RunConfig
from engine.models.factory import make_policy_model
from engine.models.ratelimit import LimitedModel, RateLimiter, limits_anything
from engine.rollout.leases import Lease, LeaseDone, WorkerInfo, WorkerSpec
from engine.rollout.plan import TaskRef
from engine.rollout.worker import EpisodeWorker, ModelFactory, TaskCache, WorkerClosed
from engine.sandbox import make_runtime

log = logging.getLogger(__name__)


def local_gpu_ids() -> list[str]:
    """This machine's GPUs as the sandboxes should see them: CUDA_VISIBLE_DEVICES when it is set (an empty value
    or -1: none), else the indices `nvidia-smi` lists, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g.strip() for g in visible.split(",") if g.strip()]
        return [] if ids == ["-1"] else ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("nvidia-smi failed (%s); running without GPUs", e)
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpus_of(index: int, gpus_per_worker: float, gpu_ids: list[str]) -> list[str]:
    """The GPUs GPU worker `index` owns: whole GPUs of its own, or a share of one (0.5: two workers per GPU).

    >>> [gpus_of(i, 0.5, ["0", "1"]) for i in range(4)]
    [['0'], ['0'], ['1'], ['1']]
    >>> gpus_of(1, 2, ["0", "1", "2", "3"])
    ['2', '3']
    """
    if gpus_per_worker >= 1:
        n = int(gpus_per_worker)
        return gpu_ids[index * n:(index + 1) * n]
    return [gpu_ids[int(index * gpus_per_worker + 1e-9)]]


class _LeaseThreads:
    """Runs each submitted call on a daemon thread of its own and returns its Future. The stage never has more leases
    in flight than its workers' slots, so no queue is needed; daemon, unlike a ThreadPoolExecutor's threads (which
    the interpreter joins at exit), because a lease stuck in a model call after Ctrl-C must not hold the exit."""

    def __init__(self, name_prefix: str):
        self.name_prefix = name_prefix
        self._started = 0

    def submit(self, fn: Callable, *args) -> cf.Future:
        future: cf.Future = cf.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # as a ThreadPoolExecutor does: the waiter gets it
                future.set_exception(e)

        self._started += 1
        threading.Thread(target=run, name=f"{self.name_prefix}-{self._started}", daemon=True).start()
        return future


class InProcessPool:
    """`WorkerPool` over threads: `slots` threads per worker, a worker's leases share its sandboxes."""

    def __init__(self, cfg: RunConfig, tasks: list[TaskRef], *, model_factory: ModelFactory | None = None,
                 after_write: Callable[[Lease, str], None] | None = None, gpu_ids: list[str] | None = None,
                 cpus: float | None = None):
        self.cfg = cfg
        self.tasks = tasks
        self.model_factory = model_factory or make_policy_model
        self.after_write = after_write
        self.gpu_ids = local_gpu_ids() if gpu_ids is None else list(gpu_ids)
        self.cpus = float(cpus if cpus is not None else (os.cpu_count() or 1))
        self.limiter = RateLimiter(cfg.rollout.rate_limit, budget_usd=cfg.rollout.budget_usd,
                                   budget_name="rollout.budget_usd")
        self.cache = TaskCache(tasks)
        self.specs: dict[str, WorkerSpec] = {}
        self.workers: dict[str, EpisodeWorker] = {}
        self.futures: dict[cf.Future, tuple[int, str]] = {}
        self.executor: _LeaseThreads | None = None

    def resources(self) -> tuple[float, float]:
        return float(len(self.gpu_ids)), self.cpus

    def start(self, workers: list[WorkerSpec]) -> list[WorkerInfo]:
        self.specs = {w.worker_id: w for w in workers}
        self.executor = _LeaseThreads(f"rollout-{self.cfg.run_id}")
        gpu_index = 0
        infos = []
        for spec in workers:
            gpus = gpus_of(gpu_index, self.cfg.rollout.gpus_per_worker, self.gpu_ids) if spec.gpu else []
            gpu_index += spec.gpu
            self.workers[spec.worker_id] = self._build(spec, gpus)
            model, policy = self.workers[spec.worker_id].model.name, self.workers[spec.worker_id].policy
            infos.append(WorkerInfo(worker_id=spec.worker_id, model=model, policy=policy, gpu_ids=gpus, node="local"))
        return infos

    def _build(self, spec: WorkerSpec, gpus: list[str]) -> EpisodeWorker:
        model, policy = self.model_factory(self.cfg, self.cache)
        r = self.cfg.rollout
        if limits_anything(r.rate_limit, r.budget_usd, callers=sum(s.slots for s in self.specs.values())):
            model = LimitedModel(model, self.limiter)
        return EpisodeWorker(self.cfg, self.cache, model, make_runtime(self.cfg.sandbox, self.cfg.run_id),
                             policy=policy, worker_id=spec.worker_id, gpu_ids=gpus,
                             gpu_share=self.cfg.rollout.gpus_per_worker if gpus else 0.0, slots=spec.slots,
                             after_write=self.after_write)

    def submit(self, worker_id: str, lease: Lease, ticket: int) -> None:
        assert self.executor is not None, "start() the pool first"
        future = self.executor.submit(self.workers[worker_id].run_lease, lease)
        self.futures[future] = (ticket, worker_id)

    def wait(self, timeout_s: float) -> list[LeaseDone]:
        if not self.futures:
            return []
        done, _ = cf.wait(list(self.futures), timeout=timeout_s, return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            ticket, worker_id = self.futures.pop(future)
            try:
                out.append(LeaseDone(ticket=ticket, result=future.result()))
            except WorkerClosed as e:
                out.append(LeaseDone(ticket=ticket, error=str(e), worker_lost=True))
            except Exception as e:  # a bug or a storage failure while playing the lease: the stage retries it
                log.error("run %s worker %s: lease failed: %s: %s", self.cfg.run_id, worker_id, type(e).__name__, e)
                out.append(LeaseDone(ticket=ticket, error=f"{type(e).__name__}: {e}"))
        return out

    def restart(self, worker_id: str) -> None:
        """A thread cannot be killed: close the worker (its running episode loses its sandbox and its lease ends,
        lost, at the next try) and put a fresh worker with the same GPUs in its place."""
        old = self.workers[worker_id]
        old.close()
        self.workers[worker_id] = self._build(self.specs[worker_id], old.gpu_ids)

    def reap(self) -> int:
        return make_runtime(self.cfg.sandbox, self.cfg.run_id).reap_leftovers()

    def close(self) -> None:
        """Close every worker's sandboxes, wait for the leases in flight to end, and reap what dead processes left.
        Called while a KeyboardInterrupt propagates (the stage's `finally` after Ctrl-C), it says what it waits for,
        and a second Ctrl-C stops the wait (then re-raised)."""
        interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
        for worker in self.workers.values():
            worker.close()
        running = [f for f in self.futures if not f.done()]
        if running and interrupted:
            log.warning("run %s: interrupted; closed the sandboxes, waiting for %d leases in flight to end (a model "
                        "call or a grading already running finishes first); Ctrl-C again to stop waiting",
                        self.cfg.run_id, len(running))
        try:
            cf.wait(running)
        except KeyboardInterrupt:
            log.warning("run %s: stopped waiting for %d leases; a sandbox one of them still holds is removed when this "
                        "run's stage next starts, or by `synthscale reap --runtime %s --run-id %s`", self.cfg.run_id,
                        sum(not f.done() for f in running), self.cfg.sandbox.runtime, self.cfg.run_id)
            self.reap()
            raise
        self.reap()
