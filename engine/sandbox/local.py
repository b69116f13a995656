"""The local runtime: one bubblewrap sandbox per task on this machine. Reads the task's starter workspace;
writes a per-sandbox folder under the system temp dir (starter tar and files, workspace mounts, passwd files,
bwrap logs) and, as root, a cgroup; removes all of it on close.

How isolation works (as root, the normal case):
- The workspace (`engine.sandbox.workspace`) is an overlayfs: the starter files, unpacked once, under a
  size-limited tmpfs (`workspace_mb`) that takes every change; restoring it mounts a fresh, empty tmpfs.
- The sandbox itself is a long-lived bwrap (`engine.sandbox.holder`): read-only /usr, /etc and the engine's
  Python, its own /tmp, /dev/shm and $HOME (tmpfs), /proc, a minimal /dev, the workspace bind-mounted at
  /home/agent/workspace, new pid/ipc/uts/net namespaces. Each command enters those namespaces (nsenter),
  then setpriv drops to `cfg.uid` without capabilities, so file modes and limits bind. What a command leaves
  running is killed when it returns (its process group, then whatever of the agent's is left in the sandbox).
- `reset()` ends the namespaces, which kills every process in them and drops /tmp, $HOME, /dev/shm and IPC
  objects, and switches to a second sandbox over a second, pristine workspace, set up while the episode ran;
  the old one is restored and set up again for the next reset. A reset therefore costs a few system calls.
- Memory and process counts are limited by a per-sandbox cgroup (v1 or v2) when one can be created, which
  bounds the whole sandbox. Otherwise by rlimits: RLIMIT_DATA per process (not RLIMIT_AS, which numpy's
  reserved-but-unused mappings exhaust) and RLIMIT_NPROC, which counts every process of the uid on the host,
  so sandboxes sharing the uid share that budget. RLIMIT_FSIZE always caps single files.
- Workspace files are read and written from the host when the runtime can check the sandbox user's
  permissions itself (`engine.sandbox.hostfs`), else by a `cat` inside: both see what the agent may see.

Not root: every command is its own bwrap, which maps the caller to `cfg.uid` in a user namespace (fresh /tmp
and $HOME per command); the workspace is a plain folder (size not enforced) and read-only files are only
chmod 0444 (the agent owns them, so this is advisory). Without bwrap and with `allow_unsandboxed`: commands
run directly in a temporary folder, with no isolation at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.protocols import ExecResult, SandboxSpec
from engine.sandbox.bwrap import (
    AGENT_UMASK, agent_passwd, bwrap_argv, drop_privileges_argv, limits_script, nsenter_argv, sandbox_env,
    sandbox_path_env,
)  # fmt: skip
from engine.sandbox.cgroups import SandboxCgroup
from engine.sandbox.common import (
    KILL_EXIT_CODE, WORKDIR, bash_script, minimal_env, pid_alive, raise_file_error, sandbox_path,
    workspace_tar, write_host_file,
)  # fmt: skip
from engine.sandbox.holder import NamespaceHolder, kill_namespace_processes
from engine.sandbox.hostfs import read_as, write_as
from engine.sandbox.mounts import mounts_under, unmount
from engine.sandbox.process import ArmedBash, finish, launch, run_raw
from engine.sandbox.workspace import OverlayWorkspace, Workspace, force_remove, make_workspaces

logger = logging.getLogger(__name__)

Mode = Literal["root", "user", "unsandboxed"]
MiB = 1024 * 1024
FILE_OP_TIMEOUT_S = 120.0
OWNER_FILE = "owner.pid"


class LocalRuntime:
    """Starts bubblewrap sandboxes on this machine."""

    name = "local"

    def __init__(self, cfg: SandboxConfig, run_id: str) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.overlay = True  # switched off after the first sandbox that could not mount one
        if shutil.which("bwrap"):
            self.mode: Mode = "root" if os.geteuid() == 0 else "user"
        elif cfg.allow_unsandboxed:
            logger.warning("run %s: bwrap not found; commands run UNSANDBOXED (sandbox.allow_unsandboxed)", run_id)
            self.mode = "unsandboxed"
        else:
            raise SandboxError(
                "bubblewrap (bwrap) is not on PATH: install it (apt-get install bubblewrap), or use "
                "sandbox.runtime: docker, or set sandbox.allow_unsandboxed: true on a private machine"
            )

    def start(self, spec: SandboxSpec) -> LocalSandbox:
        sandbox = LocalSandbox(self.cfg, spec, self.run_id, self.mode, overlay=self.overlay)
        if self.mode == "root" and not isinstance(sandbox.workspace, OverlayWorkspace):
            self.overlay = False
        return sandbox

    def reap_leftovers(self) -> int:
        """Remove what sandboxes of this run left behind when their process died without closing them
        (killed driver, OOM): workspace mounts, cgroups and folders. Sandboxes of live processes are kept,
        so workers of one run on one node can reap safely. Returns how many were removed."""
        removed = 0
        for base in Path(tempfile.gettempdir()).glob(f"synthscale-{self.run_id}-*"):
            owner = base / OWNER_FILE
            try:
                pid = int(owner.read_text())
            except (OSError, ValueError):
                continue  # not ours, or still being created
            if pid_alive(pid):
                continue
            logger.info("run %s: reaping local sandbox %s left by dead process %d", self.run_id, base, pid)
            SandboxCgroup.existing(base.name).remove()
            for point in mounts_under(base):
                unmount(point)
            shutil.rmtree(base, onerror=force_remove)
            removed += 1
        return removed


@dataclass
class _Slot:
    """A workspace and, as root, the namespace holder whose sandbox binds it and the next command's process,
    started ahead (`ArmedBash`)."""

    workspace: Workspace
    holder: NamespaceHolder | None = None
    armed: ArmedBash | None = None

    def retire(self) -> list[NamespaceHolder | ArmedBash]:
        """End the slot's sandbox (every process in it dies) and let its waiting process go; what is left to
        reap. The holder goes first: killing the waiting process's nsenter first can hold up the namespace's
        end for seconds (see `ArmedBash.release`)."""
        parts = [p for p in (self.holder, self.armed) if p is not None]
        if self.holder is not None:
            self.holder.kill()
        if self.armed is not None:
            self.armed.release()
        self.holder = self.armed = None
        return parts


class LocalSandbox:
    """One task's sandbox; use it with `with`. Commands run one at a time.

    As root it keeps two slots, each a workspace with a `NamespaceHolder` whose sandbox binds it: commands enter
    the current slot's namespaces; `reset` ends them (every process in them dies with them), restores the old
    slot's workspace and switches to the other slot, whose sandbox was set up in the background after the
    episode's first command. So /tmp, $HOME and /dev/shm last for an episode, as in a container, and a reset
    costs a few system calls. Without root every command is its own bwrap (unsandboxed: a plain
    process) over one workspace."""

    def __init__(self, cfg: SandboxConfig, spec: SandboxSpec, run_id: str, mode: Mode, overlay: bool = True) -> None:
        self.cfg, self.spec, self.run_id, self.mode = cfg, spec, run_id, mode
        task = spec.labels.get("task_id", "task")
        self._base = Path(tempfile.mkdtemp(prefix=f"synthscale-{run_id}-{task}-"))
        (self._base / OWNER_FILE).write_text(str(os.getpid()))
        self._closed = False
        self.cgroup: SandboxCgroup | None = None
        self._slots: list[_Slot] = []
        self._current = 0
        self._dying: list[NamespaceHolder | ArmedBash] = []  # ended, not reaped yet
        try:
            starter = workspace_tar(spec.workspace, spec.read_only_paths, cfg.uid, self._base / "starter.tar")
            if mode != "unsandboxed":
                self._write_passwd()
            if mode == "root":
                self.cgroup = SandboxCgroup.create(self._base.name, cfg.memory_mb * MiB, cfg.pids_limit)
            workspaces = make_workspaces(self._base, starter, count=2 if mode == "root" else 1, root=mode == "root",
                                         overlay=overlay, size_mb=cfg.workspace_mb, name=f"synthscale-{run_id}")
            self._slots = [_Slot(ws) for ws in workspaces]
            self.workdir = WORKDIR if mode != "unsandboxed" else str(workspaces[0].path)
            self._env = (sandbox_env(spec.gpu_ids) if mode != "unsandboxed"
                         else minimal_env(sandbox_path_env(), home=str(self._base)))
            self._limits = self._limits_script()
            if mode == "root":
                self._slots[0].holder = self._hold(self._slots[0].workspace)
            self._use_current()
            self._probe()
            self._prepare_next()
        except BaseException:
            self.close()
            raise
        logger.info("run %s: local sandbox %s (%s mode, %s, cgroup=%s)", run_id, self._base, mode,
                    type(self.workspace).__name__, self.cgroup is not None)

    @property
    def workspace(self) -> Workspace:
        """The workspace the agent's commands see now (on the host)."""
        return self._slots[self._current].workspace

    # ----- commands -----

    def _hold(self, workspace: Workspace) -> NamespaceHolder:
        options = bwrap_argv(workspace_dir=workspace.path, etc_dir=self._base, scratch_mb=self.cfg.workspace_mb,
                             network=self.cfg.network, gpu_ids=self.spec.gpu_ids, user_namespace_uid=None,
                             die_with_parent=False)
        return NamespaceHolder(options, self._env, self._base / f"{workspace.path.parent.name}-holder.log")

    def _use_current(self) -> None:
        """The command line up to the sandboxed program, built once per slot: every command until the next
        reset runs under the same namespaces, cgroup and uid (re-probing the host per command buys nothing)."""
        slot = self._slots[self._current]
        self._cwd = slot.workspace.path if self.mode == "unsandboxed" else None
        if self.mode == "unsandboxed":
            self._prefix: list[str] = []
        elif self.mode == "user":
            self._prefix = bwrap_argv(workspace_dir=slot.workspace.path, etc_dir=self._base,
                                      scratch_mb=self.cfg.workspace_mb, network=self.cfg.network,
                                      gpu_ids=self.spec.gpu_ids, user_namespace_uid=self.cfg.uid) + ["--"]
        else:
            self._prefix = self._enter(slot.holder.wait_ready(FILE_OP_TIMEOUT_S)) + drop_privileges_argv(self.cfg.uid)

    def _enter(self, pid: int) -> list[str]:
        """argv prefix that joins the cgroup and enters the sandbox of holder `pid`, still as root."""
        return (self.cgroup.launcher() if self.cgroup else []) + nsenter_argv(pid)

    def _limits_script(self) -> str:
        # single files a little above the workspace's size: where the workspace is a size-limited mount, filling
        # it reports a full disk (ENOSPC) as in a container, not SIGXFSZ; where it is a folder, this is the cap
        cfg, limited = self.cfg, self.cgroup is not None
        return limits_script(nproc=None if limited or self.mode == "unsandboxed" else cfg.pids_limit,
                             data_bytes=None if limited else cfg.memory_mb * MiB, file_size_bytes=self._max_file_bytes)

    @property
    def _max_file_bytes(self) -> int:
        return (self.cfg.workspace_mb + 1) * MiB

    def exec(self, command: str, timeout_s: float, cwd: str | None = None) -> ExecResult:
        """Run `bash -c command` as the sandbox user; never raises for the command's own failure. What it
        leaves running in the background ends with it."""
        self._check_open()
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        # the limits go on the `cd` line, so the command's own line numbers stay what the agent wrote
        script = f"{self._limits} && {bash_script(command, cwd or self.workdir)}"
        slot = self._slots[self._current]
        armed, slot.armed = slot.armed, None
        proc = armed.fire(script) if armed is not None else None
        if proc is None:
            if armed is not None:
                self._dying.append(armed)  # it died meanwhile, or the script is too long for it
            proc = launch(self._prefix + ["bash", "-c", script], env=self._env, cwd=self._cwd)
        result = finish(proc, timeout_s=timeout_s, max_output_bytes=self.cfg.max_output_bytes,
                        on_timeout=self._kill_processes, on_exit=self._kill_processes)
        if result.timed_out:
            result.exit_code = KILL_EXIT_CODE
        self._prepare_next()
        return result

    def _prepare_next(self) -> None:
        """As root, while the agent thinks: start setting up the next reset's sandbox (the spare slot), and
        start the next command's process in the current sandbox and, once it is set up, in the spare one, so
        that neither a command nor the first command after a reset waits for them. Cheap when all is ready."""
        if self.mode != "root" or self._closed:  # closed meanwhile: a worker closing a running sandbox, say
            return
        spare = self._slots[1 - self._current]
        if spare.holder is None:
            spare.holder = self._hold(spare.workspace)
        for slot in (self._slots[self._current], spare):
            pid = slot.holder.ready_pid()
            if slot.armed is None and pid is not None:
                # it waits as root, so that killing the agent's processes between commands spares it
                slot.armed = ArmedBash(self._enter(pid), self._env, then=drop_privileges_argv(self.cfg.uid))

    def _run_file_op(self, inner: list[str], data: bytes | None, path: str) -> bytes:
        rc, out, err = run_raw(self._prefix + inner, input_bytes=data, timeout_s=FILE_OP_TIMEOUT_S, env=self._env,
                               cwd=self._cwd)
        if rc != 0:
            raise_file_error(path, rc, err)
        return out

    def _host_path(self, path: str) -> str | None:
        """The workspace-relative part of an in-sandbox path the host may serve directly (root mode only: there
        the runtime can check the sandbox user's permissions itself), else None."""
        if self.mode != "root" or not path.startswith(WORKDIR + "/"):
            return None
        return path[len(WORKDIR) + 1:]

    def read_file(self, path: str) -> bytes:
        """Bytes of a file, read as the sandbox user (so it sees exactly what the agent may see)."""
        self._check_open()
        p = sandbox_path(path, self.workdir)
        rel = self._host_path(p)
        if rel is not None:
            try:
                data = read_as(self.workspace.path, rel, self.cfg.uid)
            except FileNotFoundError:
                raise FileNotFoundError(2, "No such file or directory", p) from None
            except IsADirectoryError:
                raise IsADirectoryError(21, "Is a directory", p) from None
            if data is not None:
                return data
        return self._run_file_op(["cat", "--", p], None, p)

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file as the sandbox user (creating its folders); read-only files raise PermissionError."""
        self._check_open()
        p = sandbox_path(path, self.workdir)
        rel = self._host_path(p)
        if rel is not None and len(data) <= self._max_file_bytes:  # beyond: the file size limit answers
            try:
                if write_as(self.workspace.path, rel, data, self.cfg.uid, 0o666 & ~AGENT_UMASK):
                    return
            except OSError as e:
                raise OSError(e.errno, e.strerror, p) from None
        script = f'{self._limits} && mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
        self._run_file_op(["bash", "-c", script, "write_file", p], data, p)

    def copy_out(self, path: str, dest: Path) -> None:
        """Copy a file out of the sandbox to the host path `dest`."""
        write_host_file(Path(dest), self.read_file(path))

    def _probe(self) -> None:
        """Start one trivial sandboxed process, so that a runtime that cannot work here (user namespaces
        disabled, no mount rights, missing setpriv or nsenter) fails now as a SandboxError, not later as an
        agent error."""
        rc, out, err = run_raw(self._prefix + ["true"], input_bytes=None, timeout_s=FILE_OP_TIMEOUT_S, env=self._env,
                               cwd=self._cwd)
        if rc != 0:
            detail = (err or out).decode("utf-8", errors="replace").strip()
            raise SandboxError(f"the local sandbox cannot start a process ({self.mode} mode, exit {rc}): {detail}; "
                               "check that bubblewrap works here (bwrap --ro-bind / / true) or use sandbox.runtime: docker")

    # ----- lifecycle -----

    def _write_passwd(self) -> None:
        passwd, group = agent_passwd(self.cfg.uid)
        (self._base / "passwd").write_text(passwd)
        (self._base / "group").write_text(group)

    def _kill_processes(self) -> None:
        """Kill every process of the sandbox user in this sandbox (its namespaces stay)."""
        holder = self._slots[self._current].holder if self._slots else None
        if self.cgroup is not None:
            self.cgroup.kill_all(keep_root=True)
        elif holder is not None and holder.pid is not None:
            kill_namespace_processes(holder.pid)

    def reset(self) -> None:
        """Kill every process of the episode and bring back the starter state: workspace, and (as root) fresh
        namespaces with an empty /tmp, $HOME and /dev/shm and no IPC objects; without root every command gets
        fresh ones anyway."""
        self._check_open()
        if self.mode != "root":
            self._kill_processes()
            self.workspace.restore()
            return
        self._prepare_next()  # normally done after the episode's first command already
        old = self._slots[self._current]
        holder = old.holder
        self._dying += old.retire()  # its pid namespace ends, and every process in it
        if self.cgroup is not None:
            self.cgroup.kill_all(keep_root=True)  # returns once the agent's processes are gone
        else:
            holder.reap(FILE_OP_TIMEOUT_S)  # bwrap exits after every process of its namespace
        old.workspace.restore()
        self._current = 1 - self._current
        self._use_current()
        self._prepare_next()
        self._dying = [part for part in self._dying if not part.reap(0)]

    def close(self) -> None:
        """Kill everything, unmount the workspaces, remove the cgroup and the sandbox's folder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for slot in self._slots:
                self._dying += slot.retire()
            for part in self._dying:  # let them end on their own first (see `_Slot.retire`)
                if not part.reap(5.0):
                    logger.warning("sandbox %s: %s still running 5 s after its sandbox ended; killing it",
                                   self._base, type(part).__name__)
                    if isinstance(part, ArmedBash):
                        part.kill()
            for slot in self._slots:
                slot.workspace.close()
        finally:
            if self.cgroup is not None:
                self.cgroup.remove()
            for point in mounts_under(self._base):  # whatever a failed start left mounted
                unmount(point)
            shutil.rmtree(self._base, onerror=force_remove)

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError(f"sandbox {self._base.name} is closed; start a new one")
        holder = self._slots[self._current].holder if self._slots else None
        if holder is not None and not holder.alive():
            raise SandboxError(f"sandbox {self._base.name}: its namespace holder died (see "
                               f"{holder.log}); start a new sandbox")

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
