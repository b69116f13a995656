"""The engine's typed errors: each says what failed, the bad value, and what to do next."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error synthscale raises on purpose."""


class ConfigError(EngineError):
    """A configuration value is missing, malformed, or contradicts the chosen mode."""


class TaskError(EngineError):
    """A task folder is malformed (names the file and the field)."""


class UnsupportedTaskError(TaskError):
    """A task needs something the runtime or image lacks (names what is missing)."""


class SandboxError(EngineError):
    """A sandbox could not be started, reached or cleaned up: the cluster's failure, not the agent's."""


class ModelError(EngineError):
    """A model endpoint failed after retries, or answered with something unusable."""


class ModelUnreachableError(ModelError):
    """A model endpoint could not be connected to (not a timeout) on the last of its tries: a router fails over
    to another server on it."""


class BudgetExceededError(ModelError):
    """A cost or token budget is spent; the caller stops cleanly."""


class PricingError(ModelError):
    """A model has no entry in the price table and the config does not allow an explicit zero."""


class ArtifactError(EngineError):
    """An artifact on disk is missing, incomplete, or has the wrong schema."""


class CorruptArtifactError(ArtifactError):
    """An artifact on disk cannot be read at all (truncated, corrupted, not its format); `path` names it and
    `reason` says what the reader found. Readers that can do without it set it aside and go on (a trajectory
    shard: its episodes are played again)."""

    def __init__(self, path: str, reason: str, todo: str) -> None:
        super().__init__(f"{path}: {reason}; {todo}")
        self.path = path
        self.reason = reason


class GradingError(EngineError):
    """A grader crashed or printed something that is not the metrics JSON."""


class HubError(EngineError):
    """The Hugging Face Hub or its dataset viewer could not be reached, or answered something unusable."""


class DatasetRejectedError(EngineError):
    """A dataset cannot become task data; `reason` is the short reject reason counted in the manifest."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TrainingError(EngineError):
    """Training failed past its restarts (the workers' errors are in the message)."""
