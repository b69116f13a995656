"""The trajectory store, manifests and MLGym export against S3, through a local moto server on loopback."""

from __future__ import annotations

import json

import boto3
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

from engine.artifacts import begin_stage, check_resume, read_json, read_manifest, resolve, write_manifest
from engine.errors import ArtifactError
from engine.records import Manifest, ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.mlgym_export import export_mlgym
from engine.trajectories.store import TrajectoryWriter, read_trajectories, shard_paths, stored_episode_ids

BUCKET = "synthscale-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, s3_endpoint):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3_endpoint


@pytest.fixture
def s3fs(s3_endpoint) -> pafs.S3FileSystem:
    host_port = s3_endpoint.removeprefix("http://")
    return pafs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=host_port,
                             scheme="http", region="us-east-1")


def episode(episode_id: str, infra_error: str | None = None) -> TrajectoryRecord:
    step = StepRecord(step=0, response="DISCUSSION\nGo ✓\n```\nsubmit\n```", thought="Go ✓", action="submit",
                      observation="", working_dir="/home/agent/workspace", execution_time_s=1.5)
    score = ScoreRecord(step=0, kind="submit", validation={"accuracy": 0.7}, test={"accuracy": 0.65},
                        metric="accuracy", direction="max")
    return TrajectoryRecord(
        run_id="s3run", task_id="irisSpecies", task_hash="th", episode_id=episode_id, seed=1, model="Qwen/Qwen3-4B",
        policy="agent", sampling={"temperature": 1.0, "max_tokens": 512},
        messages=[{"role": "system", "content": "sys"}, {"role": "assistant", "content": step.response}],
        steps=[step], scores=[score], baseline={"accuracy": 0.5}, metric="accuracy", exit_status="submitted",
        started_at=5.0, infra_error=infra_error,
    )


def test_store_round_trip_through_env_endpoint(aws_env, s3fs):
    run_dir = f"s3://{BUCKET}/runs/env"
    fs, path = resolve(run_dir)
    assert fs.type_name == "s3" and path == f"{BUCKET}/runs/env"
    writer = TrajectoryWriter(run_dir)
    first = writer.write([episode("a"), episode("b", infra_error="sandbox died")])
    second = writer.write([episode("a"), episode("b"), episode("c")])  # a duplicate shard, and b's retry
    assert shard_paths(run_dir) == [first, second]
    assert first.startswith(f"{BUCKET}/runs/env/rollouts/trajectories/part-")
    records = read_trajectories(run_dir)
    assert [r.episode_id for r in records] == ["a", "b", "c"]
    assert records[0] == episode("a") and records[1] == episode("b")
    assert stored_episode_ids(run_dir) == {"a", "b", "c"}
    # the objects are really in the bucket (seen through boto3, not pyarrow)
    client = boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="runs/env/")["Contents"])
    assert [k for k in keys if k.endswith(".parquet")] == [first.split("/", 1)[1], second.split("/", 1)[1]]
    assert not [k for k in keys if ".tmp-" in k]


def test_store_with_explicit_filesystem(s3fs):
    run_dir = f"s3://{BUCKET}/runs/explicit"
    TrajectoryWriter(run_dir, fs=s3fs).write([episode("x", infra_error="node lost")])
    assert stored_episode_ids(run_dir, fs=s3fs) == set()
    assert stored_episode_ids(f"{BUCKET}/runs/explicit", fs=s3fs, include_infra_errors=True) == {"x"}
    assert read_trajectories(run_dir, fs=s3fs) == [episode("x", infra_error="node lost")]


def test_manifest_and_resume_on_s3(s3fs):
    stage = f"s3://{BUCKET}/runs/manifest/rollouts"
    assert read_manifest(stage, filesystem=s3fs) is None
    assert begin_stage(stage, "rollouts", "hash-1", filesystem=s3fs) is None
    with pytest.raises(ArtifactError, match=rf"^{stage}: written under config hash hash-1, this config is hash-2"):
        check_resume(stage, "hash-2", filesystem=s3fs)
    manifest = Manifest(stage="rollouts", run_id="s3run", config_hash="hash-1", counts={"episodes": 3})
    write_manifest(stage, manifest, filesystem=s3fs)
    assert read_manifest(stage, filesystem=s3fs) == manifest
    assert check_resume(stage, "hash-1", filesystem=s3fs) == manifest
    assert begin_stage(stage, "rollouts", "hash-2", start_over=True, filesystem=s3fs) is None
    assert read_manifest(stage, filesystem=s3fs) is None


def test_mlgym_export_to_s3(s3fs):
    out = f"s3://{BUCKET}/runs/export/rollouts"
    paths = export_mlgym([episode("a"), episode("z", infra_error="lost")], out, filesystem=s3fs)
    folder = (f"{BUCKET}/runs/export/rollouts/traj/Qwen-Qwen3-4B__irisSpecies__default__t-1.00__p-1.00__c-4.00__"
              "install-0__parallel_agents_run_0")
    assert paths == [f"{folder}/irisSpecies.traj"]
    doc = read_json(s3fs, paths[0])
    assert doc["info"]["score"] == [{"accuracy": 0.7}]
    assert read_json(s3fs, f"{folder}/results.json") == {"agent": [{"accuracy": 0.7}], "baseline": {"accuracy": 0.5}}
    with s3fs.open_input_stream(paths[0]) as f:
        assert "Go ✓" in json.loads(f.read().decode("utf-8"))["trajectory"][0]["thought"]
