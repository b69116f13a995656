"""Per-episode shards of the trajectory store: writes and looks up `RUN/rollouts/trajectories/part-ep-<episode_id>.parquet`.

A rollout worker persists each episode the moment it ends, as one shard named by the episode id (a hash of
the task's content, the model, the policy and the seed: deterministic). The write is atomic, and a second
write of the same episode (a re-issued lease, a late holder of an expired one) replaces the file instead of
adding a row, so the store never holds an episode twice. A worker that takes a lease first asks which of
its episodes are stored (`stored_outcomes`) and plays only the others: a worker that dies late in a long
lease loses only the episode it was playing. One file per episode is also MLGym's own granularity (one
`.traj` per episode); the readers in `engine.trajectories.store` list every `part-*.parquet` alike.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.artifacts import atomic_write_bytes, join
from engine.records import TrajectoryRecord
from engine.trajectories.store import read_or_set_aside, records_to_table, trajectories_dir

log = logging.getLogger(__name__)

EPISODE_SHARD_PREFIX = "part-ep-"


def episode_shard_path(run_dir: str | os.PathLike, episode_id: str,
                       fs: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of one episode's shard.

    >>> episode_shard_path("/runs/r1", "3f2a")[1]
    '/runs/r1/rollouts/trajectories/part-ep-3f2a.parquet'
    """
    fs, base = trajectories_dir(run_dir, fs)
    return fs, join(base, f"{EPISODE_SHARD_PREFIX}{episode_id}.parquet")


def write_episode(run_dir: str | os.PathLike, record: TrajectoryRecord, fs: pafs.FileSystem | None = None, *,
                  compression: str = "zstd") -> str:
    """Store one finished episode atomically (replacing an earlier copy of the same episode); returns the path."""
    fs, path = episode_shard_path(run_dir, record.episode_id, fs)
    sink = pa.BufferOutputStream()
    pq.write_table(records_to_table([record]), sink, compression=compression)
    atomic_write_bytes(fs, path, sink.getvalue().to_pybytes())
    log.info("run %s task %s: stored episode %s (%s)", record.run_id, record.task_id, record.episode_id,
             record.infra_error or record.exit_status)
    return path


def stored_outcomes(run_dir: str | os.PathLike, episode_ids: Sequence[str], columns: Sequence[str],
                    fs: pafs.FileSystem | None = None) -> dict[str, dict]:
    """The given `columns` of those of `episode_ids` already stored, by episode id (one small read each).

    An unreadable shard is set aside with a warning (`engine.trajectories.store.read_or_set_aside`): its episode
    counts as not stored, so the worker plays it again."""
    found: dict[str, dict] = {}
    for eid in episode_ids:
        fs, path = episode_shard_path(run_dir, eid, fs)
        if fs.get_file_info(path).type != pafs.FileType.File:
            continue
        table = read_or_set_aside(fs, path, list(columns))
        rows = [] if table is None else table.to_pylist()
        if rows:
            found[eid] = rows[0]
    return found
