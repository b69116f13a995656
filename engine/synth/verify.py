"""Verifies a task folder: baseline runs and is graded, a constant scores lower, no leaks, one scored episode.

Reads a task folder; rewrites its task.yaml with the measured baseline scores and its provenance.json with
the verification result. Used for synthesized and procedural tasks alike.
"""

from __future__ import annotations

import json
import logging

from engine.agent.episode import run_episode
from engine.config import AgentConfig, SamplingConfig, SynthConfig
from engine.protocols import ChatModel, Runtime, SandboxSpec
from engine.synth.guards.difficulty import estimate_difficulty
from engine.synth.guards.leaks import probe_leaks
from engine.synth.records import Provenance, Verification
from engine.tasks.check import CheckReport, check_task
from engine.tasks.folder import save_task
from engine.tasks.grading import TaskGrader
from engine.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

GUARD_PREFIX = "leak probe: "
"""Problems found by the guards (leaks, ceilings): data or design faults that regeneration does not mend."""
GUARD_ORDER = ("target_copy", "labels_in_workspace", "constant_at_ceiling", "baseline_at_ceiling")
"""When several guards fire, the root cause first: a copied target also leaks labels; a grader that puts a
constant at the ceiling puts the baseline there too."""


def error_log(report: CheckReport | None, verification: Verification) -> str:
    """What went wrong, for the teacher's repair prompt (problems first, then the baseline's output tail)."""
    parts = list(verification.problems)
    if report is not None and not report.baseline_ran:
        parts.append("baseline output (tail):\n" + report.baseline_output[-3000:])
    for grade in (report.baseline, report.constant) if report is not None else ():
        if grade is not None and grade.error:
            parts.append(grade.error[-3000:])
    return "\n\n".join(parts)


def verify_task(task: TaskSpec, runtime: Runtime, cfg: SynthConfig, *, policy: ChatModel | None,
                run_id: str) -> tuple[Verification, CheckReport | None]:
    """Run every check; the task folder's task.yaml gets the measured baseline when the grader scored it."""
    report = check_task(task, runtime, timeout_s=cfg.grading_timeout_s)
    v = Verification(verified=False, problems=list(report.problems))
    if report.baseline is not None and report.baseline.error is None:
        v.baseline_validation, v.baseline_test = report.baseline.validation, report.baseline.test
    if report.constant is not None and report.constant.error is None:
        v.constant_test = report.constant.test
    if v.baseline_validation is not None:
        # leaks and ceilings first: they say why a task is unusable better than "the constant is not below"
        scores = {"validation": v.baseline_validation, "test": v.baseline_test}
        leaks = sorted(probe_leaks(task, constant_scores=v.constant_test, baseline_scores=scores),
                       key=lambda r: GUARD_ORDER.index(r.reason) if r.reason in GUARD_ORDER else len(GUARD_ORDER))
        v.problems[:0] = [f"{GUARD_PREFIX}{r.reason}: {r.detail}" for r in leaks]
    if v.problems:
        return v, report
    task = record_baseline(task, v)
    if cfg.verify_episode and policy is not None:
        _episode(task, runtime, cfg, policy, run_id, v)
    else:
        v.verified = True
    metric, direction = task.config.metric, task.config.direction
    v.difficulty = estimate_difficulty(direction, (v.baseline_validation or {}).get(metric), v.difficulty.teacher_best)
    return v, report


def _episode(task: TaskSpec, runtime: Runtime, cfg: SynthConfig, policy: ChatModel, run_id: str,
             v: Verification) -> None:
    agent_cfg = AgentConfig(max_steps=cfg.verify_max_steps)
    spec = SandboxSpec(workspace=task.workspace_dir, read_only_paths=task.read_only_paths,
                       labels={"run_id": run_id, "task_id": task.id, "role": "verify"})
    with runtime.start(spec) as sandbox, TaskGrader(task, runtime, timeout_s=cfg.grading_timeout_s,
                                                    labels=spec.labels) as grader:
        rec = run_episode(task, policy, sandbox, grader, agent_cfg, seed=cfg.seed, run_id=run_id,
                          sampling=SamplingConfig(), policy="verify")
    v.episode_exit_status = rec.exit_status
    v.episode_scores = sum(s.ok for s in rec.scores)
    if rec.infra_error:
        v.problems.append(f"verification episode hit an infrastructure error: {rec.infra_error}")
        return
    if v.episode_scores == 0:
        errors = [s.error for s in rec.scores if s.error]
        v.problems.append("the verification episode produced no scored submission"
                          + (f"; last grading error: {errors[-1]}" if errors else ""))
        return
    metric, sign = task.config.metric, 1 if task.config.direction == "max" else -1
    scored = [s.validation[metric] for s in rec.scores if s.ok and s.validation and metric in s.validation]
    v.difficulty.teacher_best = max(scored, key=lambda x: sign * x) if scored else None
    v.verified = True


def record_baseline(task: TaskSpec, v: Verification) -> TaskSpec:
    """Write the measured baseline (validation and test metrics) into task.yaml."""
    config = task.config.model_copy(update={"baseline_scores": [v.baseline_validation],
                                            "baseline_test_scores": [v.baseline_test]})
    return save_task(task.model_copy(update={"config": config}), task.root, overwrite=True)


def write_provenance(task_root, provenance: Provenance) -> None:
    (task_root / "provenance.json").write_text(json.dumps(provenance.model_dump(mode="json"), indent=2) + "\n")

