"""Runs a host process with a deadline and a cap on the output kept, ending what it leaves running: the local
runtime's exec primitive (`launch`, or an `ArmedBash` started before its script is known, then `finish`).
Reads the process's merged stdout/stderr; writes nothing."""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import SandboxError
from engine.protocols import ExecResult
from engine.sandbox.common import OutputBuffer

logger = logging.getLogger(__name__)

DRAIN_AFTER_KILL_S = 5.0
READ_CHUNK_BYTES = 65536


Popen = Callable[..., subprocess.Popen]


def launch(argv: list[str], *, env: dict[str, str], cwd: Path | None = None, pass_fds: tuple[int, ...] = (),
           popen: Popen = subprocess.Popen) -> subprocess.Popen:
    """Start `argv` for `finish`: stdin /dev/null, stdout and stderr merged into one pipe, its own session (the
    timeout kills the whole process group, and signals to ours never reach it). `popen` starts it (the local
    runtime's `FilteredStarter.popen`, say)."""
    try:
        return popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True, pass_fds=pass_fds,
        )  # fmt: skip
    except OSError as e:
        raise SandboxError(f"could not start {argv[0]!r}: {e}; check the sandbox runtime's installation") from e


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group `proc` leads (`launch` makes every process a group leader)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


EOF, EXITED, DEADLINE = "eof", "exited", "deadline"


def _exit_fd(proc: subprocess.Popen) -> int | None:
    """A pidfd that becomes readable when `proc` exits (without reaping it), or None on kernels before 5.3."""
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


def _pump(proc: subprocess.Popen, buf: OutputBuffer, deadline: float, exit_fd: int | None) -> str:
    """Read until EOF, until the process exits (when `exit_fd` is given) or until `deadline` (monotonic)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        if exit_fd is not None:
            sel.register(exit_fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return DEADLINE
            ready = {key.fd for key, _ in sel.select(timeout=remaining)}
            if fd in ready:
                chunk = os.read(fd, READ_CHUNK_BYTES)
                if not chunk:
                    return EOF
                buf.feed(chunk)
            elif exit_fd in ready:
                return EXITED


def _wait_exit(proc: subprocess.Popen, exit_fd: int | None, timeout_s: float) -> None:
    """Wait for `proc` to exit without reaping it (its pid, which is also its process group's id, stays
    reserved, so signalling the group cannot reach an unrelated process that reused the number)."""
    if exit_fd is not None:
        with selectors.DefaultSelector() as sel:
            sel.register(exit_fd, selectors.EVENT_READ)
            sel.select(timeout=timeout_s)


def finish(
    proc: subprocess.Popen,
    *,
    timeout_s: float,
    max_output_bytes: int,
    on_timeout: Callable[[], None] | None = None,
    on_exit: Callable[[], None] | None = None,
) -> ExecResult:
    """Collect a process started by `launch` (its clock starts now), stdout and stderr merged; keep the first
    `max_output_bytes` and keep draining the rest (so the process never blocks on a full pipe). At `timeout_s`
    the process group is SIGKILLed and `on_timeout` runs (to kill what escaped the group); the result then has
    timed_out=True.

    With `on_exit`, what the command leaves running ends with it: as soon as the process exits, its process
    group is SIGKILLed and `on_exit` runs (to kill what left the group), then the output is drained (background
    jobs would otherwise hold it open)."""
    buf = OutputBuffer(max_output_bytes)
    start = time.monotonic()
    exit_fd = _exit_fd(proc) if on_exit is not None else None
    timed_out = False
    try:
        state = _pump(proc, buf, start + timeout_s, exit_fd)
        if state == DEADLINE:
            timed_out = True
            kill_group(proc)
            if on_timeout is not None:
                on_timeout()
        elif on_exit is not None:
            if state == EOF:  # the output closed first: the command may still be finishing
                _wait_exit(proc, exit_fd, DRAIN_AFTER_KILL_S)
            kill_group(proc)
            on_exit()
        if state != EOF and _pump(proc, buf, time.monotonic() + DRAIN_AFTER_KILL_S, None) != EOF:
            logger.warning("output of %s still open %.0fs after the kill; abandoning it", proc.args[0], DRAIN_AFTER_KILL_S)
        try:
            returncode = proc.wait(timeout=DRAIN_AFTER_KILL_S)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            returncode = proc.wait()
    finally:
        if proc.poll() is None:
            kill_group(proc)
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        if exit_fd is not None:
            os.close(exit_fd)
    exit_code = 128 - returncode if returncode < 0 else returncode
    return ExecResult(
        exit_code=exit_code,
        output=buf.text(),
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        output_truncated=buf.truncated,
    )


def run_raw(
    argv: list[str], *, input_bytes: bytes | None, timeout_s: float, env: dict[str, str], cwd: Path | None = None,
    pass_fds: tuple[int, ...] = (),
) -> tuple[int, bytes, bytes]:
    """Run a short helper command with exact bytes in and out: (exit code, stdout, stderr). Only for commands
    whose output is known to be small: it is all kept (`run_capped` is for what the agent's files decide)."""
    try:
        proc = subprocess.run(
            argv, input=input_bytes if input_bytes is not None else b"", capture_output=True, env=env, cwd=cwd,
            timeout=timeout_s, start_new_session=True, pass_fds=pass_fds,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise SandboxError(f"{argv[0]} did not finish a file operation within {timeout_s}s; the sandbox is stuck") from e
    except OSError as e:
        raise SandboxError(f"could not start {argv[0]!r}: {e}") from e
    return proc.returncode, proc.stdout, proc.stderr


def run_capped(
    argv: list[str], *, stdout_cap: int, stderr_cap: int, timeout_s: float, env: dict[str, str],
    cwd: Path | None = None, pass_fds: tuple[int, ...] = (),
) -> tuple[int | None, bytes, bytes]:
    """Run a helper that streams something out of a sandbox (a file, a listing): (exit code, stdout, stderr), holding
    at most `stdout_cap + 1` bytes of stdout and `stderr_cap` of stderr. It is killed (its process group) as soon
    as stdout passes the cap, when the exit code is None and stdout is `stdout_cap + 1` bytes long; SandboxError
    after `timeout_s`."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd=cwd, start_new_session=True, pass_fds=pass_fds)
    except OSError as e:
        raise SandboxError(f"could not start {argv[0]!r}: {e}") from e
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()  # amortised appends: never quadratic
    kept = {proc.stdout.fileno(): (out, stdout_cap + 1), proc.stderr.fileno(): (err, stderr_cap)}
    deadline = time.monotonic() + timeout_s
    stuck = f"{argv[0]} did not finish reading within {timeout_s:.0f}s; the sandbox is stuck"
    try:
        with selectors.DefaultSelector() as sel:
            for fd in kept:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map() and len(out) <= stdout_cap:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxError(stuck)
                for key, _ in sel.select(timeout=remaining):
                    buf, room = kept[key.fd]
                    want = min(READ_CHUNK_BYTES, room - len(buf)) if len(buf) < room else READ_CHUNK_BYTES
                    chunk = os.read(key.fd, want)
                    if not chunk:
                        sel.unregister(key.fd)
                    buf += chunk[:max(0, room - len(buf))]
        if len(out) > stdout_cap:
            return None, bytes(out), bytes(err)
        try:
            returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise SandboxError(stuck) from None
        return returncode, bytes(out), bytes(err)
    finally:
        if proc.poll() is None:
            kill_group(proc)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


class ArmedBash:
    """`prefix + bash` started before its script is known, so that what starting it costs is paid while nobody
    waits: above all joining the sandbox's cgroup, a migration that waits for an RCU grace period (~10 ms on an
    idle machine, the larger part of a local command's cost). `fire` hands it the script, which then runs
    exactly as `bash -c script` would; its output and exit come from `finish`."""

    MAX_SCRIPT_BYTES = 60_000  # fits in a pipe's buffer, so handing it over never blocks

    def __init__(self, prefix: list[str], env: dict[str, str], then: list[str] = (),
                 popen: Popen = subprocess.Popen) -> None:
        """`prefix + bash` waits for the script, then execs `then + bash -c script` (`then`: the uid drop, say,
        so that the waiting process is not the agent's). An empty script makes it exit. `popen` starts it."""
        read_end, self._script = os.pipe()
        run = shlex.join([*then, "bash", "-c"])
        shell = f'IFS= read -r -d "" s <&{read_end}; [ -n "$s" ] || exit 0; exec {read_end}<&-; exec {run} "$s"'
        try:
            self.proc = launch([*prefix, "bash", "-c", shell, "bash"], env=env, pass_fds=(read_end,), popen=popen)
        except BaseException:
            os.close(self._script)
            raise
        finally:
            os.close(read_end)

    def fire(self, script: str) -> subprocess.Popen | None:
        """The process, now running `script`; None (and this one released) when it died meanwhile, or the
        script is too long to hand over at once or holds a NUL (which `read` would stop at)."""
        data = script.encode()
        if self.proc.poll() is not None or len(data) > self.MAX_SCRIPT_BYTES or b"\0" in data:
            self.release()
            return None
        try:
            os.write(self._script, data)
        except BrokenPipeError:
            self.release()
            return None
        os.close(self._script)
        self._script = -1
        return self.proc

    def release(self) -> None:
        """Let it exit on its own (it reads an empty script), without waiting. Killing it instead could kill
        the `nsenter` in front of it before it reaped the process it started inside the sandbox, which then
        holds up the namespace's end for seconds."""
        if self._script != -1:
            os.close(self._script)
            self._script = -1

    def reap(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for it to exit (after `release`, or once its sandbox ended); True when gone."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return True

    def kill(self) -> None:
        """SIGKILL it and wait (for one that did not exit when released)."""
        kill_group(self.proc)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
