"""Runs a host process with a deadline and a cap on the output kept: the local runtime's exec primitive.
Reads the process's merged stdout/stderr; writes nothing."""

from __future__ import annotations

import logging
import os
import selectors
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


def _popen(argv: list[str], env: dict[str, str], cwd: Path | None, stdin: int) -> subprocess.Popen:
    try:
        # own session: the timeout kills the whole process group, and signals to ours never reach it
        return subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        raise SandboxError(f"could not start {argv[0]!r}: {e}; check the sandbox runtime's installation") from e


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(proc: subprocess.Popen, buf: OutputBuffer, deadline: float) -> bool:
    """Read until EOF or `deadline` (monotonic); True when EOF was reached."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not sel.select(timeout=remaining):
                continue
            chunk = os.read(fd, READ_CHUNK_BYTES)
            if not chunk:
                return True
            buf.feed(chunk)


def run_capped(
    argv: list[str],
    *,
    timeout_s: float,
    max_output_bytes: int,
    env: dict[str, str],
    cwd: Path | None = None,
    on_timeout: Callable[[], None] | None = None,
) -> ExecResult:
    """Run `argv` with stdout and stderr merged; keep the first `max_output_bytes` and keep draining the
    rest (so the process never blocks on a full pipe). At `timeout_s` the process group is SIGKILLed and
    `on_timeout` runs (to kill what escaped the group); the result then has timed_out=True."""
    buf = OutputBuffer(max_output_bytes)
    start = time.monotonic()
    proc = _popen(argv, env, cwd, subprocess.DEVNULL)
    timed_out = False
    try:
        if not _pump(proc, buf, start + timeout_s):
            timed_out = True
            _kill_group(proc)
            if on_timeout is not None:
                on_timeout()
            if not _pump(proc, buf, time.monotonic() + DRAIN_AFTER_KILL_S):
                logger.warning("output of %s still open %.0fs after the kill; abandoning it", argv[0], DRAIN_AFTER_KILL_S)
        try:
            returncode = proc.wait(timeout=DRAIN_AFTER_KILL_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode = proc.wait()
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    exit_code = 128 - returncode if returncode < 0 else returncode
    return ExecResult(
        exit_code=exit_code,
        output=buf.text(),
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        output_truncated=buf.truncated,
    )


def run_raw(
    argv: list[str], *, input_bytes: bytes | None, timeout_s: float, env: dict[str, str], cwd: Path | None = None
) -> tuple[int, bytes, bytes]:
    """Run a short helper command with exact bytes in and out: (exit code, stdout, stderr)."""
    try:
        proc = subprocess.run(
            argv, input=input_bytes if input_bytes is not None else b"", capture_output=True, env=env, cwd=cwd,
            timeout=timeout_s, start_new_session=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise SandboxError(f"{argv[0]} did not finish a file operation within {timeout_s}s; the sandbox is stuck") from e
    except OSError as e:
        raise SandboxError(f"could not start {argv[0]!r}: {e}") from e
    return proc.returncode, proc.stdout, proc.stderr
