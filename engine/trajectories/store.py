"""The trajectory store: reads and writes ``<run>/rollouts/trajectories/part-*.parquet``, one row per episode.

``TRAJECTORY_SCHEMA`` is the one definition of the row layout. Typed columns hold everything with a fixed
shape (scalars, ``messages``, ``steps``, ``scores``, ``baseline``); ``sampling`` (values of mixed types:
float, int, str, None) and ``history`` (the history-processor settings, a small model that may gain
fields) are JSON strings, which keep int/float/None exactly and let old shards read under new fields.
The shard footer carries the schema version; every read checks it and the columns.

Shards are immutable: a writer adds ``part-<time_ns>-<uuid>.parquet`` atomically, never rewrites one. Reads
deduplicate by ``episode_id``: the first stored record wins (shards in name order, i.e. write order), except
that a record without ``infra_error`` beats one with it, so a retried episode replaces its infra failure.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from engine.artifacts import RERUN_COMMANDS, atomic_write_bytes, join, resolve
from engine.errors import ArtifactError
from engine.records import SCHEMA_VERSION, TrajectoryRecord

log = logging.getLogger(__name__)

TRAJECTORIES_DIR = "rollouts/trajectories"
SCHEMA_NAME = "synthscale.trajectories"
_META_NAME = b"synthscale.schema"
_META_VERSION = b"synthscale.schema_version"

_METRICS = pa.map_(pa.string(), pa.float64())

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

STEP_TYPE = pa.struct([
    ("step", pa.int64()),
    ("response", pa.string()),
    ("thought", pa.string()),
    ("action", pa.string()),
    ("observation", pa.string()),
    ("reasoning", pa.string()),
    ("open_file", pa.string()),
    ("working_dir", pa.string()),
    ("execution_time_s", pa.float64()),
    ("model_latency_s", pa.float64()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("cost_usd", pa.float64()),
    ("format_errors", pa.list_(pa.string())),
])

SCORE_TYPE = pa.struct([
    ("step", pa.int64()),
    ("kind", pa.string()),
    ("validation", _METRICS),
    ("test", _METRICS),
    ("metric", pa.string()),
    ("direction", pa.string()),
    ("grading", pa.string()),
    ("error", pa.string()),
])

TRAJECTORY_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int64()),
        ("run_id", pa.string()),
        ("task_id", pa.string()),
        ("task_hash", pa.string()),
        ("episode_id", pa.string()),
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("policy", pa.string()),
        ("sampling", pa.string()),  # JSON object
        ("history", pa.string()),  # JSON object: HistoryConfig
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("steps", pa.list_(STEP_TYPE)),
        ("scores", pa.list_(SCORE_TYPE)),
        ("baseline", _METRICS),
        ("metric", pa.string()),
        ("direction", pa.string()),
        ("exit_status", pa.string()),
        ("submission", pa.string()),
        ("tokens_sent", pa.int64()),
        ("tokens_received", pa.int64()),
        ("api_calls", pa.int64()),
        ("cost_usd", pa.float64()),
        ("wall_time_s", pa.float64()),
        ("started_at", pa.float64()),
        ("infra_error", pa.string()),
    ],
    metadata={_META_NAME: SCHEMA_NAME.encode(), _META_VERSION: str(SCHEMA_VERSION).encode()},
)

_JSON_COLUMNS = ("sampling", "history")
_MAP_SCORE_FIELDS = ("validation", "test")


def records_to_table(records: Sequence[TrajectoryRecord]) -> pa.Table:
    """Rows of ``TRAJECTORY_SCHEMA``; checks every record on the way in.

    Messages must have exactly the keys ``role`` and ``content`` (the columns hold nothing else).
    """
    return pa.Table.from_pylist([_record_to_row(r) for r in records], schema=TRAJECTORY_SCHEMA)


def _record_to_row(record: TrajectoryRecord) -> dict:
    if not isinstance(record, TrajectoryRecord):
        raise ArtifactError(f"expected a TrajectoryRecord, got {type(record).__name__}")
    where = f"episode {record.episode_id} (task {record.task_id})"
    if record.schema_version != SCHEMA_VERSION:
        raise ArtifactError(f"{where}: record schema v{record.schema_version}, the store writes v{SCHEMA_VERSION}")
    row = record.model_dump(mode="python")
    for i, message in enumerate(row["messages"]):
        if set(message) != {"role", "content"}:
            raise ArtifactError(f"{where}: message {i} has keys {sorted(message)}; "
                                "the trajectory schema stores exactly 'role' and 'content'")
    row["sampling"] = json.dumps(row["sampling"], ensure_ascii=False)
    row["history"] = json.dumps(row["history"], ensure_ascii=False)
    return row


def table_to_records(table: pa.Table) -> list[TrajectoryRecord]:
    """Inverse of ``records_to_table``: ``table_to_records(records_to_table(rs)) == rs``."""
    return [_row_to_record(row) for row in table.to_pylist()]


def _row_to_record(row: dict) -> TrajectoryRecord:
    for name in _JSON_COLUMNS:
        if name in row:
            try:
                row[name] = json.loads(row[name])
            except (TypeError, json.JSONDecodeError) as e:
                raise ArtifactError(f"episode {row.get('episode_id')}: column '{name}' is not a JSON object ({e})") from None
    if "baseline" in row:
        row["baseline"] = dict(row["baseline"])
    for score in row.get("scores") or []:
        for name in _MAP_SCORE_FIELDS:
            if score[name] is not None:
                score[name] = dict(score[name])
    try:
        return TrajectoryRecord.model_validate(row)
    except ValidationError as e:
        raise ArtifactError(f"episode {row.get('episode_id')}: stored row is not a valid TrajectoryRecord ({e})") from None


def trajectories_dir(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of ``<run_dir>/rollouts/trajectories``."""
    fs, base = resolve(run_dir, fs)
    return fs, join(base, TRAJECTORIES_DIR)


class TrajectoryWriter:
    """Adds shards to a run's trajectory store; each ``write`` is one new, atomically written shard.

    >>> writer = TrajectoryWriter("runs/r1")          # or "s3://bucket/runs/r1"
    >>> writer.write(records)                          # doctest: +SKIP
    '/abs/runs/r1/rollouts/trajectories/part-...parquet'
    """

    def __init__(self, run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None, *, compression: str = "zstd"):
        self.fs, self.dir = trajectories_dir(run_dir, fs)
        self.compression = compression
        self._last_ns = 0  # shard names of one writer strictly increase, even if the clock steps back

    def write(self, records: Iterable[TrajectoryRecord]) -> str | None:
        """Write one shard holding ``records``; return its path (None when there was nothing to write)."""
        records = list(records)
        if not records:
            return None
        table = records_to_table(records)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=self.compression)
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        path = join(self.dir, f"part-{self._last_ns:020d}-{uuid.uuid4().hex[:12]}.parquet")
        atomic_write_bytes(self.fs, path, sink.getvalue().to_pybytes())
        log.info("wrote %d trajectories to %s", len(records), path)
        return path


def lease_shard_path(run_dir: str | os.PathLike, lease_id: str, fs: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """Where a lease's episodes go: one shard per lease, named by the lease id, so writing it twice
    (a re-issued lease) replaces it instead of adding a duplicate."""
    fs, base = trajectories_dir(run_dir, fs)
    return fs, join(base, f"part-lease-{lease_id}.parquet")


def write_lease_shard(run_dir: str | os.PathLike, lease_id: str, records: Sequence[TrajectoryRecord],
                      fs: pafs.FileSystem | None = None, *, compression: str = "zstd") -> str:
    """Write the lease's shard atomically; returns its path."""
    fs, path = lease_shard_path(run_dir, lease_id, fs)
    sink = pa.BufferOutputStream()
    pq.write_table(records_to_table(list(records)), sink, compression=compression)
    atomic_write_bytes(fs, path, sink.getvalue().to_pybytes())
    log.info("wrote %d trajectories to %s", len(records), path)
    return path


def read_lease_shard(run_dir: str | os.PathLike, lease_id: str, fs: pafs.FileSystem | None = None,
                     columns: Sequence[str] | None = None) -> pa.Table | None:
    """The lease's shard if a holder already wrote it (None otherwise)."""
    fs, path = lease_shard_path(run_dir, lease_id, fs)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    return _read_shard(fs, path, list(columns) if columns is not None else None)


def shard_paths(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None) -> list[str]:
    """The store's shards in name (= write) order; temporary files are never listed."""
    return _list_shards(*trajectories_dir(run_dir, fs))


def _list_shards(fs: pafs.FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    names = [i.path for i in infos if i.type == pafs.FileType.File
             and i.base_name.startswith("part-") and i.base_name.endswith(".parquet")]
    return sorted(names, key=lambda p: p.rsplit("/", 1)[-1])


def _read_shard(fs: pafs.FileSystem, path: str, columns: list[str] | None) -> pa.Table:
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        check_shard_schema(path, pf.schema_arrow)
        return pf.read(columns=columns)


def check_shard_schema(path: str, schema: pa.Schema) -> None:
    """Raise ArtifactError naming the shard unless ``schema`` is this version's ``TRAJECTORY_SCHEMA``."""
    meta = schema.metadata or {}
    found = meta.get(_META_VERSION, b"?").decode()
    rerun = f"rerun `{RERUN_COMMANDS['rollouts']} --start-over` or use a new run dir"
    if meta.get(_META_NAME) != SCHEMA_NAME.encode():
        raise ArtifactError(f"{path}: not a synthscale trajectory shard (no '{SCHEMA_NAME}' schema tag); "
                            f"expected trajectory schema v{SCHEMA_VERSION}; remove it from the store")
    if found != str(SCHEMA_VERSION):
        raise ArtifactError(f"{path}: trajectory schema v{found}, expected v{SCHEMA_VERSION}; {rerun}")
    if not schema.equals(TRAJECTORY_SCHEMA, check_metadata=False):
        want = {f.name: f.type for f in TRAJECTORY_SCHEMA}
        got = {f.name: f.type for f in schema}
        diff = sorted(n for n in want.keys() | got.keys() if want.get(n) != got.get(n))
        raise ArtifactError(f"{path}: columns {diff} differ from trajectory schema v{SCHEMA_VERSION}; {rerun}")


def _keep_indices(episode_ids: list[str], infra_errors: list[str | None]) -> list[int]:
    """Row indices that survive dedup: first clean record per episode, else its first record."""
    chosen: dict[str, int] = {}
    for i, (eid, infra) in enumerate(zip(episode_ids, infra_errors)):
        prev = chosen.get(eid)
        if prev is None or (infra_errors[prev] is not None and infra is None):
            chosen[eid] = i
    return sorted(chosen.values())


def read_trajectory_table(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None,
                          columns: Sequence[str] | None = None) -> pa.Table:
    """All stored episodes as one deduplicated table (``columns`` picks a subset; the dedup keys are always read)."""
    fs, base = trajectories_dir(run_dir, fs)
    want = list(columns) if columns is not None else None
    read_cols = None if want is None else list(dict.fromkeys([*want, "episode_id", "infra_error"]))
    tables = [_read_shard(fs, p, read_cols) for p in _list_shards(fs, base)]
    if not tables:
        empty = TRAJECTORY_SCHEMA.empty_table()
        return empty if want is None else empty.select(want)
    table = pa.concat_tables(tables)
    keep = _keep_indices(table.column("episode_id").to_pylist(), table.column("infra_error").to_pylist())
    if len(keep) < table.num_rows:
        log.info("trajectory store %s: dropped %d duplicate rows", run_dir, table.num_rows - len(keep))
        table = table.take(pa.array(keep, type=pa.int64()))
    return table if want is None else table.select(want)


def read_trajectories(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None) -> list[TrajectoryRecord]:
    """Every stored episode once, in store order (see the module docstring for which duplicate wins)."""
    return table_to_records(read_trajectory_table(run_dir, fs))


def stored_episode_ids(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None, *,
                       include_infra_errors: bool = False) -> set[str]:
    """Episode ids already in the store, for resume; reads only the ``episode_id`` and ``infra_error`` columns.

    Episodes that ended in an infra error are left out by default, so that resume runs them again.
    """
    fs, base = trajectories_dir(run_dir, fs)
    done: set[str] = set()
    for path in _list_shards(fs, base):
        table = _read_shard(fs, path, ["episode_id", "infra_error"])
        for eid, infra in zip(table.column("episode_id").to_pylist(), table.column("infra_error").to_pylist()):
            if include_infra_errors or infra is None:
                done.add(eid)
    return done
