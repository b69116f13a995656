"""The rollout stage's live-metrics seams: what workers report as they go (`RolloutObserver`) and what the stage
reports as leases come back (`StageObserver`).

On a cluster `actors/metrics.py` implements both with `ray.util.metrics`; in-process workers use `NullObserver`;
the progress bar (`engine.rollout.progress`) is a `StageObserver`."""

from __future__ import annotations

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
