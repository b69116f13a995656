"""Turns `validate`/`submit` into score records and the text the agent is shown (validation metrics only)."""

from __future__ import annotations

import json
from typing import Literal

from engine.records import ScoreKind, ScoreRecord
from engine.protocols import Sandbox
from engine.tasks.grading import Grade, TaskGrader
from engine.tasks.spec import TaskSpec


class EpisodeScorer:
    """Grades the agent's artefact for one episode and keeps every score it produced."""

    def __init__(self, task: TaskSpec, grader: TaskGrader, sandbox: Sandbox):
        self.task = task
        self.grader = grader
        self.sandbox = sandbox
        self.scores: list[ScoreRecord] = []

    def score(self, kind: Literal["validate", "submit"], step: int) -> str:
        record = self.record(kind, step)
        return self.describe(record)

    def record(self, kind: ScoreKind, step: int) -> ScoreRecord:
        grade: Grade = self.grader.grade(self.sandbox)
        record = ScoreRecord(
            step=step, kind=kind, validation=grade.validation, test=grade.test, metric=self.task.config.metric, artefact=grade.artefact,
            direction=self.task.config.direction, grading=self.task.config.grading, error=grade.error,
        )
        self.scores.append(record)
        return record

    def describe(self, record: ScoreRecord) -> str:
        if record.error is not None:
            return f"Evaluation failed, so no score was recorded.\n{record.error}"
        shown = record.validation if record.validation is not None else record.test
        lines = [
            "Your submission was evaluated on the validation split." if record.grading == "separate"
            else "Your submission was evaluated.",
            f"Baseline Score: {json.dumps(self.task.baseline)}",
            f"Evaluation Score: {json.dumps(shown)}",
        ]
        if record.kind == "validate":
            lines.append("You may keep improving your solution; `submit` ends the episode.")
        return "\n".join(lines)
