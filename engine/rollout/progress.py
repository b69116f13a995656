"""The rollout stage's progress bar on the driver (tqdm; `tqdm.auto` renders it in notebooks too): trajectories stored
against the target, trajectories per minute, leases in flight. A `StageObserver` of `RolloutStage`."""

from __future__ import annotations

import time

from engine.rollout.leases import LeaseResult
from engine.rollout.scheduler import Scheduler


class ProgressBar:
    """tqdm over the stage's target trajectories, with the rate of this attempt (not what earlier ones stored)."""

    def __init__(self, run_id: str, total: int):
        from tqdm.auto import tqdm

        self.started = time.monotonic()
        self.first: int | None = None
        self.bar = tqdm(total=total, unit="traj", desc=f"rollout {run_id}")

    def queued(self, episodes: int) -> None:
        pass

    def acknowledged(self, scheduler: Scheduler, result: LeaseResult) -> None:
        done = scheduler.done_total()
        if self.first is None:  # what earlier attempts stored does not count towards this attempt's rate
            self.first = done - sum(o.infra_error is None for o in result.outcomes)
        self.bar.update(done - self.bar.n)
        minutes = max((time.monotonic() - self.started) / 60, 1e-9)
        self.bar.set_postfix(traj_per_min=f"{(done - self.first) / minutes:.1f}", in_flight=scheduler.in_flight)

    def close(self) -> None:
        self.bar.close()
