"""Trajectory import: reads trajectory sets made elsewhere (MLGym / SWE-agent ``.traj``, mini-swe-agent ``.traj.json``,
synthscale's own MLGym export), writes them as TrajectoryRecords into a run's trajectory store, so that curation
can use them (``synthscale import-traj DIR --run RUN``).

- ``mlgym``: MLGym's and SWE-agent's ``.traj`` (and ``results.json``); the mapping, field by field, and what is
  lost or defaulted are in its docstring. synthscale's export comes back as the episode it was.
- ``miniswe``: mini-swe-agent's ``.traj.json`` (v1, v2), likewise.
- ``batch``: finding the files, telling their format by content, rejects, dedup, writing shards.
- ``common``: options, episode ids, the primary metric's resolution, shape checks.

Ids and provenance: an imported episode's id is a hash of the file's bytes (``import_episode_id``), so the same
file imported twice is stored once; its ``policy`` is ``imported:<source>`` (the format's name, or ``--source``)
and its ``run_id`` the importing run's. A synthscale export keeps its original ids, run id and policy.
"""

from engine.trajectories.importers.batch import (
    ImportReject,
    ImportReport,
    find_trajectory_files,
    import_files,
    import_trajectories,
    read_trajectory_file,
)
from engine.trajectories.importers.common import ImportOptions, TaskFacts, import_episode_id
from engine.trajectories.importers.miniswe import mini_record
from engine.trajectories.importers.mlgym import mlgym_record

__all__ = [
    "ImportOptions",
    "ImportReject",
    "ImportReport",
    "TaskFacts",
    "find_trajectory_files",
    "import_episode_id",
    "import_files",
    "import_trajectories",
    "mini_record",
    "mlgym_record",
    "read_trajectory_file",
]
