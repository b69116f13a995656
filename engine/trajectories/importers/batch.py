"""Trajectory import, the whole batch: reads ``.traj``/``.traj.json`` files, writes the episodes not yet stored to
``RUN/rollouts/trajectories/`` (``TrajectoryWriter``: each batch one new shard, written atomically).

A file that cannot be read as a trajectory is a reject (``ImportReject``: the file, a reason, the detail), never an
error: ``unreadable``, ``not_utf8``, ``not_json``, ``not_a_trajectory`` (JSON of another shape: no
``trajectory``/``history``, no ``messages``), ``malformed`` (a field of the wrong type; the detail names it).
Nothing stored is rewritten: an episode whose id is in the store already (``stored_episode_ids``, infra failures
included) is skipped, as is a second copy within one import.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import ArtifactError, ConfigError
from engine.records import TrajectoryRecord
from engine.trajectories.importers.common import BadTrajectory, ImportOptions, import_episode_id
from engine.trajectories.importers.miniswe import is_mini_document, mini_record
from engine.trajectories.importers.mlgym import is_traj_document, mlgym_record
from engine.trajectories.store import TrajectoryWriter, stored_episode_ids

log = logging.getLogger(__name__)

TRAJ_SUFFIXES = (".traj", ".traj.json")
RESULTS_NAME = "results.json"
DEFAULT_BATCH_SIZE = 256


class ImportReject(BaseModel):
    """A file that was not imported, and why."""

    model_config = ConfigDict(extra="forbid")
    path: str
    reason: str = Field(description="unreadable, not_utf8, not_json, not_a_trajectory or malformed.")
    detail: str


class ImportReport(BaseModel):
    """What one import did."""

    model_config = ConfigDict(extra="forbid")
    files: int = 0
    imported: int = Field(0, description="New episodes stored.")
    with_score: int = Field(0, description="Of those, episodes with a scoring that produced a score.")
    already_stored: int = Field(0, description="Episodes the store held before this import: skipped.")
    duplicates: int = Field(0, description="Second copies of an episode within this import: skipped.")
    shards: list[str] = Field(default_factory=list, description="Shards written, one per batch.")
    rejects: list[ImportReject] = Field(default_factory=list)
    unknown_metric: list[str] = Field(default_factory=list, description="Task ids of scored episodes whose primary "
                                                                        "metric is unknown.")

    @property
    def rejects_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejects).items()))


class RejectedFile(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def find_trajectory_files(src: str | os.PathLike) -> list[Path]:
    """``src`` itself when it is a file, else every ``*.traj`` and ``*.traj.json`` under it, sorted."""
    src = Path(src)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise ArtifactError(f"{src}: no such file or directory; pass a folder of .traj/.traj.json files or one file")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name.endswith(TRAJ_SUFFIXES))
    if not files:
        raise ArtifactError(f"{src}: no .traj or .traj.json files in it or below; pass MLGym's trajectories/ folder, "
                            "a mini-swe-agent output folder, or one trajectory file")
    return files


def read_trajectory_file(path: Path, opts: ImportOptions) -> TrajectoryRecord:
    """One file as a TrajectoryRecord, its format told by its content; RejectedFile when it is none we read."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RejectedFile("unreadable", str(e)) from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RejectedFile("not_utf8", f"byte {e.start}: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise RejectedFile("not_json", f"line {e.lineno} column {e.colno}: {e.msg}") from None
    episode_id = import_episode_id(data)
    try:
        if is_traj_document(doc):
            return mlgym_record(doc, path, episode_id, opts, results=_results(path))
        if is_mini_document(doc):
            return mini_record(doc, path, episode_id, opts)
    except BadTrajectory as e:
        raise RejectedFile("malformed", str(e)) from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RejectedFile("malformed", f"{e.title} field {where}: {err['msg']}") from None
    raise RejectedFile("not_a_trajectory", _shape(doc))


def _shape(doc) -> str:
    if isinstance(doc, dict):
        missing = [k for k in ("trajectory", "history") if k not in doc]
        return (f"lacks {' and '.join(repr(k) for k in missing)} (an MLGym/SWE-agent .traj has both) and 'messages' "
                f"(mini-swe-agent); its keys: {sorted(doc)[:8]}")
    return f"a JSON {type(doc).__name__}, not an MLGym/SWE-agent .traj object or a mini-swe-agent message list"


def _results(traj_path: Path) -> dict | None:
    """MLGym's ``results.json`` beside a ``.traj`` (only its baseline is read); None when absent or unreadable."""
    path = traj_path.parent / RESULTS_NAME
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: not read (%s); importing %s without its baseline", path, e, traj_path.name)
        return None
    return results if isinstance(results, dict) else None


def import_files(files: Iterable[Path], run_dir: str | os.PathLike, opts: ImportOptions, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, fs: pafs.FileSystem | None = None) -> ImportReport:
    """Import ``files`` into ``run_dir``'s trajectory store: each batch of ``batch_size`` new episodes is one shard,
    written atomically, so an interrupted import keeps its finished batches and a re-run skips them."""
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: must be at least 1")
    report = ImportReport()
    stored = stored_episode_ids(run_dir, fs, include_infra_errors=True)
    seen: set[str] = set()
    writer = TrajectoryWriter(run_dir, fs)
    batch: list[TrajectoryRecord] = []
    unknown: set[str] = set()
    for path in files:
        report.files += 1
        try:
            record = read_trajectory_file(path, opts)
        except RejectedFile as e:
            log.warning("run %s: %s not imported: %s", opts.run_id, path, e)
            report.rejects.append(ImportReject(path=str(path), reason=e.reason, detail=e.detail))
            continue
        if record.episode_id in stored:
            report.already_stored += 1
            continue
        if record.episode_id in seen:
            report.duplicates += 1
            continue
        seen.add(record.episode_id)
        batch.append(record)
        report.imported += 1
        report.with_score += int(record.succeeded)
        if not record.metric and record.scores:
            unknown.add(record.task_id)
        if len(batch) >= batch_size:
            report.shards.append(writer.write(batch))
            batch = []
    if batch:
        report.shards.append(writer.write(batch))
    report.unknown_metric = sorted(unknown)
    log.info("run %s: imported %d episodes from %d files (%d already stored, %d rejected)", opts.run_id,
             report.imported, report.files, report.already_stored, len(report.rejects))
    return report


def import_trajectories(src: str | os.PathLike, run_dir: str | os.PathLike, opts: ImportOptions, *,
                        batch_size: int = DEFAULT_BATCH_SIZE, fs: pafs.FileSystem | None = None) -> ImportReport:
    """Every trajectory file under ``src`` (see ``find_trajectory_files``) into ``run_dir``'s store."""
    return import_files(find_trajectory_files(src), run_dir, opts, batch_size=batch_size, fs=fs)
