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
    for note in report.notes:
        typer.secho(f"  note: {note}", fg=typer.colors.YELLOW)
    for p in report.problems:
        typer.secho(f"  problem: {p}", fg=typer.colors.RED)
    if not report.ok:
        if not report.baseline_ran:
            typer.echo(report.baseline_output)
        raise typer.Exit(1)
    typer.secho("  ok", fg=typer.colors.GREEN)


@task_app.command("import-mlgym")
def task_import(mlgym_dir: Path = typer.Argument(..., help="A checkout of MLGym."),
                task: str = typer.Argument(..., help="A config of its configs/tasks/: file name, stem or path "
                                                     "(imageClassificationCifar10L1), or a task id."),
                out: Path = typer.Option(..., "--out", help="Folder to write the task folder into."),
                metric: Optional[str] = typer.Option(None, help="Primary metric, for a task outside MLGym-Bench: "
                                                                "a key of its baseline_scores."),
                direction: Optional[str] = typer.Option(None, help="max or min: how --metric improves."),
                materialise: bool = typer.Option(False, "--materialise", help="Download the task's Hub datasets "
                                                 "into its workspace (needs network; HF_TOKEN for gated ones)."),
                image_package: list[str] = typer.Option([], "--image-package", help="A package the task image has "
                                                        "beyond numpy, pandas, scikit-learn, scipy (repeatable)."),
                allow_unsupported: bool = typer.Option(False, help="Import even if the image lacks packages."),
                overwrite: bool = typer.Option(False, help="Replace a task folder imported before."),
                config: Optional[Path] = typer.Option(None, help="RunConfig YAML whose synth.hub says where the "
                                                                 "Hub is (--materialise).")) -> None:
    """Import one of MLGym's task configs into synthscale's task format, or name in one line what it lacks."""
    from engine.tasks.mlgym import DEFAULT_IMAGE_PACKAGES, import_mlgym_task, lacking_packages

    try:
        if direction not in (None, "max", "min"):
            raise ConfigError(f"--direction {direction!r}: use max or min")
        hub = resolve_config(config).synth.hub if materialise else None
        packages = DEFAULT_IMAGE_PACKAGES | set(image_package)
        spec = import_mlgym_task(mlgym_dir, task, out, packages, allow_unsupported=allow_unsupported, metric=metric,
                                 direction=direction, overwrite=overwrite, hub=hub)  # type: ignore[arg-type]
    except EngineError as e:
        fail(e)
    typer.echo(f"imported {spec.id} into {spec.root} (metric {spec.config.metric}, {spec.config.direction})")
    typer.echo(f"  MLGym's baseline: {spec.baseline or 'none'}")
    lacking = lacking_packages(spec.config.requirements, packages)
    if allow_unsupported and lacking:
        typer.secho(f"  the task image lacks {', '.join(lacking)}: its baseline will not run there",
                    fg=typer.colors.YELLOW)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.add_typer(task_app, name="task")
