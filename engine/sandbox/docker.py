"""The Docker runtime: one long-lived container per task (image cfg.image), reused across episodes through
`reset()`. Reads the task's starter workspace; talks to dockerd through the docker SDK; writes containers
labelled synthscale.* (removed on close, or by `reap`).

Layout inside the container: pid 1 is `sleep infinity` under docker's init (which reaps orphans); every agent
command is a `docker exec` as the sandbox's uid (`cfg.uid`, or `SandboxSpec.uid`) with a minimal environment,
run under `timeout --signal=KILL`; when it ends or times out its process group is killed, then every process
of its uid (`kill -1` as that uid, which reaches exactly those, and no further than the container's pid
namespace), so nothing of the agent's runs between commands, even what left the group (setsid, double forks).
If the exec overruns its timeout anyway, the host kills every non-root process from outside. The workspace,
$HOME, /tmp and /var/tmp are size-limited tmpfs, and RLIMIT_FSIZE caps any single file a little above the
workspace's size (a sparse file included); the starter workspace is kept as a tar in /root (root-only) and
unpacked by a root exec on start and reset, which is far cheaper than starting a new container. Files move
through a writer (`cat`) and a reader (`engine.sandbox.reads`: caps in size and time, regular files only, links
only within the workspace) run as the sandbox user, so permissions apply, because docker's archive API cannot see
tmpfs mounts; their output is read off dockerd's socket with a deadline (`engine.sandbox.dockerio`).
A private sandbox (`SandboxSpec.uid` other than the agent's): starter files 0600/0700, umask 077, $HOME its
user's alone and the workspace folder closed to others, so that a process of the agent's uid in it
(`exec(..., uid=cfg.uid, cwd="/tmp")`: it cannot enter the workspace) can read none of its files.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.protocols import ExecResult, SandboxSpec
from engine.sandbox.common import (
    HOME, KILL_EXIT_CODE, SYSTEM_PATH, WORKDIR, OutputBuffer, bash_script, max_file_bytes, minimal_env, pid_alive,
    raise_file_error, sandbox_path, sandbox_uid, single_file_tar, umask_of, workspace_tar, wrap_file_in_tar,
    write_host_file,
)  # fmt: skip
from engine.sandbox.dockerio import EOF, Capped, ExecStream, Frames
from engine.sandbox.session import ShellSession
from engine.sandbox.reads import (
    MAX_ERROR_BYTES, MAX_LIST_BYTES, MAX_READ_BYTES, READ_TIMEOUT_S, check_answer, list_argv, read_argv, split_listing,
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
# As root, $1 = the sandbox's uids, comma-separated. pid 1 and docker's init run as root, so every process of those
# uids is the sandbox's; repeat because a dying fork bomb may still be forking.
KILL_SANDBOX_SCRIPT = 'i=0; while pkill -KILL -U "$1" && [ "$i" -lt 100 ]; do i=$((i+1)); sleep 0.05; done'
# Run as the command's uid ($1 timeout, $2 script, $3 umask): the command's process group is killed when it ends,
# then every other process of that uid (`kill -1` spares only the caller, and the kernel signals them all at
# once, so none can fork away), so that nothing the command started runs on.
# With $4 (the in-container pids of live shell sessions), those shells and what runs under them are spared: then
# the rest is listed and killed a few times over instead.
EXEC_WRAPPER = (
    'umask "$3"; timeout --signal=KILL "$1" bash -c "$2" & p=$!; wait "$p"; rc=$?; '
    'kill -s KILL -- "-$p" 2>/dev/null; if [ -z "$4" ]; then kill -s KILL -- -1 2>/dev/null; else '
    'for i in 1 2 3; do kill -s KILL $(ps -e -o pid=,ppid= | awk -v keep="$4 $$" \'BEGIN { n = split(keep, k, " "); '
    'for (i = 1; i <= n; i++) K[k[i]] = 1 } { par[$1] = $2 } END { for (p in par) { q = p; s = 0; '
    'for (d = 0; d < 64 && q > 1; d++) { if (q in K) { s = 1; break }; q = par[q] }; if (!s) print p } }\') '
    '2>/dev/null; done; fi; exit "$rc"'
)
# As root: $1 the sandbox's uids, $2 a session's shell (in-container pid): signal the shell (see
# engine.sandbox.session.INTERRUPT_SIGNAL), then kill every other process of those uids.
INTERRUPT_SHELL_SCRIPT = (
    'kill -URG "$2" 2>/dev/null; i=0; while [ "$i" -lt 100 ]; do '
    'p=$(pgrep -U "$1" | grep -vx "$2"); [ -n "$p" ] || break; kill -KILL $p 2>/dev/null; i=$((i+1)); sleep 0.02; done'
)
# Run as root at the start of a private sandbox ($2 its uid): name the uid in /etc/passwd and /etc/group when the
# image does not, and close $HOME (docker gives a tmpfs the mode of the image's folder under it, not the mount's).
PRIVATE_SETUP_SCRIPT = (
    'getent passwd "$2" >/dev/null || echo "sandbox:x:$2:$2:synthscale sandbox:' + HOME + ':/bin/bash" >> /etc/passwd; '
    'getent group "$2" >/dev/null || echo "sandbox:x:$2:" >> /etc/group; chmod 0700 ' + HOME + '; '
)
MAINTENANCE_CAP_BYTES = 1024 * 1024
MAINTENANCE_TIMEOUT_S = 600.0  # a reset unpacks the starter, which may be large


def _docker():
    try:
        import docker
    except ImportError as e:  # pragma: no cover - docker is a core dependency
        raise SandboxError("the docker Python package is missing; pip install docker") from e
    return docker


def container_kwargs(cfg: SandboxConfig, spec: SandboxSpec, labels: dict[str, str]) -> dict[str, Any]:
    """Arguments of `client.containers.create` for one task container (pure: no Docker needed).

    GPUs are requested by id, exactly `spec.gpu_ids`, and not at all when that list is empty."""
    docker = _docker()
    uid = sandbox_uid(cfg.uid, spec)
    private = uid != cfg.uid
    scratch = f"size={cfg.workspace_mb}m,exec,nosuid,nodev"
    fsize = max_file_bytes(cfg.workspace_mb)
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
            HOME: f"{scratch},mode={'0700' if private else '0755'},uid={uid},gid={uid}",
            # root-owned and sticky: read-only files stay; private: closed to other uids
            WORKDIR: f"{scratch},mode=1770,uid=0,gid={uid}" if private else f"{scratch},mode=1777,uid=0,gid=0",
            "/tmp": f"{scratch},mode=1777",
            "/var/tmp": f"{scratch},mode=1777",
        },
        "ulimits": [docker.types.Ulimit(name="fsize", soft=fsize, hard=fsize),
                    docker.types.Ulimit(name="core", soft=0, hard=0)],
        "environment": minimal_env(SYSTEM_PATH),
        "working_dir": WORKDIR,
        "hostname": "sandbox",
        "cap_drop": ["ALL"],
        "cap_add": list(ROOT_CAPS),
        "security_opt": ["no-new-privileges"],
    }
    if spec.gpu_ids:
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
        self.uid = sandbox_uid(cfg.uid, spec)
        self.private = self.uid != cfg.uid
        self._uids = ",".join(str(u) for u in sorted({self.uid, cfg.uid}))  # whoever may run here
        self._closed = False
        self.container = None
        self._sessions: list[ShellSession] = []  # live `shell()`s: reset and close end them
        tmp = Path(tempfile.mkdtemp(prefix="synthscale-docker-"))  # only while starting: nothing to leave behind
        try:
            starter = workspace_tar(spec.workspace, spec.read_only_paths, self.uid, tmp / "starter.tar",
                                    private=self.private)
            outer = wrap_file_in_tar(starter, Path(STARTER_TAR).name, tmp / "upload.tar")
            self.container = self._call("create the container", client.containers.create, **kwargs)
            self._call("start the container", self.container.start)
            with outer.open("rb") as f:
                self._call("upload the starter workspace", self.container.put_archive, "/root", f)
            self._restore(kill_first=False, first=True)
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

    def _start(self, argv: list[str], user: str) -> tuple[str, ExecStream]:
        api = self.client.api
        created = self._call("exec", api.exec_create, self.container.id, argv, user=user, stdout=True, stderr=True)
        return created["Id"], self._call("exec", ExecStream, api, created["Id"])

    def _exit_code(self, exec_id: str) -> int | None:
        """The exec's exit code; None while it runs (its output may end a moment before it does)."""
        for _ in range(100):
            info = self._call("inspect an exec", self.client.api.exec_inspect, exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return info["ExitCode"]
            time.sleep(0.01)
        return None

    def _exec_capped(self, argv: list[str], user: str, stdout_cap: int, timeout_s: float
                     ) -> tuple[int | None, bytes, bytes]:
        """Run to completion (or until stdout passes `stdout_cap`: exit code None then), keeping at most
        `stdout_cap + 1` bytes of stdout: (exit code, stdout, stderr). SandboxError after `timeout_s`."""
        exec_id, stream = self._start(argv, user)
        sink = Capped(stdout_cap, MAX_ERROR_BYTES)
        try:
            state = stream.pump(sink, time.monotonic() + timeout_s)
        finally:
            stream.close()
        if sink.over:
            return None, bytes(sink.stdout), bytes(sink.stderr)
        if state != EOF:
            raise SandboxError(f"container {self.container.short_id}: {argv[0]} did not finish within "
                               f"{timeout_s:.0f} s; the container is stuck")
        return self._exit_code(exec_id), bytes(sink.stdout), bytes(sink.stderr)

    def _root(self, script: str, *args: str) -> bytes:
        argv = ["sh", "-c", script, "synthscale-root", *args]
        code, out, err = self._exec_capped(argv, "0:0", MAINTENANCE_CAP_BYTES, MAINTENANCE_TIMEOUT_S)
        if code != 0:
            detail = err.decode(errors="replace").strip()
            raise SandboxError(f"container {self.container.short_id}: maintenance step failed ({code}): {detail}")
        return out

    def _kill_sandbox_processes(self) -> None:
        self._root(KILL_SANDBOX_SCRIPT, self._uids)

    def _run_as(self, uid: int | None) -> int:
        if uid is None or uid == self.uid:
            return self.uid
        if uid != self.cfg.uid:
            raise ValueError(f"uid {uid}: a command runs as the sandbox's uid ({self.uid}) or the agent's "
                             f"({self.cfg.uid})")
        return uid

    def exec(self, command: str, timeout_s: float, cwd: str | None = None, uid: int | None = None) -> ExecResult:
        """Run `bash -c command` as the sandbox user (or as `uid`: the agent's, in a private sandbox); never raises
        for the command's own failure. Nothing it started runs on after it returns."""
        self._check_open()
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        run_as = self._run_as(uid)
        env = [f"{k}={v}" for k, v in minimal_env(SYSTEM_PATH).items()]
        umask = f"{umask_of(run_as, self.uid, self.cfg.uid):03o}"
        spared = " ".join(str(s.shell_pid) for s in self._sessions if s.tree_root() is not None)
        argv = ["env", "-i", *env, "sh", "-c", EXEC_WRAPPER, "synthscale-exec", f"{timeout_s:.3f}s",
                bash_script(command, cwd or WORKDIR), umask, spared]
        buf = OutputBuffer(self.cfg.max_output_bytes)
        start = time.monotonic()
        exec_id, stream = self._start(argv, f"{run_as}:{run_as}")

        def keep(_stream: int, data: bytes) -> bool:
            buf.feed(data)
            return True

        overran = False
        try:
            if stream.pump(keep, start + timeout_s + GUARD_GRACE_S) != EOF:  # the in-container timeout failed
                overran = True
                logger.warning("container %s: command outlived its timeout; killing its processes",
                               self.container.short_id)
                self._kill_sandbox_processes()
                if stream.pump(keep, time.monotonic() + GUARD_GRACE_S) != EOF:
                    logger.error("container %s: output still open after the kill; abandoning it",
                                 self.container.short_id)
        finally:
            stream.close()
        duration_s = time.monotonic() - start
        code = self._exit_code(exec_id)
        timed_out = overran or code is None or (code == KILL_EXIT_CODE and duration_s >= timeout_s)
        return ExecResult(
            exit_code=KILL_EXIT_CODE if timed_out else code,
            output=buf.text(),
            timed_out=timed_out,
            duration_s=duration_s,
            output_truncated=buf.truncated,
        )

    # ----- shell sessions -----

    def shell(self, functions: Sequence[str] = ()) -> ShellSession:
        """A persistent bash as the sandbox user in the workspace (`engine.sandbox.session`) over one `docker exec`
        with stdin attached, spared by other commands' clean-up; `reset` and `close` end it. Its background jobs live
        on between commands (MLGym's); a process that left it dies after each command (`session.REAP_FUNCTION`). On
        a timeout every process of the sandbox's uids but the shell itself dies, background jobs included."""
        self._check_open()
        env = [f"{k}={v}" for k, v in minimal_env(SYSTEM_PATH).items()]
        umask = f"{umask_of(self.uid, self.uid, self.cfg.uid):03o}"

        def start() -> DockerChannel:
            self._check_open()
            api = self.client.api
            created = self._call("start a shell", api.exec_create, self.container.id,
                                 ["env", "-i", *env, "bash", "--noprofile", "--norc"], user=f"{self.uid}:{self.uid}",
                                 stdin=True, stdout=True, stderr=True)
            return DockerChannel(api, created["Id"], self._call("start a shell", api.exec_start, created["Id"],
                                                                socket=True))

        def interrupt(_channel: DockerChannel, shell_pid: int) -> None:
            self._root(INTERRUPT_SHELL_SCRIPT, self._uids, str(shell_pid))

        def kill(_channel: DockerChannel, shell_pid: int) -> None:
            self._root('kill -KILL "$1"', str(shell_pid))

        session = ShellSession(start, interrupt, functions, self.cfg.max_output_bytes, f"umask {umask}", WORKDIR,
                               name=f"container {self.container.short_id} shell", kill=kill, reap_orphans=True)
        self._sessions = [s for s in self._sessions if s.alive] + [session]
        return session

    def _end_sessions(self, why: str) -> None:
        for session in self._sessions:
            session.close(why, kill=False)  # the reset's or the removal's kill ends it
        self._sessions = []

    # ----- files -----

    def _read_out(self, argv: list[str], path: str, cap_bytes: int, what: str) -> bytes:
        """What a reader or lister (`engine.sandbox.reads`) run as the sandbox user sends: at most `cap_bytes`."""
        code, out, err = self._exec_capped(argv, f"{self.uid}:{self.uid}", cap_bytes, READ_TIMEOUT_S)
        return check_answer(path, 0 if code is None and len(out) > cap_bytes else code, out, err, cap_bytes, what)

    def read_file(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """Bytes of a regular file, read as the sandbox user, within the caps of `engine.sandbox.reads`:
        FileTooLargeError above `max_bytes`, SpecialFileError for a FIFO, device or socket, LinkEscapeError for a
        link out of the workspace (all OSErrors: the agent's doing)."""
        self._check_open()
        p = sandbox_path(path)
        return self._read_out(read_argv(p, max_bytes, WORKDIR), p, max_bytes, "file")

    def list_files(self, path: str = ".", max_depth: int = 3) -> list[str]:
        """The regular files below the folder `path` (workspace-relative or absolute), at most `max_depth` levels
        down, relative to it and sorted, as the sandbox user sees them; links are not followed, and a name may
        hold any character but NUL. FileTooLargeError when the names pass `MAX_LIST_BYTES`."""
        self._check_open()
        if max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {max_depth}")
        p = sandbox_path(path)
        return split_listing(self._read_out(list_argv(p, MAX_LIST_BYTES, WORKDIR, max_depth), p, MAX_LIST_BYTES,
                                            "listing"))

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file as the sandbox user (creating its folders); read-only files raise PermissionError."""
        self._check_open()
        p = sandbox_path(path)
        staged = f"synthscale-stage-{uuid.uuid4().hex}"
        self._call("stage a file", self.container.put_archive, "/root", single_file_tar(staged, data))
        uid, umask = self.uid, f"{umask_of(self.uid, self.uid, self.cfg.uid):03o}"
        script = (
            f"setpriv --reuid={uid} --regid={uid} --clear-groups "
            f'sh -c \'umask {umask} && mkdir -p -- "$(dirname -- "$1")" && cat > "$1"\' '
            f'write_file "$1" < "/root/$2"; rc=$?; rm -f "/root/$2"; exit $rc'
        )
        code, _, err = self._exec_capped(["sh", "-c", script, "synthscale-write", p, staged], "0:0",
                                         MAINTENANCE_CAP_BYTES, MAINTENANCE_TIMEOUT_S)
        if code != 0:
            raise_file_error(p, code, err)

    def copy_out(self, path: str, dest: Path, max_bytes: int = MAX_READ_BYTES) -> None:
        """Copy a file out of the container to the host path `dest`, under `read_file`'s rules."""
        write_host_file(Path(dest), self.read_file(path, max_bytes))

    # ----- lifecycle -----

    def _restore(self, kill_first: bool, first: bool = False) -> None:
        # one exec (each costs a round trip to dockerd): kill, empty every place the agent can write (the
        # scratch mounts, POSIX message queues, and SysV IPC objects, which outlive their processes in the
        # container's IPC namespace and only their owner may remove), unpack the starter
        ipcrm = "".join(f"setpriv --reuid={u} --regid={u} --clear-groups ipcrm --all 2>/dev/null; "
                        for u in self._uids.split(","))
        self._root(
            (PRIVATE_SETUP_SCRIPT if first and self.private else "")
            + (KILL_SANDBOX_SCRIPT + "; " if kill_first else "")
            + f"find {WORKDIR} /tmp /var/tmp /dev/shm /dev/mqueue -mindepth 1 -delete 2>/dev/null; "
            f"find {HOME} -mindepth 1 -maxdepth 1 ! -path {WORKDIR} -exec rm -rf {{}} +; "
            + ipcrm + f"tar -xpf {STARTER_TAR} -C {WORKDIR} --numeric-owner",
            self._uids, str(self.uid),
        )

    def reset(self) -> None:
        """Kill the sandbox's processes and restore the starter workspace; empty $HOME, /tmp, /var/tmp, /dev/shm
        and the message queues, and remove the SysV IPC objects."""
        self._check_open()
        self._end_sessions("ended by the sandbox's reset")
        self._restore(kill_first=True)

    def close(self) -> None:
        """Remove the container. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._end_sessions("ended by the sandbox's close")
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


class DockerChannel:
    """A `docker exec`'s attached connection to a bash (`engine.sandbox.session.Channel`): stdin written to the
    socket, the multiplexed output demultiplexed (stderr is merged by the shell itself)."""

    CHECK_EVERY_S = 1.0  # how often a silent connection asks dockerd whether the shell still runs

    def __init__(self, api: Any, exec_id: str, sock: Any) -> None:
        self._api, self._id = api, exec_id
        self._buf = sock._response.raw._fp.fp  # the buffered reader that read the 101 response (see ExecStream)
        self._sock = self._buf.raw._sock
        self._sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._sock, selectors.EVENT_READ)
        self._frames = Frames()
        self._spill = b""  # read by exit_code's look, not handed out yet
        self._eof = self._closed = False
        self._code: int | None = None

    def send(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError("the session is closed")
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                selectors.select.select([], [self._sock], [], 1.0)

    def _read(self) -> bytes | None:
        """What is there now: data, b"" at EOF, None when nothing is."""
        chunk = self._buf.read1(READ_CHUNK)
        if chunk:
            return b"".join(data for _, data in self._frames.feed(chunk))
        if not self._sel.select(timeout=0):
            return None
        chunk = self._buf.read1(READ_CHUNK)
        if not chunk:
            self._eof = True
            return b""
        return b"".join(data for _, data in self._frames.feed(chunk))

    def recv(self, timeout_s: float) -> bytes | None:
        if self._spill:
            data, self._spill = self._spill, b""
            return data
        if self._eof or self._closed:
            return b""
        deadline = time.monotonic() + timeout_s
        while True:
            data = self._read()
            if data is not None:
                return data or (None if not self._eof else b"")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self._sel.select(timeout=min(remaining, self.CHECK_EVERY_S)) and self._inspect() is not None:
                return b""  # exited, yet a background job holds the output open

    def _inspect(self) -> int | None:
        try:
            info = self._api.exec_inspect(self._id)
        except Exception:  # noqa: BLE001 - the container is gone: so is the shell
            return -1
        return None if info.get("Running") else (info.get("ExitCode") if info.get("ExitCode") is not None else -1)

    def exit_code(self) -> int | None:
        if self._code is not None:
            return self._code
        if not self._eof and not self._closed:
            data = self._read()  # cheap: no call to dockerd while the connection is open
            if data:
                self._spill += data
            if not self._eof:
                return None
        self._code = self._inspect()
        return self._code

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sel.close()
        try:
            self._sock.close()
        except OSError:
            pass


READ_CHUNK = 65536


def _owner_alive(container: Any) -> bool:
    """The container's starter is a live process on this host (its own worker still uses it)."""
    host, _, pid = container.labels.get(OWNER_LABEL, "").partition(":")
    return host == socket.gethostname() and pid.isdigit() and pid_alive(int(pid))
