"""`synthscale rollout`: the rollout stage on a Ray cluster (a local Ray instance by default) or in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.artifacts import run_path
from engine.cli.common import confirm_start_over, fail, interrupted, overrides, resolve_config, rollouts_kept
from engine.errors import EngineError

EXIT_STOPPED = 3
EXIT_TASKS_FAILED = 4


def rollout(
    config: Optional[Path] = typer.Option(None, help="RunConfig YAML (sections episodes, rollout, model, sandbox, agent)."),
    run: Optional[str] = typer.Option(None, "--run", help="Run directory (path or s3://…); overrides run_dir."),
    address: Optional[str] = typer.Option(
        None, help="Ray cluster: auto, ray://HEAD:10001, or HOST:PORT; omitted: start a local Ray instance."),
    in_process: bool = typer.Option(False, "--in-process", help="No Ray: the workers are threads of this process."),
    n: Optional[int] = typer.Option(None, "-n", help="Target trajectories per task (episodes.episodes_per_task)."),
    task: Optional[list[Path]] = typer.Option(None, "--task", help="Task folder(s); overrides episodes.tasks."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run a small pilot and project the stage's cost and time."),
    start_over: bool = typer.Option(False, "--start-over", help="Delete what an earlier config wrote in RUN/rollouts."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before --start-over deletes."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Collect N trajectories per task; re-running resumes where the last attempt stopped."""
    from engine.runner import run_rollout_stage

    cfg = None
    try:
        cfg = resolve_config(config, overrides(run=run, n=n, tasks=task or None))
        if start_over:
            confirm_start_over(cfg.run_dir, ["pilot" if dry_run else "rollouts"], yes)
        result = run_rollout_stage(cfg, address=address, in_process=in_process, start_over=start_over, dry=dry_run,
                                   progress=False if no_progress else None)
    except EngineError as e:
        fail(e)
    except KeyboardInterrupt:
        run_dir = cfg and (run_path(cfg.run_dir, "pilot") if dry_run else cfg.run_dir)
        interrupted(rollouts_kept(run_dir, in_process=in_process))
    if dry_run:
        typer.echo(result.summary())
        typer.echo(f"projection written to {run_path(cfg.run_dir, 'pilot', 'projection.json')}")
        return
    if result is None:
        typer.secho(f"rollout {cfg.run_id}: stopped early (budget or cancel); `synthscale status {cfg.run_dir}` "
                    "shows where it stands; run the same command again to resume", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_STOPPED)
    c = result.counts
    if c.get("tasks_failed"):
        failed = sorted(k.split(":", 1)[1] for k in result.rejects if k.startswith("task_failed:"))
        typer.secho(f"rollout {cfg.run_id}: {c['tasks_failed']} tasks failed for infrastructure reasons "
                    f"({', '.join(failed)}); `synthscale status {cfg.run_dir}` shows why; re-run to retry them",
                    fg=typer.colors.YELLOW, err=True)
    typer.echo(f"rollout {cfg.run_id}: {c['episodes']} trajectories ({c['succeeded']} with a successful "
               f"submission, {c['infra_errors']} infra errors) of {c['tasks']} tasks, ${result.cost_usd:.2f}, "
               f"{result.wall_time_s:.0f} s → {run_path(cfg.run_dir, 'rollouts')}/")
    if c.get("tasks_failed"):
        raise typer.Exit(EXIT_TASKS_FAILED)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.command()(rollout)
