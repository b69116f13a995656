"""A long-lived bubblewrap process that holds one set of sandbox namespaces (mounts, pid, ipc, uts, net) for the
local runtime, whose commands enter them with `nsenter` instead of building a sandbox each. Reads bwrap's
info and readiness pipes; writes its error output to one file the caller names.

Why: a bwrap per command builds six namespaces and ~30 mounts, and tears them down again (8-10 ms a command on a
2-core VM, against 5-6 ms to enter existing ones); a long-lived set also keeps /tmp and $HOME for the episode,
as a container does. The holder runs as root inside (the agent cannot signal it) and ends when its stdin pipe
closes: when `kill` closes it, or when this process dies however it dies, so no holder outlives its owner
(unless the owner forked a child that keeps the pipe; synthscale does not). It is not tied to the starting
thread (bwrap's --die-with-parent would be: a holder started from a short-lived thread would die with it)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

from engine.errors import SandboxError
from engine.sandbox.bwrap import args_memfd

READY = b"synthscale-holder-ready\n"


def holder_command(setup: str | None = None) -> list[str]:
    """The sandbox's init: runs `setup` (shell, as root inside, before anything else runs there), says it is
    ready, then waits for its stdin to close."""
    return ["/bin/sh", "-c", f"{setup + ' && ' if setup else ''}echo {READY.decode().strip()} && exec cat"]


class NamespaceHolder:
    """Starts `bwrap <options> -- sh -c '<setup>; echo ready; exec cat'` now (the options passed through `--args`);
    `wait_ready` (or, without waiting, `ready_pid`) returns the host pid of the sandbox's init, whose namespaces
    `nsenter -t <pid>` enters."""

    def __init__(self, bwrap_options: list[str], env: dict[str, str], log: Path, setup: str | None = None) -> None:
        self.log = log
        args = args_memfd(bwrap_options)  # not on bwrap's command line, which the agent's `ps` shows (pid 1)
        info_r, info_w = os.pipe()
        stdin_r, self._stdin_w = os.pipe()  # never written: closing it ends the holder
        try:
            with log.open("wb") as err:
                argv = ["bwrap", "--args", str(args), "--info-fd", str(info_w), "--", *holder_command(setup)]
                self._proc = subprocess.Popen(
                    argv, stdin=stdin_r, stdout=subprocess.PIPE, stderr=err, env=env, pass_fds=(info_w, args),
                    start_new_session=True,
                )  # fmt: skip
        except OSError as e:
            os.close(self._stdin_w)
            raise SandboxError(f"could not start bwrap: {e}; install bubblewrap (apt-get install bubblewrap)") from e
        finally:
            os.close(args)
            os.close(info_w)
            os.close(stdin_r)
        self._info_r = info_r
        self._line = b""
        self.pid: int | None = None
        self._pidfd: int | None = None

    def wait_ready(self, timeout_s: float) -> int:
        """The init's host pid once the sandbox is set up; SandboxError if bwrap failed or took longer."""
        pid = self.ready_pid(timeout_s)
        if pid is None:
            self.kill()
            raise SandboxError(f"the local sandbox was not set up within {timeout_s:.0f} s; the machine is "
                               f"overloaded or bwrap hangs (see {self.log})")
        return pid

    def ready_pid(self, timeout_s: float = 0.0) -> int | None:
        """The init's host pid if the sandbox is set up within `timeout_s` (0: look, do not wait), else None;
        SandboxError if bwrap failed."""
        if self.pid is not None:
            return self.pid
        deadline = time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        while len(self._line) < len(READY):
            if not _wait_readable(fd, deadline):
                return None
            chunk = os.read(fd, len(READY) - len(self._line))
            if not chunk:
                self._fail()
            self._line += chunk
        info = _read_all(self._info_r, time.monotonic() + 5.0)  # written before the sandbox could run anything
        os.close(self._info_r)
        self._info_r = -1
        if self._line != READY or not info:
            self._fail()
        self._proc.stdout.close()
        self.pid = int(json.loads(info)["child-pid"])
        self._pidfd = os.pidfd_open(self.pid)  # signals go to this process even if its pid is reused later
        return self.pid

    def _fail(self) -> None:
        self.kill()
        self.reap(5.0)
        detail = self.log.read_text(errors="replace").strip() or f"exit {self._proc.poll()}"
        raise SandboxError(f"the local sandbox could not start ({detail}); check that bubblewrap works here "
                           "(bwrap --ro-bind / / true) or use sandbox.runtime: docker")

    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        """End the namespaces and everything in them (the kernel kills every process of a pid namespace whose
        init dies). Returns at once; `reap` waits for bwrap to be gone."""
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(self._pidfd)
            self._pidfd = None
        if self._stdin_w != -1:
            os.close(self._stdin_w)
            self._stdin_w = -1
        if self._info_r != -1:
            os.close(self._info_r)
            self._info_r = -1
        if self.pid is None and self._proc.poll() is None:  # never became ready: take bwrap itself down
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for bwrap to exit (after its init, so after every process inside)."""
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        if self._proc.stdout and not self._proc.stdout.closed:
            self._proc.stdout.close()
        return True


def _wait_readable(fd: int, deadline: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout=max(0.0, deadline - time.monotonic())))


def _read_all(fd: int, deadline: float) -> bytes:
    """bwrap's info JSON: read until it parses (bwrap may keep the pipe open) or the pipe closes."""
    data = b""
    while _wait_readable(fd, deadline):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            json.loads(data)
            break
        except ValueError:
            continue
    return data


def kill_namespace_processes(init_pid: int, wait_s: float = 5.0) -> bool:
    """SIGKILL every process that is not root's in the pid namespace of `init_pid` (the agent's: the holder
    and its init are root's) until none is left; False if some survived `wait_s`. For sandboxes without a
    cgroup, where this scan of /proc is the only way to find what a command left running."""
    try:
        ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return True  # the namespace is gone, and everything in it
    deadline = time.monotonic() + wait_s
    pause_s = 0.0005
    while True:
        if not _signal_members(ns):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(pause_s)
        pause_s = min(2 * pause_s, 0.02)


def _signal_members(ns: str) -> bool:
    found = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == 0 or os.readlink(f"/proc/{entry.name}/ns/pid") != ns:
                continue
            pidfd = os.pidfd_open(int(entry.name))
        except OSError:
            continue  # gone meanwhile (an exited process has no namespace links)
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") == ns:  # still the same process: the pidfd pins it
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                found = True
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return found
