"""Plans the rollout stage from a RunConfig, its tasks and what `RUN/rollouts/` already holds: per-task targets
(resume), worker counts for a pool's resources, lease deadlines, the manifest, and the dry run's projection."""

from __future__ import annotations

import logging
import math

import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.records import Manifest
from engine.rollout.scheduler import TaskTarget
from engine.tasks.spec import TaskSpec
from engine.trajectories.store import read_trajectory_table

log = logging.getLogger(__name__)

GRADING_ALLOWANCE_S = 2 * 600.0  # a lease may overrun its episodes by one command and one grading
START_ALLOWANCE_S = 300.0


class TaskRef(BaseModel):
    """What the rollout stage needs to know of a task to plan it; workers load the folder itself (`root`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task_id: str
    task_hash: str = Field(description="TaskSpec.content_hash() of the folder the stage planned with.")
    root: str = Field(description="The task folder; every node must see it at this path.")
    gpus: int = Field(0, ge=0, description="GPUs an episode's container needs (0: a CPU task).")
    training_timeout_s: float = Field(gt=0, description="The task's training_timeout.")

    @property
    def id(self) -> str:
        return self.task_id

    @classmethod
    def of(cls, task: TaskSpec) -> TaskRef:
        return cls(task_id=task.id, task_hash=task.content_hash(), root=str(task.root), gpus=task.config.gpus,
                   training_timeout_s=float(task.config.training_timeout))


def plan_targets(cfg: RunConfig, tasks: list[TaskRef], model: str, policy: str) -> list[TaskTarget]:
    """Every task's target, with the seeds already stored for this model and policy (so resume skips them)."""
    ids = [t.id for t in tasks]
    if dup := sorted({i for i in ids if ids.count(i) > 1}):
        raise ConfigError(f"episodes.tasks: task ids {dup} appear twice; each task must be listed once")
    table = read_trajectory_table(cfg.run_dir, columns=["task_hash", "model", "policy", "seed", "infra_error"])
    table = table.filter(pc.and_(pc.equal(table["model"], model), pc.equal(table["policy"], policy)))
    done: dict[str, set[int]] = {}
    infra: dict[str, set[int]] = {}
    for row in table.to_pylist():
        (done if row["infra_error"] is None else infra).setdefault(row["task_hash"], set()).add(row["seed"])
    targets = []
    for t in tasks:
        h = t.task_hash
        clean = done.get(h, set())
        targets.append(TaskTarget(task_id=t.id, task_hash=h, target=cfg.episodes.episodes_per_task,
                                  seed_base=cfg.episodes.seed, needs_gpu=t.gpus > 0,
                                  done_seeds=sorted(clean), infra_seeds=sorted(infra.get(h, set()) - clean)))
    return targets


def lease_timeout_s(cfg: RunConfig, tasks: list[TaskRef]) -> float:
    """Hard deadline per episode of a lease: the episode limit plus one training command, one grading and start-up."""
    training = max([cfg.agent.training_timeout_s or t.training_timeout_s for t in tasks] or [0.0])
    return cfg.rollout.episode_timeout_s + training + GRADING_ALLOWANCE_S + START_ALLOWANCE_S


class WorkerPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpu_workers: int
    cpu_workers: int


def plan_workers(cfg: RunConfig, tasks: list[TaskRef], cluster_gpus: float, cluster_cpus: float) -> WorkerPlan:
    """How many GPU and CPU workers to start on a cluster (or machine) with these resources (config overrides)."""
    r = cfg.rollout
    gpu_workers = r.gpu_workers if r.gpu_workers is not None else int(cluster_gpus // r.gpus_per_worker + 1e-9)
    if gpu_workers * r.gpus_per_worker > cluster_gpus + 1e-9:
        raise ConfigError(f"rollout.gpu_workers={gpu_workers} × gpus_per_worker={r.gpus_per_worker} exceeds the "
                          f"cluster's {cluster_gpus:g} GPUs; lower it or leave it unset to fill the cluster")
    gpu_tasks = [t.id for t in tasks if t.gpus > 0]
    if gpu_tasks and gpu_workers == 0:
        raise ConfigError(f"tasks {gpu_tasks[:5]} need a GPU but the cluster has {cluster_gpus:g} GPUs "
                          "(or rollout.gpu_workers is 0); add GPU nodes or leave these tasks out")
    cpu_tasks = len(tasks) - len(gpu_tasks)
    cpu_workers = r.cpu_workers if r.cpu_workers is not None else (1 if gpu_workers == 0 and cpu_tasks else 0)
    needed = (gpu_workers + cpu_workers) * r.cpus_per_worker
    if needed > cluster_cpus + 1e-9:
        raise ConfigError(f"{gpu_workers + cpu_workers} rollout workers × rollout.cpus_per_worker="
                          f"{r.cpus_per_worker:g} need {needed:g} CPUs; the cluster has {cluster_cpus:g}. "
                          "Lower rollout.cpus_per_worker or the worker counts")
    if gpu_workers + cpu_workers == 0:
        raise ConfigError("no rollout workers: set rollout.cpu_workers or rollout.gpu_workers above 0")
    return WorkerPlan(gpu_workers=gpu_workers, cpu_workers=cpu_workers)


def rollout_manifest(cfg: RunConfig, wall_time_s: float, *, counts_extra: dict[str, int] | None = None) -> Manifest:
    """The stage's manifest, counted from the store (every stored episode once)."""
    table = read_trajectory_table(cfg.run_dir, columns=["exit_status", "infra_error", "cost_usd", "scores", "metric"])
    by_status: dict[str, int] = {}
    infra = succeeded = 0
    for row in table.to_pylist():
        by_status[row["exit_status"]] = by_status.get(row["exit_status"], 0) + 1
        infra += row["infra_error"] is not None
        succeeded += any(s["error"] is None and row["metric"] in dict(s["test"] or []) for s in row["scores"] or [])
    return Manifest(
        stage="rollouts", run_id=cfg.run_id, config_hash=cfg.stage_hash("rollouts"), wall_time_s=wall_time_s,
        cost_usd=float(sum(table.column("cost_usd").to_pylist())),
        counts={"episodes": table.num_rows, "succeeded": succeeded, "infra_errors": infra, **(counts_extra or {}),
                **{f"exit_status:{k}": v for k, v in sorted(by_status.items())}})


class Projection(BaseModel):
    """The dry run's estimate of the whole stage, from a pilot."""

    model_config = ConfigDict(extra="forbid")
    pilot_episodes: int
    cost_per_episode_usd: float
    episode_wall_s: float
    tasks: int
    episodes: int
    workers: int
    projected_cost_usd: float
    projected_hours: float
    budget_usd: float | None
    over_budget: bool

    def summary(self) -> str:
        budget = "" if self.budget_usd is None else (
            f"; OVER the budget of ${self.budget_usd:,.2f}" if self.over_budget else f"; budget ${self.budget_usd:,.2f}")
        return (f"pilot: {self.pilot_episodes} episodes, ${self.cost_per_episode_usd:.4f} and "
                f"{self.episode_wall_s:.1f} s each → whole stage: {self.episodes:,} episodes of {self.tasks} tasks "
                f"≈ ${self.projected_cost_usd:,.2f}, ≈ {self.projected_hours:,.1f} h on {self.workers} workers{budget}")


def project(pilot_costs: list[float], pilot_walls: list[float], *, tasks: int, per_task: int, workers: int,
            budget_usd: float | None) -> Projection:
    """Scale the pilot's mean cost and wall time per episode to `tasks × per_task` episodes on `workers`."""
    if not pilot_costs:
        raise ConfigError("the dry run's pilot produced no episodes; check the tasks and the model endpoint")
    n = len(pilot_costs)
    cost = sum(pilot_costs) / n
    wall = sum(pilot_walls) / n
    episodes = tasks * per_task
    total = cost * episodes
    hours = math.ceil(episodes / max(workers, 1)) * wall / 3600
    return Projection(pilot_episodes=n, cost_per_episode_usd=cost, episode_wall_s=wall, tasks=tasks,
                      episodes=episodes, workers=workers, projected_cost_usd=total, projected_hours=hours,
                      budget_usd=budget_usd, over_budget=budget_usd is not None and total > budget_usd)
