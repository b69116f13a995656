"""Grades a submission artefact: our tasks in a separate grader sandbox holding `grader/`, MLGym tasks MLGym's way."""

from __future__ import annotations

import logging
import threading
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
    """Owns the grader sandbox of one task; close it with `with`.

    The sandbox is started at the first grading (or by `prepare`) and kept for the task's later gradings. It is
    brought back to its starter state (killed processes, starter workspace, empty scratch) before every grading
    but the first after it started or was prepared, so that no grading can see what another left, even when a
    submission runs code in the grader. A reset costs a few milliseconds on the local runtime and one
    `docker exec` on Docker; `prepare` lets a caller pay it off the critical path. Thread-safe: `prepare` may
    run in another thread while the agent plays (a grading then waits for it)."""

    def __init__(self, task: TaskSpec, runtime: Runtime, *, timeout_s: float, labels: dict[str, str] | None = None):
        self.task = task
        self.runtime = runtime
        self.timeout_s = timeout_s
        self.labels = dict(labels or {})
        self._sandbox: Sandbox | None = None
        self._clean = False  # the sandbox is at its starter state: no grading ran since it started or was reset
        self._lock = threading.Lock()

    def __enter__(self) -> TaskGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._sandbox is not None:
                sandbox, self._sandbox = self._sandbox, None
                sandbox.close()

    def prepare(self) -> None:
        """Have the grader sandbox started and at its starter state now, so that the next grading goes straight
        to the grader. Does nothing when it already is; SandboxError when it cannot start or reset."""
        with self._lock:
            self._prepare()

    def grade(self, agent_sandbox: Sandbox) -> Grade:
        """Find the artefact in the agent's sandbox and grade it; agent mistakes come back as `Grade.error`."""
        try:
            artefact = resolve_artefact(self.task, _listing(self.task, agent_sandbox))
        except (TaskError, GradingError) as e:
            return Grade(error=f"submission_not_found: {e}")
        except (ConnectionError, TimeoutError):
            raise
        except OSError as e:  # a listing over its cap: the agent's doing
            return Grade(error=f"submission_not_found: the workspace cannot be listed ({e.strerror or e})")
        if self.task.config.grading == "mlgym":
            return self._grade_in_place(agent_sandbox, artefact)
        if artefact is None:
            raise TaskError(f"{self.task.root}: task_entrypoint {self.task.config.task_entrypoint} has no file "
                            "artefact and cannot be graded separately; set grading: mlgym")
        try:
            data = agent_sandbox.read_file(artefact)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return Grade(error=f"submission_not_found: no {artefact} in the workspace", artefact=artefact)
        except PermissionError:
            return Grade(error=f"submission_not_found: {artefact} is not readable (check its permissions)",
                         artefact=artefact)
        except (ConnectionError, TimeoutError):
            raise  # the sandbox or its daemon failed: the cluster's, not the agent's
        except OSError as e:  # a link out of the workspace, a special file, a file over the cap: the agent's doing
            return Grade(error=f"submission_not_found: {artefact} cannot be graded ({e.strerror or e})",
                         artefact=artefact)
        return self._grade_bytes(data, Path(artefact).name, artefact)

    def grade_file(self, artefact_file: Path, artefact: str | None = None) -> Grade:
        """Grade a host file as the task's artefact in the grader sandbox (validation and test rows)."""
        return self._grade_bytes(artefact_file.read_bytes(), artefact_file.name, artefact or artefact_file.name)

    def _grade_bytes(self, data: bytes, name: str, artefact: str) -> Grade:
        with self._lock:
            sandbox = self._prepare()
            self._clean = False
            sandbox.write_file(name, data)
            result = sandbox.exec(grader_command(self.task, name), timeout_s=self.timeout_s)
        return self._to_grade(result.output, result.exit_code, result.timed_out, artefact)

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

    def _prepare(self) -> Sandbox:
        """The grader sandbox at its starter state (caller holds the lock)."""
        if self._sandbox is None:
            if not (self.task.grader_dir / "evaluate.py").is_file():
                raise TaskError(f"{self.task.grader_dir}/evaluate.py: missing; a task graded separately needs its grader")
            # private: the grader's files are unreadable to the agent's uid (whose code may run beside it)
            spec = SandboxSpec(workspace=self.task.grader_dir, labels={**self.labels, "role": "grader"},
                               uid=self.runtime.cfg.grader_uid)
            self._sandbox = self.runtime.start(spec)
        elif not self._clean:
            self._sandbox.reset()
        self._clean = True
        return self._sandbox


def _listing(task: TaskSpec, agent_sandbox: Sandbox) -> list[str]:
    """The workspace's files, listed only where the artefact's name depends on them (a Model task without a
    submission_path takes the first *.yaml); every other entrypoint names a fixed file (or none), whose absence
    the grading then finds when it reads it, one command fewer."""
    cfg = task.config
    if cfg.task_entrypoint != "ModelSubmissionTasks" or cfg.submission_path:
        return []
    return [f for f in agent_sandbox.list_files(".", 3) if not f.startswith(".")]
