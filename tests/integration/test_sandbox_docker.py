"""Integration tests of the Docker runtime against a real dockerd and the task image (synthscale-task:latest,
built by cluster/images/build-offline.sh), plus exact checks of the container arguments (no Docker needed)."""

from __future__ import annotations

import subprocess
import sys

import docker
import pytest

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.protocols import SandboxSpec
from engine.sandbox import make_runtime
from engine.sandbox.common import WORKDIR
from engine.sandbox.docker import MANAGED_LABEL, DockerRuntime, container_kwargs, reap

try:
    from tests.integration.sandbox_fixtures import SandboxContract, docker_problem, make_task_dir, remove_task_dir, small_config, task_spec
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from sandbox_fixtures import SandboxContract, docker_problem, make_task_dir, remove_task_dir, small_config, task_spec

IMAGE = SandboxConfig().image


PROBLEM = docker_problem(IMAGE)
needs_docker = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def docker_config(**overrides: object) -> SandboxConfig:
    return small_config(runtime="docker", **overrides)


@pytest.fixture(scope="module")
def task_dir():
    root = make_task_dir()
    yield root
    remove_task_dir(root)


@pytest.fixture(scope="module")
def runtime():
    if PROBLEM is not None:
        pytest.skip(PROBLEM)
    rt = DockerRuntime(docker_config(), "it-docker")
    rt.reap_leftovers()
    yield rt
    rt.reap_leftovers()


@pytest.fixture(scope="module")
def sandbox(runtime, task_dir):
    with runtime.start(task_spec(task_dir)) as sb:
        yield sb


@needs_docker
@pytest.mark.docker
class TestDockerSandbox(SandboxContract):
    def test_escaped_processes_die_at_reset(self, sandbox):
        escape = "setsid sh -c 'touch escaped; exec sleep 300' > /dev/null 2>&1 < /dev/null &"
        sandbox.exec(f"{escape} until [ -e escaped ]; do sleep 0.01; done", timeout_s=30)
        count = "ps -eo user=,comm= | grep -c '^agent *sleep$' || true"
        assert sandbox.exec(count, timeout_s=30).output.strip() == "1"  # setsid left the command's group
        sandbox.reset()
        assert sandbox.exec(count, timeout_s=30).output.strip() == "0"

    def test_container_is_labelled_and_limited(self, sandbox):
        sandbox.container.reload()
        attrs = sandbox.container.attrs
        labels = attrs["Config"]["Labels"]
        assert labels["synthscale.run_id"] == "it-docker"
        assert labels["synthscale.task_id"] == "contract-task"
        assert labels[MANAGED_LABEL] == "1"
        host = attrs["HostConfig"]
        assert (host["NetworkMode"], host["Memory"], host["PidsLimit"]) == ("none", 512 * 1024 * 1024, 64)
        assert host["Tmpfs"][WORKDIR].startswith("size=32m,")


@needs_docker
@pytest.mark.docker
def test_reaper_removes_leftovers(task_dir):
    """A container whose owning process died (a crashed worker) is reaped; a live process's container of
    the same run, and another run's, are left alone."""
    client = docker.from_env()
    mine = DockerRuntime(docker_config(), "it-docker-reap", client=client)
    other = DockerRuntime(docker_config(), "it-docker-other", client=client)
    code = ("import sys; from engine.sandbox.docker import DockerRuntime; from engine.config import SandboxConfig; "
            "from engine.protocols import SandboxSpec; "
            "rt = DockerRuntime(SandboxConfig(runtime='docker', memory_mb=512), 'it-docker-reap'); "
            f"sb = rt.start(SandboxSpec(workspace={str(task_dir / 'workspace')!r})); print(sb.container.id)")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    leftover_id = child.stdout.strip().splitlines()[-1]  # the child exited without closing it
    alive = mine.start(task_spec(task_dir))
    survivor = other.start(task_spec(task_dir))
    try:
        assert mine.reap_leftovers() == 1
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(leftover_id)
        client.containers.get(alive.container.id)  # its owner (this process) lives
        client.containers.get(survivor.container.id)  # another run's container is left alone
        assert reap(client, "it-docker-other") == 1
        assert reap(client, "it-docker-other") == 0
    finally:
        alive.close()
        survivor.close()


@needs_docker
@pytest.mark.docker
def test_missing_image_names_the_build_command():
    with pytest.raises(SandboxError, match="synthscale-task:does-not-exist.*bash cluster/images/build-offline.sh"):
        DockerRuntime(docker_config(image="synthscale-task:does-not-exist"), "it-docker")


def test_unreachable_daemon_says_to_start_dockerd(tmp_path):
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no-docker.sock", version="1.41", timeout=5)
    with pytest.raises(SandboxError, match="start dockerd"):
        DockerRuntime(docker_config(), "it-docker", client=client)


def test_container_kwargs_request_exactly_the_given_gpus(tmp_path):
    cfg = SandboxConfig(runtime="docker", memory_mb=8192, cpus=2.5, pids_limit=128, workspace_mb=256)
    labels = {"synthscale.run_id": "r1", "synthscale.task_id": "t1", MANAGED_LABEL: "1"}
    kwargs = container_kwargs(cfg, SandboxSpec(workspace=tmp_path, gpu_ids=["2", "5"]), labels)
    (request,) = kwargs["device_requests"]
    assert request["DeviceIDs"] == ["2", "5"]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] is None or request["Count"] == 0
    assert kwargs["labels"] == labels
    assert kwargs["image"] == "synthscale-task:latest"
    assert kwargs["network_mode"] == "none"
    assert (kwargs["mem_limit"], kwargs["memswap_limit"], kwargs["nano_cpus"], kwargs["pids_limit"]) == (
        "8192m", "8192m", 2_500_000_000, 128,
    )  # fmt: skip
    assert kwargs["tmpfs"][WORKDIR] == "size=256m,exec,nosuid,nodev,mode=1777,uid=0,gid=0"
    assert kwargs["environment"] == {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/agent", "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
    }  # fmt: skip


def test_container_kwargs_without_gpus_or_with_network(tmp_path):
    labels = {MANAGED_LABEL: "1"}
    kwargs = container_kwargs(SandboxConfig(runtime="docker"), SandboxSpec(workspace=tmp_path), labels)
    assert "device_requests" not in kwargs
    networked = container_kwargs(SandboxConfig(runtime="docker", network=True), SandboxSpec(workspace=tmp_path), labels)
    assert networked["network_mode"] == "bridge"


@needs_docker
@pytest.mark.docker
def test_make_runtime_picks_docker():
    runtime = make_runtime(docker_config(), "it-docker")
    assert isinstance(runtime, DockerRuntime) and runtime.name == "docker"
