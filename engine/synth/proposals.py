"""Task proposal: asks the teacher for a task and a Hugging Face dataset for one topic; returns a record, writes nothing."""

from __future__ import annotations

import hashlib
import logging
from typing import Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field

from engine.prompting import render
from engine.protocols import ChatModel, SamplingParams
from engine.synth.records import DatasetProposal, ProposalRecord, RejectRecord, TaskType, TopicRecord
from engine.synth.teacher_json import ask_json
from engine.synth.topics import normalise_topic

log = logging.getLogger(__name__)

TASK_TYPES: tuple[str, ...] = get_args(TaskType)


class ProposalReply(BaseModel):
    """The teacher's proposal as it writes it (the JSON the prompt asks for)."""

    model_config = ConfigDict(extra="ignore")  # a stray extra key is not worth a re-ask
    name: str = Field(min_length=3, max_length=120, description="Short task name.")
    description: str = Field(min_length=20, description="What to optimise, the metric and its direction, in words.")
    task_type: TaskType
    metric: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_ .@-]+$",
                        description="Primary metric key, non-negative (e.g. accuracy, rmse, macro_f1).")
    direction: Literal["max", "min"]
    needs_dataset: bool
    dataset: DatasetProposal | None = None


def proposal_id(topic_id: str, name: str) -> str:
    """Stable id of a proposal: a hash of its topic id and normalised task name."""
    return hashlib.sha256(f"{topic_id}|{normalise_topic(name)}".encode()).hexdigest()[:16]


def proposal_prompt(topic: TopicRecord) -> str:
    """The user message asking for a task on `topic` (prompts/synth/proposal.j2)."""
    return render("synth/proposal.j2", topic=topic.topic, domain=topic.domain, task_types=list(TASK_TYPES))


def propose_task(
    model: ChatModel,
    topic: TopicRecord,
    *,
    key: str,
    params_base: SamplingParams | None = None,
) -> tuple[ProposalRecord | None, RejectRecord | None, float]:
    """One task proposal for `topic`: (record, None, cost) or (None, reject, cost).

    Rejects: "invalid_json" (the reply stayed unparseable or off-schema after one re-ask; detail = the error),
    "no_dataset" (needs_dataset is true but no dataset was named). A dataset given with needs_dataset false
    is dropped. `key` keys the call in the response cache (e.g. "propose-<topic_id>").
    """
    messages = [{"role": "user", "content": proposal_prompt(topic)}]
    parsed, call = ask_json(model, messages, ProposalReply, key=key, params_base=params_base)
    reply = cast(ProposalReply | None, parsed)
    if reply is None:
        return None, RejectRecord(stage="proposals", item_id=topic.topic_id, reason="invalid_json",
                                  detail=call.error or ""), call.cost_usd
    if reply.needs_dataset and reply.dataset is None:
        return None, RejectRecord(stage="proposals", item_id=topic.topic_id, reason="no_dataset",
                                  detail=f"{reply.name}: needs_dataset is true but dataset is null"), call.cost_usd
    record = ProposalRecord(
        proposal_id=proposal_id(topic.topic_id, reply.name), topic_id=topic.topic_id, topic=topic.topic,
        domain=topic.domain, name=" ".join(reply.name.split()), description=reply.description.strip(),
        task_type=reply.task_type, metric=reply.metric, direction=reply.direction,
        needs_dataset=reply.needs_dataset, dataset=reply.dataset if reply.needs_dataset else None,
    )
    log.info("proposal %s for topic %s: %s (%s, %s %s)", record.proposal_id, topic.topic_id, record.name,
             record.task_type, record.direction, record.metric)
    return record, None, call.cost_usd
