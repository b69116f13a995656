"""Builds the chat conversations to train on (``Conversation``) from trajectories (``TrajectoryRecord``s or store rows).

Two sample units:

- ``episode``: the whole linear message list (system, task, every assistant turn, every observation) as one
  sample; every assistant turn is supervised.
- ``step``: one sample per assistant turn: the prompt rebuilt exactly as the agent saw it at that step
  (``engine.agent.history.build_prompt`` with the record's ``history`` settings: older observations elided,
  past reasoning dropped), then that turn, the only one supervised. Re-asks after format errors are not in
  the message list, so a step's prompt is the clean one the agent saw on its first attempt.

Reasoning (``keep`` or ``drop``) applies to supervised turns only: ``keep`` puts the turn's reasoning in
``reasoning_content`` (reasoning a server left inline as ``<think>…</think>`` in the content is moved there
first); ``drop`` removes it. A supervised turn's content also loses its leading newlines. Context turns of a
step's prompt stay as the agent saw them. Whether a chat template then shows the reasoning is the template's
business: see ``engine.curate.tokenize``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from engine.agent.history import PREFIX_MESSAGES, build_prompt
from engine.curate.config import Reasoning, SampleUnit
from engine.curate.kept import Kept
from engine.errors import ArtifactError
from engine.protocols import Message
from engine.records import TrajectoryRecord
from engine.trajectories.store import TRAJECTORY_SCHEMA, table_to_records


class Conversation(BaseModel):
    """One training sample as chat messages (a row of the messages table)."""

    model_config = ConfigDict(extra="forbid")
    sample_id: str = Field(description="episode id (episode unit), or `<episode id>/<step>` (step unit).")
    episode_id: str
    task_id: str
    step: int | None = Field(None, description="step unit: the step (0-based assistant turn) this sample trains.")
    messages: list[Message]
    supervised: list[int] = Field(description="Indices into `messages` of the assistant turns to train on.")


def record_from_row(row: TrajectoryRecord | Mapping) -> TrajectoryRecord:
    """A record from a row of the trajectory store (``pa.Table.to_pylist()`` of ``TRAJECTORY_SCHEMA``: JSON
    columns as strings, null reasoning), checked as the store checks it; a record is returned as it is."""
    if isinstance(row, TrajectoryRecord):
        return row
    try:
        table = pa.Table.from_pylist([dict(row)], schema=TRAJECTORY_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ArtifactError(f"episode {row.get('episode_id')}: not a trajectory-store row ({e})") from None
    return table_to_records(table)[0]


def unusable_reason(record: TrajectoryRecord) -> str | None:
    """Why a record can give no sample: ``infra_error`` (the cluster failed) or ``no_assistant_turn``.

    >>> rec = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p",
    ...                        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "T"}])
    >>> unusable_reason(rec)
    'no_assistant_turn'
    """
    if record.infra_error is not None:
        return "infra_error"
    if not _turn_indices(record.messages):
        return "no_assistant_turn"
    return None


def split_inline_reasoning(message: Message) -> Message:
    """A copy of an assistant message whose reasoning sits inline in its content (``<think>R</think>A``, a server
    without a reasoning parser) with it moved to ``reasoning_content``, as Qwen3's chat template reads it.

    >>> split_inline_reasoning({"role": "assistant", "content": "<think>\\nwhy\\n</think>\\n\\nls"})
    {'role': 'assistant', 'content': 'ls', 'reasoning_content': 'why'}
    """
    out = dict(message)
    if out.get("reasoning_content") or "</think>" not in out["content"]:
        return out
    reasoning, _, content = out["content"].rpartition("</think>")
    out["content"] = content.lstrip("\n")
    out["reasoning_content"] = reasoning.split("<think>", 1)[-1].strip("\n")
    return out


def training_turn(message: Message, reasoning: Reasoning) -> Message:
    """The supervised form of an assistant message: its reasoning kept (when it has any) or dropped, and its
    content without leading newlines (servers leave those after ``</think>``; Qwen3's template strips them on a
    last turn but not on earlier ones, where they would merge with the header's newline into one token).

    >>> m = {"role": "assistant", "content": "\\n\\nls", "reasoning_content": "look first"}
    >>> training_turn(m, "keep"), training_turn(m, "drop")
    ({'role': 'assistant', 'content': 'ls', 'reasoning_content': 'look first'}, {'role': 'assistant', 'content': 'ls'})
    """
    split = split_inline_reasoning(message)
    out: Message = {"role": "assistant", "content": split["content"].lstrip("\n")}
    if reasoning == "keep" and split.get("reasoning_content"):
        out["reasoning_content"] = split["reasoning_content"]
    return out


def episode_conversation(record: TrajectoryRecord, reasoning: Reasoning) -> Conversation:
    """The whole message list as one sample, every assistant turn supervised.

    >>> rec = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p",
    ...     messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...               {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
    ...               {"role": "user", "content": "o1"}])
    >>> c = episode_conversation(rec, "drop")
    >>> [m["content"] for m in c.messages], c.supervised, c.messages[2]
    (['S', 'T', 'A1', 'o1'], [2], {'role': 'assistant', 'content': 'A1'})
    """
    turns = _turn_indices(record.messages)
    messages = [training_turn(m, reasoning) if i in turns else _plain(m) for i, m in enumerate(record.messages)]
    return Conversation(sample_id=record.episode_id, episode_id=record.episode_id, task_id=record.task_id,
                        messages=messages, supervised=turns)


def step_conversations(record: TrajectoryRecord, reasoning: Reasoning) -> list[Conversation]:
    """One sample per assistant turn: the prompt the agent saw at that step, then the turn (supervised).

    >>> rec = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p",
    ...     history={"keep_last_observations": 1},
    ...     messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...               {"role": "assistant", "content": "A1"}, {"role": "user", "content": "o1"},
    ...               {"role": "assistant", "content": "A2"}, {"role": "user", "content": "o2"},
    ...               {"role": "assistant", "content": "A3", "reasoning_content": "R3"},
    ...               {"role": "user", "content": "o3"}])
    >>> c = step_conversations(rec, "keep")[2]
    >>> c.sample_id, [m["content"] for m in c.messages], c.supervised, c.messages[-1]["reasoning_content"]
    ('e/2', ['S', 'T', 'A1', 'Old output omitted (1 lines)', 'A2', 'o2', 'A3'], [6], 'R3')
    """
    keep = record.history.keep_last_observations
    out = []
    for step, i in enumerate(_turn_indices(record.messages)):
        prompt = build_prompt(record.messages[:i], keep, record.history.omitted_note)
        out.append(Conversation(sample_id=f"{record.episode_id}/{step}", episode_id=record.episode_id,
                                task_id=record.task_id, step=step,
                                messages=[*prompt, training_turn(record.messages[i], reasoning)],
                                supervised=[len(prompt)]))
    return out


def to_conversations(record: TrajectoryRecord, unit: SampleUnit, reasoning: Reasoning) -> list[Conversation]:
    """The samples of one usable record (``unusable_reason`` is None) in the given unit; ValueError otherwise."""
    why = unusable_reason(record)
    if why is not None:
        raise ValueError(f"episode {record.episode_id} (task {record.task_id}) gives no sample: {why}")
    if unit == "episode":
        return [episode_conversation(record, reasoning)]
    return step_conversations(record, reasoning)


def build_conversations(records: Iterable[TrajectoryRecord | Mapping], unit: SampleUnit,
                        reasoning: Reasoning) -> Kept[Conversation]:
    """The samples of many records (records or store rows); unusable records are counted by reason.

    >>> rec = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p",
    ...                        infra_error="SandboxError: gone")
    >>> build_conversations([rec], "step", "keep")
    Kept(items=[], rejects={'infra_error': 1})
    """
    usable = Kept.split([record_from_row(r) for r in records], unusable_reason)
    items = [c for r in usable.items for c in to_conversations(r, unit, reasoning)]
    return Kept(items, usable.rejects)


def _turn_indices(messages: list[Message]) -> list[int]:
    """Indices of the assistant turns (after the system prompt and the task)."""
    return [i for i, m in enumerate(messages) if i >= PREFIX_MESSAGES and m["role"] == "assistant"]


def _plain(message: Message) -> Message:
    return {"role": message["role"], "content": message["content"]}
