"""The `synthscale` command line: episodes, task tools, trajectory viewing, and serving the offline policy."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from engine.errors import EngineError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="synthscale: train ML research agents on synthetic tasks.")
task_app = typer.Typer(no_args_is_help=True, help="Task folders: check them, import MLGym's.")
traj_app = typer.Typer(no_args_is_help=True, help="Trajectories: show them.")
app.add_typer(task_app, name="task")
app.add_typer(traj_app, name="traj")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
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
    start_over: bool = typer.Option(False, "--start-over", help="Allow a run dir written under another config."),
) -> None:
    """Run N episodes per task and write their trajectories (Parquet + MLGym's .traj layout)."""
    from engine.runner import EpisodeOverrides, run_episodes

    try:
        overrides = EpisodeOverrides(tasks=task, out=out, policy=policy, model=model, base_url=base_url,
                                     runtime=runtime, n=n, max_steps=max_steps, seed=seed)
    except ValidationError as e:
        _fail(EngineError("; ".join(f"--{'-'.join(str(p) for p in err['loc']).replace('_', '-')}: {err['msg']}"
                                    for err in e.errors())))
    try:
        manifest = run_episodes(config, overrides, start_over=start_over)
    except EngineError as e:
        _fail(e)
    counts = manifest.counts
    typer.echo(f"{counts.get('episodes', 0)} episodes ({counts.get('succeeded', 0)} with a score) in "
               f"{out}/rollouts; {manifest.wall_time_s:.1f} s, ${manifest.cost_usd:.4f}")


@app.command()
def run(config: Path = typer.Option(..., help="RunConfig YAML."),
        start_over: bool = typer.Option(False, "--start-over")) -> None:
    """The main job: the episodes the config describes (its `episodes.tasks`)."""
    from engine.runner import run_episodes

    try:
        manifest = run_episodes(config, None, start_over=start_over)
    except EngineError as e:
        _fail(e)
    typer.echo(f"{manifest.counts.get('episodes', 0)} episodes; {manifest.counts}")


@app.command()
def synth(config: Optional[Path] = typer.Option(None, help="RunConfig YAML (its `synth` section)."),
          run: Optional[str] = typer.Option(None, "--run", help="Run directory; tasks go to RUN/synth/tasks/."),
          source: Optional[str] = typer.Option(None, help="teacher (an LLM) or procedural (offline catalogue)."),
          n: Optional[int] = typer.Option(None, "-n", help="Tasks to draw (procedural) or topics (teacher)."),
          ray_address: Optional[str] = typer.Option(None, "--ray", help="Fan out on Ray: 'auto', 'local' or an address."),
          start_over: bool = typer.Option(False, "--start-over")) -> None:
    """Synthesize and verify tasks (pipeline phases 1 and 2); resumable."""
    from engine.runner import build_config, run_synth_stage

    try:
        cfg = build_config(config, None)
        update: dict = {}
        if run is not None:
            update.update(run_dir=run, run_id=run.rstrip("/").rsplit("/", 1)[-1] or "run")
        synth_update = {k: v for k, v in (("source", source),) if v is not None}
        if n is not None:
            synth_update["n_tasks" if (source or cfg.synth.source) == "procedural" else "n_topics"] = n
        data = cfg.model_dump()
        data.update(update)
        data["synth"].update(synth_update)
        cfg = type(cfg).model_validate(data)
        manifest = run_synth_stage(cfg, start_over=start_over, ray_address=ray_address)
    except EngineError as e:
        _fail(e)
    except ValidationError as e:
        _fail(EngineError(str(e)))
    c = manifest.counts
    typer.echo(f"synth: {c.get('verified', 0)} verified of {c.get('proposals', 0)} proposals "
               f"({c.get('topics', 0)} topics); rejects {manifest.rejects}; ${manifest.cost_usd:.2f}; "
               f"{manifest.wall_time_s:.0f} s")


@app.command("config")
def show_config(config: Optional[Path] = typer.Argument(None, help="A RunConfig YAML to resolve.")) -> None:
    """Print the resolved RunConfig as YAML (the defaults when no file is given)."""
    from engine.config import RunConfig, load_config

    try:
        cfg = load_config(config) if config else RunConfig()
    except EngineError as e:
        _fail(e)
    typer.echo(cfg.to_yaml())


@task_app.command("check")
def task_check(path: Path = typer.Argument(..., help="Task folder."),
               runtime: str = typer.Option("local", help="local or docker."),
               config: Optional[Path] = typer.Option(None, help="RunConfig YAML for sandbox settings.")) -> None:
    """Schema, the baseline runs, the grader scores it, a constant submission scores below it."""
    from engine.runner import make_runtime_from
    from engine.tasks.check import check_task
    from engine.tasks.folder import load_task

    try:
        spec = load_task(path)
        report = check_task(spec, make_runtime_from(config, runtime, run_id="check"))
    except EngineError as e:
        _fail(e)
    typer.echo(f"task {report.task_id}: baseline ran: {report.baseline_ran}")
    if report.baseline:
        typer.echo(f"  baseline: validation {report.baseline.validation} test {report.baseline.test}")
    if report.constant:
        typer.echo(f"  constant: validation {report.constant.validation} test {report.constant.test}")
    for p in report.problems:
        typer.secho(f"  problem: {p}", fg=typer.colors.RED)
    if not report.ok:
        if not report.baseline_ran:
            typer.echo(report.baseline_output)
        raise typer.Exit(1)
    typer.secho("  ok", fg=typer.colors.GREEN)


@task_app.command("import-mlgym")
def task_import(mlgym_dir: Path = typer.Argument(..., help="A checkout of MLGym."),
                task_id: str = typer.Argument(..., help="e.g. regressionKaggleHousePrice"),
                out: Path = typer.Option(..., "--out", help="Folder to write the task folder into."),
                allow_unsupported: bool = typer.Option(False, help="Import even if the image lacks packages.")) -> None:
    """Import one of MLGym's tasks into synthscale's task format."""
    from engine.tasks.mlgym import import_mlgym_task

    try:
        spec = import_mlgym_task(mlgym_dir, task_id, out, allow_unsupported=allow_unsupported)
    except EngineError as e:
        _fail(e)
    typer.echo(f"imported {spec.id} into {spec.root} (metric {spec.config.metric}, {spec.config.direction})")


@traj_app.command("show")
def traj_show(path: Path = typer.Argument(..., help="A run dir, a Parquet shard, or an MLGym .traj file."),
              episode: Optional[str] = typer.Option(None, help="Episode id (prefix) to show in full.")) -> None:
    """Render trajectories readably: a summary table, or one episode step by step."""
    from engine.runner import load_records
    from engine.trajectories.render import render_summary, render_trajectory

    try:
        records = load_records(path)
    except EngineError as e:
        _fail(e)
    if episode:
        chosen = [r for r in records if r.episode_id.startswith(episode)]
        if not chosen:
            _fail(EngineError(f"no episode {episode!r} in {path}; run `synthscale traj show {path}` to list them"))
        typer.echo(render_trajectory(chosen[0]))
    else:
        typer.echo(render_summary(records))


@app.command("serve-heuristic")
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
    from engine.runner import load_tasks

    try:
        model = HeuristicModel(load_tasks(task), mistake_rate=mistake_rate, max_moves=max_moves, name=name)
    except EngineError as e:
        _fail(e)
    typer.echo(f"serving {model.name} on http://{host}:{port}/v1", err=True)
    serve(model, host, port)


# Commands of later stages live in their own modules, each adding itself to `app`.
from engine import cli_eval, cli_ops, cli_rollout  # noqa: E402

cli_rollout.register(app)
cli_ops.register(app)
cli_eval.register(app)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # `python -m engine.cli`: the entrypoint of submitted Ray jobs
    main()
