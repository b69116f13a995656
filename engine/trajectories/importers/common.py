"""What every trajectory importer shares: the options (``ImportOptions``), what is known of a task beyond the file
(``TaskFacts``), episode ids, the primary metric's resolution, and the shape checks that turn a malformed file into
a ``BadTrajectory`` (a counted reject, never a crash)."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import ConfigError
from engine.protocols import Message
from engine.records import ScoreKind, ScoreRecord
from engine.tasks.mlgym import MLGYM_METRICS

Direction = Literal["max", "min"]
IMPORT_ID_SALT = b"synthscale-import\0"
EPISODE_ID_CHARS = 20  # as engine.agent.episode.episode_id


class BadTrajectory(ValueError):
    """A file that parsed as JSON but is not a trajectory of a known format; the message says where and why."""


class TaskFacts(BaseModel):
    """What is known of one task beyond the trajectory file (from a synthscale task folder, `--task`)."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(description="Primary metric key.")
    direction: Direction = Field(description="Whether higher or lower is better.")
    task_hash: str = Field("", description="TaskSpec.content_hash() of the folder; '' when unknown.")
    baseline: dict[str, float] = Field(default_factory=dict, description="The baseline's metrics the agent saw.")


class ImportOptions(BaseModel):
    """Settings of one import; None means: take it from the file (or its path), else leave it unknown."""

    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(description="Run id given to imported episodes (the importing run's; synthscale's own "
                                    "exports keep theirs).")
    task_id: str | None = Field(None, description="Task id of every file, instead of the one its path names.")
    model: str | None = Field(None, description="Model name of every file, instead of the one its path or info names.")
    source: str | None = Field(None, description="Where the files come from: policy 'imported:<source>'; default the "
                                                 "format's name (mlgym, swe-agent, mini-swe-agent).")
    metric: str | None = Field(None, description="Primary metric of every file's task (with direction).")
    direction: Direction | None = Field(None, description="Direction of `metric`.")
    tasks: dict[str, TaskFacts] = Field(default_factory=dict, description="Known tasks by id (task folders).")

    @model_validator(mode="after")
    def _metric_with_direction(self) -> ImportOptions:
        if (self.metric is None) != (self.direction is None):
            raise ConfigError("--metric and --direction go together: pass both (e.g. --metric accuracy "
                              "--direction max), or neither to take them from the task")
        return self

    def policy(self, default_source: str) -> str:
        return f"imported:{self.source or default_source}"


def import_episode_id(data: bytes) -> str:
    """The episode id of an imported file: a hash of its bytes, so re-importing it finds it stored.

    >>> import_episode_id(b'{"trajectory": []}') == import_episode_id(b'{"trajectory": []}')
    True
    >>> len(import_episode_id(b"x"))
    20
    """
    return hashlib.sha256(IMPORT_ID_SALT + data).hexdigest()[:EPISODE_ID_CHARS]


def resolve_metric(task_id: str, opts: ImportOptions) -> tuple[str, Direction] | None:
    """The task's primary metric and direction: the options, else a known task folder, else MLGym-Bench's table
    (``engine.tasks.mlgym.MLGYM_METRICS``); None when unknown.

    >>> resolve_metric("3SATTime", ImportOptions(run_id="r"))
    ('Time', 'min')
    >>> resolve_metric("myTask", ImportOptions(run_id="r")) is None
    True
    """
    if opts.metric is not None and opts.direction is not None:
        return opts.metric, opts.direction
    if task_id in opts.tasks:
        facts = opts.tasks[task_id]
        return facts.metric, facts.direction
    return MLGYM_METRICS.get(task_id)


def mlgym_score(step: int, kind: ScoreKind, metrics: dict[str, float] | None, known: tuple[str, Direction] | None,
                *, error: str | None = None, artefact: str | None = None) -> ScoreRecord:
    """A scoring MLGym's way: its one metric dict is what the agent saw and what AUP ranks (``grading="mlgym"``),
    so it fills both ``validation`` and ``test``. With the metric unknown, the score names its dict's first key
    (a placeholder that lets ``ScoreRecord.ok`` count it as a scoring that produced a score) and ``max``.

    >>> mlgym_score(3, "validate", {"rmse": 2.0, "r2": 0.8}, ("r2", "max")).ok
    True
    >>> s = mlgym_score(3, "validate", {"rmse": 2.0, "r2": 0.8}, None)
    >>> s.metric, s.direction, s.ok
    ('rmse', 'max', True)
    """
    if known is not None:
        metric, direction = known
    else:
        metric, direction = (next(iter(metrics)) if metrics else ""), "max"
    return ScoreRecord(step=step, kind=kind, validation=None if metrics is None else dict(metrics),
                       test=None if metrics is None else dict(metrics), metric=metric, direction=direction,
                       grading="mlgym", error=error, artefact=artefact)


def merge_prefix(messages: list[Message]) -> list[Message]:
    """Our records keep exactly two messages before the first assistant turn (system prompt, task:
    ``engine.agent.history.PREFIX_MESSAGES``); further ones (MLGym's demonstration, say) join the task message.

    >>> merged = merge_prefix([{"role": "system", "content": "S"}, {"role": "user", "content": "Demo"},
    ...                        {"role": "user", "content": "Task"}, {"role": "assistant", "content": "A"}])
    >>> [m["content"] for m in merged]
    ['S', 'Demo\\n\\nTask', 'A']
    """
    first_turn = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    if first_turn <= 2:
        return messages
    task = "\n\n".join(m["content"] for m in messages[1:first_turn])
    return [messages[0], {"role": "user", "content": task}, *messages[first_turn:]]


# ---------------------------------------------------------------- shape checks of foreign JSON


def expect_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise BadTrajectory(f"{where} is {_kind(value)}, expected an object")
    return value


def expect_list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise BadTrajectory(f"{where} is {_kind(value)}, expected a list")
    return value


def text(value: Any, where: str, *, default: str = "") -> str:
    """A string field; None (and absent) become ``default``."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadTrajectory(f"{where} is {_kind(value)}, expected a string")
    return value


def content_text(value: Any, where: str) -> str:
    """A message's content: a string, or the text parts of an OpenAI-style list of parts (other parts dropped)."""
    if isinstance(value, list):
        parts = [expect_dict(p, f"{where}[{i}]") for i, p in enumerate(value)]
        texts = [text(p.get("text"), f"{where}[{i}].text") for i, p in enumerate(parts) if p.get("type") == "text"]
        return "\n".join(texts)
    return text(value, where)


def number(value: Any, where: str, *, default: float = 0.0) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadTrajectory(f"{where} is {_kind(value)}, expected a number")
    return float(value)


def count(value: Any, where: str) -> int:
    x = number(value, where)
    if x != int(x) or x < 0:
        raise BadTrajectory(f"{where} is {value!r}, expected a count")
    return int(x)


def metrics_dict(value: Any, where: str) -> dict[str, float]:
    """A metrics object: string keys, finite numbers."""
    out = {}
    for key, x in expect_dict(value, where).items():
        v = number(x, f"{where}[{key!r}]")
        if not math.isfinite(v):
            raise BadTrajectory(f"{where}[{key!r}] is {x!r}, expected a finite number")
        out[key] = v
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"{type(value).__name__} {value!r}"[:60])
