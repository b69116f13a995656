"""TEST DOUBLE, not a sandbox: `DirSandbox` runs commands with plain subprocess in a temporary directory,
without isolation, so that the agent environment's unit tests exercise real files and a real bash.

The real runtimes (bubblewrap, Docker) live in engine/ and have their own integration tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from engine.protocols import ExecResult, Shell
from engine.sandbox.session import ShellSession, local_session


class DirSandbox:
    """Satisfies the `Sandbox` protocol over a host directory; `workdir` is that directory's path."""

    def __init__(self, root: Path, max_output_bytes: int = 1_000_000):
        self.workdir = str(root.resolve())
        self.max_output_bytes = max_output_bytes
        self.calls: list[tuple[str, float]] = []  # (command, timeout_s) of every exec, for assertions
        self.sessions: list[ShellSession] = []  # every shell() started, for assertions

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.workdir, "LANG": "C.UTF-8"}

    def _path(self, path: str) -> Path:
        return Path(path) if path.startswith("/") else Path(self.workdir) / path

    def exec(self, command: str, timeout_s: float, cwd: str | None = None, uid: int | None = None) -> ExecResult:
        self.calls.append((command, timeout_s))
        env = self._env()
        started = time.monotonic()
        proc = subprocess.Popen(["bash", "-c", command], cwd=cwd or self.workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        truncated = len(out) > self.max_output_bytes
        return ExecResult(exit_code=proc.returncode if not timed_out else 124,
                          output=out[: self.max_output_bytes].decode("utf-8", errors="replace"),
                          timed_out=timed_out, duration_s=time.monotonic() - started, output_truncated=truncated)

    def shell(self, functions: Sequence[str] = ()) -> Shell:
        """A persistent plain bash in the directory (`engine.sandbox.session`), ended by `close`."""
        session = local_session(["bash", "--noprofile", "--norc"], env=self._env(), workdir=self.workdir,
                                max_output_bytes=self.max_output_bytes, functions=functions, name="DirSandbox shell")
        self.sessions.append(session)
        return session

    def read_file(self, path: str, max_bytes: int = 64 << 20) -> bytes:
        return self._path(path).read_bytes()[:max_bytes]

    def write_file(self, path: str, data: bytes) -> None:
        p = self._path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def copy_out(self, path: str, dest: Path, max_bytes: int = 64 << 20) -> None:
        shutil.copy(self._path(path), dest)

    def list_files(self, path: str = ".", max_depth: int = 3) -> list[str]:
        base = self._path(path)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                      if p.is_file() and len(p.relative_to(base).parts) <= max_depth)

    def reset(self) -> None:
        raise NotImplementedError("DirSandbox has no starter state to reset to")

    def close(self) -> None:
        for session in self.sessions:
            session.close("ended by the sandbox's close")

    def __enter__(self) -> DirSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
