"""The local runtime: one bubblewrap sandbox per task on this machine. Reads the task's starter workspace;
writes a per-sandbox folder under the system temp dir (tmpfs workspace, passwd files, starter tar) and,
as root, a cgroup; removes all of it on close.

How isolation works (as root, the normal case):
- The workspace is a size-limited tmpfs (`workspace_mb`) that the runtime mounts on a private host folder
  and bind-mounts at /home/agent/workspace into every command's bwrap, so it persists across commands
  without a long-lived holder process; `reset()` unmounts and remounts it and unpacks the starter tar.
- Each command is its own bwrap: read-only /usr, /etc and the engine's Python, fresh /tmp and $HOME
  (tmpfs), /proc, a minimal /dev, new pid/ipc/uts/net namespaces, --die-with-parent, --new-session.
  Inside, setpriv drops to `cfg.uid` without capabilities, so file modes and limits bind.
- Memory and process counts are limited by a per-sandbox cgroup (v1 or v2) when one can be created, which
  bounds the whole sandbox. Otherwise by rlimits: RLIMIT_DATA per process (not RLIMIT_AS, which numpy's
  reserved-but-unused mappings exhaust) and RLIMIT_NPROC, which counts every process of the uid on the host,
  so sandboxes sharing the uid share that budget. RLIMIT_FSIZE always caps single files.
- A command's background processes end with it (its pid namespace dies); a timeout SIGKILLs the
  launcher's process group, which takes the namespace down, and the cgroup is emptied too.

Not root: bwrap maps the caller to `cfg.uid` in a user namespace; the workspace is a plain folder (size not
enforced) and read-only files are only chmod 0444 (the agent owns them, so this is advisory). Without bwrap
and with `allow_unsandboxed`: commands run directly in a temporary folder, with no isolation at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.protocols import ExecResult, SandboxSpec
from engine.sandbox.bwrap import agent_passwd, bwrap_argv, drop_privileges_argv, rlimit_argv, sandbox_path_env
from engine.sandbox.cgroups import SandboxCgroup
from engine.sandbox.common import (
    KILL_EXIT_CODE, WORKDIR, bash_script, minimal_env, pid_alive, raise_file_error, sandbox_path, workspace_tar,
    write_host_file,
)  # fmt: skip
from engine.sandbox.process import run_capped, run_raw

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
        return LocalSandbox(self.cfg, spec, self.run_id, self.mode)

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
            ws = base / "workspace"
            if os.path.ismount(ws):
                subprocess.run(["umount", "-l", str(ws)], capture_output=True)
            shutil.rmtree(base, onerror=_force_remove)
            removed += 1
        return removed


class LocalSandbox:
    """One task's sandbox; use it with `with`. Commands run one at a time."""

    def __init__(self, cfg: SandboxConfig, spec: SandboxSpec, run_id: str, mode: Mode) -> None:
        self.cfg, self.spec, self.run_id, self.mode = cfg, spec, run_id, mode
        task = spec.labels.get("task_id", "task")
        self._base = Path(tempfile.mkdtemp(prefix=f"synthscale-{run_id}-{task}-"))
        (self._base / OWNER_FILE).write_text(str(os.getpid()))
        self._ws = self._base / "workspace"
        self._ws.mkdir()
        self._mounted = False
        self._closed = False
        self.cgroup: SandboxCgroup | None = None
        self.workdir = WORKDIR if mode != "unsandboxed" else str(self._ws)
        try:
            self._starter = workspace_tar(spec.workspace, spec.read_only_paths, cfg.uid, self._base / "starter.tar")
            if mode != "unsandboxed":
                self._write_passwd()
            if mode == "root":
                self.cgroup = SandboxCgroup.create(self._base.name, cfg.memory_mb * MiB, cfg.pids_limit)
            self._fill_workspace()
            self._probe()
        except BaseException:
            self.close()
            raise
        logger.info("run %s: local sandbox %s (%s mode, cgroup=%s)", run_id, self._base, mode, self.cgroup is not None)

    # ----- commands -----

    def _command_argv(self, inner: list[str]) -> list[str]:
        cfg = self.cfg
        fsize = cfg.workspace_mb * MiB
        if self.mode == "unsandboxed":
            return rlimit_argv(nproc=None, data_bytes=cfg.memory_mb * MiB, file_size_bytes=fsize) + inner
        limits = rlimit_argv(
            nproc=None if self.cgroup else cfg.pids_limit,
            data_bytes=None if self.cgroup else cfg.memory_mb * MiB,
            file_size_bytes=fsize,
        )
        argv = bwrap_argv(
            workspace_dir=self._ws,
            etc_dir=self._base,
            scratch_mb=cfg.workspace_mb,
            network=cfg.network,
            gpu_ids=self.spec.gpu_ids,
            user_namespace_uid=cfg.uid if self.mode == "user" else None,
        )
        argv += ["--"]
        if self.mode == "root":
            argv += drop_privileges_argv(cfg.uid)
        argv += limits + inner
        return (self.cgroup.launcher() if self.cgroup else []) + argv

    def _launch_env(self) -> dict[str, str]:
        return minimal_env(sandbox_path_env(), home=str(self._base) if self.mode == "unsandboxed" else "/home/agent")

    def exec(self, command: str, timeout_s: float, cwd: str | None = None) -> ExecResult:
        """Run `bash -c command` as the sandbox user; never raises for the command's own failure."""
        self._check_open()
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        argv = self._command_argv(["bash", "-c", bash_script(command, cwd or self.workdir)])
        result = run_capped(
            argv,
            timeout_s=timeout_s,
            max_output_bytes=self.cfg.max_output_bytes,
            env=self._launch_env(),
            cwd=self._ws if self.mode == "unsandboxed" else None,
            on_timeout=self._kill_processes,
        )
        if result.timed_out:
            result.exit_code = KILL_EXIT_CODE
        return result

    def _run_file_op(self, inner: list[str], data: bytes | None, path: str) -> bytes:
        self._check_open()
        rc, out, err = run_raw(
            self._command_argv(inner),
            input_bytes=data,
            timeout_s=FILE_OP_TIMEOUT_S,
            env=self._launch_env(),
            cwd=self._ws if self.mode == "unsandboxed" else None,
        )
        if rc != 0:
            raise_file_error(path, rc, err)
        return out

    def read_file(self, path: str) -> bytes:
        """Bytes of a file, read as the sandbox user (so it sees exactly what the agent may see)."""
        p = sandbox_path(path, self.workdir)
        return self._run_file_op(["cat", "--", p], None, p)

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file as the sandbox user (creating its folders); read-only files raise PermissionError."""
        p = sandbox_path(path, self.workdir)
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
        self._run_file_op(["sh", "-c", script, "write_file", p], data, p)

    def copy_out(self, path: str, dest: Path) -> None:
        """Copy a file out of the sandbox to the host path `dest`."""
        write_host_file(Path(dest), self.read_file(path))

    def _probe(self) -> None:
        """Start one trivial sandboxed process, so that a runtime that cannot work here (user namespaces
        disabled, no mount rights, missing setpriv) fails now as a SandboxError, not later as an agent error."""
        rc, out, err = run_raw(self._command_argv(["true"]), input_bytes=None, timeout_s=FILE_OP_TIMEOUT_S,
                               env=self._launch_env(), cwd=self._ws if self.mode == "unsandboxed" else None)
        if rc != 0:
            detail = (err or out).decode("utf-8", errors="replace").strip()
            raise SandboxError(f"the local sandbox cannot start a process ({self.mode} mode, exit {rc}): {detail}; "
                               "check that bubblewrap works here (bwrap --ro-bind / / true) or use sandbox.runtime: docker")

    # ----- workspace -----

    def _write_passwd(self) -> None:
        passwd, group = agent_passwd(self.cfg.uid)
        (self._base / "passwd").write_text(passwd)
        (self._base / "group").write_text(group)

    def _fill_workspace(self) -> None:
        if self.mode == "root":
            self._mount_workspace()
        with tarfile.open(self._starter) as tar:
            # our own tar: keep owners and the sticky/read-only modes exactly (the 'data' filter drops them)
            tar.extractall(self._ws, numeric_owner=True, filter="fully_trusted")

    def _mount_workspace(self) -> None:
        options = f"size={self.cfg.workspace_mb}m,mode=1777,uid=0,gid=0,nosuid,nodev"
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, f"synthscale-{self.run_id}", str(self._ws)],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SandboxError(f"mounting the workspace tmpfs on {self._ws} failed: {proc.stderr.strip()}")
        self._mounted = True

    def _unmount_workspace(self) -> None:
        if not self._mounted:
            return
        proc = subprocess.run(["umount", str(self._ws)], capture_output=True, text=True)
        if proc.returncode != 0:  # something still holds it: detach now, the kernel frees it when released
            logger.warning("umount %s: %s; detaching lazily", self._ws, proc.stderr.strip())
            subprocess.run(["umount", "-l", str(self._ws)], capture_output=True)
        self._mounted = False

    def _kill_processes(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def reset(self) -> None:
        """Kill leftover processes and restore the starter workspace (new tmpfs, starter unpacked)."""
        self._check_open()
        self._kill_processes()
        if self.mode == "root":
            self._unmount_workspace()
        else:
            _wipe(self._ws)
        self._fill_workspace()

    def close(self) -> None:
        """Kill everything, unmount the workspace, remove the cgroup and the sandbox's folder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._kill_processes()
            self._unmount_workspace()
        finally:
            if self.cgroup is not None:
                self.cgroup.remove()
            shutil.rmtree(self._base, onerror=_force_remove)

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError(f"sandbox {self._base.name} is closed; start a new one")

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _force_remove(func, path, _exc_info) -> None:  # noqa: ANN001 (shutil.rmtree's onerror signature)
    """rmtree hook: the agent may have left folders without write or search permission."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
    except OSError:
        pass
    try:
        func(path)
    except FileNotFoundError:
        pass


def _wipe(folder: Path) -> None:
    for entry in list(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, onerror=_force_remove)
        else:
            entry.unlink()
