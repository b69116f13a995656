"""`synthscale episode` and `run` (rollouts in this process), `config` (the resolved RunConfig) and `serve-heuristic`
(the offline policy as an OpenAI-compatible endpoint, for tests and demos)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.artifacts import run_path
from engine.cli.common import (
    confirm_start_over, fail, interrupted, overrides, resolve_config, rollouts_kept, run_guarded,
)
from engine.errors import EngineError
from engine.records import Manifest


def episode(
    task: list[Path] = typer.Option(..., "--task", help="Task folder, or a folder of task folders (repeatable)."),
    out: str = typer.Option(..., "--out", help="Run directory (a path or s3://…); trajectories go to OUT/rollouts/."),
    policy: str = typer.Option(
        "heuristic", help="heuristic (the offline scripted policy, for tests and demos; not a teacher) or openai "
                          "(any OpenAI-compatible endpoint)."),
    model: Optional[str] = typer.Option(None, help="Model name (policy openai)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Endpoint root, e.g. http://127.0.0.1:8000/v1."),
    runtime: Optional[str] = typer.Option(None, help="local (bubblewrap) or docker."),
    n: Optional[int] = typer.Option(None, "-n", help="Episodes per task."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    seed: Optional[int] = typer.Option(None),
    config: Optional[Path] = typer.Option(None, help="RunConfig YAML; flags override it."),
    start_over: bool = typer.Option(False, "--start-over", help="Delete what an earlier config wrote in OUT/rollouts."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before --start-over deletes."),
) -> None:
    """Run N episodes per task in this process (the rollout stage on local threads) and write their trajectories
    (Parquet + MLGym's .traj layout)."""
    from engine.runner import run_rollout_stage

    try:
        cfg = resolve_config(config, overrides(tasks=task, run=out, policy=policy, model=model, base_url=base_url,
                                               runtime=runtime, n=n, max_steps=max_steps, seed=seed))
        if start_over:
            confirm_start_over(cfg.run_dir, ["rollouts"], yes)
        manifest = run_rollout_stage(cfg, in_process=True, start_over=start_over, progress=False)
    except EngineError as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(rollouts_kept(out, in_process=True))
    _report(manifest, run_path(out, "rollouts"))


def _report(manifest: Manifest | None, where: str) -> None:
    if manifest is None:
        typer.secho("stopped early (budget or cancel); run the same command again to resume", err=True,
                    fg=typer.colors.YELLOW)
        raise typer.Exit(3)
    c = manifest.counts
    typer.echo(f"{c.get('episodes', 0)} episodes ({c.get('succeeded', 0)} with a score) in {where}; "
               f"{manifest.wall_time_s:.1f} s, ${manifest.cost_usd:.4f}")


def run(config: Path = typer.Option(..., help="RunConfig YAML."),
        start_over: bool = typer.Option(False, "--start-over"),
        yes: bool = typer.Option(False, "--yes", help="Do not ask before --start-over deletes.")) -> None:
    """The episodes the config describes (its `episodes.tasks`), in this process."""
    from engine.runner import run_rollout_stage

    cfg = None
    try:
        cfg = resolve_config(config)
        if start_over:
            confirm_start_over(cfg.run_dir, ["rollouts"], yes)
        manifest = run_rollout_stage(cfg, in_process=True, start_over=start_over)
    except EngineError as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(rollouts_kept(cfg and cfg.run_dir, in_process=True))
    _report(manifest, run_path(cfg.run_dir, "rollouts"))


def show_config(config: Optional[Path] = typer.Argument(None, help="A RunConfig YAML to resolve.")) -> None:
    """Print the resolved RunConfig as YAML (the defaults when no file is given)."""
    typer.echo(run_guarded(resolve_config, config).to_yaml())


def serve_heuristic(task: list[Path] = typer.Option(..., "--task", help="Task folder(s) the policy knows."),
                    host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000),
                    mistake_rate: float = typer.Option(0.4, "--mistake-rate", min=0, max=1,
                                                       help="Chance of a wrong edit before each improvement."),
                    max_moves: Optional[int] = typer.Option(
                        None, "--max-moves", min=0, help="Improvements at most (0: submit the baseline; a weaker policy)."),
                    name: Optional[str] = typer.Option(None, help="Model name it reports.")) -> None:
    """Serve the offline heuristic policy as an OpenAI-compatible endpoint (for tests and demos)."""
    from engine.agent.heuristic import HeuristicModel
    from engine.models.server import serve
    from engine.tasks.folder import load_tasks

    model = run_guarded(lambda: HeuristicModel(load_tasks(task), mistake_rate=mistake_rate, max_moves=max_moves,
                                               name=name))
    typer.echo(f"serving {model.name} on http://{host}:{port}/v1", err=True)
    serve(model, host, port)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.command()(episode)
    app.command()(run)
    app.command("config")(show_config)
    app.command("serve-heuristic")(serve_heuristic)
