"""Row records shared by the stages: score, step, trajectory (one per episode) and the stage manifest.

Two schema versions: ``TRAJECTORY_SCHEMA_VERSION`` is that of ``TrajectoryRecord`` and of the trajectory
store's shards (``engine.trajectories.store``, whose Arrow schema is derived from these models);
``MANIFEST_SCHEMA_VERSION`` is that of ``manifest.json`` and ``stage.json`` (``engine.artifacts``).
The messages of a trajectory are ``engine.protocols.Message`` dicts.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.protocols import Message

TRAJECTORY_SCHEMA_VERSION = 2
"""v2: assistant messages carry the model's reasoning as ``reasoning_content``; ``ScoreRecord.artefact`` is
stored. The store reads v1 shards, upgrading them on read."""

MANIFEST_SCHEMA_VERSION = 1
"""Version of ``manifest.json`` and ``stage.json``."""


ScoreKind = Literal["validate", "submit", "autosubmit"]


class ScoreRecord(BaseModel):
    """One scoring of the submission artefact. The agent saw only `validation`; AUP uses `test`."""

    model_config = ConfigDict(extra="forbid")
    step: int
    kind: ScoreKind
    validation: dict[str, float] | None = None
    test: dict[str, float] | None = None
    metric: str
    direction: Literal["max", "min"]
    grading: Literal["separate", "mlgym"] = "separate"
    error: str | None = Field(None, description="Why no score: missing artefact, grader crash, bad JSON.")
    artefact: str | None = Field(None, description="Workspace path of the graded submission artefact.")

    @property
    def ok(self) -> bool:
        return self.error is None and self.test is not None and self.metric in self.test


class StepRecord(BaseModel):
    """One agent step: the response, the parsed thought and action, and what it led to."""

    model_config = ConfigDict(extra="forbid")
    step: int
    response: str
    thought: str
    action: str
    observation: str
    reasoning: str | None = None
    open_file: str | None = None
    working_dir: str = ""
    execution_time_s: float = 0.0
    model_latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    format_errors: list[str] = Field(default_factory=list, description="Responses re-asked before this one.")


class HistoryConfig(BaseModel):
    """How the prompt of a step is rebuilt from the linear message list."""

    model_config = ConfigDict(extra="forbid")
    keep_last_observations: int = 5
    max_observation_chars: int = 20_000
    omitted_note: Literal["mlgym", "synthscale-v1"] = Field(
        "mlgym", description="The note that replaced an old observation: MLGym's, or the one episodes recorded "
                             "before it (set on records read from such shards), so prompts rebuild exactly.")


class TrajectoryRecord(BaseModel):
    """One episode. `messages` is the full, unabridged linear message list (with the reasoning of each
    assistant turn, when the model returned any, as `reasoning_content`)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = TRAJECTORY_SCHEMA_VERSION
    run_id: str
    task_id: str
    task_hash: str
    episode_id: str
    seed: int
    model: str
    policy: str
    sampling: dict[str, float | int | str | None] = Field(default_factory=dict)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    messages: list[Message] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    scores: list[ScoreRecord] = Field(default_factory=list)
    baseline: dict[str, float] = Field(default_factory=dict)
    metric: str = ""
    direction: Literal["max", "min"] = "max"
    exit_status: str = ""
    submission: str | None = None
    tokens_sent: int = 0
    tokens_received: int = 0
    api_calls: int = 0
    cost_usd: float = 0.0
    wall_time_s: float = 0.0
    started_at: float = Field(default_factory=time.time)
    infra_error: str | None = Field(None, description="Set when the cluster failed, not the agent: retried, not counted.")

    @property
    def succeeded(self) -> bool:
        """At least one successful scoring (the curation filter)."""
        return any(s.ok for s in self.scores)


class Manifest(BaseModel):
    """Written last into a stage directory; a directory without one is incomplete."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = MANIFEST_SCHEMA_VERSION
    stage: str
    run_id: str
    config_hash: str
    counts: dict[str, int] = Field(default_factory=dict)
    rejects: dict[str, int] = Field(default_factory=dict, description="Rejected items by reason.")
    wall_time_s: float = 0.0
    cost_usd: float = 0.0
    created_at: float = Field(default_factory=time.time)
