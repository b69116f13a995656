"""The Docker runtime: one long-lived container per task (image cfg.image), reused across episodes through
`reset()`. Reads the task's starter workspace; talks to dockerd through the docker SDK; writes containers
labelled synthscale.* (removed on close, or by `reap`).

Layout inside the container: pid 1 is `sleep infinity` under docker's init (which reaps orphans); every agent
command is a `docker exec` as uid `cfg.uid` with a minimal environment, run under `timeout --signal=KILL`
in its own process group, which is killed when the command ends or times out (a host-side timer kills all
agent processes if that ever fails). The workspace, $HOME, /tmp and /var/tmp are size-limited tmpfs; the
starter workspace is kept as a tar in /root (root-only) and unpacked by a root exec on start and reset,
which is far cheaper than starting a new container. Files move through `cat` as the agent (so permissions
apply), because docker's archive API cannot see tmpfs mounts.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.protocols import ExecResult, SandboxSpec
from engine.sandbox.common import (
    HOME, KILL_EXIT_CODE, SYSTEM_PATH, WORKDIR, OutputBuffer, bash_script, minimal_env, pid_alive,
    raise_file_error, sandbox_path, single_file_tar, workspace_tar, wrap_file_in_tar, write_host_file,
)  # fmt: skip

logger = logging.getLogger(__name__)

MANAGED_LABEL = "synthscale.managed"
OWNER_LABEL = "synthscale.owner"  # host:pid of the process that started the container
STARTER_TAR = "/root/synthscale-starter.tar"
GUARD_GRACE_S = 10.0
BUILD_HINT = "bash cluster/images/build-offline.sh"
# Capabilities kept for root maintenance execs only (reset, staging files); agent commands run as cfg.uid
# and get none.
ROOT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETUID", "SETGID"]
# Run as the agent: the command's process group is killed when it ends, so background jobs end with it.
# As root, $1 = the agent's uid. pid 1 and docker's init run as root, so every process of that uid is the
# agent's; repeat because a dying fork bomb may still be forking.
KILL_AGENT_SCRIPT = 'i=0; while pkill -KILL -u "$1" && [ "$i" -lt 100 ]; do i=$((i+1)); sleep 0.05; done'
EXEC_WRAPPER = (
    'timeout --signal=KILL "$1" bash -c "$2" & p=$!; wait "$p"; rc=$?; '
    'kill -s KILL -- "-$p" 2>/dev/null; exit "$rc"'
)


def _docker():
    try:
        import docker
    except ImportError as e:  # pragma: no cover - docker is a core dependency
        raise SandboxError("the docker Python package is missing; pip install docker") from e
    return docker


def container_kwargs(cfg: SandboxConfig, spec: SandboxSpec, labels: dict[str, str]) -> dict[str, Any]:
    """Arguments of `client.containers.create` for one task container (pure: no Docker needed).

    GPUs are requested by id, exactly `spec.gpu_ids`, and not at all when that list is empty."""
    uid = cfg.uid
    scratch = f"size={cfg.workspace_mb}m,exec,nosuid,nodev"
    kwargs: dict[str, Any] = {
        "image": cfg.image,
        "command": ["sleep", "infinity"],
        "user": "0:0",  # pid 1 only; commands run as cfg.uid through exec
        "init": True,
        "labels": dict(labels),
        "network_mode": "bridge" if cfg.network else "none",
        "mem_limit": f"{cfg.memory_mb}m",
        "memswap_limit": f"{cfg.memory_mb}m",
        "nano_cpus": int(cfg.cpus * 1e9),
        "pids_limit": cfg.pids_limit,
        "tmpfs": {
            HOME: f"{scratch},mode=0755,uid={uid},gid={uid}",
            WORKDIR: f"{scratch},mode=1777,uid=0,gid=0",  # root-owned and sticky: read-only files stay
            "/tmp": f"{scratch},mode=1777",
            "/var/tmp": f"{scratch},mode=1777",
        },
        "environment": minimal_env(SYSTEM_PATH),
        "working_dir": WORKDIR,
        "hostname": "sandbox",
        "cap_drop": ["ALL"],
        "cap_add": list(ROOT_CAPS),
        "security_opt": ["no-new-privileges"],
    }
    if spec.gpu_ids:
        docker = _docker()
        kwargs["device_requests"] = [docker.types.DeviceRequest(device_ids=list(spec.gpu_ids), capabilities=[["gpu"]])]
    return kwargs


def reap(client: Any, run_id: str | None = None, keep: Callable[[Any], bool] | None = None) -> int:
    """Remove every container we labelled (of one run, or of all runs) unless `keep(container)`; returns how many went."""
    filters = [f"{MANAGED_LABEL}=1"] + ([f"synthscale.run_id={run_id}"] if run_id else [])
    removed = 0
    for container in client.containers.list(all=True, filters={"label": filters}):
        if keep is not None and keep(container):
            continue
        try:
            container.remove(force=True)
            removed += 1
        except _docker().errors.NotFound:
            pass
    if removed:
        logger.info("reaped %d leftover sandbox containers (run %s)", removed, run_id or "any")
    return removed


class DockerRuntime:
    """Starts task containers from cfg.image."""

    name = "docker"

    def __init__(self, cfg: SandboxConfig, run_id: str, client: Any = None) -> None:
        self.cfg = cfg
        self.run_id = run_id
        docker = _docker()
        try:
            self.client = client if client is not None else docker.from_env()
            self.client.ping()
        except Exception as e:  # connection errors come in several types (requests, docker, OS)
            raise SandboxError(
                f"cannot reach the Docker daemon ({e}); start dockerd (e.g. `bash .ci/setup-docker.sh`, or "
                "`sudo systemctl start docker`) or set DOCKER_HOST"
            ) from None
        try:
            self.client.images.get(cfg.image)
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"task image {cfg.image!r} not found; build it with `{BUILD_HINT}` (offline), or "
                f"`docker build -t {cfg.image} cluster/images/task`"
            ) from None

    def reap_leftovers(self) -> int:
        """Remove containers of this run whose owning process (on this host) is dead: a crashed driver's or a
        restarted worker's. Containers of live processes are kept, so workers sharing a node reap safely."""
        return reap(self.client, self.run_id, keep=_owner_alive)

    def start(self, spec: SandboxSpec) -> DockerSandbox:
        """A fresh container with the starter workspace unpacked."""
        labels = {f"synthscale.{k}": str(v) for k, v in spec.labels.items()}
        labels["synthscale.run_id"] = self.run_id
        labels["synthscale.task_id"] = spec.labels.get("task_id", "")
        labels[MANAGED_LABEL] = "1"
        labels[OWNER_LABEL] = f"{socket.gethostname()}:{os.getpid()}"
        return DockerSandbox(self.client, self.cfg, spec, container_kwargs(self.cfg, spec, labels))


class DockerSandbox:
    """One task container; use it with `with`. `reset()` makes it ready for the next episode."""

    workdir = WORKDIR

    def __init__(self, client: Any, cfg: SandboxConfig, spec: SandboxSpec, kwargs: dict[str, Any]) -> None:
        self.client, self.cfg, self.spec = client, cfg, spec
        self._closed = False
        self.container = None
        tmp = Path(tempfile.mkdtemp(prefix="synthscale-docker-"))  # only while starting: nothing to leave behind
        try:
            starter = workspace_tar(spec.workspace, spec.read_only_paths, cfg.uid, tmp / "starter.tar")
            outer = wrap_file_in_tar(starter, Path(STARTER_TAR).name, tmp / "upload.tar")
            self.container = self._call("create the container", client.containers.create, **kwargs)
            self._call("start the container", self.container.start)
            with outer.open("rb") as f:
                self._call("upload the starter workspace", self.container.put_archive, "/root", f)
            self._restore(kill_first=False)
        except BaseException:
            self.close()
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("task container %s started for %s", self.container.short_id, spec.labels.get("task_id", "?"))

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _docker().errors.ImageNotFound:
            raise SandboxError(f"task image {self.cfg.image!r} not found; build it with `{BUILD_HINT}`") from None
        except _docker().errors.DockerException as e:
            raise SandboxError(f"docker: could not {what}: {e}") from e

    # ----- exec primitives -----

    def _exec_raw(self, argv: list[str], user: str) -> tuple[int, bytes, bytes]:
        """Run to completion, exact bytes back: (exit code, stdout, stderr). For short helper commands."""
        api = self.client.api
        exec_id = self._call("exec", api.exec_create, self.container.id, argv, user=user, stdout=True, stderr=True)["Id"]
        out, err = self._call("exec", api.exec_start, exec_id, demux=True)
        code = self._call("inspect an exec", api.exec_inspect, exec_id)["ExitCode"]
        return code, out or b"", err or b""

    def _root(self, script: str, *args: str) -> bytes:
        code, out, err = self._exec_raw(["sh", "-c", script, "synthscale-root", *args], user="0:0")
        if code != 0:
            detail = err.decode(errors="replace").strip()
            raise SandboxError(f"container {self.container.short_id}: maintenance step failed ({code}): {detail}")
        return out

    def _kill_agent_processes(self) -> None:
        self._root(KILL_AGENT_SCRIPT, str(self.cfg.uid))

    def exec(self, command: str, timeout_s: float, cwd: str | None = None) -> ExecResult:
        """Run `bash -c command` as the agent; never raises for the command's own failure."""
        self._check_open()
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        env = [f"{k}={v}" for k, v in minimal_env(SYSTEM_PATH).items()]
        script = bash_script(command, cwd or WORKDIR)
        argv = ["env", "-i", *env, "sh", "-c", EXEC_WRAPPER, "synthscale-exec", f"{timeout_s:.3f}s", script]
        api, uid = self.client.api, self.cfg.uid
        created = self._call("exec", api.exec_create, self.container.id, argv, user=f"{uid}:{uid}", stdout=True, stderr=True)
        exec_id = created["Id"]
        buf = OutputBuffer(self.cfg.max_output_bytes)
        fired = threading.Event()

        def guard() -> None:  # the in-container timeout failed (it should not): kill from outside
            fired.set()
            logger.warning("container %s: command outlived its timeout; killing agent processes", self.container.short_id)
            try:
                self._kill_agent_processes()
            except SandboxError as e:
                logger.error("container %s: could not kill agent processes: %s", self.container.short_id, e)

        timer = threading.Timer(timeout_s + GUARD_GRACE_S, guard)
        start = time.monotonic()
        timer.start()
        try:
            for chunk in self._call("exec", api.exec_start, exec_id, stream=True):
                buf.feed(chunk)
        finally:
            timer.cancel()
        duration_s = time.monotonic() - start
        code = self._call("inspect an exec", api.exec_inspect, exec_id)["ExitCode"]
        timed_out = fired.is_set() or (code == KILL_EXIT_CODE and duration_s >= timeout_s)
        return ExecResult(
            exit_code=KILL_EXIT_CODE if timed_out else code,
            output=buf.text(),
            timed_out=timed_out,
            duration_s=duration_s,
            output_truncated=buf.truncated,
        )

    # ----- files -----

    def read_file(self, path: str) -> bytes:
        """Bytes of a file, read as the agent."""
        self._check_open()
        p = sandbox_path(path)
        uid = self.cfg.uid
        code, out, err = self._exec_raw(["cat", "--", p], user=f"{uid}:{uid}")
        if code != 0:
            raise_file_error(p, code, err)
        return out

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file as the agent (creating its folders); read-only files raise PermissionError."""
        self._check_open()
        p = sandbox_path(path)
        staged = f"synthscale-stage-{uuid.uuid4().hex}"
        self._call("stage a file", self.container.put_archive, "/root", single_file_tar(staged, data))
        uid = self.cfg.uid
        script = (
            f"setpriv --reuid={uid} --regid={uid} --clear-groups "
            'sh -c \'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"\' '
            f'write_file "$1" < "/root/$2"; rc=$?; rm -f "/root/$2"; exit $rc'
        )
        code, _, err = self._exec_raw(["sh", "-c", script, "synthscale-write", p, staged], user="0:0")
        if code != 0:
            raise_file_error(p, code, err)

    def copy_out(self, path: str, dest: Path) -> None:
        """Copy a file out of the container to the host path `dest`."""
        write_host_file(Path(dest), self.read_file(path))

    # ----- lifecycle -----

    def _restore(self, kill_first: bool) -> None:
        # one exec (each costs a round trip to dockerd): kill, empty every place the agent can write (the
        # scratch mounts, POSIX message queues, and SysV IPC objects, which outlive their processes in the
        # container's IPC namespace and only their owner may remove), unpack the starter
        self._root(
            (KILL_AGENT_SCRIPT + "; " if kill_first else "")
            + f"find {WORKDIR} /tmp /var/tmp /dev/shm /dev/mqueue -mindepth 1 -delete 2>/dev/null; "
            f"find {HOME} -mindepth 1 -maxdepth 1 ! -path {WORKDIR} -exec rm -rf {{}} +; "
            'setpriv --reuid="$1" --regid="$1" --clear-groups ipcrm --all 2>/dev/null; '
            f"tar -xpf {STARTER_TAR} -C {WORKDIR} --numeric-owner",
            str(self.cfg.uid),
        )

    def reset(self) -> None:
        """Kill the agent's processes and restore the starter workspace; empty $HOME, /tmp, /var/tmp, /dev/shm
        and the message queues, and remove the agent's SysV IPC objects."""
        self._check_open()
        self._restore(kill_first=True)

    def close(self) -> None:
        """Remove the container. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except _docker().errors.NotFound:
                pass
            except _docker().errors.DockerException as e:
                logger.warning("could not remove container %s: %s (the reaper will)", self.container.short_id, e)

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("this docker sandbox is closed; start a new one")

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _owner_alive(container: Any) -> bool:
    """The container's starter is a live process on this host (its own worker still uses it)."""
    host, _, pid = container.labels.get(OWNER_LABEL, "").partition(":")
    return host == socket.gethostname() and pid.isdigit() and pid_alive(int(pid))
