"""Runs a stage where it was asked to run, behind the CLI and the Python API: in this process, or on a Ray cluster.

This is the one module of `engine` that reaches into `actors` (the Ray layer), and only inside functions, so
that everything else in `engine` runs and imports without Ray. Each stage is one Ray-free class or function
(`engine.rollout.stage.RolloutStage`, `engine.evaluate.stage.run_eval`, `engine.synth.stage.run_synth`); this
module only picks its executor: the in-process worker pool or the Ray actors' pool, a thread pool or Ray
tasks, local server processes or ModelServer actors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.evaluate.report import EvalReport
from engine.protocols import WorkerPool
from engine.records import Manifest
from engine.rollout.leases import Lease
from engine.rollout.plan import Projection, TaskRef
from engine.rollout.stage import PoolFactory, RolloutStage, dry_run
from engine.rollout.worker import ModelFactory
from engine.tasks.folder import load_tasks

log = logging.getLogger(__name__)


def pool_factory(*, use_ray: bool, model_factory: ModelFactory | None = None,
                 after_write: Callable[[Lease, str], None] | None = None) -> PoolFactory:
    """How a stage gets its rollout workers: Ray actors on the connected cluster, or threads of this process.

    `model_factory` replaces the config's model for every pool made (tests, benchmarks); a stage's own factory
    (a served method's router) wins over it."""

    def make(cfg: RunConfig, tasks: list[TaskRef], factory: ModelFactory | None) -> WorkerPool:
        if use_ray:
            from actors.rollout import RayWorkerPool

            return RayWorkerPool(cfg, tasks, model_factory=factory or model_factory, after_write=after_write)
        from engine.rollout.local_pool import InProcessPool

        return InProcessPool(cfg, tasks, model_factory=factory or model_factory, after_write=after_write)

    return make


def run_rollout_stage(cfg: RunConfig, *, address: str | None = None, in_process: bool = False,
                      start_over: bool = False, dry: bool = False, progress: bool | None = None,
                      model_factory: ModelFactory | None = None,
                      after_write: Callable[[Lease, str], None] | None = None) -> Manifest | Projection | None:
    """The rollout stage of `cfg` (its `episodes.tasks`), on the Ray cluster at `address` (None: a local Ray
    instance) or, with `in_process`, on threads of this process.

    Returns the manifest; None when the stage stopped early (budget or cancel), which a re-run resumes.
    `dry` runs a pilot into RUN/pilot/ and returns (and writes there) the projection of the whole stage."""
    if in_process and address is not None:
        raise ConfigError(f"--address {address} and --in-process exclude each other; pick one")
    refs = [TaskRef.of(t) for t in load_tasks(list(cfg.episodes.tasks))]
    if not in_process:
        connect_ray(address)
    make = pool_factory(use_ray=not in_process, model_factory=model_factory, after_write=after_write)
    if dry:
        return dry_run(cfg, refs, make, start_over=start_over)
    observers: list = []
    if not in_process:
        from actors.metrics import DriverMetrics

        observers.append(DriverMetrics(cfg.run_id))
    bar = None
    if cfg.rollout.progress if progress is None else progress:
        from engine.rollout.progress import ProgressBar

        bar = ProgressBar(cfg.run_id, cfg.episodes.episodes_per_task * len(refs))
        observers.append(bar)
    try:
        return RolloutStage(cfg, refs, make(cfg, refs, None), observers=observers).run(start_over=start_over)
    finally:
        if bar is not None:
            bar.close()


def run_curate_stage(cfg: RunConfig, *, address: str | None = None, in_process: bool = False,
                     start_over: bool = False):
    """The curation stage of `cfg` (`RUN/curate/` from `curate.inputs` or this run's rollouts) on Ray Data at
    `address` (None: a local Ray instance) or, with `in_process`, in this process. Returns a `CuratedData`
    handle (manifest, stats, `to_arrow()`, `messages()`)."""
    from engine.curate.stage import LocalExecutor, run_curate

    if in_process and address is not None:
        raise ConfigError(f"--address {address} and --in-process exclude each other; pick one")
    if in_process:
        return run_curate(cfg, LocalExecutor, start_over=start_over)
    from actors.curate import RayDataExecutor

    connect_ray(address)
    return run_curate(cfg, lambda student: RayDataExecutor(), start_over=start_over)


def run_train_stage(cfg: RunConfig, *, address: str | None = None, start_over: bool = False):
    """The SFT stage of `cfg` (`RUN/curate/` → `RUN/train/`) with Ray Train + DeepSpeed on the cluster at `address`
    (None: a local Ray instance). Returns a `TrainedStudent` handle (`final_dir`, `metrics()`, `load()`)."""
    from actors.train import RayTrainLauncher
    from engine.train.stage import run_train

    connect_ray(address)
    return run_train(cfg, RayTrainLauncher(), start_over=start_over)


def run_synth_stage(cfg: RunConfig, *, start_over: bool = False, ray_address: str | None = None) -> Manifest:
    """The synthesis stage, in this process (threads) or fanned out on a Ray cluster (`ray_address`)."""
    from engine.models.ratelimit import RateLimiter
    from engine.synth.stage import run_synth

    if ray_address is None:
        limiter = RateLimiter(cfg.synth.rate_limit, budget_usd=cfg.synth.budget_usd, budget_name="synth.budget_usd")
        return run_synth(cfg, start_over=start_over, limiter=limiter)
    import ray

    from actors.fanout import RayExecutor
    from actors.ratelimit import ActorLimiter, RateLimiterActor

    connect_ray(ray_address)
    actor = RateLimiterActor.remote(cfg.synth.rate_limit, cfg.synth.budget_usd, "synth.budget_usd")
    try:
        return run_synth(cfg, start_over=start_over, executor=RayExecutor(cfg.synth.concurrency),
                         limiter=ActorLimiter(actor))
    finally:
        ray.kill(actor)


def run_eval_stage(cfg: RunConfig, *, address: str | None = None, in_process: bool = False,
                   start_over: bool = False) -> tuple[Manifest, EvalReport]:
    """`synthscale eval`: every method of `eval.methods` on the suite, R runs per task, on a Ray cluster (None
    starts a local one) or in this process; returns (manifest, report) and writes RUN/eval/."""
    from engine.evaluate.stage import eval_suite, run_eval

    if in_process and address is not None:
        raise ConfigError(f"--address {address} and --in-process exclude each other; pick one")
    tasks = eval_suite(cfg)
    if in_process:
        from engine.rollout.local_pool import local_gpu_ids
        from engine.serving.launch import LocalServerLauncher

        servers = LocalServerLauncher(local_gpu_ids())
    else:
        from actors.model_server import RayServerLauncher

        connect_ray(address)
        servers = RayServerLauncher()
    return run_eval(cfg, tasks, make_pool=pool_factory(use_ray=not in_process), servers=servers,
                    start_over=start_over)


def connect_ray(address: str | None) -> None:
    """Join the cluster at `address` (None: start a local instance), with errors that say what to do."""
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, log_to_driver=False)
    except AuthenticationError as e:
        raise ConfigError(f"Ray cluster {address}: authentication failed ({e}); export RAY_AUTH_MODE=token and "
                          "RAY_AUTH_TOKEN (from `ray get-auth-token` on the head)") from None
    except ConnectionError as e:
        raise ConfigError(f"Ray cluster {address}: cannot connect ({e}); check the address (HOST:6379, "
                          "ray://HOST:10001 or auto) and that the cluster is up") from None


def submit_job(address: str, args: list[str], working_dir, env: dict[str, str]) -> str:
    """Submit `synthscale ARGS…` as a Ray job to the dashboard at `address`; returns the job id."""
    from actors.jobs import submit_job as submit

    return submit(address, args, working_dir, env)


def follow_job(address: str, job_id: str, *, on_log) -> str:
    """Stream a job's logs to `on_log` until it ends; returns its final status (SUCCEEDED, FAILED, STOPPED)."""
    from actors.jobs import follow_logs

    return follow_logs(address, job_id, on_log=on_log)


def stop_job(address: str, job_id: str) -> bool:
    """Ask Ray to stop a job; False when it was not running."""
    from actors.jobs import stop_job as stop

    return stop(address, job_id)
