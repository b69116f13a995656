"""Row records of the synthesis stage: topics, proposals, dataset checks, rejects, attempts and provenance."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskType = Literal["classification", "regression", "forecasting", "image-classification", "control", "game", "other"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopicRecord(_Record):
    """One sampled ML research topic."""

    topic_id: str
    topic: str
    domain: str = Field(description="vision, nlp, tabular, time-series, rl, game-theory, algorithms, …")
    batch: int = 0


class DatasetProposal(_Record):
    """The Hugging Face dataset a proposal grounds its task in."""

    hf_id: str = Field(description="owner/name on the Hub.")
    config: str | None = Field(None, description="Dataset config (subset); None for the default.")
    split: str = "train"
    input_columns: list[str] = Field(min_length=1)
    target_column: str


class ProposalRecord(_Record):
    """The teacher's (or the catalogue's) task for a topic: what to optimise, on which data."""

    proposal_id: str
    topic_id: str
    topic: str
    domain: str
    name: str
    description: str = Field(description="What the agent must do; the metric and its direction in words.")
    task_type: TaskType
    metric: str
    direction: Literal["max", "min"]
    needs_dataset: bool = True
    dataset: DatasetProposal | None = None


class DatasetCheck(_Record):
    """What the Hub said about a proposed dataset."""

    ok: bool
    hf_id: str
    corrected_from: str | None = Field(None, description="The proposal's id when a Hub search corrected it.")
    config: str | None = None
    split: str | None = None
    revision: str | None = Field(None, description="Pinned commit sha.")
    licence: str | None = None
    columns: list[str] = Field(default_factory=list)
    sample_rows: list[dict[str, Any]] = Field(default_factory=list)
    size_bytes: int | None = None
    reason: str | None = Field(None, description="Why not ok: not_found, private, gated, disabled, columns, …")
    detail: str = ""


class RejectRecord(_Record):
    """Something the stage dropped, and why (one row of rejects.parquet)."""

    stage: Literal["topics", "proposals", "dataset", "materialise", "generate", "verify", "guard", "dedup", "budget"]
    item_id: str
    reason: str = Field(description="A short machine-readable reason, counted in the manifest.")
    detail: str = ""


class AttemptRecord(_Record):
    """One generation or debug attempt of the self-debugging loop."""

    iteration: int
    mode: Literal["generate", "debug"]
    ok: bool
    error_log: str = ""
    decision: str = Field("", description="What happened next: verified, debug, regenerate, discard.")
    cost_usd: float = 0.0


class Difficulty(_Record):
    """How much room the task leaves: baseline, the teacher's best, and the headroom between them."""

    baseline: float | None = None
    teacher_best: float | None = None
    headroom: float | None = Field(None, description="teacher_best − baseline, signed so that > 0 is better.")


class Verification(_Record):
    """The outcome of verifying one task."""

    verified: bool
    baseline_validation: dict[str, float] | None = None
    baseline_test: dict[str, float] | None = None
    constant_test: dict[str, float] | None = None
    episode_exit_status: str | None = None
    episode_scores: int = 0
    problems: list[str] = Field(default_factory=list)
    difficulty: Difficulty = Field(default_factory=Difficulty)


class Provenance(_Record):
    """`provenance.json`: everything that led to a task folder."""

    source: Literal["teacher", "procedural", "mlgym", "manual"]
    topic: TopicRecord | None = None
    proposal: ProposalRecord | None = None
    dataset_check: DatasetCheck | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    verification: Verification | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Procedural family parameters.")
