"""The local runtime: one bubblewrap sandbox per task on this machine. Reads the task's starter workspace;
writes a per-sandbox folder under the system temp dir (starter tar and files, workspace mounts, passwd files,
bwrap logs) and, as root, a cgroup; removes all of it on close.

How isolation works (as root, the normal case):
- The workspace (`engine.sandbox.workspace`) is an overlayfs: the starter files, unpacked once, under a
  size-limited tmpfs (`workspace_mb`) that takes every change; restoring it mounts a fresh, empty tmpfs.
- The sandbox itself is a long-lived bwrap (`engine.sandbox.holder`): read-only /usr, /etc and the engine's
  Python, its own /tmp, /dev/shm and $HOME (tmpfs), /proc, a minimal /dev, the workspace bind-mounted at
  /home/agent/workspace, new pid/ipc/uts/net namespaces (bwrap's options, which name host paths, reach it through
  a file descriptor, so the agent's `ps` shows none). Each command enters those namespaces (nsenter), then setpriv
  drops to the sandbox's uid (`cfg.uid`, or `SandboxSpec.uid`) without capabilities, so file modes and limits
  bind. What a command leaves running is killed when it returns (its process group, then whatever of the agent's
  is left in the sandbox). Commands start from a thread carrying a seccomp filter that denies the kernel keyring
  calls (`engine.sandbox.seccomp`): a uid's keyrings are the host's, and would outlive the sandbox.
- `reset()` ends the namespaces, which kills every process in them and drops /tmp, $HOME, /dev/shm and IPC
  objects, and switches to a second sandbox over a second, pristine workspace, set up while the episode ran;
  the old one is restored and set up again for the next reset. A reset therefore costs a few system calls.
- Memory and process counts are limited by a per-sandbox cgroup (v1 or v2) when one can be created, which
  bounds the whole sandbox. Otherwise by rlimits: RLIMIT_DATA per process (not RLIMIT_AS, which numpy's
  reserved-but-unused mappings exhaust) and RLIMIT_NPROC, which counts every process of the uid on the host,
  so sandboxes sharing the uid share that budget. RLIMIT_FSIZE always caps single files.
- Workspace files are read and written from the host when the runtime can check the sandbox user's
  permissions itself (`engine.sandbox.hostfs`), else by a reader inside (`engine.sandbox.reads`, which also holds
  the caps: size, time, regular files only, links only within the workspace): both see what the agent may see.
- A private sandbox (`SandboxSpec.uid` other than the agent's, a grader's): its starter files are 0600/0700, its
  user's umask 077 and the workspace folder closed to others, so that a process of the agent's uid in it
  (`exec(..., uid=cfg.uid, cwd="/tmp")`: it cannot enter the workspace) can read none of its files.

Not root: every command is its own bwrap, which maps the caller to the sandbox's uid in a user namespace (fresh
/tmp, $HOME and keyrings per command); the workspace is a plain folder (size not enforced), read-only files are
only chmod 0444 and a private sandbox's files only 0600 (the caller owns them all, so this is advisory). Without bwrap and with `allow_unsandboxed`: commands
run directly in a temporary folder, with no isolation at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.protocols import ExecResult, SandboxSpec
from engine.sandbox.bwrap import agent_passwd, bwrap_argv, drop_privileges_argv, sandbox_env, sandbox_path_env
from engine.sandbox.cgroups import SandboxCgroup
from engine.sandbox.common import (
    HOME, KILL_EXIT_CODE, WORKDIR, bash_script, max_file_bytes, minimal_env, pid_alive, raise_file_error,
    sandbox_path, sandbox_uid, umask_of, workspace_tar, write_host_file,
)  # fmt: skip
from engine.sandbox.entry import Entry, Mode
from engine.sandbox.holder import NamespaceHolder, kill_namespace_processes
from engine.sandbox.hostfs import read_as, write_as
from engine.sandbox.mounts import mounts_under, unmount
from engine.sandbox.process import ArmedBash, finish, launch, run_capped, run_raw
from engine.sandbox.reads import (
    MAX_ERROR_BYTES, MAX_LIST_BYTES, MAX_READ_BYTES, READ_TIMEOUT_S, check_answer, list_argv, read_argv, split_listing,
)  # fmt: skip
from engine.sandbox.seccomp import FilteredStarter
from engine.sandbox.session import (
    PipeChannel, ShellSession, descendants, host_pid, kill_tree, process_table, start_bash,
)  # fmt: skip
from engine.sandbox.workspace import (
    AGENT_TOP, OverlayWorkspace, Workspace, force_remove, make_workspaces, private_top,
)  # fmt: skip

logger = logging.getLogger(__name__)

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
        # as root, commands start from a thread whose seccomp filter they inherit (with a user namespace, as
        # without root, keyrings are apart already)
        self.starter = FilteredStarter() if self.mode == "root" else None

    def start(self, spec: SandboxSpec) -> LocalSandbox:
        popen = self.starter.popen if self.starter is not None else subprocess.Popen
        sandbox = LocalSandbox(self.cfg, spec, self.run_id, self.mode, overlay=self.overlay, popen=popen)
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
    process) over one workspace. `popen` starts the commands (the runtime's `FilteredStarter`)."""

    def __init__(self, cfg: SandboxConfig, spec: SandboxSpec, run_id: str, mode: Mode, overlay: bool = True,
                 popen=subprocess.Popen) -> None:  # noqa: ANN001 (subprocess.Popen's signature)
        self.cfg, self.spec, self.run_id, self.mode, self._popen = cfg, spec, run_id, mode, popen
        self.uid = sandbox_uid(cfg.uid, spec)
        self.private = self.uid != cfg.uid
        if self.private and mode != "root":
            logger.warning("run %s: a private sandbox (uid %d) without root is only advisory", run_id, self.uid)
        task = spec.labels.get("task_id", "task")
        self._base = Path(tempfile.mkdtemp(prefix=f"synthscale-{run_id}-{task}-"))
        (self._base / OWNER_FILE).write_text(str(os.getpid()))
        self._closed = False
        self.cgroup: SandboxCgroup | None = None
        self._slots: list[_Slot] = []
        self._current = 0
        self._dying: list[NamespaceHolder | ArmedBash] = []  # ended, not reaped yet
        self._entry: Entry | None = None
        self._sessions: list[ShellSession] = []  # live `shell()`s: reset and close end them
        try:
            starter = workspace_tar(spec.workspace, spec.read_only_paths, self.uid, self._base / "starter.tar",
                                    private=self.private)
            if mode != "unsandboxed":
                self._write_passwd()
            if mode == "root":
                self.cgroup = SandboxCgroup.create(self._base.name, cfg.memory_mb * MiB, cfg.pids_limit)
            workspaces = make_workspaces(self._base, starter, count=2 if mode == "root" else 1, root=mode == "root",
                                         overlay=overlay, size_mb=cfg.workspace_mb, name=f"synthscale-{run_id}",
                                         top=private_top(self.uid) if self.private else AGENT_TOP)
            self._slots = [_Slot(ws) for ws in workspaces]
            self.workdir = WORKDIR if mode != "unsandboxed" else str(workspaces[0].path)
            self._env = (sandbox_env(spec.gpu_ids) if mode != "unsandboxed"
                         else minimal_env(sandbox_path_env(), home=str(self._base)))
            self._entry = Entry(cfg, mode, self.uid, self.cgroup, self._base, spec.gpu_ids)
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
        # a private sandbox's $HOME is its user's alone (bwrap makes it root's, open to all)
        setup = f"chown {self.uid}:{self.uid} {HOME} && chmod 0700 {HOME}" if self.private else None
        return NamespaceHolder(options, self._env, self._base / f"{workspace.path.parent.name}-holder.log", setup)

    def _use_current(self) -> None:
        """Point the commands at the current slot's sandbox (after a start or a reset)."""
        slot = self._slots[self._current]
        self._cwd = slot.workspace.path if self.mode == "unsandboxed" else None
        self._entry.use(slot.workspace.path, slot.holder.wait_ready(FILE_OP_TIMEOUT_S) if slot.holder else None)

    def exec(self, command: str, timeout_s: float, cwd: str | None = None, uid: int | None = None) -> ExecResult:
        """Run `bash -c command` as the sandbox user (or as `uid`: the agent's, in a private sandbox); never raises
        for the command's own failure. What it leaves running in the background ends with it."""
        self._check_open()
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        run_as = self._entry.run_as(uid)
        # the limits go on the `cd` line, so the command's own line numbers stay what the agent wrote
        script = f"{self._entry.limits[run_as]} && {bash_script(command, cwd or self.workdir)}"
        slot = self._slots[self._current]
        proc = None
        if run_as == self.uid:
            armed, slot.armed = slot.armed, None
            proc = armed.fire(script) if armed is not None else None
            if proc is None and armed is not None:
                self._dying.append(armed)  # it died meanwhile, or the script is too long for it
        if proc is None:
            with self._entry.argv(["bash", "-c", script], run_as) as (argv, fds):
                proc = launch(argv, env=self._env, cwd=self._cwd, pass_fds=fds, popen=self._popen)
        result = finish(proc, timeout_s=timeout_s, max_output_bytes=self.cfg.max_output_bytes,
                        on_timeout=self._kill_processes, on_exit=self._kill_processes)
        if result.timed_out:
            result.exit_code = KILL_EXIT_CODE
        self._prepare_next()
        return result

    def shell(self, functions: Sequence[str] = ()) -> ShellSession:
        """A persistent bash as the sandbox user in the workspace (`engine.sandbox.session`), started like a
        command (same namespaces, cgroup, uid, seccomp filter, limits line) and spared by other commands' clean-up;
        `reset` and `close` end it. Its background jobs live on between commands (MLGym's); a process that left it
        (a detached daemon, a fork bomb's orphans) dies after each command (`session.REAP_FUNCTION`, as root only:
        its own pid namespace). On a timeout every process of the sandbox user but the shell itself dies, background
        jobs of earlier commands included."""
        self._check_open()

        def start() -> PipeChannel:
            self._check_open()
            with self._entry.argv(["bash", "--noprofile", "--norc"]) as (argv, fds):
                return start_bash(argv, env=self._env, cwd=self._cwd, pass_fds=fds, popen=self._popen)

        session = ShellSession(start, self._interrupt_shell, functions, self.cfg.max_output_bytes,
                               self._entry.limits[self.uid], self.workdir, name=f"sandbox {self._base.name} shell",
                               reap_orphans=self.mode == "root")  # its own pid namespace only
        self._sessions = [s for s in self._sessions if s.alive] + [session]
        return session

    def _interrupt_shell(self, channel: PipeChannel, shell_pid: int) -> None:
        """Interrupt a session's command: signal the shell (see `session.INTERRUPT_SIGNAL`), kill all else."""
        shell = host_pid(channel.proc.pid, shell_pid)
        if shell is not None:
            try:
                os.kill(shell, signal.SIGURG)
            except ProcessLookupError:
                pass
        if self.mode == "root":
            self._kill_agent_processes(lambda table: {shell})
        else:
            kill_tree(channel.proc.pid, keep=[shell] if shell is not None else [])

    def _kill_agent_processes(self, spared: Callable[[dict[int, tuple[int, int]]], set[int]],
                              wait_s: float = 5.0) -> None:
        """As root: SIGKILL every process of the sandbox user in this sandbox but `spared(process table)` until
        none is left (`_kill_processes`, sparing the sessions)."""
        holder = self._slots[self._current].holder
        try:
            ns = os.readlink(f"/proc/{holder.pid}/ns/pid")
        except (OSError, TypeError):
            return  # the namespace is gone, and everything in it
        deadline = time.monotonic() + wait_s
        pause_s = 0.0005
        while True:
            table = process_table()
            members = set(self.cgroup.pids()) if self.cgroup is not None else set(table)
            keep = spared(table)
            victims = [p for p in members if p in table and table[p][1] != 0 and p not in keep]
            found = False
            for pid in victims:
                try:
                    if self.cgroup is None and os.readlink(f"/proc/{pid}/ns/pid") != ns:
                        continue
                    os.kill(pid, signal.SIGKILL)
                    found = True
                except OSError:
                    pass
            if not found:
                return
            if time.monotonic() > deadline:
                logger.warning("sandbox %s: processes %s survived the kill", self._base, victims[:10])
                return
            time.sleep(pause_s)
            pause_s = min(2 * pause_s, 0.02)

    def _end_sessions(self, why: str) -> None:
        for session in self._sessions:
            session.close(why)
        self._sessions = []

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
                slot.armed = ArmedBash(self._entry.enter(pid), self._env, then=drop_privileges_argv(self.uid),
                                       popen=self._popen)

    def _run_file_op(self, inner: list[str], data: bytes | None, path: str) -> bytes:
        with self._entry.argv(inner) as (argv, fds):
            rc, out, err = run_raw(argv, input_bytes=data, timeout_s=FILE_OP_TIMEOUT_S, env=self._env, cwd=self._cwd,
                                   pass_fds=fds)
        if rc != 0:
            raise_file_error(path, rc, err)
        return out

    def _stream(self, inner: list[str], path: str, cap_bytes: int, what: str) -> bytes:
        """What a reader or lister (`engine.sandbox.reads`) run as the sandbox user sends: at most `cap_bytes`."""
        with self._entry.argv(inner) as (argv, fds):
            rc, out, err = run_capped(argv, stdout_cap=cap_bytes, stderr_cap=MAX_ERROR_BYTES, env=self._env,
                                      timeout_s=READ_TIMEOUT_S, cwd=self._cwd, pass_fds=fds)
        return check_answer(path, 0 if rc is None else rc, out, err, cap_bytes, what)  # None: killed over the cap

    def _host_path(self, path: str) -> str | None:
        """The workspace-relative part of an in-sandbox path the host may serve directly (root mode only: there
        the runtime can check the sandbox user's permissions itself), else None."""
        if self.mode != "root" or not path.startswith(WORKDIR + "/"):
            return None
        return path[len(WORKDIR) + 1:]

    def read_file(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """Bytes of a regular file, read as the sandbox user (so it sees exactly what the agent may see), within
        the caps of `engine.sandbox.reads`: FileTooLargeError above `max_bytes`, SpecialFileError for a FIFO,
        device or socket, LinkEscapeError for a link out of the workspace (all OSErrors: the agent's doing)."""
        self._check_open()
        p = sandbox_path(path, self.workdir)
        rel = self._host_path(p)
        if rel is not None:
            try:
                data = read_as(self.workspace.path, rel, self.uid, max_bytes)
            except OSError as e:
                e.filename = p
                raise
            if data is not None:
                return data
        return self._stream(read_argv(p, max_bytes, self.workdir), p, max_bytes, "file")

    def list_files(self, path: str = ".", max_depth: int = 3) -> list[str]:
        """The regular files below the folder `path` (workspace-relative or absolute), at most `max_depth` levels
        down, relative to it and sorted, as the sandbox user sees them; links are not followed, and a name may
        hold any character but NUL. FileTooLargeError when the names pass `MAX_LIST_BYTES`."""
        self._check_open()
        if max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {max_depth}")
        p = sandbox_path(path, self.workdir)
        return split_listing(self._stream(list_argv(p, MAX_LIST_BYTES, self.workdir, max_depth), p, MAX_LIST_BYTES,
                                          "listing"))

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file as the sandbox user (creating its folders); read-only files raise PermissionError."""
        self._check_open()
        p = sandbox_path(path, self.workdir)
        rel = self._host_path(p)
        if rel is not None and len(data) <= max_file_bytes(self.cfg.workspace_mb):  # beyond: the size limit answers
            try:
                mode = 0o666 & ~umask_of(self.uid, self.uid, self.cfg.uid)
                if write_as(self.workspace.path, rel, data, self.uid, mode):
                    return
            except OSError as e:
                raise OSError(e.errno, e.strerror, p) from None
        script = f'{self._entry.limits[self.uid]} && mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
        self._run_file_op(["bash", "-c", script, "write_file", p], data, p)

    def copy_out(self, path: str, dest: Path, max_bytes: int = MAX_READ_BYTES) -> None:
        """Copy a file out of the sandbox to the host path `dest`, under `read_file`'s rules."""
        write_host_file(Path(dest), self.read_file(path, max_bytes))

    def _probe(self) -> None:
        """Start one trivial sandboxed process, so that a runtime that cannot work here (user namespaces
        disabled, no mount rights, missing setpriv or nsenter) fails now as a SandboxError, not later as an
        agent error."""
        with self._entry.argv(["true"]) as (argv, fds):
            rc, out, err = run_raw(argv, input_bytes=None, timeout_s=FILE_OP_TIMEOUT_S, env=self._env, cwd=self._cwd,
                                   pass_fds=fds)
        if rc != 0:
            detail = (err or out).decode("utf-8", errors="replace").strip()
            raise SandboxError(f"the local sandbox cannot start a process ({self.mode} mode, exit {rc}): {detail}; "
                               "check that bubblewrap works here (bwrap --ro-bind / / true) or use sandbox.runtime: docker")

    # ----- lifecycle -----

    def _write_passwd(self) -> None:
        passwd, group = agent_passwd(self.cfg.uid, owner_uid=self.uid)
        (self._base / "passwd").write_text(passwd)
        (self._base / "group").write_text(group)

    def _kill_processes(self) -> None:
        """Kill every process of the sandbox user in this sandbox (its namespaces stay)."""
        holder = self._slots[self._current].holder if self._slots else None
        roots = {s.channel.proc.pid for s in self._sessions if s.tree_root() is not None}
        if roots and holder is not None and holder.pid is not None:  # the sessions' shells and what they run stay
            self._kill_agent_processes(lambda table: descendants(roots, table))
        elif self.cgroup is not None:
            self.cgroup.kill_all(keep_root=True)
        elif holder is not None and holder.pid is not None:
            kill_namespace_processes(holder.pid)

    def reset(self) -> None:
        """Kill every process of the episode and bring back the starter state: workspace, and (as root) fresh
        namespaces with an empty /tmp, $HOME and /dev/shm and no IPC objects; without root every command gets
        fresh ones anyway."""
        self._check_open()
        self._end_sessions("ended by the sandbox's reset")
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
            self._end_sessions("ended by the sandbox's close")
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
            if self._entry is not None:
                self._entry.close()

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
