"""The learning-rate schedule: linear warm-up, then cosine decay to a floor; and how many optimizer steps a run has."""

from __future__ import annotations

import math
from dataclasses import dataclass


def lr_factor(step: int, *, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based: the factor applied by the step that
    makes step `step + 1`).

    >>> [round(lr_factor(s, total=10, warmup=2, min_ratio=0.1), 3) for s in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.55, 0.134]
    """
    if step < warmup:
        return (step + 1) / warmup
    decay = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class StepPlan:
    """How the packed rows become optimizer steps: every rank gets `rows_per_rank` rows (an equal split; the
    remainder of the division by the world size is left out), each step takes `accumulation` of them per rank, and
    an epoch's rows that do not fill a step are left out."""

    rows: int
    world_size: int
    accumulation: int
    epochs: int
    max_steps: int | None = None
    warmup_ratio: float = 0.0

    @property
    def rows_per_rank(self) -> int:
        return self.rows // self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.rows_per_rank // self.accumulation

    @property
    def total_steps(self) -> int:
        """
        >>> StepPlan(rows=10, world_size=2, accumulation=2, epochs=3).total_steps
        6
        >>> StepPlan(rows=10, world_size=2, accumulation=2, epochs=3, max_steps=4).total_steps
        4
        """
        total = self.steps_per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps else total

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_ratio * self.total_steps)

    @property
    def rows_left_out_per_epoch(self) -> int:
        """Rows no step uses in an epoch (all ranks together)."""
        return self.rows - self.steps_per_epoch * self.accumulation * self.world_size
