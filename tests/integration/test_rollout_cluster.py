"""The rollout stage on real cluster shapes: a worker node of a three-node `ray.cluster_utils.Cluster` removed
mid-run, the `synthscale rollout` driver SIGKILLed and re-run against a `ray start --head` cluster, and that
cluster's metrics export port serving every series the Grafana dashboard charts while a run is going.

Writes run directories under pytest's tmp_path. The `ray start --head` cluster runs in its own temp dir on
free loopback ports; teardown terminates exactly the processes it started (its process tree, and anything
whose command line names its temp dir): `ray stop` would kill every Ray process on the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
import ray.cloudpickle
import requests
import yaml
from ray.cluster_utils import Cluster
from ray.exceptions import GetTimeoutError, RayActorError

from engine.artifacts import read_manifest
from engine.rollout.grafana import dashboard_metric_names
from engine.rollout.stage import RolloutStage
from engine.trajectories.store import read_trajectories, shard_paths

sys.path.insert(0, str(Path(__file__).parent))
import rollout_helpers  # noqa: E402
from ray_head import WORKER_SPAN, cluster_pids, free_ports, head_ports, terminate  # noqa: E402
from rollout_helpers import (  # noqa: E402
    EXAMPLES, QUICK, PlaybookFactory, assert_exactly_once, raw_episode_ids, ray_stage, rollout_config)

ray.cloudpickle.register_pickle_by_value(rollout_helpers)
pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DASHBOARD = ROOT / "cluster" / "grafana" / "synthscale-rollouts.json"
TASKS = ("wine-classification", "diabetes-regression")


# -- a `ray start --head` cluster on loopback (same approach as test_jobs.py) ---------------------------
def _free_ports(n: int) -> list[int]:
    return free_ports(n, "")


def _scrape(port: int) -> str:
    try:
        r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except requests.RequestException:
        return ""
    return r.text if r.ok else ""


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not (m := _SAMPLE.match(line)):
            continue
        out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


@pytest.fixture(scope="module")
def head():
    """A one-node `ray start --head` cluster (4 CPUs, 2 logical GPUs) exporting metrics every second:
    yields (GCS address, metrics port, env for clients)."""
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    # Token auth off for this loopback cluster: `ray start --head` turns it on by itself when ~/.ray/auth_token
    # exists, while a driver given an explicit address never picks the token up, and this process's Ray client
    # state (token mode or not) depends on which tests ran before. test_jobs.py covers token auth.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_metrics_report_interval_ms": "1000", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    (gcs, client, agent_http, agent_grpc, renv, metrics, nm, om), workers = head_ports(8, "")
    # No --node-ip-address 127.0.0.1: ray.init rewrites a loopback address to the machine's own IP
    # (services.resolve_ip_for_localhost), so a GCS bound to loopback only would refuse the drivers.
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs),
           "--include-dashboard", "false", "--ray-client-server-port", str(client),
           "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
           "--runtime-env-agent-port", str(renv), "--metrics-export-port", str(metrics),
           "--node-manager-port", str(nm), "--object-manager-port", str(om),
           "--min-worker-port", str(workers), "--max-worker-port", str(workers + WORKER_SPAN),
           "--num-cpus", "4", "--num-gpus", "2", "--temp-dir", temp_dir, "--disable-usage-stats"]
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_metrics(metrics, proc, log_path)
        yield f"127.0.0.1:{gcs}", metrics, env
    finally:
        terminate(cluster_pids(proc, temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_metrics(port: int, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if _scrape(port):
            return
        time.sleep(0.5)
    pytest.fail(f"the head's metrics export port {port} did not come up:\n{log_path.read_text()[-3000:]}")


# -- 1. node death --------------------------------------------------------------------------------------
def _limiter_node() -> str | None:
    """Where the stage's shared rate limiter lives (the GCS actor table; only one stage runs here)."""
    alive = [a for a in ray._private.state.actors().values()
             if a["ActorClassName"] == "RateLimiterActor" and a["State"] == "ALIVE"]
    return alive[0]["Address"]["NodeID"] if len(alive) == 1 else None


def _victim_node(cluster: Cluster, stage: RolloutStage) -> tuple[object, object] | None:
    """A worker node hosting a rollout worker with a lease in flight, and that worker's actor. Among such
    nodes, the one that also hosts the shared rate limiter if there is one: a node death takes whatever
    runs there, and the stage must survive the worst of it."""
    try:
        busy = [stage.pool.actors[job.worker.worker_id] for job in list(stage.inflight.values())]
    except RuntimeError:  # the stage's thread changed the dict while we copied it
        return None
    by_id = {n.node_id: n for n in cluster.worker_nodes}
    found = {}
    for actor in busy:
        try:
            node_id = ray.get(actor.info.remote(), timeout=30)["node"]
        except (RayActorError, GetTimeoutError):
            continue
        if node_id in by_id:
            found.setdefault(node_id, actor)
    if not found:
        return None
    node_id = limiter if (limiter := _limiter_node()) in found else next(iter(found))
    return by_id[node_id], found[node_id]


def _restarted_node(actor, gone: str) -> str | None:
    """Where the worker came back after its node went away (None if it never answered elsewhere)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            node_id = ray.get(actor.info.remote(), timeout=30)["node"]
        except (RayActorError, GetTimeoutError):
            time.sleep(0.5)
            continue
        if node_id != gone:
            return node_id
        time.sleep(0.5)
    return None


def test_a_worker_node_dies_mid_run_and_nothing_is_lost_or_duplicated(tmp_path):
    temp_dir = f"/tmp/rn{time.time_ns() % 10**8}"
    # Cluster.add_node records the head's address in Ray's default temp dir, which need not exist yet
    Path(ray._private.utils.get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "temp_dir": temp_dir, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=2, num_gpus=2) for _ in range(2)]  # either one fits both workers
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        cfg = rollout_config(tmp_path / "node", n=4, gpu_workers=2, cpu_workers=0, cpus_per_worker=0.5,
                             lease_size=1)
        stage = ray_stage(cfg, model_factory=PlaybookFactory(["sleep 1", *QUICK]))
        out: dict = {}
        thread = threading.Thread(target=lambda: out.setdefault("m", stage.run()))
        thread.start()
        removed = victim = None
        deadline = time.monotonic() + 300
        while removed is None and thread.is_alive() and time.monotonic() < deadline:
            if shard_paths(cfg.run_dir) and (found := _victim_node(cluster, stage)) is not None:
                removed, victim = found
                cluster.remove_node(removed)  # its raylet and workers go: the lease in flight is lost
            time.sleep(0.3)
        assert removed is not None, "no worker node held a lease in flight while the stage ran"
        restarted_on = _restarted_node(victim, removed.node_id)
        thread.join(timeout=400)
        assert not thread.is_alive() and out.get("m") is not None
        survivor = ({n.node_id for n in nodes} - {removed.node_id}).pop()
        assert restarted_on == survivor  # Ray restarted the worker on the node that is left
        assert stage.stats["leases_lost"] >= 1
        assert out["m"].counts["episodes"] == 8, (stage.stats, stage.scheduler.progress())
        assert_exactly_once(cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


# -- 2. driver crash and re-run -------------------------------------------------------------------------
def _write_config(run: Path) -> Path:
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump({
        "run_id": run.name, "run_dir": str(run),
        "episodes": {"tasks": [str(EXAMPLES / t) for t in TASKS], "episodes_per_task": 3},
        "agent": {"max_steps": 6}, "sandbox": {"runtime": "local"},
        "rollout": {"gpu_workers": 2, "cpu_workers": 0, "lease_size": 1, "progress": False},
    }))
    return path


def _rollout_cmd(cfg_path: Path, address: str) -> list[str]:
    return [str(BIN / "synthscale"), "rollout", "--config", str(cfg_path), "--address", address, "--no-progress"]


def test_a_killed_driver_is_resumed_by_running_it_again(head, tmp_path):
    address, _, env = head
    run = tmp_path / "crash"
    cfg_path = _write_config(run)
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log:
        first = subprocess.Popen(_rollout_cmd(cfg_path, address), env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not shard_paths(str(run)) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, f"the driver exited before it was killed:\n{log_path.read_text()[-3000:]}"
        assert shard_paths(str(run)), f"no shard after 240 s:\n{log_path.read_text()[-3000:]}"
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    stored_before = len(raw_episode_ids(str(run)))
    assert stored_before < 6 and not (run / "rollouts" / "manifest.json").exists()

    again = subprocess.run(_rollout_cmd(cfg_path, address), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "6 trajectories" in again.stdout, again.stdout
    ids = raw_episode_ids(str(run))
    assert len(ids) == 6 and len(set(ids)) == 6  # all six, none stored twice across the raw shards
    records = read_trajectories(str(run))
    assert Counter(r.task_id for r in records) == {t: 3 for t in TASKS}
    assert all(r.infra_error is None for r in records)
    manifest = yaml.safe_load((run / "rollouts" / "manifest.json").read_text())
    assert manifest["counts"]["episodes"] == 6 and manifest["counts"]["infra_errors"] == 0

    status = subprocess.run([str(BIN / "synthscale"), "status", str(run)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    for task in TASKS:
        assert re.search(rf"^{re.escape(task)}\s+3/3\s", status.stdout, re.M), status.stdout
    assert "complete" in status.stdout.splitlines()[0] and "incomplete" not in status.stdout.splitlines()[0]


# -- 3. live metrics ------------------------------------------------------------------------------------
DRIVER_SCRIPT = """
import sys
sys.path.insert(0, {helpers!r})
from pathlib import Path
import ray, ray.cloudpickle
import rollout_helpers
from rollout_helpers import QUICK, PlaybookFactory, rollout_config
from engine.runner import run_rollout_stage

ray.cloudpickle.register_pickle_by_value(rollout_helpers)
cfg = rollout_config(Path({run_dir!r}), n=2, gpu_workers=2, cpu_workers=0, lease_size=1)
factory = PlaybookFactory(["sleep 2", *QUICK], cost_per_call_usd=0.001, fail_once_marker={marker!r})
run_rollout_stage(cfg, address={address!r}, model_factory=factory, progress=False)
ray.shutdown()
"""


class _Scraper:
    """Scrapes a metrics port every second in a thread: every sample name seen, and the highest count of
    submitted trajectories of one run seen at once."""

    def __init__(self, port: int, run_id: str):
        self.port, self.run_id = port, run_id
        self.names: set[str] = set()
        self.submitted = 0.0
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> _Scraper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(1.0)

    def once(self) -> None:
        samples = _samples(_scrape(self.port))
        self.scrapes += bool(samples)
        self.names |= {name for name, _, _ in samples}
        submitted = sum(v for name, labels, v in samples if name == "ray_synthscale_trajectories_total"
                        and labels.get("run_id") == self.run_id and labels.get("exit_status") == "submitted")
        self.submitted = max(self.submitted, submitted)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_metrics_port_serves_every_dashboard_series_during_a_run(head, tmp_path):
    address, port, _ = head
    wanted = dashboard_metric_names(DASHBOARD)
    assert "ray_synthscale_trajectories_total" in wanted and "ray_synthscale_queued_episodes" in wanted
    cfg = rollout_config(tmp_path / "live", n=2, gpu_workers=2, cpu_workers=0, lease_size=1)
    # the driver runs in its own process, as a job's driver would (and free of this test process's Ray state)
    script = tmp_path / "drive.py"
    script.write_text(DRIVER_SCRIPT.format(helpers=str(Path(__file__).parent), address=address,
                                           run_dir=str(tmp_path / "live"), marker=str(tmp_path / "outage")))
    scraper = _Scraper(port, cfg.run_id).start()
    try:
        driver = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
        deadline = time.monotonic() + 15  # a few more exports after the stage ended
        while time.monotonic() < deadline and (wanted - scraper.names or scraper.submitted < 4):
            time.sleep(1.0)
    finally:
        scraper.stop()
    manifest = read_manifest(f"{cfg.run_dir}/rollouts")
    assert (tmp_path / "outage").exists()  # the injected endpoint outage happened
    assert manifest is not None and manifest.counts["episodes"] == 4
    records = read_trajectories(cfg.run_dir)
    assert sum(r.exit_status == "submitted" for r in records) == 4
    assert scraper.scrapes > 0
    missing = sorted(wanted - scraper.names)
    assert not missing, f"the dashboard queries series the endpoint never served: {missing}"
    assert scraper.submitted == 4
