"""The rollout stage over Ray actors on a local Ray cluster with 4 logical GPUs: GPU pinning, exactly-once storage
under worker deaths (ray.kill mid-run, death after k stored episodes of a lease, death between the last
episode's write and the lease's acknowledgement, killed containers), resume, budget, cancel and the dry run's
projection."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import ray
import ray.cloudpickle
from moto.server import ThreadedMotoServer

from actors.rollout import RolloutWorker
from engine.errors import EngineError
from engine.rollout.control import request_cancel
from engine.runner import run_rollout_stage
from engine.trajectories.store import read_trajectories, shard_paths

sys.path.insert(0, str(Path(__file__).parent))
import rollout_helpers  # noqa: E402
from rollout_helpers import (  # noqa: E402
    QUICK, DieAfterWrite, PlaybookFactory, assert_exactly_once, ray_stage, rollout_config, task_refs, written_twice)

ray.cloudpickle.register_pickle_by_value(rollout_helpers)
pytestmark = pytest.mark.timeout(600)


BUCKET = "synthscale-rollouts"


RAY_RESOURCES = {"num_cpus": 4, "num_gpus": 4}


@pytest.fixture(scope="module")
def ray_node_env():
    """A loopback S3 (moto) whose credentials the local Ray's nodes carry in their environment, as a cluster's
    nodes would (never runtime_env)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


@pytest.fixture(autouse=True)
def _ray(local_ray):
    return local_ray


def _run(cfg, **kw):
    stage = ray_stage(cfg, **kw)
    return stage, stage.run()


def test_workers_own_distinct_gpus_unless_fractions_are_configured(tmp_path):
    cfg = rollout_config(tmp_path / "pin")
    shared = ray.put((cfg, task_refs(cfg), None, PlaybookFactory(QUICK), None))
    whole = [RolloutWorker.options(num_gpus=1, num_cpus=0).remote(shared, f"g{i}", 1, 1.0) for i in range(4)]
    ids = [tuple(info["gpu_ids"]) for info in ray.get([w.info.remote() for w in whole])]
    assert all(len(i) == 1 for i in ids) and len(set(ids)) == 4
    for w in whole:
        ray.kill(w)
    halves = [RolloutWorker.options(num_gpus=0.5, num_cpus=0).remote(shared, f"h{i}", 1, 0.5) for i in range(8)]
    ids = [tuple(info["gpu_ids"]) for info in ray.get([w.info.remote() for w in halves])]
    assert all(len(i) == 1 for i in ids)
    assert sorted(ids.count(i) for i in set(ids)) == [2, 2, 2, 2]  # each GPU shared by exactly two workers
    for w in halves:
        ray.kill(w)


def test_sandboxes_see_their_workers_gpu(tmp_path):
    cfg = rollout_config(tmp_path / "cvd", gpu_workers=4, cpu_workers=0, lease_size=1)
    _, manifest = _run(cfg, model_factory=PlaybookFactory(QUICK))
    assert manifest is not None and manifest.counts["episodes"] == 8
    seen = set()
    for rec in read_trajectories(cfg.run_dir):
        first = rec.steps[0].observation
        assert "CVD=" in first, first
        gpu = first.split("CVD=", 1)[1].split()[0]
        assert gpu in {"0", "1", "2", "3"}, first  # exactly one physical id, never "none" or a list
        seen.add(gpu)
        assert rec.exit_status == "submitted" and rec.succeeded, rec.exit_status
    assert len(seen) >= 2
    assert_exactly_once(cfg)
    assert (Path(cfg.run_dir) / "rollouts" / "manifest.json").exists()
    assert list((Path(cfg.run_dir) / "rollouts" / "traj").iterdir())  # MLGym export


def test_rollouts_stream_into_s3_exactly_once_with_a_death_between_write_and_ack(tmp_path):
    cfg = rollout_config(f"s3://{BUCKET}/runs/s3run", n=2, gpu_workers=2, cpu_workers=0)
    stage, manifest = _run(cfg, model_factory=PlaybookFactory(QUICK),
                           after_write=DieAfterWrite(str(tmp_path / "died"), after=2))
    assert manifest is not None and manifest.counts["episodes"] == 4
    assert stage.stats["episodes_replayed"] == 2  # both stored episodes acknowledged from the store
    assert_exactly_once(cfg)
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).list_objects_v2(
        Bucket=BUCKET, Prefix="runs/s3run/rollouts/")["Contents"]]
    assert "runs/s3run/rollouts/manifest.json" in keys and any("/traj/" in k for k in keys)


def test_killed_workers_lose_nothing_and_duplicate_nothing(tmp_path):
    cfg = rollout_config(tmp_path / "kill", n=6, gpu_workers=2, cpu_workers=0,
                         max_steps=6)
    stage = ray_stage(cfg, model_factory=PlaybookFactory(["sleep 1", *QUICK]))
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("m", stage.run()))
    thread.start()
    killed = 0
    deadline = time.time() + 300
    while killed < 2 and thread.is_alive() and time.time() < deadline:
        busy = [job.worker.worker_id for job in list(stage.inflight.values())]
        if len(shard_paths(cfg.run_dir)) > killed and busy:
            ray.kill(stage.pool.actors[busy[0]], no_restart=False)  # mid-lease: its lease must go out again
            killed += 1
        time.sleep(0.5)
    thread.join(timeout=400)
    assert killed == 2 and out["m"] is not None
    # a kill can land just after a lease's result was returned (nothing lost), but not both of them here
    assert stage.stats["leases_lost"] >= 1
    assert_exactly_once(cfg)


def test_a_worker_killed_after_k_episodes_of_a_lease_does_not_play_them_again(tmp_path):
    cfg = rollout_config(tmp_path / "k", tasks=["wine-classification"], n=3, gpu_workers=1, cpu_workers=0,
                         lease_size=3)
    log = str(tmp_path / "written.log")
    stage, manifest = _run(cfg, model_factory=PlaybookFactory(QUICK),
                           after_write=DieAfterWrite(str(tmp_path / "died"), after=2, log=log))
    assert (tmp_path / "died").exists()  # the worker died holding a lease with 2 of its 3 episodes stored
    assert manifest is not None and stage.stats["leases_lost"] == 1
    assert stage.stats["episodes_replayed"] == 2  # the next holder found them in the store
    assert not written_twice(log)  # and played only the third
    assert len(Path(log).read_text().split()) == 3
    assert_exactly_once(cfg)


def test_resume_skips_stored_episodes(tmp_path):
    cfg = rollout_config(tmp_path / "resume", n=2, gpu_workers=2, cpu_workers=0)
    _run(cfg, model_factory=PlaybookFactory(QUICK))
    before = shard_paths(cfg.run_dir)
    stage, manifest = _run(cfg, model_factory=PlaybookFactory(QUICK))
    assert shard_paths(cfg.run_dir) == before and stage.stats["leases"] == 0
    assert manifest.counts["episodes"] == 4


def test_budget_stops_cleanly_and_a_larger_budget_resumes(tmp_path):
    cfg = rollout_config(tmp_path / "budget", n=4, gpu_workers=1, cpu_workers=0, lease_size=1, budget_usd=0.05)
    factory = PlaybookFactory(QUICK, cost_per_call_usd=0.01)  # 3 calls an episode: the budget buys < 2 episodes
    stage, manifest = _run(cfg, model_factory=factory)
    assert manifest is None and stage.scheduler.stopping == "budget"
    stored = read_trajectories(cfg.run_dir)
    assert 1 <= len(stored) <= 2 and all(r.exit_status == "submitted" for r in stored)  # no budget-cut episode kept
    more = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"budget_usd": 10.0})})
    _, manifest = _run(more, model_factory=factory)
    assert manifest is not None
    assert_exactly_once(more)


def test_cancel_request_stops_the_stage(tmp_path):
    cfg = rollout_config(tmp_path / "cancel", n=6, gpu_workers=1, cpu_workers=0, lease_size=1)
    stage = ray_stage(cfg, model_factory=PlaybookFactory(QUICK))
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("m", stage.run()))
    thread.start()
    while thread.is_alive() and not shard_paths(cfg.run_dir):
        time.sleep(0.2)
    request_cancel(cfg.run_dir, "test")
    thread.join(timeout=300)
    assert out["m"] is None and stage.scheduler.stopping.startswith("cancel requested")
    assert len(read_trajectories(cfg.run_dir)) < 12
    assert not (Path(cfg.run_dir) / "rollouts" / "manifest.json").exists()


def test_dry_run_projects_cost_and_time(tmp_path):
    cfg = rollout_config(tmp_path / "dry", n=256, gpu_workers=2, cpu_workers=0, pilot_tasks=1, pilot_episodes=2)
    projection = run_rollout_stage(cfg, dry=True, model_factory=PlaybookFactory(QUICK, cost_per_call_usd=0.5))
    assert projection.pilot_episodes == 2 and projection.cost_per_episode_usd == pytest.approx(1.5)
    assert projection.projected_cost_usd == pytest.approx(1.5 * 2 * 256)
    assert projection.workers == 2 and projection.projected_hours > 0
    assert (tmp_path / "dry" / "pilot" / "projection.json").exists()
    assert not (tmp_path / "dry" / "rollouts").exists()  # the stage itself did not run


@pytest.mark.docker
def test_killed_containers_are_infra_errors_retried(tmp_path):
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.images.get("synthscale-task:latest")
    except Exception as e:
        pytest.skip(f"docker unavailable: {e}")
    # CPU workers: this Docker engine has no NVIDIA runtime, so GPU device requests cannot start here
    cfg = rollout_config(tmp_path / "dock", n=2, runtime="docker", gpu_workers=0, cpu_workers=2,
                         episodes_per_cpu_worker=1, lease_size=1)
    stage = ray_stage(cfg, model_factory=PlaybookFactory(["sleep 4", *QUICK]))
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("m", stage.run()))
    thread.start()
    killed = []
    while thread.is_alive() and not killed:
        for c in client.containers.list(filters={"label": [f"synthscale.run_id={cfg.run_id}"]}):
            subprocess.run(["docker", "kill", c.id], capture_output=True)
            killed.append(c.id)
            break
        time.sleep(0.3)
    thread.join(timeout=500)
    assert killed and out["m"] is not None
    records = read_trajectories(cfg.run_dir)
    assert all(r.infra_error is None for r in records)  # every killed episode was retried on a fresh container
    assert_exactly_once(cfg)


def test_systemic_infra_errors_stop_the_stage_with_the_cause(tmp_path):
    cfg = rollout_config(tmp_path / "systemic", n=4, gpu_workers=1, cpu_workers=0, lease_size=2,
                         max_consecutive_infra_errors=4, max_infra_retries=0)
    with pytest.raises(EngineError, match="4 episodes in a row failed.*ModelError"):
        _run(cfg, model_factory=PlaybookFactory(QUICK, fail_always=True))
    assert not (tmp_path / "systemic" / "rollouts" / "manifest.json").exists()
