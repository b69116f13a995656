"""`synthscale task check` (a task folder's schema, baseline and grader) and `task import-mlgym` (one of MLGym's tasks
into synthscale's task format)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.cli.common import fail, resolve_config
from engine.errors import ConfigError, EngineError

task_app = typer.Typer(no_args_is_help=True, help="Task folders: check them, import MLGym's.")


@task_app.command("check")
def task_check(path: Path = typer.Argument(..., help="Task folder."),
               runtime: str = typer.Option("local", help="local or docker."),
               config: Optional[Path] = typer.Option(None, help="RunConfig YAML for sandbox settings.")) -> None:
    """Schema, the baseline runs, the grader scores it, a constant submission scores below it."""
    from engine.sandbox import make_runtime
    from engine.tasks.check import check_task
    from engine.tasks.folder import load_task

    try:
        spec = load_task(path)
        sandbox = resolve_config(config).sandbox
        if runtime not in ("local", "docker"):
            raise ConfigError(f"--runtime {runtime!r}: use local or docker")
        report = check_task(spec, make_runtime(sandbox.model_copy(update={"runtime": runtime}), run_id="check"))
    except EngineError as e:
        fail(e)
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
        fail(e)
    typer.echo(f"imported {spec.id} into {spec.root} (metric {spec.config.metric}, {spec.config.direction})")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.add_typer(task_app, name="task")
