"""Runs batches of episodes in-process (the local mode of the rollout stage) and stores them under `RUN/rollouts/`."""

from __future__ import annotations

import logging
import time

from engine.agent.episode import episode_id, run_episode
from engine.artifacts import begin_stage, write_config, write_manifest
from engine.config import RunConfig
from engine.protocols import ChatModel, Runtime, SandboxSpec
from engine.records import Manifest, TrajectoryRecord
from engine.tasks.grading import TaskGrader
from engine.tasks.spec import TaskSpec
from engine.trajectories.mlgym_export import export_mlgym
from engine.trajectories.store import TrajectoryWriter, read_trajectories, stored_episode_ids

log = logging.getLogger(__name__)

GRADING_TIMEOUT_S = 600.0


def run_task_episodes(task: TaskSpec, model: ChatModel, runtime: Runtime, cfg: RunConfig, seeds: list[int],
                      *, policy: str, max_infra_retries: int = 2) -> list[TrajectoryRecord]:
    """Episodes of one task in one reused sandbox (reset between episodes); infra errors are retried."""
    labels = {"run_id": cfg.run_id, "task_id": task.id}
    out: list[TrajectoryRecord] = []
    spec = SandboxSpec(workspace=task.workspace_dir, read_only_paths=task.read_only_paths, labels=labels)
    with TaskGrader(task, runtime, timeout_s=GRADING_TIMEOUT_S, labels=labels) as grader:
        sandbox = runtime.start(spec)
        try:
            for seed in seeds:
                for attempt in range(max_infra_retries + 1):
                    sandbox.reset()
                    rec = run_episode(task, model, sandbox, grader, cfg.agent, seed=seed, run_id=cfg.run_id,
                                      sampling=cfg.model.sampling, policy=policy)
                    if rec.infra_error is None or attempt == max_infra_retries:
                        break
                    log.warning("task %s seed %d: retrying after infra error (%d/%d)", task.id, seed,
                                attempt + 1, max_infra_retries)
                out.append(rec)
        finally:
            sandbox.close()
    return out


def run_batch(tasks: list[TaskSpec], model: ChatModel, runtime: Runtime, cfg: RunConfig, *, policy: str,
              start_over: bool = False, progress=None) -> Manifest:
    """`episodes_per_task` episodes of every task into `RUN/rollouts/`; episodes already stored are skipped."""
    started = time.time()
    stage_dir = f"{cfg.run_dir.rstrip('/')}/rollouts"
    begin_stage(stage_dir, "rollouts", cfg.config_hash(), start_over=start_over)
    write_config(stage_dir, cfg)
    if reaped := runtime.reap_leftovers():
        log.info("run %s: reaped %d sandboxes left by an earlier crash", cfg.run_id, reaped)
    done = stored_episode_ids(cfg.run_dir)
    writer = TrajectoryWriter(cfg.run_dir)
    for task in tasks:
        task_hash = task.content_hash()
        seeds = [cfg.episodes.seed + i for i in range(cfg.episodes.episodes_per_task)
                 if episode_id(task_hash, model.name, policy, cfg.episodes.seed + i) not in done]
        if not seeds:
            log.info("run %s task %s: all episodes stored, skipping", cfg.run_id, task.id)
            continue
        records = run_task_episodes(task, model, runtime, cfg, seeds, policy=policy)
        writer.write(records)
        if progress is not None:
            progress(task, records)
    records = read_trajectories(cfg.run_dir)
    export_mlgym(records, f"{cfg.run_dir.rstrip('/')}/rollouts", environment=f"synthscale-{cfg.sandbox.runtime}")
    manifest = _manifest(cfg, records, time.time() - started)
    write_manifest(stage_dir, manifest)
    return manifest


def _manifest(cfg: RunConfig, records: list[TrajectoryRecord], wall_time_s: float) -> Manifest:
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.exit_status] = by_status.get(r.exit_status, 0) + 1
    return Manifest(
        stage="rollouts", run_id=cfg.run_id, config_hash=cfg.config_hash(), wall_time_s=wall_time_s,
        cost_usd=sum(r.cost_usd for r in records),
        counts={"episodes": len(records), "succeeded": sum(r.succeeded for r in records),
                "infra_errors": sum(r.infra_error is not None for r in records),
                **{f"exit_status:{k}": v for k, v in sorted(by_status.items())}},
    )
