"""Grades a submission artefact: our tasks in a separate grader sandbox holding `grader/`, MLGym tasks MLGym's way."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engine.errors import GradingError, TaskError
from engine.protocols import Runtime, Sandbox, SandboxSpec
from engine.tasks.artefact import grader_command, parse_metrics, resolve_artefact, split_metrics
from engine.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


class Grade(BaseModel):
    """The outcome of one grading: metrics per split, or the error that stopped it."""

    model_config = ConfigDict(extra="forbid")
    validation: dict[str, float] | None = None
    test: dict[str, float] | None = None
    error: str | None = None
    artefact: str | None = None


class TaskGrader:
    """Owns the grader sandbox of one task (started lazily, reset between gradings); close it with `with`."""

    def __init__(self, task: TaskSpec, runtime: Runtime, *, timeout_s: float, labels: dict[str, str] | None = None):
        self.task = task
        self.runtime = runtime
        self.timeout_s = timeout_s
        self.labels = dict(labels or {})
        self._sandbox: Sandbox | None = None

    def __enter__(self) -> TaskGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def grade(self, agent_sandbox: Sandbox) -> Grade:
        """Find the artefact in the agent's sandbox and grade it; agent mistakes come back as `Grade.error`."""
        listing = agent_sandbox.exec("find . -maxdepth 3 -type f -not -path './.*' | sort", timeout_s=25).output
        files = [f.strip()[2:] for f in listing.split("\n") if f.strip().startswith("./")]
        try:
            artefact = resolve_artefact(self.task, files)
        except (TaskError, GradingError) as e:
            return Grade(error=f"submission_not_found: {e}")
        if self.task.config.grading == "mlgym":
            return self._grade_in_place(agent_sandbox, artefact)
        if artefact is None:
            raise TaskError(f"{self.task.root}: task_entrypoint {self.task.config.task_entrypoint} has no file "
                            "artefact and cannot be graded separately; set grading: mlgym")
        if artefact not in files:
            return Grade(error=f"submission_not_found: no {artefact} in the workspace", artefact=artefact)
        with tempfile.TemporaryDirectory(prefix="synthscale-grade-") as tmp:
            local = Path(tmp) / Path(artefact).name
            agent_sandbox.copy_out(artefact, local)
            return self.grade_file(local, artefact)

    def grade_file(self, artefact_file: Path, artefact: str | None = None) -> Grade:
        """Grade a host file as the task's artefact in the grader sandbox (validation and test rows)."""
        name = artefact_file.name
        sandbox = self._grader_sandbox()
        sandbox.write_file(name, artefact_file.read_bytes())
        result = sandbox.exec(grader_command(self.task, name), timeout_s=self.timeout_s)
        return self._to_grade(result.output, result.exit_code, result.timed_out, artefact or name)

    def _grade_in_place(self, agent_sandbox: Sandbox, artefact: str | None) -> Grade:
        """MLGym's way: its evaluate.py runs in the agent's own sandbox."""
        if artefact is not None and agent_sandbox.exec(f"test -e {artefact!r}", timeout_s=25).exit_code != 0:
            return Grade(error=f"submission_not_found: no {artefact} in the workspace", artefact=artefact)
        result = agent_sandbox.exec(grader_command(self.task, artefact or ""), timeout_s=self.timeout_s)
        return self._to_grade(result.output, result.exit_code, result.timed_out, artefact)

    def _to_grade(self, output: str, exit_code: int, timed_out: bool, artefact: str | None) -> Grade:
        if timed_out:
            return Grade(error=f"evaluation_format_error: the grader timed out after {self.timeout_s:.0f} s", artefact=artefact)
        if exit_code != 0:
            tail = output.strip()[-2000:]
            return Grade(error=f"evaluation_format_error: the grader failed (exit {exit_code}):\n{tail}", artefact=artefact)
        try:
            obj = parse_metrics(self.task.config.task_entrypoint, output)
            validation, test = split_metrics(obj, self.task.config.grading)
        except GradingError as e:
            return Grade(error=f"evaluation_format_error: {e}", artefact=artefact)
        return Grade(validation=validation, test=test, artefact=artefact)

    def _grader_sandbox(self) -> Sandbox:
        if self._sandbox is None:
            if not (self.task.grader_dir / "evaluate.py").is_file():
                raise TaskError(f"{self.task.grader_dir}/evaluate.py: missing; a task graded separately needs its grader")
            spec = SandboxSpec(workspace=self.task.grader_dir, labels={**self.labels, "role": "grader"})
            self._sandbox = self.runtime.start(spec)
        else:
            self._sandbox.reset()
        return self._sandbox
