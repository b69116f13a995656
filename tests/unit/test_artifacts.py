"""Unit tests for engine.artifacts: resolve, atomic writes, JSON, manifests, resume checks, config.yaml."""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs
import pytest

from engine import artifacts
from engine.artifacts import (
    atomic_write_bytes,
    begin_stage,
    check_resume,
    describe_contents,
    read_json,
    read_manifest,
    resolve,
    write_config,
    write_json,
    write_manifest,
)
from engine.config import RunConfig
from engine.errors import ArtifactError
from engine.records import MANIFEST_SCHEMA_VERSION as SCHEMA_VERSION, Manifest


def _manifest(config_hash: str = "abc123", **kw) -> Manifest:
    return Manifest(stage="rollouts", run_id="r1", config_hash=config_hash, counts={"episodes": 4},
                    rejects={"timeout": 1}, wall_time_s=12.5, cost_usd=0.25, created_at=1700000000.0, **kw)


def test_resolve_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve("runs/r1")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "runs" / "r1")
    assert resolve(tmp_path / "x")[1] == str(tmp_path / "x")
    assert resolve(f"file://{tmp_path}/y")[1] == f"{tmp_path}/y"
    local = pafs.LocalFileSystem()
    assert resolve("rel", local) == (local, str(tmp_path / "rel"))


def test_resolve_with_explicit_filesystem_strips_the_scheme():
    mem = pafs.SubTreeFileSystem("/tmp", pafs.LocalFileSystem())
    assert resolve("s3://bucket/runs/r1/", mem) == (mem, "bucket/runs/r1")
    assert resolve("bucket/runs/r1", mem) == (mem, "bucket/runs/r1")


def test_resolve_rejects_unknown_scheme():
    with pytest.raises(ArtifactError, match=r"^nope://x/y: not a path or a filesystem URI pyarrow understands"):
        resolve("nope://x/y")


def test_atomic_write_creates_parents_overwrites_and_leaves_no_tmp(tmp_path):
    fs, base = resolve(tmp_path)
    path = f"{base}/a/b/data.bin"
    atomic_write_bytes(fs, path, b"first")
    atomic_write_bytes(fs, path, b"second")
    assert (tmp_path / "a" / "b" / "data.bin").read_bytes() == b"second"
    assert os.listdir(tmp_path / "a" / "b") == ["data.bin"]


def test_atomic_write_failure_keeps_old_content_and_removes_tmp(tmp_path):
    fs, base = resolve(tmp_path)
    path = f"{base}/data.bin"
    atomic_write_bytes(fs, path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(fs, path, object())  # type: ignore[arg-type]  # fails after the tmp file is opened
    assert (tmp_path / "data.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_json_round_trip_and_errors(tmp_path):
    fs, base = resolve(tmp_path)
    obj = {"name": "héllo ☃", "n": 3, "x": 0.5, "none": None, "list": [1, "two"]}
    write_json(fs, f"{base}/o.json", obj)
    assert read_json(fs, f"{base}/o.json") == obj
    assert "héllo ☃" in (tmp_path / "o.json").read_text(encoding="utf-8")
    with pytest.raises(ArtifactError, match=rf"^{base}/missing.json: missing; rerun the stage that writes it$"):
        read_json(fs, f"{base}/missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=rf"^{base}/bad.json: not valid JSON"):
        read_json(fs, f"{base}/bad.json")


def test_manifest_round_trip_and_absence(tmp_path):
    stage = tmp_path / "rollouts"
    assert read_manifest(stage) is None
    manifest = _manifest()
    path = write_manifest(stage, manifest)
    assert path == str(stage / "manifest.json")
    assert read_manifest(stage) == manifest


def test_manifest_schema_mismatch_names_file_versions_and_command(tmp_path):
    stage = tmp_path / "rollouts"
    stage.mkdir()
    data = _manifest().model_dump(mode="json") | {"schema_version": SCHEMA_VERSION + 1}
    (stage / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError) as info:
        read_manifest(stage)
    assert str(info.value) == (f"{stage}/manifest.json: schema v{SCHEMA_VERSION + 1}, expected v{SCHEMA_VERSION}; "
                               "rerun `synthscale episode --start-over` or use a new run dir")


def test_manifest_with_bad_field_is_an_artifact_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "stage": "curate"}))
    with pytest.raises(ArtifactError, match=r"manifest.json: not a valid manifest \(field 'run_id': Field required\)"):
        read_manifest(tmp_path)


def test_check_resume_refuses_another_config_hash_from_manifest(tmp_path):
    stage = tmp_path / "RUN" / "rollouts"
    write_manifest(stage, _manifest("aaaa"))
    with pytest.raises(ArtifactError) as info:
        check_resume(str(stage), "bbbb")
    assert str(info.value) == (f"{stage}: written under config hash aaaa, this config is bbbb; put those settings "
                               "back, use a new run dir, or pass --start-over to delete what the stage wrote")


def test_check_resume_accepts_same_hash_and_returns_manifest(tmp_path):
    stage = tmp_path / "rollouts"
    manifest = _manifest("aaaa")
    write_manifest(stage, manifest)
    assert check_resume(stage, "aaaa") == manifest
    assert check_resume(tmp_path / "never-written", "aaaa") is None


def test_partial_directory_is_protected_by_stage_marker(tmp_path):
    stage = tmp_path / "rollouts"
    assert begin_stage(stage, "rollouts", "aaaa") is None
    marker = json.loads((stage / "stage.json").read_text())
    assert {k: marker[k] for k in ("schema_version", "stage", "config_hash")} == {
        "schema_version": SCHEMA_VERSION, "stage": "rollouts", "config_hash": "aaaa"}
    assert begin_stage(stage, "rollouts", "aaaa") is None  # same config resumes
    with pytest.raises(ArtifactError, match=r"written under config hash aaaa, this config is bbbb"):
        begin_stage(stage, "rollouts", "bbbb")


def test_a_refusal_names_the_settings_that_changed(tmp_path):
    stage = tmp_path / "rollouts"
    begin_stage(stage, "rollouts", "aaaa", inputs={"agent": {"max_steps": 6, "window_lines": 100}, "seed": 0})
    with pytest.raises(ArtifactError) as info:
        begin_stage(stage, "rollouts", "bbbb", inputs={"agent": {"max_steps": 50, "window_lines": 100}, "seed": 0})
    assert "changed: agent.max_steps: 6 → 50;" in str(info.value)


def test_start_over_says_what_it_deletes_then_wipes_the_directory(tmp_path, caplog):
    stage = tmp_path / "rollouts"
    write_manifest(stage, _manifest("aaaa"))
    (stage / "trajectories").mkdir()
    (stage / "trajectories" / "part-1.parquet").write_bytes(b"x")
    assert describe_contents(stage) == f"2 files (0.0 MB) under {stage}, 1 trajectory shards, its manifest"
    assert describe_contents(tmp_path / "nothing") is None
    with caplog.at_level("WARNING"):
        assert begin_stage(stage, "rollouts", "bbbb", start_over=True) is None
    assert "1 trajectory shards" in caplog.text
    assert sorted(os.listdir(stage)) == ["stage.json"]
    assert json.loads((stage / "stage.json").read_text())["config_hash"] == "bbbb"


def test_write_config_round_trips(tmp_path):
    config = RunConfig(run_id="r7", run_dir=str(tmp_path))
    path = write_config(tmp_path / "synth", config)
    assert path == str(tmp_path / "synth" / "config.yaml")
    assert RunConfig.from_yaml(path) == config


def test_object_store_detection():
    assert artifacts.is_object_store(pafs.LocalFileSystem()) is False
    s3 = pafs.S3FileSystem(endpoint_override="127.0.0.1:1", scheme="http", region="us-east-1")
    assert artifacts.is_object_store(s3) is True
    assert artifacts.is_object_store(pafs.SubTreeFileSystem("bucket", s3)) is True
