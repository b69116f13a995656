"""`synthscale traj show`: trajectories of a run dir or a Parquet shard, as a summary table or one episode step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.cli.common import fail
from engine.errors import ArtifactError, EngineError
from engine.records import TrajectoryRecord

traj_app = typer.Typer(no_args_is_help=True, help="Trajectories: show them.")


def load_records(path: Path) -> list[TrajectoryRecord]:
    """Trajectories from a run dir or a Parquet shard; an MLGym .traj file gets a pointer to its run dir."""
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


@traj_app.command("show")
def traj_show(path: Path = typer.Argument(..., help="A run dir, a Parquet shard, or an MLGym .traj file."),
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


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.add_typer(traj_app, name="traj")
