"""Shared pieces of the procedural families: ids, the Family record, task.yaml/heuristic.yaml writing, move chains,
and the evaluate.py of Python-submission tasks (rendered from prompts/graders/python_submission.j2)."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from engine.errors import TaskError
from engine.prompting import render
from engine.tasks.folder import TaskParts, dump_yaml
from engine.tasks.spec import DatasetConfig, TaskConfig

Params = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """One procedural task family: how to sample parameters and how to build a task from them."""

    name: str
    domain: str
    task_type: str
    space: Callable[[random.Random], Params]
    build: Callable[[Params], TaskParts]
    count: Callable[[], int]
    topic: str


def grid_space(rng: random.Random, grid: dict[str, Sequence[Any]]) -> Params:
    """One value per axis of `grid`, drawn in the grid's order (so draws stay reproducible).

    >>> grid_space(random.Random(0), {"a": [1, 2], "b": ["x"]})
    {'a': 2, 'b': 'x'}
    """
    return {axis: rng.choice(values) for axis, values in grid.items()}


def grid_count(grid: dict[str, Sequence[Any]]) -> int:
    """Distinct parameterisations of a grid (before builds that fail their checks are skipped)."""
    return math.prod(len(values) for values in grid.values())


def statsmodels_data(name: str) -> pd.DataFrame:
    """A copy of statsmodels' bundled dataset `name` (imports only that module: statsmodels.api is slow)."""
    return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data.copy()


def params_key(family: str, params: Params) -> str:
    """Stable hash of a family and its parameters (the proposal id and the task id's suffix).

    >>> params_key("x", {"a": 1}) == params_key("x", {"a": 1})
    True
    """
    text = json.dumps({"family": family, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def task_id(family: str, params: Params) -> str:
    return f"proc-{family.replace('_', '-')}-{params_key(family, params)}"


def rng_for(family: str, params: Params, salt: str = "") -> random.Random:
    """A random generator seeded by the parameters, so a build is a pure function of them."""
    return random.Random(int(params_key(family, params) + hashlib.sha256(salt.encode()).hexdigest()[:4], 16))


@dataclass(frozen=True)
class Candidate:
    """One version of the editable block of the starter file, and its validation score."""

    label: str
    block: str
    score: float


def better(a: float, b: float, direction: str) -> bool:
    return a > b + 1e-9 if direction == "max" else a < b - 1e-9


def improving_chain(baseline: Candidate, candidates: list[Candidate], direction: str, *, max_moves: int = 3,
                    min_moves: int = 2) -> list[Candidate]:
    """Up to `max_moves` candidates whose validation scores strictly improve on the baseline and on each other.

    Raises TaskError when fewer than `min_moves` candidates beat the baseline: the draw skips such parameters.
    """
    sign = 1.0 if direction == "max" else -1.0
    seen: set[float] = set()
    ranked = []
    for c in sorted(candidates, key=lambda c: sign * c.score):
        if better(c.score, baseline.score, direction) and round(c.score, 9) not in seen and c.block != baseline.block:
            seen.add(round(c.score, 9))
            ranked.append(c)
    if len(ranked) < min_moves:
        raise TaskError(f"only {len(ranked)} candidate(s) improve on baseline {baseline.label} "
                        f"({baseline.score:.4g}); these parameters make no task with {min_moves} moves")
    if len(ranked) <= max_moves:
        return ranked
    picks = sorted({round(i * (len(ranked) - 1) / (max_moves - 1)) for i in range(max_moves)})
    return [ranked[i] for i in picks]


def heuristic_yaml(file: str, run: str, baseline: Candidate, chain: list[Candidate], mistakes: list[dict[str, str]],
                   move_run: str | None = None) -> str:
    """heuristic.yaml text: moves that replace the editable block step by step, and plausible mistakes."""
    moves, current = [], baseline
    for step in chain:
        move = {"file": file, "find": current.block.rstrip("\n"), "replace": step.block.rstrip("\n")}
        if move_run:
            move["run"] = move_run
        move["note"] = f"{step.label} scores better on validation than {current.label}."
        moves.append(move)
        current = step
    head = ("# The offline heuristic policy's knowledge of this procedural task (never shown to the agent).\n"
            "# moves: applied in order; each `find` is whole existing line(s) of `file` and each raises the "
            "validation metric.\n")
    return head + dump_yaml({"run": run, "moves": moves, "mistakes": mistakes})


KNOWN_RANGES: dict[str, tuple[float | None, float | None]] = {
    "accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "rmse": (0.0, None), "mae": (0.0, None), "mase": (0.0, None)}
"""Plausible ranges of the catalogue's metrics (a grader's value outside one is a grading error)."""


def task_config(tid: str, name: str, description: str, *, metric: str, direction: str, starter: list[str],
                entrypoint: str = "CSVSubmissionTasks", submission: str = "submission.csv", datasets: bool = True,
                requirements: list[str] | None = None, sample_submission: str | None = None,
                training_timeout: int = 300, metric_range: tuple[float | None, float | None] | None = None) -> TaskConfig:
    """task.yaml of a procedural task; baseline scores stay empty for the verification stage to fill. The metric's
    plausible range is `metric_range`, else the catalogue's known one (`KNOWN_RANGES`)."""
    return TaskConfig(
        id=tid, name=name, description=description, dataset_configs=["dataset.yaml"] if datasets else [],
        task_entrypoint=entrypoint, training_timeout=training_timeout, starter_code=starter,
        baseline_paths=[starter[0]], evaluation_paths=["evaluate.py"], metric=metric, direction=direction,
        requirements=requirements or [], submission_path=submission, sample_submission=sample_submission,
        grading="separate", metric_ranges={metric: metric_range or KNOWN_RANGES[metric]},
    )


def python_grader(*, task_id: str, summary: str, score_doc: str, module_file: str, function: str, signature: str,
                  action: str, setup: str, constants: dict[str, Any] | None = None, stdlib: Sequence[str] = (),
                  third_party: Sequence[str] = ()) -> str:
    r"""evaluate.py of a Python-submission task: the task's `setup` inside the one shared harness, which loads
    `module_file`, scores its `function` and prints `{"validation": {"score": …}, "test": {"score": …}}`.

    `constants` (name -> value, written as `NAME = repr(value)`) and `setup` must together define
    VALIDATION_SEEDS, TEST_SEEDS and `score(function, seeds) -> float`; what the submission raises while scored is
    reported as "<action> raised …". The grader stays standalone (the grader sandbox has no synthscale): `stdlib`
    and `third_party` name what `setup` imports.

    >>> src = python_grader(task_id="t", summary="sums the seeds", score_doc="The score is a sum.",
    ...                     module_file="policy.py", function="act", signature="act(seed)", action="running act",
    ...                     constants={"VALIDATION_SEEDS": range(2), "TEST_SEEDS": [5]},
    ...                     setup="def score(act, seeds):\n    return float(sum(map(act, seeds)))")
    >>> "VALIDATION_SEEDS = range(0, 2)\nTEST_SEEDS = [5]\n\n\ndef score(act, seeds):" in src
    True
    >>> "act = load_policy()" in src and '"validation": {"score": score(act, VALIDATION_SEEDS)}' in src
    True
    """
    return render("graders/python_submission.j2", task_id=task_id, summary=summary, score_doc=score_doc,
                  module_file=module_file, stem=Path(module_file).stem, function=function, signature=signature,
                  action=action, setup=setup.strip("\n"), stdlib=list(stdlib), third_party=list(third_party),
                  constants={name: repr(value) for name, value in (constants or {}).items()})


def local_dataset(name: str, description: str) -> DatasetConfig:
    """dataset.yaml for data materialised into workspace/data at build time."""
    return DatasetConfig(name=name, description=description, data_path="workspace/data", is_local=True,
                         splits={"train": "train.csv", "validation": "validation.csv", "test": "test.csv"})


def provenance(family: str, params: Params) -> dict[str, Any]:
    return {"source": "procedural", "params": {"family": family, **params}}


def fmt(value: float) -> str:
    return f"{value:.4g}"


def check_mlgym_free(text: str) -> None:
    """Refuse text naming an environment on the contamination list."""
    if "MountainCarContinuous" in text:
        raise TaskError("procedural task mentions MountainCarContinuous, which MLGym-Bench uses")
