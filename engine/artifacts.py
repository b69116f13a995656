"""Artifact I/O over pyarrow.fs: reads and writes JSON, config.yaml, stage.json and manifest.json in a stage dir.

A run directory is a local path or any URI pyarrow.fs understands (``s3://bucket/prefix``, ``gs://…``).
Every function takes the location as given by the user plus an optional ``filesystem``; when a filesystem
is passed, the location is a path inside it (a URI's scheme is stripped).

Stage protocol (docs/design.md, "Run directory"):

1. ``begin_stage(stage_dir, stage, config_hash, start_over)`` refuses a directory written under another
   config hash (from its ``manifest.json`` or, for a partial directory, its ``stage.json``), wipes it when
   told to start over, and writes ``stage.json`` so that a partial directory is protected too;
2. the stage writes its outputs (each write atomic) and ``config.yaml`` (``write_config``);
3. ``write_manifest`` last; a directory without a manifest is incomplete.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import ValidationError

from engine.errors import ArtifactError
from engine.records import MANIFEST_SCHEMA_VERSION, Manifest

if TYPE_CHECKING:
    from engine.config import RunConfig

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
STAGE_MARKER_NAME = "stage.json"
CONFIG_NAME = "config.yaml"

# The command that rewrites each stage's directory; named in schema-mismatch errors.
RERUN_COMMANDS: dict[str, str] = {
    "synth": "synthscale synth",
    "rollouts": "synthscale episode",
    "curate": "synthscale curate",
    "train": "synthscale train",
    "eval": "synthscale eval",
}

# Filesystems where a rename is a copy plus a delete, but a single put is atomic per object.
_OBJECT_STORES = {"s3", "gcs"}


def resolve(uri_or_path: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a local path or a pyarrow.fs URI.

    ``s3://`` URIs honour ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (MinIO, moto, Ceph) with the
    region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (default us-east-1); credentials come from the
    usual AWS environment. With ``filesystem`` given, the scheme is stripped and the rest is its path.

    >>> resolve("/tmp/run")[1]
    '/tmp/run'
    """
    text = os.fspath(uri_or_path)
    parsed = urlparse(text)
    is_uri = "://" in text and len(parsed.scheme) > 1  # a one-letter scheme is a Windows drive
    if filesystem is not None:
        if not is_uri and isinstance(filesystem, pafs.LocalFileSystem):
            return filesystem, os.path.abspath(os.path.expanduser(text))
        path = (parsed.netloc + parsed.path) if is_uri else text
        return filesystem, path.rstrip("/") or "/"
    if not is_uri or parsed.scheme == "file":
        local = parsed.path if is_uri else text
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if parsed.scheme == "s3" and endpoint and not parsed.query:
        return s3_filesystem(endpoint), (parsed.netloc + parsed.path).rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise ArtifactError(f"{text}: not a path or a filesystem URI pyarrow understands ({e}); "
                            "use a local path or e.g. s3://bucket/prefix") from None
    return fs, path.rstrip("/")


def s3_filesystem(endpoint_url: str, region: str | None = None) -> pafs.S3FileSystem:
    """An S3 filesystem at a custom endpoint such as ``http://127.0.0.1:9000`` (path-style addressing)."""
    ep = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return pafs.S3FileSystem(endpoint_override=ep.netloc + ep.path.rstrip("/"), scheme=ep.scheme, region=region)


def join(base: str, *parts: str) -> str:
    """Join paths inside a pyarrow filesystem (always '/')."""
    return posixpath.join(base, *parts)


def run_path(run_dir: str | os.PathLike, *parts: str) -> str:
    """A path under a run directory, given as the user gave it (local path or URI; the scheme is kept).

    >>> run_path("s3://bucket/runs/r1/", "rollouts", "manifest.json")
    's3://bucket/runs/r1/rollouts/manifest.json'
    >>> run_path("runs/r1", "eval")
    'runs/r1/eval'
    """
    root = os.fspath(run_dir).rstrip("/") or "/"
    return "/".join([root, *(p.strip("/") for p in parts)])


def run_id_of(run_dir: str | os.PathLike) -> str:
    """The default run id of a run directory: its last path component.

    >>> run_id_of("s3://bucket/runs/r7/")
    'r7'
    """
    return os.fspath(run_dir).rstrip("/").rsplit("/", 1)[-1] or "run"


def is_object_store(fs: pafs.FileSystem) -> bool:
    while isinstance(fs, pafs.SubTreeFileSystem):
        fs = fs.base_fs
    return fs.type_name in _OBJECT_STORES


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def atomic_write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file, or the whole new one, never a part.

    Local and other rename-capable filesystems: write ``<path>.tmp-<uuid>`` then move it over ``path``
    (a POSIX rename). Object stores (S3, GCS): a rename is a copy plus a delete, but an object becomes
    visible only when its upload completes, so a plain put is already atomic per object and is used.
    """
    if is_object_store(fs):
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    fs.create_dir(posixpath.dirname(path) or "/", recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        if exists(fs, tmp):
            fs.delete_file(tmp)
        raise


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """Read a whole file; a missing file is an ArtifactError naming it."""
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; rerun the stage that writes it") from None


def write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    """Write ``obj`` as pretty UTF-8 JSON, atomically."""
    data = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    atomic_write_bytes(fs, path, data.encode("utf-8"))


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    """Read a JSON file; missing or malformed files are ArtifactErrors naming the file."""
    raw = read_bytes(fs, path)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e}); delete it and rerun the stage that writes it") from None


def write_config(stage_dir: str | os.PathLike, config: RunConfig, *, filesystem: pafs.FileSystem | None = None) -> str:
    """Write the resolved run config (a ``RunConfig``) as ``<stage_dir>/config.yaml``; return its path."""
    fs, base = resolve(stage_dir, filesystem)
    path = join(base, CONFIG_NAME)
    atomic_write_bytes(fs, path, config.to_yaml().encode("utf-8"))
    return path


def write_manifest(stage_dir: str | os.PathLike, manifest: Manifest, *,
                   filesystem: pafs.FileSystem | None = None) -> str:
    """Write ``<stage_dir>/manifest.json``; call it last, after every output of the stage is written."""
    fs, base = resolve(stage_dir, filesystem)
    path = join(base, MANIFEST_NAME)
    write_json(fs, path, manifest.model_dump(mode="json"))
    log.info("stage %s of run %s: manifest written to %s", manifest.stage, manifest.run_id, path)
    return path


def read_manifest(stage_dir: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> Manifest | None:
    """The stage's manifest, or None when the directory has none (incomplete or never run)."""
    fs, base = resolve(stage_dir, filesystem)
    path = join(base, MANIFEST_NAME)
    if not exists(fs, path):
        return None
    data = read_json(fs, path)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(data).__name__}; rerun the stage")
    _check_schema_version(path, data)
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise ArtifactError(f"{path}: not a valid manifest ({_first_error(e)}); rerun the stage") from None


def _check_schema_version(path: str, data: dict) -> None:
    found = data.get("schema_version")
    if found != MANIFEST_SCHEMA_VERSION:
        stage = str(data.get("stage") or posixpath.basename(posixpath.dirname(path)))
        command = RERUN_COMMANDS.get(stage, f"synthscale {stage}")
        raise ArtifactError(f"{path}: schema v{found}, expected v{MANIFEST_SCHEMA_VERSION}; "
                            f"rerun `{command} --start-over` or use a new run dir")


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"field '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}"


def check_resume(stage_dir: str | os.PathLike, config_hash: str, start_over: bool = False, *,
                 inputs: dict | None = None, filesystem: pafs.FileSystem | None = None) -> Manifest | None:
    """Refuse to resume into a stage dir written under another config hash; return its manifest if complete.

    The hash is taken from ``manifest.json`` (complete dirs) and ``stage.json`` (written at stage start,
    so partial dirs are protected too); when ``stage.json`` kept the settings it was written under
    (``inputs``), the refusal names each one that differs. ``start_over`` deletes everything in the
    directory instead of refusing (saying first, in the log, what it deletes: see ``describe_contents``)
    and returns None.
    """
    fs, base = resolve(stage_dir, filesystem)
    if start_over:
        if exists(fs, base):
            what = describe_contents(base, filesystem=fs)
            if what is not None:
                log.warning("%s: --start-over: deleting %s", os.fspath(stage_dir), what)
            fs.delete_dir_contents(base, missing_dir_ok=True)
        return None
    manifest = read_manifest(base, filesystem=fs)
    written = manifest.config_hash if manifest is not None else None
    marker_path = join(base, STAGE_MARKER_NAME)
    marker: dict = {}
    if exists(fs, marker_path):
        marker = read_json(fs, marker_path)
        if not isinstance(marker, dict) or "config_hash" not in marker:
            raise ArtifactError(f"{marker_path}: no config_hash in it; delete the directory or pass --start-over")
        _check_schema_version(marker_path, marker)
        written = written or marker["config_hash"]
    if written is not None and written != config_hash:
        changed = diff_settings(marker.get("inputs"), inputs) if marker.get("config_hash") == written else []
        detail = ("; changed: " + ", ".join(changed)) if changed else ""
        raise ArtifactError(f"{os.fspath(stage_dir)}: written under config hash {written}, this config is "
                            f"{config_hash}{detail}; put those settings back, use a new run dir, or pass "
                            "--start-over to delete what the stage wrote")
    return manifest


def begin_stage(stage_dir: str | os.PathLike, stage: str, config_hash: str, start_over: bool = False, *,
                inputs: dict | None = None, filesystem: pafs.FileSystem | None = None) -> Manifest | None:
    """Check resume (see ``check_resume``), then write ``stage.json`` (with the settings hashed, ``inputs``, so a
    later refusal can name what changed); return the manifest of a complete dir.

    A caller that gets a manifest back may skip the stage: its outputs exist under this config. A directory the
    stage cannot write (read-only, no permission) is an ArtifactError naming it and the refusal, before anything
    is deleted or written.
    """
    fs, base = resolve(stage_dir, filesystem)
    _check_writable(fs, base, stage_dir)
    manifest = check_resume(stage_dir, config_hash, start_over, inputs=inputs, filesystem=filesystem)
    marker = {"schema_version": MANIFEST_SCHEMA_VERSION, "stage": stage, "config_hash": config_hash,
              "started_at": time.time(), "inputs": inputs}
    try:
        write_json(fs, join(base, STAGE_MARKER_NAME), marker)
    except PermissionError as e:  # an object store that refuses the write
        raise _not_writable(stage_dir, e) from None
    return manifest


def _check_writable(fs: pafs.FileSystem, base: str, stage_dir: str | os.PathLike) -> None:
    """Create the stage directory and a probe file in it (then remove the probe): the first writes of a stage, so
    that one which cannot write says so at its start. Object stores are probed by the stage.json write itself."""
    if is_object_store(fs):
        return
    probe = join(base, f".write-probe-{uuid.uuid4().hex}")
    try:
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(probe):
            pass
        fs.delete_file(probe)
    except OSError as e:
        raise _not_writable(stage_dir, e) from None


def _not_writable(stage_dir: str | os.PathLike, e: OSError) -> ArtifactError:
    reason = os.strerror(e.errno) if e.errno else (e.strerror or str(e))  # "Permission denied", "Read-only file system"
    return ArtifactError(f"{os.fspath(stage_dir)}: the stage cannot write here ({reason}); make the run directory "
                         "writable (chmod u+w, or mount it read-write) or pass another run directory")


def diff_settings(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two JSON trees, with both values.

    >>> diff_settings({"agent": {"max_steps": 6}, "seed": 0}, {"agent": {"max_steps": 50}, "seed": 0})
    ['agent.max_steps: 6 → 50']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            out += diff_settings(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [f"{prefix or '(all)'}: {json.dumps(old)} → {json.dumps(new)}"]


def describe_contents(stage_dir: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> str | None:
    """What deleting the stage directory would delete, in words (None when it holds nothing).

    Trajectory shards are counted apart, because they are what a rollout stage spent its budget on.
    """
    fs, base = resolve(stage_dir, filesystem)
    if not exists(fs, base):
        return None
    infos = [i for i in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
             if i.type == pafs.FileType.File]
    if not infos:
        return None
    shards = [i for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet")]
    size_mb = sum(i.size or 0 for i in infos) / 1e6
    parts = [f"{len(infos)} files ({size_mb:,.1f} MB) under {base}"]
    if shards:
        parts.append(f"{len(shards)} trajectory shards")
    if any(i.base_name == MANIFEST_NAME for i in infos):
        parts.append("its manifest")
    return ", ".join(parts)
