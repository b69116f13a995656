"""The runner behind the CLI and the Python API: resolves a RunConfig, builds model, runtime and tasks, runs a stage."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from engine.config import RunConfig, load_config
from engine.errors import ArtifactError, ConfigError
from engine.protocols import ChatModel, Runtime
from engine.records import Manifest, TrajectoryRecord
from engine.tasks.folder import find_tasks, load_task
from engine.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


class EpisodeOverrides(BaseModel):
    """Command-line flags that override a RunConfig (None: keep the config's value)."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[Path] | None = None
    out: str | None = None
    policy: Literal["heuristic", "openai"] | None = None
    model: str | None = None
    base_url: str | None = None
    runtime: Literal["local", "docker"] | None = None
    n: int | None = None
    max_steps: int | None = None
    seed: int | None = None


def build_config(config_path: Path | None, overrides: EpisodeOverrides | None) -> RunConfig:
    cfg = load_config(config_path) if config_path else RunConfig()
    if overrides is None:
        return cfg
    o = overrides
    data = cfg.model_dump()
    if o.out is not None:
        data["run_dir"] = o.out
        data["run_id"] = o.out.rstrip("/").rsplit("/", 1)[-1] or "run"
    if o.tasks:
        data["episodes"]["tasks"] = [str(t) for t in o.tasks]
    for key, value in (("episodes_per_task", o.n), ("seed", o.seed)):
        if value is not None:
            data["episodes"][key] = value
    if o.max_steps is not None:
        data["agent"]["max_steps"] = o.max_steps
    if o.runtime is not None:
        data["sandbox"]["runtime"] = o.runtime
    if o.policy == "heuristic" and (o.model or o.base_url):
        raise ConfigError("--model/--base-url apply to --policy openai; drop them or pass --policy openai")
    if o.policy is not None:
        data["model"]["provider"] = o.policy
        if o.policy == "heuristic":
            data["model"]["name"], data["model"]["base_url"] = "heuristic", None
    if o.model is not None:
        data["model"]["name"] = o.model
    if o.base_url is not None:
        data["model"]["base_url"] = o.base_url
    try:
        return RunConfig.model_validate(data)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"invalid settings: {e}") from None


def load_tasks(paths: list[Path]) -> list[TaskSpec]:
    roots = [root for p in paths for root in find_tasks(Path(p))]
    if not roots:
        raise ConfigError(f"no task folders under {[str(p) for p in paths]}; pass folders holding task.yaml")
    return [load_task(r) for r in roots]


def make_chat_model(cfg: RunConfig, tasks: list[TaskSpec]) -> tuple[ChatModel, str]:
    """The model and the policy name recorded on trajectories."""
    if cfg.model.provider == "heuristic":
        from engine.agent.heuristic import HeuristicModel

        return HeuristicModel(tasks), "heuristic"
    from engine.models import make_model

    return make_model(cfg.model), "mlgym-agent"


def make_runtime(cfg: RunConfig) -> Runtime:
    from engine.sandbox import make_runtime as _make

    return _make(cfg.sandbox, cfg.run_id)


def make_runtime_from(config_path: Path | None, runtime: str | None, run_id: str) -> Runtime:
    cfg = load_config(config_path) if config_path else RunConfig()
    if runtime is not None:
        cfg = cfg.model_copy(update={"sandbox": cfg.sandbox.model_copy(update={"runtime": runtime})})
    from engine.sandbox import make_runtime as _make

    return _make(cfg.sandbox, run_id)


def run_episodes(config_path: Path | None, overrides: EpisodeOverrides | None, *, start_over: bool = False,
                 progress=None) -> Manifest:
    """Resolve the config, then run every task's episodes in-process into RUN/rollouts/."""
    from engine.rollout.batch import run_batch

    cfg = build_config(config_path, overrides)
    tasks = load_tasks(list(cfg.episodes.tasks))
    model, policy = make_chat_model(cfg, tasks)
    return run_batch(tasks, model, make_runtime(cfg), cfg, policy=policy, start_over=start_over, progress=progress)


def load_records(path: Path) -> list[TrajectoryRecord]:
    """Trajectories from a run dir, a Parquet shard, or an MLGym .traj file (shown as far as it goes)."""
    from engine.trajectories.store import read_trajectories, table_to_records

    if path.is_dir():
        return read_trajectories(str(path))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return table_to_records(pq.read_table(path))
    if path.suffix == ".traj":
        raise ArtifactError(f"{path}: .traj files are MLGym's export; show the run dir that holds rollouts/ instead")
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or directory")
    raise ArtifactError(f"{path}: not a run dir, a .parquet shard or a .traj file")


def run_synth_stage(cfg: RunConfig, *, start_over: bool = False, ray_address: str | None = None) -> Manifest:
    """The synthesis stage, in this process (threads) or fanned out on a Ray cluster (`ray_address`)."""
    from engine.models.ratelimit import RateLimiter
    from engine.synth.stage import run_synth

    if ray_address is None:
        limiter = RateLimiter(cfg.synth.rate_limit, budget_usd=cfg.synth.budget_usd)
        return run_synth(cfg, start_over=start_over, limiter=limiter)
    import ray

    from actors.fanout import RayExecutor
    from actors.ratelimit import ActorLimiter, RateLimiterActor

    if not ray.is_initialized():
        ray.init(address=ray_address)
    actor = RateLimiterActor.remote(cfg.synth.rate_limit, cfg.synth.budget_usd)
    try:
        return run_synth(cfg, start_over=start_over, executor=RayExecutor(cfg.synth.concurrency),
                         limiter=ActorLimiter(actor))
    finally:
        ray.kill(actor)


def run_rollout_stage(cfg: RunConfig, *, address: str | None = None, start_over: bool = False,
                      dry_run: bool = False, progress: bool | None = None, model_factory=None):
    """The rollout stage on a Ray cluster (`address`: "auto", "ray://head:10001", …; None starts a local one).

    Returns the manifest; None when the stage stopped early (budget or cancel), which a re-run resumes.
    `dry_run` runs a pilot into RUN/pilot/ and returns (and writes there) the projection of the whole stage."""
    from actors.rollout import RolloutDriver

    tasks = load_tasks(list(cfg.episodes.tasks))
    connect_ray(address)
    if dry_run:
        return _dry_run(cfg, tasks, start_over=start_over, model_factory=model_factory)
    show = cfg.rollout.progress if progress is None else progress
    bar = _ProgressBar(cfg, tasks) if show else None
    try:
        return RolloutDriver(cfg, tasks, model_factory=model_factory,
                             progress=bar.update if bar else None).run(start_over=start_over)
    finally:
        if bar is not None:
            bar.close()


def _dry_run(cfg: RunConfig, tasks: list[TaskSpec], *, start_over: bool, model_factory):
    """A pilot of a few episodes of a few tasks, projected to the whole stage (cost and time)."""
    import ray

    from actors.rollout import RolloutDriver
    from engine.artifacts import resolve, write_json
    from engine.rollout.plan import plan_workers, project
    from engine.trajectories.store import read_trajectory_table

    r = cfg.rollout
    pilot_dir = f"{cfg.run_dir.rstrip('/')}/pilot"
    pilot = cfg.model_copy(update={
        "run_dir": pilot_dir, "run_id": f"{cfg.run_id}-pilot",
        "episodes": cfg.episodes.model_copy(update={"episodes_per_task": r.pilot_episodes})})
    manifest = RolloutDriver(pilot, tasks[: r.pilot_tasks], model_factory=model_factory).run(start_over=start_over)
    table = read_trajectory_table(pilot_dir, columns=["cost_usd", "wall_time_s", "infra_error"])
    rows = [row for row in table.to_pylist() if row["infra_error"] is None]
    res = ray.cluster_resources()
    plan = plan_workers(cfg, tasks, res.get("GPU", 0.0), res.get("CPU", 0.0))
    slots = plan.gpu_workers + plan.cpu_workers * r.episodes_per_cpu_worker
    projection = project([x["cost_usd"] for x in rows], [x["wall_time_s"] for x in rows], tasks=len(tasks),
                         per_task=cfg.episodes.episodes_per_task, workers=slots, budget_usd=r.budget_usd)
    fs, base = resolve(pilot_dir)
    write_json(fs, f"{base}/projection.json", projection.model_dump())
    log.info("run %s dry run: %s (pilot manifest: %s)", cfg.run_id, projection.summary(), manifest is not None)
    return projection


class _ProgressBar:
    """tqdm over target trajectories, with trajectories/min."""

    def __init__(self, cfg: RunConfig, tasks: list[TaskSpec]):
        from tqdm import tqdm

        self.started = time.monotonic()
        self.first: int | None = None
        self.bar = tqdm(total=cfg.episodes.episodes_per_task * len(tasks), unit="traj", desc=f"rollout {cfg.run_id}")

    def update(self, sched, result) -> None:
        done = sched.done_total()
        if self.first is None:  # what earlier attempts stored does not count towards this attempt's rate
            self.first = done - sum(o.infra_error is None for o in result.outcomes)
        self.bar.update(done - self.bar.n)
        minutes = max((time.monotonic() - self.started) / 60, 1e-9)
        self.bar.set_postfix(traj_per_min=f"{(done - self.first) / minutes:.1f}", in_flight=sched.in_flight)

    def close(self) -> None:
        self.bar.close()


def run_eval_stage(cfg: RunConfig, *, address: str | None = None, start_over: bool = False):
    """`synthscale eval`: every method of `eval.methods` on the suite `eval.tasks`, R runs per task, on a Ray
    cluster (None starts a local one); returns (manifest, report) and writes RUN/eval/."""
    from actors.evaluate import run_eval

    tasks = eval_suite(cfg)
    connect_ray(address)
    return run_eval(cfg, tasks, start_over=start_over)


def eval_suite(cfg: RunConfig) -> list[TaskSpec]:
    """The evaluation's tasks: `eval.tasks` plus MLGym's tasks imported from `eval.mlgym_dir` into RUN/eval/suite/."""
    from engine.artifacts import resolve

    tasks = load_tasks(list(cfg.eval.tasks)) if cfg.eval.tasks else []
    if cfg.eval.mlgym_dir is not None:
        from engine.errors import TaskError
        from engine.tasks.mlgym import available_task_ids, import_mlgym_task

        fs, base = resolve(cfg.run_dir)
        if fs.type_name != "local":
            raise ConfigError(f"eval.mlgym_dir: run_dir {cfg.run_dir} is not local; rollout workers need the imported "
                              "tasks on a shared filesystem: import them with `synthscale task import-mlgym` and "
                              "list the folders in eval.tasks")
        suite = Path(base) / "eval" / "suite"
        wanted = cfg.eval.mlgym_tasks or sorted(available_task_ids(cfg.eval.mlgym_dir))
        for task_id in wanted:
            try:
                tasks.append(import_mlgym_task(cfg.eval.mlgym_dir, task_id, suite))
            except TaskError as e:
                if cfg.eval.mlgym_tasks:
                    raise
                log.warning("eval %s: MLGym task %s left out: %s", cfg.run_id, task_id, e)
    if not tasks:
        raise ConfigError("the evaluation suite is empty: list task folders in eval.tasks, or set eval.mlgym_dir")
    return tasks


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
