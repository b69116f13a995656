"""`synthscale task check`: the task loads, its baseline runs, the grader scores it, and a constant submission scores lower."""

from __future__ import annotations

import csv
import io
import logging
import math
import shlex
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engine.protocols import Runtime, SandboxSpec
from engine.tasks.grading import Grade, TaskGrader
from engine.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


class CheckReport(BaseModel):
    """What `task check` found; `ok` only when every check passed."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    baseline_ran: bool = False
    baseline_output: str = ""
    baseline: Grade | None = None
    constant: Grade | None = None
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="Worth knowing, not failures (a negative MLGym score).")

    @property
    def ok(self) -> bool:
        return not self.problems


def baseline_command(task: TaskSpec) -> str:
    """The command that makes the starter artefact: the first baseline path run with python; for a task without one
    (MLGym's L1 variants, titanic) that ships a sample submission, a copy of it to the artefact's path.

    >>> from engine.tasks.spec import TaskConfig
    >>> cfg = TaskConfig(id="t", name="t", description="d", metric="m", sample_submission="sample_submission.csv")
    >>> baseline_command(TaskSpec(root=Path("t"), config=cfg))
    'cp sample_submission.csv submission.csv'
    """
    cfg = task.config
    if not cfg.baseline_paths and cfg.sample_submission and cfg.task_entrypoint == "CSVSubmissionTasks":
        return f"cp {shlex.quote(cfg.sample_submission)} {shlex.quote(cfg.submission_path or 'submission.csv')}"
    paths = cfg.baseline_paths or ["baseline.py"]
    return f"python {paths[0]}"


def constant_csv(data: bytes) -> bytes:
    """Replace every prediction column of a submission CSV by its first row's value (ids kept).

    >>> constant_csv(b"id,label\\n0,a\\n1,b\\n").decode()
    'id,label\\r\\n0,a\\r\\n1,a\\r\\n'
    """
    rows = list(csv.reader(io.StringIO(data.decode())))
    header, body = rows[0], rows[1:]
    keep = {i for i, name in enumerate(header) if name.lower() in {"id", "index", "row_id", "split"}}
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    for row in body:
        w.writerow([v if i in keep else body[0][i] for i, v in enumerate(row)])
    return out.getvalue().encode()


def check_task(task: TaskSpec, runtime: Runtime, *, timeout_s: float | None = None) -> CheckReport:
    """Run the baseline in a sandbox, grade it, then grade a constant submission, which must score lower."""
    report = CheckReport(task_id=task.id)
    timeout = float(timeout_s or task.config.training_timeout)
    labels = {"task_id": task.id, "role": "check"}
    spec = SandboxSpec(workspace=task.workspace_dir, read_only_paths=task.read_only_paths, labels=labels)
    with runtime.start(spec) as sandbox, TaskGrader(task, runtime, timeout_s=timeout, labels=labels) as grader:
        result = sandbox.exec(baseline_command(task), timeout_s=timeout)
        report.baseline_output = result.output[-4000:]
        report.baseline_ran = result.exit_code == 0 and not result.timed_out
        if not report.baseline_ran:
            report.problems.append(f"baseline `{baseline_command(task)}` failed (exit {result.exit_code}"
                                   f"{', timed out' if result.timed_out else ''})")
            return report
        report.baseline = grader.grade(sandbox)
        _check_grade(report, report.baseline, task, "baseline")
        if report.problems or task.config.grading == "mlgym":
            return report
        report.constant = _grade_constant(task, grader, sandbox, report)
        if report.constant is not None and report.constant.error is None and report.baseline.test:
            if not _worse(report.constant, report.baseline, task):
                report.problems.append(f"a constant submission scores {report.constant.test} which is not below "
                                       f"the baseline's {report.baseline.test}: the task does not discriminate")
    return report


def _grade_constant(task: TaskSpec, grader: TaskGrader, sandbox, report: CheckReport) -> Grade | None:
    artefact = report.baseline.artefact if report.baseline else None
    with tempfile.TemporaryDirectory(prefix="synthscale-check-") as tmp:
        if task.config.task_entrypoint == "CSVSubmissionTasks" and artefact:
            local = Path(tmp) / "baseline_artefact"
            sandbox.copy_out(artefact, local)
            const = Path(tmp) / Path(artefact).name
            const.write_bytes(constant_csv(local.read_bytes()))
        elif task.config.sample_submission:
            const = task.workspace_dir / task.config.sample_submission
            if not const.is_file():
                report.problems.append(f"sample_submission {task.config.sample_submission} is not in the workspace")
                return None
        else:
            report.problems.append("no constant submission can be made: set sample_submission in task.yaml "
                                   "to a trivial artefact")
            return None
        return grader.grade_file(const, artefact)


def _check_grade(report: CheckReport, grade: Grade, task: TaskSpec, what: str) -> None:
    if grade.error:
        report.problems.append(f"{what} could not be graded: {grade.error}")
        return
    for split in ("validation", "test"):
        metrics = getattr(grade, split)
        if metrics is None and task.config.grading == "separate":
            report.problems.append(f"{what}: the grader returned no {split} metrics")
            continue
        if metrics is None:
            continue
        value = metrics.get(task.config.metric)
        mlgym = task.config.grading == "mlgym"
        if value is None or not math.isfinite(value) or (value < 0 and not mlgym):
            report.problems.append(f"{what}: {split} metric {task.config.metric!r} is {value!r}; it must be present, "
                                   f"finite{'' if mlgym else ' and non-negative'}")
        elif value < 0:  # MLGym's own scores may be negative (blotto's baseline is -0.248): kept as they are
            report.notes.append(f"{what}: {split} metric {task.config.metric!r} is negative ({value!r}); MLGym's "
                                f"scores are kept exactly (the task's recorded baseline: {task.baseline or 'none'})")


def _worse(a: Grade, b: Grade, task: TaskSpec) -> bool:
    m = task.config.metric
    x, y = a.test.get(m), b.test.get(m)
    if x is None or y is None:
        return False
    return x < y if task.config.direction == "max" else x > y
