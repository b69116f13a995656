"""What only the Docker runtime does, against a real dockerd and the task image (synthscale-task:latest, built by
cluster/images/build-offline.sh), plus exact checks of the container arguments (no Docker needed). The
behaviour it shares with the local runtime is in test_sandbox_contract.py."""

from __future__ import annotations

import docker
import pytest

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.protocols import SandboxSpec
from engine.sandbox.common import WORKDIR
from engine.sandbox.docker import MANAGED_LABEL, DockerRuntime, container_kwargs, reap

try:
    from tests.integration import sandbox_fixtures as fx
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    import sandbox_fixtures as fx

IMAGE = SandboxConfig().image
PROBLEM = fx.docker_problem(IMAGE)
needs_docker = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def docker_config(**overrides: object) -> SandboxConfig:
    return fx.small_config(runtime="docker", **overrides)


@pytest.fixture(scope="module")
def sandbox(task_dir):
    if PROBLEM is not None:
        pytest.skip(PROBLEM)
    runtime = DockerRuntime(docker_config(), "it-docker")
    runtime.reap_leftovers()
    with runtime.start(fx.task_spec(task_dir)) as sb:
        yield sb


@needs_docker
@pytest.mark.docker
def test_container_is_limited(sandbox):
    sandbox.container.reload()
    host = sandbox.container.attrs["HostConfig"]
    assert (host["NetworkMode"], host["Memory"], host["PidsLimit"]) == ("none", 512 * 1024 * 1024, 64)
    assert host["Tmpfs"][WORKDIR].startswith("size=32m,")
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    fsize = 33 * 1024 * 1024  # the workspace's 32 MiB and one
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]} == {"fsize": (fsize, fsize), "core": (0, 0)}
    sandbox.reset()
    assert sandbox.exec("ulimit -f; ulimit -Hf", timeout_s=30).output.split() == ["33792", "33792"]  # KiB, every exec


@needs_docker
@pytest.mark.docker
def test_reap_removes_every_container_of_one_run(task_dir):
    """`reap(client, run_id)` (the CLI's cleanup) removes a run's containers whoever owns them, and no other run's."""
    client = docker.from_env()
    mine = DockerRuntime(docker_config(), "it-docker-reap", client=client).start(fx.task_spec(task_dir))
    other = DockerRuntime(docker_config(), "it-docker-other", client=client).start(fx.task_spec(task_dir))
    try:
        assert reap(client, "it-docker-reap") == 1
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(mine.container.id)
        client.containers.get(other.container.id)
    finally:
        mine.close()
        other.close()


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
    assert kwargs["tmpfs"]["/home/agent"] == "size=256m,exec,nosuid,nodev,mode=0755,uid=1000,gid=1000"
    assert [(u["Name"], u["Soft"], u["Hard"]) for u in kwargs["ulimits"]] == [("fsize", 257 * 2**20, 257 * 2**20),
                                                                               ("core", 0, 0)]
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


def test_container_kwargs_of_a_private_sandbox(tmp_path):
    """A sandbox of another uid than the agent's: its $HOME is that uid's alone and the workspace folder is closed
    to every other uid (root's, of the owner's group, sticky)."""
    spec = fx.task_spec(tmp_path, uid=fx.OWNER_UID)
    kwargs = container_kwargs(SandboxConfig(runtime="docker", workspace_mb=64), spec, {MANAGED_LABEL: "1"})
    assert kwargs["tmpfs"]["/home/agent"] == "size=64m,exec,nosuid,nodev,mode=0700,uid=1001,gid=1001"
    assert kwargs["tmpfs"][WORKDIR] == "size=64m,exec,nosuid,nodev,mode=1770,uid=0,gid=1001"
    assert kwargs["user"] == "0:0"
