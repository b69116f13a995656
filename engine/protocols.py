"""The seams of the engine, each defined once as a typing.Protocol, with the small value types they exchange."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import NotRequired, TypedDict

if TYPE_CHECKING:  # the records the seams exchange; imported for types only, so this module imports nothing
    from engine.rollout.leases import Lease, LeaseDone, WorkerInfo, WorkerSpec
    from engine.config import SandboxConfig
    from engine.serving.launch import ServeConfig


@with_config(ConfigDict(extra="forbid"))
class Message(TypedDict):
    """One chat message, a plain dict: ``{"role": "system"|"user"|"assistant", "content": str}``, plus on an
    assistant turn ``reasoning_content`` when the model returned reasoning apart (the name OpenAI-compatible
    servers and chat templates such as Qwen3's use). The trajectory keeps the reasoning; prompts never carry
    it back to a model (``engine.agent.history.build_prompt`` and ``engine.models.wire.request_kwargs`` drop it).
    """

    role: str
    content: str
    reasoning_content: NotRequired[str]


class SampleKey(BaseModel):
    """Which sample of which episode a model call is: part of the response-cache key, so that
    two episodes never share a sample while a re-run of the same episode hits the cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    episode_id: str
    step: int = Field(ge=0)
    attempt: int = Field(0, ge=0, description="Re-ask number within the step (after format errors).")


class SamplingParams(BaseModel):
    """Sampling settings of one call. None means: the server's default (reasoning models reject some)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(None, gt=0, description="Completion budget; sent as max_completion_tokens.")
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    sample_key: SampleKey | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


class Completion(BaseModel):
    """One model reply with its accounting."""

    model_config = ConfigDict(extra="forbid")
    text: str
    reasoning: str | None = Field(None, description="Reasoning the server returned apart (reasoning_content).")
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_s: float = 0.0
    model: str = ""
    cached: bool = False


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers a chat: the OpenAI-compatible client, the scripted model, the heuristic policy."""

    name: str

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion: ...

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion: ...


class ExecResult(BaseModel):
    """What one command in a sandbox produced. `output` is stdout and stderr merged, decoded leniently."""

    model_config = ConfigDict(extra="forbid")
    exit_code: int
    output: str
    timed_out: bool = False
    duration_s: float = 0.0
    output_truncated: bool = Field(False, description="The sandbox stopped reading after its byte cap.")


class ShellResult(ExecResult):
    """What one command in a persistent shell produced, and where the shell stands after it."""

    cwd: str = Field(description="The shell's working directory after the command (in-sandbox path).")
    session_restarted: bool = Field(
        False, description="The command could not be interrupted, so the session was killed and a fresh one started: "
                           "exported variables, functions and the working directory were lost.")


ShellCall = Callable[[str, list[str], str], tuple[str, int]]
"""A host-side handler of a shell function the session defines: (name, argv, the shell's $PWD) → (output, exit code)."""


class Shell(Protocol):
    """One persistent bash session inside a sandbox, lasting for an episode: `export`, functions, an activated venv
    and the working directory persist between commands. A session that died raises SandboxError (an infra error)."""

    def run(self, command: str, timeout_s: float, on_call: ShellCall | None = None) -> ShellResult:
        """Run `command` (any bash text, multi-line) in the session; never raises for the command's own failure.
        On timeout the command's processes are killed and the session kept (or restarted, said in the result).
        Functions named at `Sandbox.shell(functions=...)` call `on_call` on the host while the command runs."""
        ...

    @property
    def alive(self) -> bool: ...

    def close(self) -> None: ...


class SandboxSpec(BaseModel):
    """What to start: the starter workspace copied in, which files are read-only, which GPUs it owns."""

    model_config = ConfigDict(extra="forbid")
    workspace: Path = Field(description="Host folder copied into the sandbox's workspace (the starter state).")
    read_only_paths: list[str] = Field(default_factory=list, description="Workspace-relative files the agent may not change.")
    gpu_ids: list[str] = Field(default_factory=list, description="Physical GPU ids this sandbox owns, exactly.")
    labels: dict[str, str] = Field(default_factory=dict, description="run_id, task_id, …: put on containers for the reaper.")
    uid: int | None = Field(
        None, ge=1, description="Unprivileged uid the sandbox's processes run as and its starter files' owner; None: "
                                "sandbox.uid (the agent's). Another uid than the agent's makes the sandbox private: "
                                "its files are unreadable to agent-uid processes (a grader's sandbox).")


class Sandbox(Protocol):
    """An isolated place to run an agent's commands, whose workspace lives at `workdir`."""

    workdir: str

    def exec(self, command: str, timeout_s: float, cwd: str | None = None, uid: int | None = None) -> ExecResult:
        """Run `bash -c command`; nothing it started runs after it returns. `uid`: None (the sandbox's own) or
        the agent's uid (an agent-uid process in a private sandbox)."""
        ...

    def read_file(self, path: str, max_bytes: int = ...) -> bytes:
        """A regular file's bytes, at most `max_bytes`; never through a link out of the workspace. The agent's
        doing (too large, a special file, a link out) raises an OSError subclass; a stuck sandbox SandboxError."""
        ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def copy_out(self, path: str, dest: Path, max_bytes: int = ...) -> None: ...

    def list_files(self, path: str = ".", max_depth: int = 3) -> list[str]:
        """Regular files below `path` (relative to it, sorted, hidden ones included), listed NUL-separated and
        never through links, so no file name can forge another path."""
        ...

    def shell(self, functions: Sequence[str] = ()) -> Shell:
        """Start a persistent bash session as the sandbox user in `workdir` (ended by `reset` and `close`). Each
        name in `functions` becomes a shell function that hands its arguments to the `on_call` of the running
        `Shell.run` and prints what that returns, so host-side commands work inside command lines and pipes."""
        ...

    def reset(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


class Runtime(Protocol):
    """Starts sandboxes of one kind (Docker, bubblewrap)."""

    name: str
    cfg: SandboxConfig

    def start(self, spec: SandboxSpec) -> Sandbox: ...

    def reap_leftovers(self) -> int:
        """Remove sandboxes of this run that a dead process left behind; call at stage start."""
        ...


class WorkerPool(Protocol):
    """Rollout workers that play leases for the rollout stage (`engine.rollout.stage.RolloutStage`): threads of
    this process (`engine.rollout.local_pool.InProcessPool`), Ray actors (`actors.rollout.RayWorkerPool`), or
    the simulator's virtual workers (`benchmarks/rollout_sim.py`). The stage decides what runs where; a pool
    only runs it and says how it ended."""

    def resources(self) -> tuple[float, float]:
        """(GPUs, CPUs) the pool's workers may use, for planning how many to start."""
        ...

    def start(self, workers: list[WorkerSpec]) -> list[WorkerInfo]:
        """Start the workers and return what each reports once it is up."""
        ...

    def submit(self, worker_id: str, lease: Lease, ticket: int) -> None:
        """Hand a lease to a worker; it comes back from `wait` under `ticket`."""
        ...

    def wait(self, timeout_s: float) -> list[LeaseDone]:
        """Leases that came back (acknowledged or lost), waiting at most `timeout_s` for the first one."""
        ...

    def restart(self, worker_id: str) -> None:
        """Stop a worker whose lease overran its deadline and start it again (its lease comes back lost)."""
        ...

    def reap(self) -> int:
        """Remove sandboxes that dead workers of this run left behind, wherever the pool runs; the count."""
        ...

    def close(self) -> None:
        """Stop every worker and remove its sandboxes."""
        ...


class ServerLauncher(Protocol):
    """Serves checkpoints for the evaluation stage: `ModelServer` actors on a Ray cluster
    (`actors.model_server.RayServerLauncher`) or server processes on this machine
    (`engine.serving.launch.LocalServerLauncher`)."""

    def start(self, cfg: ServeConfig, n: int) -> list[str]:
        """Start `n` servers of `cfg`, each on its own GPUs, and return their base URLs once all answer."""
        ...

    def stop(self) -> None:
        """Stop every server this launcher started."""
        ...

    def gpus(self) -> float:
        """GPUs the servers could use (the cluster's, or this machine's)."""
        ...

