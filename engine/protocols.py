"""The seams of the engine, each defined once as a typing.Protocol, with the small value types they exchange."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # records import nothing from here, but keep the seam module free of cycles
    from engine.config import AgentConfig
    from engine.records import TrajectoryRecord
    from engine.tasks.spec import TaskSpec

Message = dict[str, str]
"""One chat message: {"role": "system"|"user"|"assistant", "content": str}."""


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


class SandboxSpec(BaseModel):
    """What to start: the starter workspace copied in, which files are read-only, which GPUs it owns."""

    model_config = ConfigDict(extra="forbid")
    workspace: Path = Field(description="Host folder copied into the sandbox's workspace (the starter state).")
    read_only_paths: list[str] = Field(default_factory=list, description="Workspace-relative files the agent may not change.")
    gpu_ids: list[str] = Field(default_factory=list, description="Physical GPU ids this sandbox owns, exactly.")
    labels: dict[str, str] = Field(default_factory=dict, description="run_id, task_id, …: put on containers for the reaper.")


class Sandbox(Protocol):
    """An isolated place to run an agent's commands, whose workspace lives at `workdir`."""

    workdir: str

    def exec(self, command: str, timeout_s: float, cwd: str | None = None) -> ExecResult: ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def copy_out(self, path: str, dest: Path) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


class Runtime(Protocol):
    """Starts sandboxes of one kind (Docker, bubblewrap)."""

    name: str

    def start(self, spec: SandboxSpec) -> Sandbox: ...

    def reap_leftovers(self) -> int:
        """Remove sandboxes of this run that a dead process left behind; call at stage start."""
        ...


class Policy(Protocol):
    """The agent: given the task, a model and a sandbox, produce a trajectory."""

    def run_episode(
        self, task: TaskSpec, model: ChatModel, sandbox: Sandbox, cfg: AgentConfig, *, seed: int, run_id: str
    ) -> TrajectoryRecord: ...


class TaskSource(Protocol):
    """Yields task proposals: the LLM teacher or the offline procedural catalogue."""

    def proposals(self, n: int) -> list[Any]: ...


class DatasetValidator(Protocol):
    """Checks a proposed dataset against the Hugging Face Hub or the offline catalogue."""

    def check(self, proposal: Any) -> Any: ...


class Stage(Protocol):
    """Reads the previous stage's artifact directory, writes its own, ends with a manifest."""

    name: str

    def run(self, run_dir: str) -> Any: ...
