"""Launches one OpenAI-compatible model server (vLLM, `transformers serve`, or any command): reads a ServeConfig,
writes the server's log file, and waits until `GET /v1/models` answers.

A server owns the GPUs it is given: the process sees exactly those ids in CUDA_VISIBLE_DEVICES (an empty
value, that is no GPU, when it is given none). It runs in its own process group, so that closing it ends the
server and every worker it forked; it also gets SIGTERM when the process that launched it dies (Linux), so a
killed Ray actor leaves no server behind.

Secrets never go on the command line (any user on the node can read argv, and the command is logged): a
key the server should require goes in its environment (vLLM reads VLLM_API_KEY, the Hub token is HF_TOKEN).

>>> cfg = ServeConfig(backend="vllm", model="/ckpt/final", served_name="student")
>>> server_command(cfg, 8001, ["0", "1"])[:4]
['vllm', 'serve', '/ckpt/final', '--host']
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

Backend = Literal["vllm", "transformers", "command"]
PLACEHOLDERS = ("{port}", "{host}", "{model}", "{served_name}")
_SECRET_FLAGS = ("--api-key", "--hf-token", "--token")
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


class ServerStartError(ModelError):
    """A model server exited before it was ready, or was not ready in time (names the command and its log)."""


class ServeConfig(BaseModel):
    """How to serve a student model as an OpenAI-compatible endpoint, one server per GPU group."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "vllm", "transformers", "command"] = Field(
        "auto", description="auto: vllm when `vllm` is installed and the server has a GPU, else transformers."
    )
    model: str = Field(min_length=1, description="Checkpoint folder (Hugging Face format) or Hub model name.")
    served_name: str | None = Field(
        None, description="Model name clients send; None: `model`. `transformers serve` cannot rename (leave None)."
    )
    host: str = Field("0.0.0.0", description="Listen address; 0.0.0.0 lets other nodes reach the server.")
    port: int = Field(0, ge=0, le=65535, description="Listen port; 0 picks a free one on the server's node.")
    gpus_per_server: float = Field(1.0, ge=0, description="GPUs each server owns (tensor-parallel size for vLLM).")
    cpus_per_server: float = Field(1.0, ge=0, description="CPUs reserved for each server's actor on Ray.")
    extra_args: list[str] = Field(default_factory=list, description="Appended to the vllm / transformers argv.")
    command: list[str] | None = Field(
        None, description="argv template of backend 'command', with {port}, {host}, {model}, {served_name}."
    )
    startup_timeout_s: float = Field(900.0, gt=0, description="How long to wait for GET /v1/models to answer 200.")
    log_dir: Path | None = Field(None, description="Folder for server logs; None: a new temporary folder.")

    @model_validator(mode="after")
    def _check_mode(self) -> ServeConfig:
        if self.backend == "command":
            if not self.command:
                raise ConfigError("serve.backend 'command' needs serve.command, an argv template with {port}")
            if self.extra_args:
                raise ConfigError("serve.extra_args applies to vllm / transformers only; put them in serve.command")
            if self.port == 0 and not any("{port}" in a for a in self.command):
                raise ConfigError(f"serve.command {self.command!r} has no {{port}} but serve.port is 0; add {{port}}")
        elif self.command is not None:
            raise ConfigError(f"serve.command is set but serve.backend is {self.backend!r}; set backend: command")
        if self.backend in ("transformers", "auto") and self.served_name not in (None, self.model):
            raise ConfigError(
                f"serve.served_name {self.served_name!r}: `transformers serve` names the model by serve.model and "
                "cannot rename it; drop served_name, or set backend: vllm"
            )
        if self.gpus_per_server > 1 and not float(self.gpus_per_server).is_integer():
            raise ConfigError(f"serve.gpus_per_server {self.gpus_per_server}: above 1 it must be a whole number")
        for arg in [*self.extra_args, *(self.command or [])]:
            if arg.split("=", 1)[0] in _SECRET_FLAGS:
                raise ConfigError(
                    f"serve argument {arg.split('=', 1)[0]!r} puts a secret on the command line, where `ps` and the "
                    "logs show it; set it in the server's environment instead (VLLM_API_KEY, HF_TOKEN)"
                )
        return self

    @property
    def name(self) -> str:
        """The model name the server answers to (what ModelConfig.name must be)."""
        return self.served_name or self.model


def choose_backend(backend: str, *, vllm_installed: bool, gpu_visible: bool) -> Backend:
    """The backend to launch: `backend` itself unless it is "auto".

    >>> choose_backend("auto", vllm_installed=True, gpu_visible=False)
    'transformers'
    """
    if backend != "auto":
        return backend  # type: ignore[return-value]
    return "vllm" if vllm_installed and gpu_visible else "transformers"


def resolve_backend(cfg: ServeConfig, gpus: Sequence[str]) -> Backend:
    """choose_backend for this process: vllm counts as installed when `import vllm` can find it."""
    return choose_backend(
        cfg.backend, vllm_installed=importlib.util.find_spec("vllm") is not None, gpu_visible=bool(gpus)
    )


def server_command(cfg: ServeConfig, port: int, gpus: Sequence[str]) -> list[str]:
    """The argv that serves cfg.model on `port`, for a server owning the GPU ids `gpus`."""
    backend = resolve_backend(cfg, gpus)
    if backend == "vllm":
        return [
            "vllm", "serve", cfg.model, "--host", cfg.host, "--port", str(port),
            "--served-model-name", cfg.name, "--tensor-parallel-size", str(max(1, len(gpus))), *cfg.extra_args,
        ]
    if backend == "transformers":
        return [
            "transformers", "serve", cfg.model, "--host", cfg.host, "--port", str(port),
            "--device", "auto" if gpus else "cpu", *cfg.extra_args,
        ]
    values = {"{port}": str(port), "{host}": cfg.host, "{model}": cfg.model, "{served_name}": cfg.name}
    argv = []
    for arg in cfg.command or []:
        for placeholder, value in values.items():
            arg = arg.replace(placeholder, value)
        argv.append(arg)
    return argv


def free_port(host: str) -> int:
    """A port that is free on `host` now (another process may still take it before the server binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def local_host(host: str) -> str:
    """Where this node reaches a server listening on `host` (a wildcard address becomes loopback)."""
    return _WILDCARD_HOSTS.get(host, host)


def url_host(host: str) -> str:
    """`host` as it goes in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def models_ready(base_url: str, timeout_s: float = 2.0) -> bool:
    """True when GET {base_url}/models answers 200 with an OpenAI model list."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as resp:
            return resp.status == 200 and isinstance(json.loads(resp.read()).get("data"), list)
    except (OSError, ValueError, AttributeError):
        return False


def log_tail(path: Path, max_bytes: int = 4000) -> str:
    """The last `max_bytes` of a log file, decoded leniently ("" when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _executable(name: str) -> str:
    # Console scripts installed beside this interpreter (a venv that is not on PATH, as in Ray workers).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(name, path=path) or name


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to send SIGTERM to the server when the launching thread's process dies."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class ServerProcess:
    """One model server process; a context manager that is ready on enter and gone (process group and all)
    on exit.

    `gpus` are the physical GPU ids it owns (from `ray.get_gpu_ids()` in an actor). `base_url` is where this
    node reaches it; other nodes use the node's address and `port`.
    """

    def __init__(
        self, cfg: ServeConfig, gpus: Sequence[str] = (), *, log_path: Path | None = None, poll_s: float = 0.25,
        stop_grace_s: float = 15.0,
    ) -> None:
        self.cfg = cfg
        self.gpus = [str(g) for g in gpus]
        self.port = cfg.port or free_port(cfg.host)
        self.argv = server_command(cfg, self.port, self.gpus)
        if log_path is None:
            log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="synthscale-serve-"))
            log_path = log_dir / f"server-{self.port}.log"
        self.log_path = log_path
        self.base_url = f"http://{url_host(local_host(cfg.host))}:{self.port}/v1"
        self._poll_s = poll_s
        self._stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"ServerProcess(argv={self.argv!r}, gpus={self.gpus!r}, log={str(self.log_path)!r})"

    def start(self) -> ServerProcess:
        """Launch the server and block until it answers GET /v1/models (ServerStartError if it never does)."""
        if self._proc is not None:
            raise RuntimeError(f"{self!r} is already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}
        log.info(
            "starting model server %s on GPUs [%s]; log %s", " ".join(self.argv), ",".join(self.gpus), self.log_path
        )
        try:
            self._proc = subprocess.Popen(
                [_executable(self.argv[0]), *self.argv[1:]], stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as e:
            self._close_log()
            raise ServerStartError(
                f"model server command {self.argv!r} could not start: {e}; install it or fix serve.backend"
            ) from e
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("model server ready at %s (pid %d)", self.base_url, self._proc.pid)
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"model server {' '.join(self.argv)!r} exited with code {code} before answering "
                    f"{self.base_url}/models; its log {self.log_path} ends with:\n{log_tail(self.log_path)}"
                )
            if models_ready(self.base_url) and self._proc.poll() is None:
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"model server {' '.join(self.argv)!r} did not answer {self.base_url}/models within "
                    f"{self.cfg.startup_timeout_s:g}s; see its log {self.log_path} (raise serve.startup_timeout_s "
                    f"for large checkpoints); the log ends with:\n{log_tail(self.log_path)}"
                )
            time.sleep(self._poll_s)

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id) while it runs."""
        return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        """The process runs and answers GET /v1/models."""
        return self.alive() and models_ready(self.base_url)

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after the grace period; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self._stop_grace_s)
            except subprocess.TimeoutExpired:
                log.warning("model server pid %d ignored SIGTERM for %gs; killing it", proc.pid, self._stop_grace_s)
            self._signal_group(proc.pid, signal.SIGKILL)  # workers the server forked, even when it exited
            proc.wait()
            log.info("model server on port %d stopped (exit code %s)", self.port, proc.returncode)
        self._close_log()

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass  # the group is already empty

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalServerLauncher:
    """The `ServerLauncher` of this machine: `n` ServerProcesses, each on its own GPUs of `gpu_ids` (none on CPU)."""

    def __init__(self, gpu_ids: Sequence[str] = ()):
        self.gpu_ids = [str(g) for g in gpu_ids]
        self.servers: list[ServerProcess] = []

    def start(self, cfg: ServeConfig, n: int) -> list[str]:
        g = cfg.gpus_per_server
        need = 0 if g == 0 else int(-(-n * g // 1))
        if need > len(self.gpu_ids):
            raise ConfigError(f"{n} model servers × serve.gpus_per_server={g:g} need {need} GPUs; this machine has "
                              f"{len(self.gpu_ids)}: serve fewer, or run the stage on a Ray cluster")
        try:
            for i in range(n):
                gpus = [] if g == 0 else ([self.gpu_ids[int(i * g)]] if g < 1 else
                                          self.gpu_ids[i * int(g):(i + 1) * int(g)])
                self.servers.append(ServerProcess(cfg, gpus).start())
        except BaseException:
            self.stop()
            raise
        return [s.base_url for s in self.servers]

    def stop(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.stop()

    def gpus(self) -> float:
        return float(len(self.gpu_ids))
