"""The per-item work of the synthesis stage, as plain functions that threads or Ray tasks run:
`procedural_item` verifies a catalogue task; `teacher_item` grounds, generates, verifies and repairs one
proposal (the self-debugging loop). Each writes only its own staging folder and, when verified, its task
folder; each returns an `Outcome` record."""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.config import RunConfig
from engine.errors import BudgetExceededError, EngineError
from engine.protocols import ChatModel
from engine.synth.records import AttemptRecord, Provenance, ProposalRecord, RejectRecord, TopicRecord, Verification
from engine.synth.verify import GUARD_PREFIX, error_log, verify_task, write_provenance
from engine.tasks.folder import load_task, save_task

log = logging.getLogger(__name__)


class Outcome(BaseModel):
    """What became of one item: its verified task id, or the rejects that stopped it."""

    model_config = ConfigDict(extra="forbid")
    item_id: str
    proposal: ProposalRecord
    task_id: str | None = None
    reached: list[str] = Field(default_factory=list, description="Funnel stages this item reached.")
    rejects: list[RejectRecord] = Field(default_factory=list)
    iterations: int = 0
    cost_usd: float = 0.0
    resumed: bool = False


class ItemContext(BaseModel):
    """What every item needs; picklable, so it travels to Ray tasks (the limiter is an actor's handle there)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    cfg: RunConfig
    tasks_dir: Path
    staging_dir: Path
    limiter: Any = None

    def teacher(self) -> ChatModel:
        from engine.models import make_model
        from engine.models.ratelimit import LimitedModel

        model = make_model(self.cfg.synth.teacher or self.cfg.model)
        return LimitedModel(model, self.limiter) if self.limiter is not None else model

    def runtime(self):
        from engine.sandbox import make_runtime

        return make_runtime(self.cfg.sandbox, self.cfg.run_id)


def reason_of(v: Verification) -> str:
    """A short reason for the first problem, for the manifest's reject counts."""
    text = v.problems[0] if v.problems else ""
    for key, reason in ((GUARD_PREFIX, None), ("baseline_at_ceiling", "baseline_at_ceiling"),
                        ("constant_at_ceiling", "constant_at_ceiling"), ("constant submission", "constant_not_below"),
                        ("baseline `", "baseline_failed"), ("could not be graded", "grader_failed"),
                        ("no scored submission", "no_scored_submission"), ("infrastructure", "infra_error")):
        if key in text:
            return reason or text.removeprefix(key).split(":")[0]
    return "verify_failed"


def _resume(ctx: ItemContext, task_id: str) -> bool:
    return (ctx.tasks_dir / task_id / "provenance.json").is_file()


def _publish(staging: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def procedural_item(item: Any, ctx: ItemContext) -> Outcome:
    """Verify one procedural task (no repair loop: the catalogue's code is fixed; a failure is a reject)."""
    from engine.agent.heuristic import HeuristicModel

    task_id = item.parts.config.id
    out = Outcome(item_id=item.proposal.proposal_id, proposal=item.proposal, reached=["generated"])
    if _resume(ctx, task_id):
        out.task_id, out.resumed = task_id, True
        out.reached.append("verified")
        return out
    staging = ctx.staging_dir / task_id
    spec = save_task(item.parts, staging, overwrite=True)
    policy = HeuristicModel([spec]) if ctx.cfg.synth.verify_episode else None
    v, report = verify_task(spec, ctx.runtime(), ctx.cfg.synth, policy=policy, run_id=ctx.cfg.run_id)
    attempt = AttemptRecord(iteration=0, mode="generate", ok=v.verified, error_log="" if v.verified else error_log(report, v),
                            decision="verified" if v.verified else "discard")
    write_provenance(staging, Provenance(source="procedural", proposal=item.proposal, params=item.params,
                                         attempts=[attempt], verification=v))
    out.iterations = 1
    if v.verified:
        _publish(staging, ctx.tasks_dir / task_id)
        out.task_id = task_id
        out.reached.append("verified")
    else:
        shutil.rmtree(staging, ignore_errors=True)
        out.rejects.append(RejectRecord(stage="verify", item_id=out.item_id, reason=reason_of(v),
                                        detail="; ".join(v.problems)[:2000]))
    return out


def proposal_item(topic: TopicRecord, ctx: ItemContext) -> tuple[ProposalRecord | None, RejectRecord | None, float]:
    """The teacher's task and dataset proposal for one topic."""
    from engine.synth.proposals import propose_task

    try:
        return propose_task(ctx.teacher(), topic, key=f"proposal-{topic.topic_id}")
    except BudgetExceededError as e:
        return None, RejectRecord(stage="budget", item_id=topic.topic_id, reason="budget", detail=str(e)), 0.0


def teacher_item(proposal: ProposalRecord, ctx: ItemContext) -> Outcome:
    """Ground the proposal in its dataset, then generate → verify → (debug | regenerate) up to k times."""
    out = Outcome(item_id=proposal.proposal_id, proposal=proposal)
    task_id = _task_id(proposal)
    if _resume(ctx, task_id):
        out.task_id, out.resumed = task_id, True
        out.reached += ["dataset_checked", "generated", "verified"]
        return out
    try:
        return _teacher_item(proposal, ctx, out, task_id)
    except BudgetExceededError as e:
        out.rejects.append(RejectRecord(stage="budget", item_id=out.item_id, reason="budget", detail=str(e)))
        return out


def _task_id(proposal: ProposalRecord) -> str:
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", proposal.name.lower()).strip("-")[:40] or "task"
    return f"{slug}-{proposal.proposal_id[:8]}"


def _teacher_item(proposal: ProposalRecord, ctx: ItemContext, out: Outcome, task_id: str) -> Outcome:
    from engine.synth.grounding import ground

    cfg = ctx.cfg.synth
    staging = ctx.staging_dir / task_id
    shutil.rmtree(staging, ignore_errors=True)
    grounding = ground(proposal, ctx.cfg, staging / "_data", seed=cfg.seed)
    if grounding.reject is not None:
        out.rejects.append(grounding.reject)
        return out
    out.reached.append("dataset_checked")
    model = ctx.teacher()
    rng = random.Random(f"{cfg.seed}|{proposal.proposal_id}")
    attempts: list[AttemptRecord] = []
    previous, log_text = None, None
    for i in range(cfg.max_iterations):
        mode = "debug" if previous is not None and log_text and rng.random() < cfg.p_debug else "generate"
        result = _attempt(model, proposal, grounding, ctx, staging / "task", task_id, i, mode,
                          previous if mode == "debug" else None, log_text if mode == "debug" else None)
        out.cost_usd += result.attempt.cost_usd
        attempts.append(result.attempt)
        out.iterations = i + 1
        if result.generated and "generated" not in out.reached:
            out.reached.append("generated")
        if result.attempt.ok:
            write_provenance(staging / "task", Provenance(
                source="teacher", proposal=proposal, dataset_check=grounding.check, attempts=attempts,
                verification=result.verification))
            _publish(staging / "task", ctx.tasks_dir / task_id)
            shutil.rmtree(staging, ignore_errors=True)
            out.task_id = task_id
            out.reached.append("verified")
            return out
        if result.verification is not None and any(p.startswith(GUARD_PREFIX) for p in result.verification.problems):
            result.attempt.decision = "discard"  # a leak or a ceiling: the task itself is unusable
            _keep_discarded(ctx, task_id, proposal, grounding, attempts, result.verification)
            shutil.rmtree(staging, ignore_errors=True)
            out.rejects.append(RejectRecord(stage="guard", item_id=out.item_id, reason=reason_of(result.verification),
                                            detail="; ".join(result.verification.problems)[:2000]))
            return out
        previous, log_text = result.code or previous, result.attempt.error_log
        result.attempt.decision = ("debug" if i + 1 < cfg.max_iterations else "discard")
    _keep_discarded(ctx, task_id, proposal, grounding, attempts, None)
    shutil.rmtree(staging, ignore_errors=True)
    last = attempts[-1].error_log.splitlines()[0][:300] if attempts and attempts[-1].error_log else ""
    out.rejects.append(RejectRecord(stage="verify", item_id=out.item_id, reason="discarded_after_k",
                                    detail=f"{len(attempts)} attempts failed; last: {last}"))
    return out


def _keep_discarded(ctx: ItemContext, task_id: str, proposal: ProposalRecord, grounding, attempts: list[AttemptRecord],
                    verification: Verification | None) -> None:
    """A discarded task's provenance (every attempt, error log and decision) stays in synth/discarded/."""
    folder = ctx.tasks_dir.parent / "discarded" / task_id
    folder.mkdir(parents=True, exist_ok=True)
    write_provenance(folder, Provenance(source="teacher", proposal=proposal, dataset_check=grounding.check,
                                        attempts=attempts, verification=verification))


class _AttemptResult(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    attempt: AttemptRecord
    code: Any = None
    generated: bool = False
    verification: Verification | None = None


def _attempt(model, proposal, grounding, ctx, task_dir: Path, task_id: str, i: int, mode: str, previous,
             log_text) -> _AttemptResult:
    from engine.synth.codegen import check_imports, generate_task_code, to_task_parts

    cfg = ctx.cfg.synth
    code, call = generate_task_code(model, proposal, grounding.summary, image_packages=grounding.image_packages,
                                    key=f"gen-{proposal.proposal_id}-{i}", previous=previous, error_log=log_text)
    attempt = AttemptRecord(iteration=i, mode=mode, ok=False, cost_usd=call.cost_usd)
    if code is None:
        attempt.error_log = f"the reply was not usable: {'; '.join(call.errors)}"
        return _AttemptResult(attempt=attempt)
    bad = check_imports(code.files, grounding.image_packages)
    if bad:
        attempt.error_log = "imports outside the task image: " + "; ".join(bad)
        return _AttemptResult(attempt=attempt, code=code)
    try:
        parts = to_task_parts(code, proposal, grounding.workspace_files, grounding.grader_files,
                              grounding.dataset_config, data=grounding.summary, task_id=task_id)
        spec = save_task(parts, task_dir, overwrite=True)
    except EngineError as e:
        attempt.error_log = f"the generated task folder is invalid: {e}"
        return _AttemptResult(attempt=attempt, code=code)
    policy = _verify_policy(ctx, model, spec)
    v, report = verify_task(spec, ctx.runtime(), cfg, policy=policy, run_id=ctx.cfg.run_id)
    attempt.ok = v.verified
    attempt.decision = "verified" if v.verified else ""
    attempt.error_log = "" if v.verified else error_log(report, v)
    return _AttemptResult(attempt=attempt, code=code, generated=True, verification=v)


def _verify_policy(ctx: ItemContext, teacher: ChatModel, spec) -> ChatModel | None:
    if not ctx.cfg.synth.verify_episode:
        return None
    if ctx.cfg.synth.verify_policy == "teacher":
        return teacher
    from engine.agent.heuristic import HeuristicModel

    return HeuristicModel([load_task(spec.root)])
