"""Submission rules per task entrypoint: which workspace file is the artefact, the grader's command, how its stdout parses."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable
from typing import Any, Literal

from engine.errors import GradingError, TaskError
from engine.tasks.spec import TaskEntrypoint, TaskSpec

# Entrypoints whose grader must print nothing but the JSON object; the others print logs first.
_WHOLE_STDOUT: frozenset[str] = frozenset({"CSVSubmissionTasks", "PythonSubmissionTasks"})
_OUTPUT_TAIL_CHARS = 2000
_SEPARATE_KEYS = ("validation", "test")


class MissingArtefactError(GradingError):
    """The submission artefact is not in the workspace (MLGym's `submission_not_found`)."""


def _norm(path: str) -> str:
    return path[2:] if path.startswith("./") else path


def resolve_artefact(spec: TaskSpec, workspace_files: Iterable[str]) -> str | None:
    """The workspace-relative artefact the grader needs; `workspace_files` lists the workspace (relative paths).

    CSVSubmissionTasks: `submission_path` or `submission.csv`. PythonSubmissionTasks: `submission_path`.
    LMSubmissionTasks: None (the grader reads the workspace itself). These fixed paths are returned whether or not
    they exist yet; the caller checks the listing. ModelSubmissionTasks: `submission_path`, else the first `*.yaml`
    of the listing (shallowest, then by name), and MissingArtefactError when there is none.

    Example: a CSV task with workspace files ["baseline.py"] resolves to "submission.csv"; a Model task with
    ["src/config.yaml", "config.yaml"] resolves to "config.yaml".
    """
    cfg = spec.config
    if cfg.task_entrypoint == "LMSubmissionTasks":
        return None
    if cfg.submission_path:
        return _norm(cfg.submission_path)
    if cfg.task_entrypoint == "PythonSubmissionTasks":
        raise TaskError(
            f"{spec.root / 'task.yaml'}: field 'submission_path': required for PythonSubmissionTasks; "
            "name the Python file the agent edits"
        )
    if cfg.task_entrypoint == "ModelSubmissionTasks":
        configs = sorted((f for f in map(_norm, workspace_files) if f.endswith(".yaml")), key=lambda f: (f.count("/"), f))
        if not configs:
            raise MissingArtefactError(
                "no submission found: this task's artefact is the *.yaml config of your trained model, and the "
                "workspace has none; make sure your training code writes it"
            )
        return configs[0]
    return "submission.csv"


def grader_command(spec: TaskSpec, artefact_in_grader: str | None, gpus: int | None = None) -> str:
    """The shell command that runs the grader in its working directory.

    `artefact_in_grader` is where the artefact was copied for the grader (CSV and Model tasks pass it as an
    argument; a Python task's file must be copied next to evaluate.py under its workspace-relative name).
    LMSubmissionTasks run under torchrun on `gpus` processes (default: the task's gpus, at least 1).

    Example: a CSV task graded on "/grader/submission.csv" runs
    `python evaluate.py --submission_file /grader/submission.csv`.
    """
    cfg = spec.config
    if cfg.grading == "mlgym":
        if not cfg.evaluation_paths:
            raise TaskError(f"{spec.root / 'task.yaml'}: field 'evaluation_paths': empty; name the evaluation script")
        script = shlex.quote(cfg.evaluation_paths[0])
    else:
        script = "evaluate.py"
    entry = cfg.task_entrypoint
    if entry in ("CSVSubmissionTasks", "ModelSubmissionTasks"):
        if not artefact_in_grader:
            raise GradingError(f"{entry} grading needs the artefact's path; got {artefact_in_grader!r}")
        flag = "--submission_file" if entry == "CSVSubmissionTasks" else "--config_fname"
        return f"python {script} {flag} {shlex.quote(artefact_in_grader)}"
    if entry == "PythonSubmissionTasks":
        return f"python {script}"
    nproc = gpus if gpus is not None else max(cfg.gpus, 1)
    return f"torchrun --nproc_per_node={nproc} --standalone {script}"


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _OUTPUT_TAIL_CHARS else "…" + text[-_OUTPUT_TAIL_CHARS:]


def parse_metrics(entrypoint: TaskEntrypoint, stdout: str) -> dict[str, Any]:
    """The grader's metrics object. CSV and Python graders print only the JSON object; Model and LM graders may
    print logs first and the first line starting with `{` is parsed. Values must be finite numbers, or (our
    separate graders) objects of finite numbers.

    >>> parse_metrics("ModelSubmissionTasks", 'loading...\\n{"Reward Mean": 1.5}\\n')
    {'Reward Mean': 1.5}
    """
    if entrypoint in _WHOLE_STDOUT:
        candidate = stdout.strip()
    else:
        candidate = next((ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("{")), "")
    try:
        obj = json.loads(candidate) if candidate else None
    except json.JSONDecodeError as e:
        raise GradingError(
            f"evaluation printed no JSON metrics ({e.msg} at line {e.lineno} column {e.colno}); the evaluation "
            f"script must print the metrics as one JSON object. Output:\n{_tail(stdout)}"
        ) from None
    if obj is None:
        where = "" if entrypoint in _WHOLE_STDOUT else " (no line starts with '{')"
        raise GradingError(
            f"evaluation printed no JSON metrics{where}; the evaluation script must print the metrics as one JSON "
            f"object. Output:\n{_tail(stdout) or '(empty)'}"
        )
    if not isinstance(obj, dict):
        raise GradingError(
            f"evaluation output is JSON but not an object (got a {type(obj).__name__}: {_tail(candidate)[:200]}); "
            "print the metrics as an object such as {\"accuracy\": 0.9}"
        )
    for key, value in obj.items():
        if isinstance(value, dict):
            for inner, x in value.items():
                _check_number(f"{key}.{inner}", x)
        else:
            _check_number(key, value)
    return obj


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GradingError(f"evaluation output has a non-numeric metric {name!r}: {value!r}; every metric must be a number")
    if not math.isfinite(value):
        raise GradingError(f"evaluation output has a non-finite metric {name!r}: {value!r}; every metric must be finite")


def split_metrics(
    obj: dict[str, Any], grading: Literal["separate", "mlgym"], metric: str | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """(validation, test) metrics from a parsed grader object.

    separate: `{"validation": {...}, "test": {...}}`, both required, every value non-negative. mlgym: the flat
    object is both what the agent sees and the test record. With `metric`, both must contain it.

    >>> split_metrics({"validation": {"rmse": 3.0}, "test": {"rmse": 3.5}}, "separate", "rmse")
    ({'rmse': 3.0}, {'rmse': 3.5})
    """
    if grading == "mlgym":
        nested = [k for k, v in obj.items() if isinstance(v, dict)]
        if nested:
            raise GradingError(f"evaluation output nests objects under {nested}; an MLGym task prints flat metrics")
        flat = {k: float(v) for k, v in obj.items()}
        _require(metric, flat, "the output")
        return flat, dict(flat)
    missing = [k for k in _SEPARATE_KEYS if k not in obj]
    extra = sorted(set(obj) - set(_SEPARATE_KEYS))
    if missing or extra:
        problem = f"lacks {missing}" if missing else f"has unexpected keys {extra}"
        raise GradingError(
            f"grader output {problem}; a separate grader prints exactly "
            '{"validation": {metric: value, ...}, "test": {metric: value, ...}}'
        )
    out: list[dict[str, float]] = []
    for split in _SEPARATE_KEYS:
        scores = obj[split]
        if not isinstance(scores, dict) or not scores:
            raise GradingError(f"grader output's {split!r} is {scores!r}; it must be a non-empty object of metrics")
        for key, value in scores.items():
            if value < 0:
                raise GradingError(
                    f"grader output's {split}.{key} is {value}, negative; task metrics must be non-negative: "
                    "report the metric with a documented offset or transformation (e.g. reward + 500)"
                )
        _require(metric, scores, f"{split!r}")
        out.append({k: float(v) for k, v in scores.items()})
    return out[0], out[1]


def _require(metric: str | None, scores: dict[str, Any], where: str) -> None:
    if metric is not None and metric not in scores:
        raise GradingError(f"grader output lacks the primary metric {metric!r} in {where} (has {sorted(scores)})")


def grade_output(spec: TaskSpec, stdout: str) -> tuple[dict[str, float], dict[str, float]]:
    """(validation, test) metrics from a grader's stdout, checked against the task's entrypoint, grading and metric."""
    cfg = spec.config
    return split_metrics(parse_metrics(cfg.task_entrypoint, stdout), cfg.grading, cfg.metric)
