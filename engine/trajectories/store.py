"""The trajectory store: reads and writes ``<run>/rollouts/trajectories/part-*.parquet``, one row per episode.

``TRAJECTORY_SCHEMA`` is derived from ``TrajectoryRecord`` (``engine.trajectories.arrow_schema``): one column
per field, nested records as structs, so a field added to a record gets its column. Typed columns hold
everything with a fixed shape (scalars, ``messages``, ``steps``, ``scores``, ``baseline``); ``sampling``
(values of mixed types: float, int, str, None) and ``history`` (the history-processor settings, a small model
that may gain fields) are declared JSON strings, which keep int/float/None exactly and let old shards read
under new fields. A write refuses a row with a key that has no column (``scores[0].foo``) instead of
dropping it, so ``table_to_records(records_to_table(rs)) == rs`` for every record.

The shard footer carries the schema version (``TRAJECTORY_SCHEMA_VERSION``, 2); every read checks it and the
columns. v1 shards (no ``reasoning_content`` on messages, no ``artefact`` on scores) still read, upgraded on
read into v2 data: each step's ``reasoning`` is copied onto its assistant message (see ``upgrade_table``).

Two writers add shards, each atomically: the rollout stage stores each episode as it ends under its episode id
(``part-ep-<episode_id>.parquet``, ``engine.trajectories.episode_shards``: a second write of an episode replaces
it, so the stage never stores one twice); ``TrajectoryWriter`` adds ``part-<time_ns>-<uuid>.parquet`` files of
many records (imports, tests) and never rewrites one. Reads list every ``part-*.parquet`` and deduplicate by
``episode_id``: the first stored record wins (shards in name order), except that a record without
``infra_error`` beats one with it, so a retried episode replaces its infra failure.

A shard that cannot be read at all (truncated, corrupted: ``CorruptArtifactError``) does not stop the readers
that status, ``traj show`` and resume use (``read_trajectory_table``, ``read_trajectories``,
``stored_episode_ids``, ``engine.trajectories.episode_shards.stored_outcomes``): each warns, naming the file,
moves it to ``<run>/rollouts/trajectories/corrupt/`` (a rename; nothing is deleted; readers do not list that
folder) and goes on without it, so its episodes are simply missing and the rollout stage plays them again.
``read_stores`` does so when asked (``set_aside=True``); by default it raises. A shard of another schema
version or layout is not corrupt: it is refused (ArtifactError), never moved.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from engine.artifacts import RERUN_COMMANDS, atomic_write_bytes, exists, join, resolve
from engine.errors import ArtifactError, CorruptArtifactError
from engine.records import TRAJECTORY_SCHEMA_VERSION, TrajectoryRecord
from engine.trajectories.arrow_schema import plain_row, record_schema, unknown_keys

log = logging.getLogger(__name__)

TRAJECTORIES_DIR = "rollouts/trajectories"
CORRUPT_DIR = "corrupt"
"""Where unreadable shards are set aside, inside the store's folder; readers do not list it."""
SCHEMA_NAME = "synthscale.trajectories"
_META_NAME = b"synthscale.schema"
_META_VERSION = b"synthscale.schema_version"

JSON_COLUMNS = ("sampling", "history")
"""Columns stored as JSON strings: their values are of mixed types, or a model that may gain fields."""

TRAJECTORY_SCHEMA = record_schema(
    TrajectoryRecord, overrides={name: pa.string() for name in JSON_COLUMNS},
    metadata={_META_NAME: SCHEMA_NAME.encode(), _META_VERSION: str(TRAJECTORY_SCHEMA_VERSION).encode()},
)

MESSAGE_TYPE: pa.StructType = TRAJECTORY_SCHEMA.field("messages").type.value_type
STEP_TYPE: pa.StructType = TRAJECTORY_SCHEMA.field("steps").type.value_type
SCORE_TYPE: pa.StructType = TRAJECTORY_SCHEMA.field("scores").type.value_type

_METRICS = pa.map_(pa.string(), pa.float64())
_S, _I, _F = pa.string(), pa.int64(), pa.float64()
TRAJECTORY_SCHEMA_V1 = pa.schema(
    [("schema_version", _I), ("run_id", _S), ("task_id", _S), ("task_hash", _S), ("episode_id", _S), ("seed", _I),
     ("model", _S), ("policy", _S), ("sampling", _S), ("history", _S),
     ("messages", pa.list_(pa.struct([("role", _S), ("content", _S)]))),
     ("steps", pa.list_(pa.struct([("step", _I), ("response", _S), ("thought", _S), ("action", _S),
                                   ("observation", _S), ("reasoning", _S), ("open_file", _S), ("working_dir", _S),
                                   ("execution_time_s", _F), ("model_latency_s", _F), ("prompt_tokens", _I),
                                   ("completion_tokens", _I), ("cost_usd", _F), ("format_errors", pa.list_(_S))]))),
     ("scores", pa.list_(pa.struct([("step", _I), ("kind", _S), ("validation", _METRICS), ("test", _METRICS),
                                    ("metric", _S), ("direction", _S), ("grading", _S), ("error", _S)]))),
     ("baseline", _METRICS), ("metric", _S), ("direction", _S), ("exit_status", _S), ("submission", _S),
     ("tokens_sent", _I), ("tokens_received", _I), ("api_calls", _I), ("cost_usd", _F), ("wall_time_s", _F),
     ("started_at", _F), ("infra_error", _S)],
    metadata={_META_NAME: SCHEMA_NAME.encode(), _META_VERSION: b"1"},
)
"""The layout v1 shards were written with, frozen (v2 added ``messages[].reasoning_content``, ``scores[].artefact``)."""

_SCHEMAS = {1: TRAJECTORY_SCHEMA_V1, TRAJECTORY_SCHEMA_VERSION: TRAJECTORY_SCHEMA}
_PREFIX_MESSAGES = 2  # system prompt and task come before the first assistant turn (engine.agent.history)
_MAP_SCORE_FIELDS = ("validation", "test")


def records_to_table(records: Sequence[TrajectoryRecord]) -> pa.Table:
    """Rows of ``TRAJECTORY_SCHEMA``; checks every record on the way in.

    A key without a column anywhere in a row (say a message's ``name``) is an ArtifactError naming the
    episode and the key's path, never silently dropped.
    """
    return pa.Table.from_pylist([_record_to_row(r) for r in records], schema=TRAJECTORY_SCHEMA)


def _record_to_row(record: TrajectoryRecord) -> dict:
    if not isinstance(record, TrajectoryRecord):
        raise ArtifactError(f"expected a TrajectoryRecord, got {type(record).__name__}")
    where = f"episode {record.episode_id} (task {record.task_id})"
    if record.schema_version != TRAJECTORY_SCHEMA_VERSION:
        raise ArtifactError(f"{where}: record schema v{record.schema_version}, "
                            f"the store writes v{TRAJECTORY_SCHEMA_VERSION}")
    row = plain_row(record)  # not model_dump: it drops keys a TypedDict (a message) does not declare
    for name in JSON_COLUMNS:
        row[name] = json.dumps(row[name], ensure_ascii=False)
    stray = unknown_keys(row, TRAJECTORY_SCHEMA)
    if stray:
        raise ArtifactError(f"{where}: {', '.join(stray)} not in trajectory schema v{TRAJECTORY_SCHEMA_VERSION}; "
                            "remove the key, or add it as a field of its record in engine/records.py "
                            "(the store's columns follow the records)")
    return row


def table_to_records(table: pa.Table) -> list[TrajectoryRecord]:
    """Inverse of ``records_to_table``: ``table_to_records(records_to_table(rs)) == rs``.

    A table read straight from an older shard (its footer tag says so) is upgraded first (``upgrade_table``).
    """
    return [_row_to_record(row) for row in upgrade_table(table).to_pylist()]


def _row_to_record(row: dict) -> TrajectoryRecord:
    for name in JSON_COLUMNS:
        if name in row:
            try:
                row[name] = json.loads(row[name])
            except (TypeError, json.JSONDecodeError) as e:
                raise ArtifactError(f"episode {row.get('episode_id')}: column '{name}' is not a JSON object ({e})") from None
    if isinstance(row.get("history"), dict):  # stored before the note's wording was recorded: the old wording
        row["history"].setdefault("omitted_note", "synthscale-v1")
    if "baseline" in row:
        row["baseline"] = dict(row["baseline"])
    for score in row.get("scores") or []:
        for name in _MAP_SCORE_FIELDS:
            if score[name] is not None:
                score[name] = dict(score[name])
    for message in row.get("messages") or []:
        if message.get("reasoning_content") is None:  # a null struct field is an absent key
            message.pop("reasoning_content", None)
    try:
        return TrajectoryRecord.model_validate(row)
    except ValidationError as e:
        raise ArtifactError(f"episode {row.get('episode_id')}: stored row is not a valid TrajectoryRecord ({e})") from None


def upgrade_table(table: pa.Table) -> pa.Table:
    """Columns of an older shard version (the table's footer tag says which) as current-version data.

    Tables of this version, and tables without a tag, are returned as they are. v1 → v2: ``schema_version``
    becomes 2, ``scores[].artefact`` null (v1 did not store it), and each assistant message gets the
    ``reasoning`` of its step as ``reasoning_content`` (see ``reasoning_onto_messages``), so upgrading
    ``messages`` needs ``steps`` in the table too.
    """
    version = (table.schema.metadata or {}).get(_META_VERSION)
    if version is None or version == str(TRAJECTORY_SCHEMA_VERSION).encode():
        return table
    if version != b"1":
        raise ArtifactError(f"trajectory table of schema v{version.decode(errors='replace')}, this store reads "
                            f"v1 and v{TRAJECTORY_SCHEMA_VERSION}; use the synthscale that wrote it")
    names = table.column_names
    if "messages" in names and "steps" not in names:
        raise ArtifactError("a v1 trajectory table's 'messages' are upgraded from its 'steps'; read both columns")
    n = table.num_rows
    new: dict[str, pa.Array] = {}
    if "schema_version" in names:
        new["schema_version"] = pa.array([TRAJECTORY_SCHEMA_VERSION] * n, type=pa.int64())
    if "scores" in names:
        new["scores"] = pa.array(table.column("scores").to_pylist(), type=TRAJECTORY_SCHEMA.field("scores").type)
    if "messages" in names:
        ids = table.column("episode_id").to_pylist() if "episode_id" in names else [None] * n
        rows = zip(ids, table.column("messages").to_pylist(), table.column("steps").to_pylist())
        upgraded = [None if msgs is None else reasoning_onto_messages(msgs, steps or [], eid)
                    for eid, msgs, steps in rows]
        new["messages"] = pa.array(upgraded, type=TRAJECTORY_SCHEMA.field("messages").type)
    for name, column in new.items():
        table = table.set_column(names.index(name), TRAJECTORY_SCHEMA.field(name), column)
    return table.replace_schema_metadata(TRAJECTORY_SCHEMA.metadata)


def reasoning_onto_messages(messages: list[dict], steps: list[dict], episode_id: str | None = None) -> list[dict]:
    """v1 → v2 for one episode: copies of ``messages`` whose assistant turns carry their step's reasoning.

    The assistant messages after the system prompt and the task are, in order, the steps that produced an
    action (``engine.agent.episode._loop`` appends both together); only a last step that ended in format
    errors has none. Pairs whose text differs (a record not written by that loop) get nothing, with a warning.

    >>> msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...         {"role": "assistant", "content": "A"}, {"role": "user", "content": "o"}]
    >>> steps = [{"response": "A", "reasoning": "why", "action": "ls", "format_errors": []},
    ...          {"response": "?", "reasoning": None, "action": "", "format_errors": ["?", "?"]}]
    >>> reasoning_onto_messages(msgs, steps)[2]
    {'role': 'assistant', 'content': 'A', 'reasoning_content': 'why'}
    """
    out = [dict(m) for m in messages]
    turns = [i for i, m in enumerate(out) if i >= _PREFIX_MESSAGES and m.get("role") == "assistant"]
    trailing_failure = len(steps) == len(turns) + 1 and steps[-1].get("format_errors") and not steps[-1].get("action")
    paired = list(zip(turns, steps))
    if (len(steps) != len(turns) and not trailing_failure) or any(out[i]["content"] != s.get("response")
                                                                   for i, s in paired):
        log.warning("episode %s: %d assistant messages do not match its %d steps; its reasoning stays on the "
                    "steps only", episode_id, len(turns), len(steps))
        return out
    for i, step in paired:
        if step.get("reasoning"):
            out[i]["reasoning_content"] = step["reasoning"]
    return out


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


def shard_paths(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None) -> list[str]:
    """The store's shards in name (= write) order; temporary files are never listed."""
    return _list_shards(*trajectories_dir(run_dir, fs))


def _list_shards(fs: pafs.FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    names = [i.path for i in infos if i.type == pafs.FileType.File
             and i.base_name.startswith("part-") and i.base_name.endswith(".parquet")]
    return sorted(names, key=lambda p: p.rsplit("/", 1)[-1])


def read_shard(fs: pafs.FileSystem, path: str, columns: list[str] | None) -> pa.Table:
    """The shard's ``columns`` as current-version data (older shards are upgraded, see ``upgrade_table``)."""
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            version = check_shard_schema(path, pf.schema_arrow)
            # a v1 shard's messages are upgraded from its steps: read those too, and drop them after
            helper = ["steps"] if version == 1 and columns and "messages" in columns and "steps" not in columns else []
            table = pf.read(columns=None if columns is None else [*columns, *helper])
    except (pa.ArrowException, OSError) as e:  # truncated, corrupted, or not Parquet at all
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptArtifactError(path, f"not a readable trajectory shard ({e})",
                                   f"move it to {CORRUPT_DIR}/ beside it and re-run the rollout stage to play its "
                                   "episodes again") from None
    table = upgrade_table(table)
    return table.drop_columns(helper) if helper else table


def read_or_set_aside(fs: pafs.FileSystem, path: str, columns: list[str] | None) -> pa.Table | None:
    """``read_shard``, except that an unreadable shard is set aside (``set_aside``) with a warning, and None comes
    back, as it does for a shard gone since it was listed (another reader set it aside)."""
    try:
        return read_shard(fs, path, columns)
    except FileNotFoundError:
        return None
    except CorruptArtifactError as e:
        try:
            moved = set_aside(fs, path)
        except OSError as move_error:
            log.warning("%s: %s; it could not be set aside (%s): it is skipped for now; move it to %s/ beside it by "
                        "hand, then re-run the rollout stage to play its episodes again", path, e.reason, move_error,
                        CORRUPT_DIR)
            return None
        log.warning("%s: %s; moved to %s (nothing deleted) and skipped: its episodes are missing from the store; "
                    "re-run the rollout stage (`%s`, or `synthscale rollout`) to play them again, or import them "
                    "again if they were imported", path, e.reason, moved, RERUN_COMMANDS["rollouts"])
        return None


def set_aside(fs: pafs.FileSystem, path: str) -> str:
    """Move a shard into the ``corrupt/`` folder beside it (a rename where the filesystem has one; an object store
    copies, then removes the original); returns its new path. A name already taken there gets a numbered suffix,
    so nothing set aside earlier is replaced."""
    folder, name = posixpath.split(path)
    dest_dir = join(folder, CORRUPT_DIR)
    fs.create_dir(dest_dir, recursive=True)
    dest, n = join(dest_dir, name), 0
    while exists(fs, dest):
        n += 1
        dest = join(dest_dir, f"{name}.{n}")
    fs.move(path, dest)
    return dest


def set_aside_shards(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None) -> list[str]:
    """The paths of the shards set aside as unreadable (``<run>/rollouts/trajectories/corrupt/``), by name."""
    fs, base = trajectories_dir(run_dir, fs)
    infos = fs.get_file_info(pafs.FileSelector(join(base, CORRUPT_DIR), allow_not_found=True))
    return sorted((i.path for i in infos if i.type == pafs.FileType.File), key=lambda p: p.rsplit("/", 1)[-1])


def check_shard_schema(path: str, schema: pa.Schema) -> int:
    """The shard's schema version, after checking that ``schema`` is exactly that version's layout
    (``TRAJECTORY_SCHEMA``, or ``TRAJECTORY_SCHEMA_V1`` for shards read with an upgrade); else ArtifactError."""
    meta = schema.metadata or {}
    found = meta.get(_META_VERSION, b"?").decode(errors="replace")
    rerun = f"rerun `{RERUN_COMMANDS['rollouts']} --start-over` or use a new run dir"
    if meta.get(_META_NAME) != SCHEMA_NAME.encode():
        raise ArtifactError(f"{path}: not a synthscale trajectory shard (no '{SCHEMA_NAME}' schema tag); "
                            f"expected trajectory schema v{TRAJECTORY_SCHEMA_VERSION}; remove it from the store")
    version = int(found) if found.isdecimal() else None
    if version not in _SCHEMAS:
        raise ArtifactError(f"{path}: trajectory schema v{found}, expected v{TRAJECTORY_SCHEMA_VERSION} "
                            f"(v1 is upgraded on read); {rerun}")
    expected = _SCHEMAS[version]
    if not schema.equals(expected, check_metadata=False):
        want = {f.name: f.type for f in expected}
        got = {f.name: f.type for f in schema}
        diff = sorted(n for n in want.keys() | got.keys() if want.get(n) != got.get(n))
        raise ArtifactError(f"{path}: columns {diff} differ from trajectory schema v{version}; {rerun}")
    return version


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
    """All stored episodes as one deduplicated table (``columns`` picks a subset; the dedup keys are always read).
    Unreadable shards are set aside and skipped (see the module docstring)."""
    return read_stores([run_dir], columns, fs=fs, set_aside=True)


def read_stores(run_dirs: Sequence[str | os.PathLike], columns: Sequence[str] | None = None, *,
                fs: pafs.FileSystem | None = None, with_path: bool = False, set_aside: bool = False) -> pa.Table:
    """Several runs' stores as one table, deduplicated across them exactly as one store is (runs in the order
    given, each one's shards in name order). ``with_path`` adds a ``path`` column: the shard each row came from
    (a path inside its filesystem, as Ray Data's ``include_paths`` gives it). An unreadable shard is a
    CorruptArtifactError naming it, or, with ``set_aside``, moved to ``corrupt/`` and skipped with a warning."""
    want = list(columns) if columns is not None else None
    read_cols = None if want is None else list(dict.fromkeys([*want, "episode_id", "infra_error"]))
    tables = []
    for run_dir in run_dirs:
        run_fs, base = trajectories_dir(run_dir, fs)
        for p in _list_shards(run_fs, base):
            table = read_or_set_aside(run_fs, p, read_cols) if set_aside else read_shard(run_fs, p, read_cols)
            if table is None:
                continue
            tables.append(table.append_column("path", pa.array([p] * table.num_rows, pa.string())) if with_path
                          else table)
    if not tables:
        empty = TRAJECTORY_SCHEMA.empty_table()
        empty = empty if want is None else empty.select(want)
        return empty.append_column("path", pa.array([], pa.string())) if with_path else empty
    table = pa.concat_tables(tables)
    keep = _keep_indices(table.column("episode_id").to_pylist(), table.column("infra_error").to_pylist())
    if len(keep) < table.num_rows:
        log.info("trajectory stores %s: dropped %d duplicate rows", [os.fspath(r) for r in run_dirs],
                 table.num_rows - len(keep))
        table = table.take(pa.array(keep, type=pa.int64()))
    if want is None:
        return table
    return table.select([*want, "path"] if with_path else want)


def read_trajectories(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None) -> list[TrajectoryRecord]:
    """Every stored episode once, in store order (see the module docstring for which duplicate wins)."""
    return table_to_records(read_trajectory_table(run_dir, fs))


def stored_episode_ids(run_dir: str | os.PathLike, fs: pafs.FileSystem | None = None, *,
                       include_infra_errors: bool = False) -> set[str]:
    """Episode ids already in the store, for resume; reads only the ``episode_id`` and ``infra_error`` columns.

    Episodes that ended in an infra error are left out by default, so that resume runs them again; so are those of
    an unreadable shard, which is set aside (see the module docstring).
    """
    fs, base = trajectories_dir(run_dir, fs)
    done: set[str] = set()
    for path in _list_shards(fs, base):
        table = read_or_set_aside(fs, path, ["episode_id", "infra_error"])
        if table is None:
            continue
        for eid, infra in zip(table.column("episode_id").to_pylist(), table.column("infra_error").to_pylist()):
            if include_infra_errors or infra is None:
                done.add(eid)
    return done
