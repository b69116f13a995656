"""Trajectories: the Parquet store (one row per episode), the MLGym export, and text rendering."""

from engine.trajectories.mlgym_export import export_mlgym, traj_document, visible_metrics
from engine.trajectories.render import render_summary, render_trajectory
from engine.trajectories.store import (
    TRAJECTORY_SCHEMA,
    TrajectoryWriter,
    read_trajectories,
    read_trajectory_table,
    records_to_table,
    shard_paths,
    stored_episode_ids,
    table_to_records,
)

__all__ = [
    "TRAJECTORY_SCHEMA",
    "TrajectoryWriter",
    "export_mlgym",
    "read_trajectories",
    "read_trajectory_table",
    "records_to_table",
    "render_summary",
    "render_trajectory",
    "shard_paths",
    "stored_episode_ids",
    "table_to_records",
    "traj_document",
    "visible_metrics",
]
