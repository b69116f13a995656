"""The synthesis stage: proposals (teacher or procedural) → checks → task code → verification → `RUN/synth/`.

Writes topics.parquet, proposals.parquet, rejects.parquet (a reason per row), tasks/<task_id>/ (verified
task folders with provenance.json) and manifest.json (the yield funnel) last. Resumable: verified tasks
already in tasks/ are kept and skipped; topics and proposals already written are reused.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from engine.artifacts import begin_stage, write_config, write_manifest
from engine.config import RunConfig
from engine.errors import BudgetExceededError, ConfigError
from engine.records import Manifest
from engine.synth.executor import Executor, ThreadExecutor
from engine.synth.items import ItemContext, Outcome, procedural_item, proposal_item, teacher_item
from engine.synth.records import ProposalRecord, RejectRecord, TopicRecord
from engine.synth.tables import read_records, write_records

log = logging.getLogger(__name__)

def synth_dir(cfg: RunConfig) -> Path:
    if "://" in cfg.run_dir and not cfg.run_dir.startswith("file://"):
        raise ConfigError(f"run_dir {cfg.run_dir!r}: the synth stage writes task folders that sandboxes mount, so "
                          "it needs a local or shared-filesystem path; copy RUN/synth to object storage afterwards")
    return Path(cfg.run_dir.removeprefix("file://")) / "synth"


def run_synth(cfg: RunConfig, *, start_over: bool = False, executor: Executor | None = None,
              limiter: Any = None) -> Manifest:
    """Run the whole stage in this process (threads) or through `executor` (Ray's RayExecutor)."""
    started = time.time()
    out = synth_dir(cfg)
    begin_stage(str(out), "synth", cfg.stage_hash("synth"), start_over=start_over, inputs=cfg.stage_inputs("synth"))
    write_config(str(out), cfg)
    executor = executor or ThreadExecutor(cfg.synth.concurrency)
    ctx = ItemContext(cfg=cfg, tasks_dir=out / "tasks", staging_dir=out / ".staging", limiter=limiter)
    rejects: list[RejectRecord] = []
    cost = 0.0
    if cfg.synth.source == "procedural":
        from engine.synth.procedural import ProceduralSource

        items = ProceduralSource(cfg.synth).draw(cfg.synth.n_tasks, cfg.synth.seed)
        topics = [TopicRecord(topic_id=i.proposal.topic_id, topic=i.proposal.topic, domain=i.proposal.domain)
                  for i in items]
        proposals = [i.proposal for i in items]
        kept, pre = _preguard(cfg, [(i.proposal, _starter_text(i.parts), _payoffs(i)) for i in items])
        rejects += pre
        work, fn = [i for i in items if i.proposal.proposal_id in kept], procedural_item
    else:
        topics, proposals, early, cost = _teacher_front(cfg, out, ctx, executor)
        rejects += early
        kept, pre = _preguard(cfg, [(p, "", None) for p in proposals])
        rejects += pre
        work, fn = [p for p in proposals if p.proposal_id in kept], teacher_item
    write_records(out / "topics.parquet", topics, TopicRecord)
    write_records(out / "proposals.parquet", proposals, ProposalRecord)
    done = _final_rejects(out)  # resume: items already rejected for good are not tried again
    rejects += [r for r in done.values() if r.item_id in {_item_id(w) for w in work}]
    work = [w for w in work if _item_id(w) not in done]
    outcomes: list[Outcome] = []
    for outcome in executor.map(fn, work, ctx):
        outcomes.append(outcome)
        rejects += outcome.rejects
        cost += outcome.cost_usd
        log.info("run %s synth: %s → %s", cfg.run_id, outcome.item_id, outcome.task_id or outcome.rejects[-1].reason)
    rejects += _postdedup(cfg, out / "tasks", outcomes)
    write_records(out / "rejects.parquet", rejects, RejectRecord)
    manifest = _manifest(cfg, topics, proposals, outcomes, rejects, cost, time.time() - started)
    write_manifest(str(out), manifest)
    return manifest


def _item_id(item) -> str:
    return item.proposal_id if isinstance(item, ProposalRecord) else item.proposal.proposal_id


def _final_rejects(out: Path) -> dict[str, RejectRecord]:
    """Rejects of an earlier run of this stage that stand (a budget stop does not: it is retried)."""
    item_stages = {"dataset", "materialise", "generate", "verify", "guard"}
    return {r.item_id: r for r in read_records(out / "rejects.parquet", RejectRecord) if r.stage in item_stages}


def _teacher_front(cfg: RunConfig, out: Path, ctx: ItemContext, executor: Executor):
    """Topics, then one proposal per topic (fanned out), reusing those already written (resume)."""
    from engine.synth.topics import sample_topics

    topics = read_records(out / "topics.parquet", TopicRecord)
    rejects: list[RejectRecord] = []
    cost = 0.0
    if len(topics) < cfg.synth.n_topics:
        try:
            sampling = sample_topics(ctx.teacher(), cfg.synth.n_topics, per_call=cfg.synth.topics_per_call,
                                     seed=cfg.synth.seed, existing=topics)
        except BudgetExceededError as e:
            rejects.append(RejectRecord(stage="budget", item_id="topics", reason="budget", detail=str(e)))
        else:
            topics, cost = sampling.topics, sampling.cost_usd
            rejects += sampling.rejects
        write_records(out / "topics.parquet", topics, TopicRecord)
    proposals = read_records(out / "proposals.parquet", ProposalRecord)
    done = {p.topic_id for p in proposals}
    for proposal, reject, c in executor.map(proposal_item, [t for t in topics if t.topic_id not in done], ctx):
        cost += c
        if proposal is not None:
            proposals.append(proposal)
        if reject is not None:
            rejects.append(reject)
    order = {t.topic_id: i for i, t in enumerate(topics)}
    proposals.sort(key=lambda p: order.get(p.topic_id, len(order)))  # completion order must not leak into ids
    return topics, proposals, rejects, cost


def _preguard(cfg: RunConfig, items: list[tuple[ProposalRecord, str, Any]]) -> tuple[set[str], list[RejectRecord]]:
    """Cheap guards before any sandbox work: contamination by name/description, near-duplicates."""
    from engine.synth.guards.contamination import check_contamination
    from engine.synth.guards.dedup import Deduplicator

    dedup = Deduplicator(cfg.synth.dedup_threshold, seed=cfg.synth.seed)
    kept: set[str] = set()
    rejects: list[RejectRecord] = []
    for proposal, starter, payoffs in items:
        reject = check_contamination(proposal, None, None, description_overlap_max=cfg.synth.description_overlap_max,
                                     payoffs=payoffs)
        if reject is None:
            reject = dedup.check(proposal.proposal_id, proposal, starter)
        if reject is None:
            kept.add(proposal.proposal_id)
        else:
            rejects.append(reject)
    return kept, rejects


def _postdedup(cfg: RunConfig, tasks_dir: Path, outcomes: list[Outcome]) -> list[RejectRecord]:
    """Across verified tasks: one per cluster of near-duplicates (description + starter code)."""
    import shutil

    from engine.synth.guards.dedup import Deduplicator
    from engine.tasks.folder import load_task

    dedup = Deduplicator(cfg.synth.dedup_threshold, seed=cfg.synth.seed)
    rejects = []
    for outcome in sorted((o for o in outcomes if o.task_id), key=lambda o: o.task_id):
        spec = load_task(tasks_dir / outcome.task_id)
        starter = "\n".join(p.read_text(errors="replace") for p in sorted(spec.workspace_dir.glob("*.py")))
        reject = dedup.check(outcome.task_id, outcome.proposal, starter)
        if reject is not None:
            shutil.rmtree(tasks_dir / outcome.task_id)
            rejects.append(reject.model_copy(update={"item_id": outcome.item_id}))
            outcome.task_id = None
    return rejects


def _payoffs(item) -> Any:
    """A game's payoff matrix (the row player's), so the guard can refuse MLGym's games under any labels."""
    if item.family != "matrix_games":
        return None
    from engine.synth.procedural import matrix_games

    return matrix_games.payoffs(item.params["kind"], tuple(item.params["payoffs"]))[0]


def _starter_text(parts) -> str:
    return "\n".join(v if isinstance(v, str) else "" for k, v in sorted(parts.workspace.items()) if k.endswith(".py"))


def _manifest(cfg, topics, proposals, outcomes, rejects, cost, wall_s) -> Manifest:
    reached = Counter(stage for o in outcomes for stage in o.reached)
    counts = {"topics": len(topics), "proposals": len(proposals),
              "dataset_checked": reached["dataset_checked"], "generated": reached["generated"],
              "verified": sum(1 for o in outcomes if o.task_id)}
    iterations = Counter(o.iterations for o in outcomes if o.iterations)
    counts.update({f"debug_iterations:{k}": v for k, v in sorted(iterations.items())})
    stopped = [r for r in rejects if r.stage == "budget"]
    if stopped:  # say how far it got: the items the budget left undone are counted as rejects "budget"
        counts["stopped_by_budget"] = len(stopped)
        log.warning("run %s synth: budget spent; %d items left undone (%s)", cfg.run_id, len(stopped), stopped[0].detail)
    return Manifest(stage="synth", run_id=cfg.run_id, config_hash=cfg.stage_hash("synth"), counts=counts,
                    rejects=dict(Counter(r.reason for r in rejects)), cost_usd=cost, wall_time_s=wall_s)
