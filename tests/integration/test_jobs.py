"""Cluster operations end to end: `synthscale submit` / `cancel --job` against a real `ray start --head` cluster on
loopback (with token authentication), and `synthscale reap` against a real dockerd.

The cluster runs in its own temp dir on free ports; teardown terminates exactly the processes it started
(its process tree, and anything whose command line names its temp dir): `ray stop` would kill every Ray
process on the machine, other tests' clusters included.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from actors.jobs import job_status, wait_for_job
from engine.trajectories.store import read_trajectories

sys.path.insert(0, str(Path(__file__).parent))
from ray_head import WORKER_SPAN, cluster_pids, free_ports, head_ports, terminate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SYNTHSCALE = str(BIN / "synthscale")
JOB_ID = re.compile(r"job (raysubmit_\w+) submitted")


def _free_ports(n: int) -> list[int]:
    return free_ports(n, "127.0.0.1")


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster with token auth: yields (dashboard URL, env for clients holding the token)."""
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    token = secrets.token_hex(32)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    (gcs, dash, client, agent_http, agent_grpc, renv, metrics, nm, om), workers = head_ports(9, "127.0.0.1")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent_http),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(renv),
           "--metrics-export-port", str(metrics), "--node-manager-port", str(nm), "--object-manager-port", str(om),
           "--min-worker-port", str(workers), "--max-worker-port", str(workers + WORKER_SPAN),
           "--num-cpus", "2", "--temp-dir", temp_dir, "--disable-usage-stats"]
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "wb") as log:
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        _wait_for_dashboard(address, head, env, log_path)
        yield address, env
    finally:
        terminate(cluster_pids(head, temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_dashboard(address: str, head: subprocess.Popen, env: dict, log_path: Path) -> None:
    import requests

    headers = {"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited {head.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{address}/api/version", headers=headers, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"the Ray dashboard at {address} did not come up:\n{log_path.read_text()[-3000:]}")


def _cli(env: dict, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([SYNTHSCALE, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
def test_submit_runs_an_episode_job_and_follows_it(cluster, tmp_path, monkeypatch):
    address, env = cluster
    monkeypatch.setenv("RAY_AUTH_TOKEN", env["RAY_AUTH_TOKEN"])
    out = tmp_path / "run"
    # A relative task path: it resolves only inside the uploaded working dir, where the job runs.
    r = _cli(env, "submit", "--address", address, "--", "episode", "--task", "examples/tasks/wine-classification",
             "-n", "1", "--max-steps", "8", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = JOB_ID.search(r.stdout).group(1)
    assert "1 episodes (1 with a score)" in r.stdout  # the job's own output, streamed
    assert r.stdout.rstrip().endswith(f"job {job_id}: SUCCEEDED")
    records = read_trajectories(str(out))
    assert [rec.task_id for rec in records] == ["wine-classification"]
    assert job_status(address, job_id) == "SUCCEEDED"


def test_failed_job_exits_nonzero(cluster, tmp_path):
    address, env = cluster
    r = _cli(env, "submit", "--address", address, "--", "config", tmp_path / "missing.yaml")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no such config file" in r.stdout + r.stderr and r.stdout.rstrip().endswith(": FAILED")


def test_cancel_job_stops_a_long_job(cluster, monkeypatch):
    address, env = cluster
    monkeypatch.setenv("RAY_AUTH_TOKEN", env["RAY_AUTH_TOKEN"])
    port = _free_ports(1)[0]
    r = _cli(env, "submit", "--address", address, "--no-follow", "--", "serve-heuristic", "--task",
             "examples/tasks/wine-classification", "--port", port)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = JOB_ID.search(r.stdout).group(1)
    deadline = time.monotonic() + 120
    while (status := job_status(address, job_id)) == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == "RUNNING"
    r = _cli(env, "cancel", "--job", job_id, "--address", address)
    assert r.returncode == 0 and f"job {job_id}: stop requested" in r.stdout, r.stdout + r.stderr
    assert wait_for_job(address, job_id, timeout_s=60) == "STOPPED"


def test_wrong_token_is_refused_with_a_hint(cluster):
    address, env = cluster
    r = _cli({**env, "RAY_AUTH_TOKEN": "not-the-token"}, "submit", "--address", address, "--", "config")
    assert r.returncode == 2
    assert "token authentication" in r.stderr and "RAY_AUTH_TOKEN" in r.stderr, r.stderr


def test_secret_env_is_refused_before_anything_is_sent(tmp_path):
    r = _cli(dict(os.environ), "submit", "--address", "http://127.0.0.1:9", "--env", "OPENAI_API_KEY=sk-x",
             "--", "config")
    assert r.returncode == 2 and "OPENAI_API_KEY" in r.stderr and "nodes' own environment" in r.stderr
    assert "sk-x" not in r.stderr


@pytest.mark.docker
def test_reap_removes_a_dead_runs_containers():
    try:
        from tests.integration.sandbox_fixtures import docker_problem
    except ImportError:
        from sandbox_fixtures import docker_problem
    import docker

    from engine.config import SandboxConfig
    from engine.sandbox.docker import MANAGED_LABEL

    image = SandboxConfig().image
    if (problem := docker_problem(image)) is not None:
        pytest.skip(problem)
    client = docker.from_env()
    run_id = f"reap-it-{secrets.token_hex(4)}"
    labels = {MANAGED_LABEL: "1", "synthscale.run_id": run_id, "synthscale.task_id": "t"}
    other = {**labels, "synthscale.run_id": f"{run_id}-other"}
    mine = [client.containers.run(image, ["sleep", "600"], detach=True, labels=labels) for _ in range(2)]
    kept = client.containers.run(image, ["sleep", "600"], detach=True, labels=other)
    try:
        r = _cli(dict(os.environ), "reap", "--runtime", "docker", "--run-id", run_id)
        assert r.returncode == 0 and f"reaped 2 containers of run {run_id}" in r.stdout, r.stdout + r.stderr
        left = client.containers.list(all=True, filters={"label": f"synthscale.run_id={run_id}"})
        assert left == []
        kept.reload()
        assert kept.status == "running"
    finally:
        for c in [*mine, kept]:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
