"""Sandbox runtimes behind one factory: `make_runtime(cfg, run_id)` reads the SandboxConfig and returns the
local (bubblewrap) or the Docker runtime; each starts sandboxes that satisfy `engine.protocols.Sandbox`. The errors
a hostile agent's files cause on a read (`UnsafeFileError` and kin, OSErrors) come from `engine.sandbox.reads`."""

from __future__ import annotations

from engine.config import SandboxConfig
from engine.errors import ConfigError
from engine.protocols import Runtime
from engine.sandbox.common import WORKDIR
from engine.sandbox.reads import (
    MAX_READ_BYTES, FileTooLargeError, LinkEscapeError, SpecialFileError, UnsafeFileError,
)  # fmt: skip

__all__ = ["MAX_READ_BYTES", "WORKDIR", "FileTooLargeError", "LinkEscapeError", "SpecialFileError", "UnsafeFileError",
           "make_runtime"]


def make_runtime(cfg: SandboxConfig, run_id: str) -> Runtime:
    """The runtime `cfg.runtime` names. Raises SandboxError when it cannot work here (no bwrap, no dockerd,
    no image), with what to install or start."""
    if cfg.runtime == "local":
        from engine.sandbox.local import LocalRuntime

        return LocalRuntime(cfg, run_id)
    if cfg.runtime == "docker":
        from engine.sandbox.docker import DockerRuntime

        return DockerRuntime(cfg, run_id)
    raise ConfigError(f"sandbox.runtime {cfg.runtime!r} is unknown; use 'local' or 'docker'")
