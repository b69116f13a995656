"""How the local runtime starts a process inside one of its sandboxes: the command line up to the sandboxed program
(as root: join the cgroup, nsenter the holder's namespaces, drop to the uid with setpriv; without root: a bwrap
that reads its options from a memfd, so they are not on its command line; unsandboxed: nothing), which uids may
run there, and the shell preamble of limits and umask each gets. Reads and writes nothing but that memfd.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from engine.config import SandboxConfig
from engine.errors import SandboxError
from engine.sandbox.bwrap import args_memfd, bwrap_argv, drop_privileges_argv, limits_script, nsenter_argv, reopen_fd
from engine.sandbox.cgroups import SandboxCgroup
from engine.sandbox.common import max_file_bytes, umask_of

Mode = Literal["root", "user", "unsandboxed"]
MiB = 1024 * 1024


class Entry:
    """The way into one local sandbox for processes of its uid (`uid`) and, as root, of the agent's (`cfg.uid`, in
    a private sandbox). `use` points it at the current namespaces (after each reset); `argv` builds a command
    line; `limits[uid]` is the preamble the sandboxed bash runs first."""

    def __init__(self, cfg: SandboxConfig, mode: Mode, uid: int, cgroup: SandboxCgroup | None, etc_dir: Path,
                 gpu_ids: list[str]) -> None:
        self.cfg, self.mode, self.uid, self.cgroup = cfg, mode, uid, cgroup
        self._etc_dir, self._gpu_ids = etc_dir, gpu_ids
        self._prefix: list[str] = []  # as root: up to the uid drop
        self._bwrap_args = -1  # without root: a memfd of the options every command's bwrap reads
        self.limits = {u: self._limits_script(u) for u in {uid, cfg.uid}}

    def use(self, workspace: Path, holder_pid: int | None) -> None:
        """Enter the sandbox whose init is host pid `holder_pid` (root), or bind `workspace` (without root) from now
        on: every command until the next reset runs under the same namespaces, cgroup and uid (re-probing the host
        per command buys nothing)."""
        if self.mode == "root":
            assert holder_pid is not None
            self._prefix = self.enter(holder_pid)
        elif self.mode == "user" and self._bwrap_args == -1:
            self._bwrap_args = args_memfd(bwrap_argv(
                workspace_dir=workspace, etc_dir=self._etc_dir, scratch_mb=self.cfg.workspace_mb,
                network=self.cfg.network, gpu_ids=self._gpu_ids, user_namespace_uid=self.uid))

    def enter(self, pid: int) -> list[str]:
        """argv prefix that joins the cgroup and enters the sandbox of holder `pid`, still as root."""
        return (self.cgroup.launcher() if self.cgroup else []) + nsenter_argv(pid)

    @contextmanager
    def argv(self, inner: list[str], uid: int | None = None) -> Iterator[tuple[list[str], tuple[int, ...]]]:
        """The command line that runs `inner` in the current sandbox as `uid` (default: the sandbox's), and the
        descriptors to pass it."""
        if self.mode == "root":
            yield self._prefix + drop_privileges_argv(uid or self.uid) + inner, ()
        elif self.mode == "user":
            fd = reopen_fd(self._bwrap_args)  # bwrap reads its options from it, from the start
            try:
                yield ["bwrap", "--args", str(fd), "--", *inner], (fd,)
            finally:
                os.close(fd)
        else:
            yield list(inner), ()

    def run_as(self, uid: int | None) -> int:
        """The uid a command asked to run as `uid` runs as: the sandbox's (None), or the agent's (root only)."""
        if uid is None or uid == self.uid:
            return self.uid
        if uid != self.cfg.uid:
            raise ValueError(f"uid {uid}: a command runs as the sandbox's uid ({self.uid}) or the agent's "
                             f"({self.cfg.uid})")
        if self.mode != "root":
            raise SandboxError(f"running as uid {uid} in a sandbox of uid {self.uid} needs the local runtime as root")
        return uid

    def _limits_script(self, uid: int) -> str:
        # single files a little above the workspace's size: where the workspace is a size-limited mount, filling
        # it reports a full disk (ENOSPC) as in a container, not SIGXFSZ; where it is a folder, this is the cap
        cfg, limited = self.cfg, self.cgroup is not None
        return limits_script(nproc=None if limited or self.mode == "unsandboxed" else cfg.pids_limit,
                             data_bytes=None if limited else cfg.memory_mb * MiB,
                             file_size_bytes=max_file_bytes(cfg.workspace_mb), umask=umask_of(uid, self.uid, cfg.uid))

    def close(self) -> None:
        if self._bwrap_args != -1:
            os.close(self._bwrap_args)
            self._bwrap_args = -1
