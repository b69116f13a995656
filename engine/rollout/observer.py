"""The rollout stage's live-metrics seams: what workers report as they go (`RolloutObserver`) and what the stage
reports as leases come back (`StageObserver`).

On a cluster `actors/metrics.py` implements both with `ray.util.metrics`; in-process runs use `NullObserver`
or `CountingObserver` (tests); the progress bar (`engine.rollout.progress`) is a `StageObserver`."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from engine.records import StepRecord, TrajectoryRecord
from engine.rollout.leases import LeaseResult
from engine.rollout.scheduler import Scheduler


class RolloutObserver(Protocol):
    def step(self, step: StepRecord) -> None: ...

    def episode(self, rec: TrajectoryRecord) -> None: ...

    def infra_error(self, kind: str) -> None: ...

    def containers(self, active: int) -> None: ...

    def gpu_seconds(self, held_s: float, busy_s: float) -> None: ...


class StageObserver(Protocol):
    def queued(self, episodes: int) -> None:
        """Episodes not yet handed to a worker (after each round of handing out)."""
        ...

    def acknowledged(self, scheduler: Scheduler, result: LeaseResult) -> None:
        """A lease came back acknowledged; `scheduler` holds the stage's progress."""
        ...


class NullObserver:
    def step(self, step: StepRecord) -> None:
        pass

    def episode(self, rec: TrajectoryRecord) -> None:
        pass

    def infra_error(self, kind: str) -> None:
        pass

    def containers(self, active: int) -> None:
        pass

    def gpu_seconds(self, held_s: float, busy_s: float) -> None:
        pass


class CountingObserver:
    """Keeps totals in memory (what the Ray observer exports as series)."""

    def __init__(self) -> None:
        self.steps = 0
        self.exit_statuses: Counter[str] = Counter()
        self.infra_errors: Counter[str] = Counter()
        self.active_containers = 0
        self.max_active_containers = 0
        self.gpu_held_s = 0.0
        self.gpu_busy_s = 0.0

    def step(self, step: StepRecord) -> None:
        self.steps += 1

    def episode(self, rec: TrajectoryRecord) -> None:
        self.exit_statuses[rec.exit_status] += 1

    def infra_error(self, kind: str) -> None:
        self.infra_errors[kind] += 1

    def containers(self, active: int) -> None:
        self.active_containers = active
        self.max_active_containers = max(self.max_active_containers, active)

    def gpu_seconds(self, held_s: float, busy_s: float) -> None:
        self.gpu_held_s += held_s
        self.gpu_busy_s += busy_s
