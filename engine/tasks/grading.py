"""Grades a submission artefact: our tasks in a separate grader sandbox holding `grader/`, MLGym tasks MLGym's way."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engine.errors import GradingError, TaskError
from engine.protocols import Runtime, Sandbox, SandboxSpec
from engine.tasks.artefact import grader_command, parse_metrics, resolve_artefact, split_metrics
from engine.tasks.python_grading import grade_mlgym, grade_separately, mlgym_command
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
            if self.task.config.task_entrypoint == "PythonSubmissionTasks":  # the agent's code in its own process
                result = grade_separately(sandbox, self.task, data, artefact, self.runtime.cfg.uid, self.timeout_s,
                                          grader_command(self.task, name))
            else:
                sandbox.write_file(name, data)
                result = sandbox.exec(grader_command(self.task, name), timeout_s=self.timeout_s)
        return self._to_grade(result.output, result.exit_code, result.timed_out, artefact)

    def _grade_in_place(self, agent_sandbox: Sandbox, artefact: str | None) -> Grade:
        """MLGym's way: its evaluate.py runs in the agent's own sandbox."""
        if artefact is not None and agent_sandbox.exec(f"test -e {artefact!r}", timeout_s=25).exit_code != 0:
            return Grade(error=f"submission_not_found: no {artefact} in the workspace", artefact=artefact)
        command = grader_command(self.task, artefact or "")
        if self.task.config.task_entrypoint == "PythonSubmissionTasks" and artefact is not None:
            result = grade_mlgym(agent_sandbox, self.task, artefact, self.timeout_s, command)
        else:
            result = agent_sandbox.exec(mlgym_command(self.task, agent_sandbox.workdir, command, stand_in=False),
                                        timeout_s=self.timeout_s)
        return self._to_grade(result.output, result.exit_code, result.timed_out, artefact)

    def _to_grade(self, output: str, exit_code: int, timed_out: bool, artefact: str | None) -> Grade:
        if timed_out:
            return Grade(error=f"evaluation_format_error: the grader timed out after {self.timeout_s:.0f} s", artefact=artefact)
        if exit_code != 0:  # the agent sees why its submission was refused, never the rest of the grader's output
            said = [ln for ln in output.splitlines() if ln.startswith(REJECTED)]
            why = ("\n" + "\n".join(said)[-2000:]) if said else ""
            return Grade(error=f"evaluation_format_error: the grader failed (exit {exit_code}){why}", artefact=artefact)
        try:
            obj = parse_metrics(self.task.config.task_entrypoint, output)
            validation, test = split_metrics(obj, self.task.config.grading)
            check_ranges(self.task, validation, test)
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


REJECTED = "submission rejected:"
"""A grader's lines that start so are meant for the agent (why its submission was refused)."""


def check_ranges(task: TaskSpec, *splits: dict[str, float] | None) -> None:
    """A metric outside the plausible range its task declares (`metric_ranges`) is a grading error, not a score.

    >>> from engine.tasks.spec import TaskConfig
    >>> t = TaskSpec(root=".", config=TaskConfig(id="t", name="t", description="", metric="score",
    ...              metric_ranges={"score": (0, 5)}))
    >>> check_ranges(t, {"score": 4.0}, {"score": 1e300})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    engine.errors.GradingError: metric score = 1e+300 lies outside the range [0, 5] that task t declares; ...
    """
    for split in splits:
        for name, value in (split or {}).items():
            low, high = task.config.metric_ranges.get(name, (None, None))
            if (low is not None and value < low) or (high is not None and value > high):
                shown = ", ".join("∞" if b is None else f"{b:g}" for b in (low, high))
                raise GradingError(f"metric {name} = {value:g} lies outside the range [{shown}] that task {task.id} "
                                   "declares; the score is not recorded")

