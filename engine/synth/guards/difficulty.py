"""Difficulty estimate of a task (reads scores, writes a Difficulty record): baseline, the teacher's best, headroom."""

from __future__ import annotations

import math
from typing import Literal

from engine.errors import EngineError
from engine.synth.records import Difficulty


def estimate_difficulty(direction: Literal["max", "min"], baseline: float | None,
                        teacher_best: float | None) -> Difficulty:
    """Headroom = how far the teacher improved on the baseline, signed so that > 0 is an improvement in the
    metric's `direction`; None when either score is missing or not finite.

    >>> estimate_difficulty("min", 10.0, 7.5).headroom, estimate_difficulty("max", 0.5, None).headroom
    (2.5, None)
    """
    if direction not in ("max", "min"):
        raise EngineError(f"direction {direction!r} is neither 'max' nor 'min'; use the task's direction")
    base = baseline if baseline is not None and math.isfinite(baseline) else None
    best = teacher_best if teacher_best is not None and math.isfinite(teacher_best) else None
    headroom = None
    if base is not None and best is not None:
        headroom = best - base if direction == "max" else base - best
    return Difficulty(baseline=base, teacher_best=best, headroom=headroom)
