"""Writes the MLGym export of a run's stored trajectories (`RUN/rollouts/traj/…`), task by task."""

from __future__ import annotations

import pyarrow.compute as pc

from engine.config import RunConfig
from engine.trajectories.mlgym_export import export_mlgym
from engine.trajectories.store import read_trajectory_table, table_to_records


def export_store(cfg: RunConfig) -> int:
    """Export every stored episode (infra errors excluded by the exporter), task by task; returns the task count."""
    table = read_trajectory_table(cfg.run_dir)
    ids = table.column("task_id").unique().to_pylist()
    for task_id in sorted(ids):
        part = table.filter(pc.equal(table["task_id"], task_id))
        export_mlgym(table_to_records(part), f"{cfg.run_dir.rstrip('/')}/rollouts",
                     environment=f"synthscale-{cfg.sandbox.runtime}", cost_limit_usd=cfg.agent.cost_limit_usd)
    return len(ids)
