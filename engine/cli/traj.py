"""`synthscale traj show` (trajectories of a run dir or a Parquet shard, as a summary table or one episode step by step)
and `synthscale import-traj` (MLGym / SWE-agent `.traj` and mini-swe-agent `.traj.json` files into a run's store)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from engine.artifacts import run_id_of, run_path
from engine.cli.common import fail
from engine.errors import ArtifactError, ConfigError, EngineError
from engine.records import TrajectoryRecord

traj_app = typer.Typer(no_args_is_help=True, help="Trajectories: show them.")


def load_records(path: Path) -> list[TrajectoryRecord]:
    """Trajectories from a run dir, a Parquet shard, a trajectory file (MLGym's or SWE-agent's ``.traj``, our MLGym
    export, mini-swe-agent's ``.traj.json``) or a folder of such files (MLGym's ``trajectories/``), read as
    ``synthscale import-traj`` reads them, without storing anything."""
    from engine.trajectories.store import read_trajectories, table_to_records

    if path.is_dir():
        records = read_trajectories(str(path))
        if records or not _holds_trajectory_files(path):
            return records
        return [_read_trajectory_file(p) for p in _trajectory_files(path)]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:  # missing, truncated, corrupted, not Parquet
            raise ArtifactError(f"{path}: not a readable Parquet file ({e}); show the run dir that holds it, "
                                "which sets unreadable shards aside") from None
        return table_to_records(table)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or directory")
    if path.name.endswith(TRAJ_SUFFIXES):
        return [_read_trajectory_file(path)]
    raise ArtifactError(f"{path}: not a run dir, a .parquet shard, or a .traj / .traj.json file")


TRAJ_SUFFIXES = (".traj", ".traj.json")


def _trajectory_files(folder: Path) -> list[Path]:
    from engine.trajectories.importers import find_trajectory_files

    return find_trajectory_files(folder)


def _holds_trajectory_files(folder: Path) -> bool:
    return any(p.is_file() and p.name.endswith(TRAJ_SUFFIXES) for p in folder.rglob("*"))


def _read_trajectory_file(path: Path) -> TrajectoryRecord:
    from engine.trajectories.importers import ImportOptions, read_trajectory_file
    from engine.trajectories.importers.batch import RejectedFile

    try:
        return read_trajectory_file(path, ImportOptions(run_id="show"))
    except RejectedFile as e:
        raise ArtifactError(f"{path}: not a trajectory synthscale reads ({e.reason}: {e.detail}); pass MLGym / "
                            "SWE-agent .traj or mini-swe-agent .traj.json files") from None


@traj_app.command("show")
def traj_show(path: Path = typer.Argument(..., help="A run dir, a Parquet shard, a .traj / .traj.json file (MLGym's, "
                                                   "SWE-agent's, mini-swe-agent's, our MLGym export) or a folder of "
                                                   "them."),
              episode: Optional[str] = typer.Option(None, help="Episode id (prefix) to show in full.")) -> None:
    """Render trajectories readably: a summary table, or one episode step by step."""
    from engine.trajectories.render import render_summary, render_trajectory

    try:
        records = load_records(path)
    except EngineError as e:
        fail(e)
    if episode:
        chosen = [r for r in records if r.episode_id.startswith(episode)]
        if not chosen:
            fail(EngineError(f"no episode {episode!r} in {path}; run `synthscale traj show {path}` to list them"))
        typer.echo(render_trajectory(chosen[0]))
    else:
        typer.echo(render_summary(records))


def import_traj(
    src: Path = typer.Argument(..., help="A folder searched (recursively) for *.traj and *.traj.json files, or one "
                                         "file."),
    run: str = typer.Option(..., "--run", help="Run directory (a path or s3://…); episodes go to "
                                               "RUN/rollouts/trajectories/."),
    task_id: Optional[str] = typer.Option(None, "--task-id", help="Task id of every file (default: from each file's "
                                                                  "path, MLGym's <model>__<task>__…/<task>.traj)."),
    model: Optional[str] = typer.Option(None, help="Model name of every file (default: from the path or the file)."),
    source: Optional[str] = typer.Option(None, help="Source label: policy becomes imported:<source> (default: the "
                                                    "format, mlgym, swe-agent or mini-swe-agent)."),
    metric: Optional[str] = typer.Option(None, help="Primary metric of the tasks (with --direction; default: a --task "
                                                    "folder's, or MLGym-Bench's for its 13 tasks)."),
    direction: Optional[str] = typer.Option(None, help="max or min: the direction of --metric."),
    task: Optional[list[Path]] = typer.Option(
        None, "--task", help="Task folder, or a folder of them (repeatable): metric, direction, task hash and baseline "
                             "of the imported episodes of its task id."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Episodes per shard written."),
) -> None:
    """Import trajectories made elsewhere (MLGym / SWE-agent .traj, mini-swe-agent .traj.json, synthscale's MLGym
    export) into RUN's trajectory store, skipping episodes stored already; unreadable files are listed and skipped."""
    from engine.trajectories.importers import find_trajectory_files, import_files

    try:
        opts = _import_options(run, task_id, model, source, metric, direction, task or [])
        files = find_trajectory_files(src)
        report = import_files(_progress(files), run, opts, batch_size=batch_size)
    except EngineError as e:
        fail(e)
    where = run_path(run, "rollouts", "trajectories")
    shards = f"{len(report.shards)} shard{'' if len(report.shards) == 1 else 's'}"
    typer.echo(f"imported {report.imported} episodes ({report.with_score} with a score) from {report.files} files into "
               f"{where} ({shards}); {report.already_stored} already stored, {report.duplicates} duplicates skipped")
    if report.unknown_metric:
        typer.secho(f"note: no primary metric known for {', '.join(report.unknown_metric)}: each score names its "
                    "first metric, direction max; pass --metric/--direction or --task", err=True,
                    fg=typer.colors.YELLOW)
    if report.rejects:
        by_reason = ", ".join(f"{n} {reason}" for reason, n in report.rejects_by_reason.items())
        typer.secho(f"rejected {len(report.rejects)} of {report.files} files ({by_reason}):", err=True,
                    fg=typer.colors.YELLOW)
        for r in report.rejects:
            typer.echo(f"  {r.path}: {r.reason}: {r.detail}", err=True)
    if report.imported + report.already_stored + report.duplicates == 0:
        fail(ArtifactError(f"{src}: none of its {report.files} files could be imported (reasons above); pass "
                           "MLGym / SWE-agent .traj or mini-swe-agent .traj.json files"))


def _import_options(run: str, task_id, model, source, metric, direction, tasks: list[Path]):
    from engine.tasks.folder import load_tasks
    from engine.trajectories.importers import ImportOptions, TaskFacts

    facts = {}
    for spec in load_tasks(tasks) if tasks else []:
        facts[spec.id] = TaskFacts(metric=spec.config.metric, direction=spec.config.direction,
                                   task_hash=spec.content_hash(), baseline=spec.baseline)
    try:
        return ImportOptions(run_id=run_id_of(run), task_id=task_id, model=model, source=source, metric=metric,
                             direction=direction, tasks=facts)
    except ValidationError as e:
        raise ConfigError("; ".join(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}"
                                    for err in e.errors())) from None


def _progress(files: list[Path]):
    """A progress bar on a terminal; the plain list elsewhere."""
    if not sys.stderr.isatty() or len(files) < 20:
        return files
    from rich.console import Console
    from rich.progress import track

    return track(files, description="importing", console=Console(stderr=True), transient=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.add_typer(traj_app, name="traj")
    app.command("import-traj")(import_traj)
