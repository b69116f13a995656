"""Conversations from trajectories: the two sample units, reasoning kept or dropped, unusable records, store rows."""

from __future__ import annotations

import doctest

import pytest

from engine.agent.history import build_prompt
from engine.curate import conversation as conversation_module
from engine.curate.conversation import (
    build_conversations,
    episode_conversation,
    record_from_row,
    step_conversations,
    to_conversations,
    unusable_reason,
)
from engine.errors import ArtifactError
from engine.records import TrajectoryRecord
from engine.trajectories.store import records_to_table

MESSAGES = [
    {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    {"role": "assistant", "content": "A0", "reasoning_content": "R0"}, {"role": "user", "content": "o0\nline"},
    {"role": "assistant", "content": "A1"}, {"role": "user", "content": "o1"},
    {"role": "assistant", "content": "<think>R2</think>\n\nA2"}, {"role": "user", "content": "o2"},
]


def record(**kw) -> TrajectoryRecord:
    base = dict(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p",
                history={"keep_last_observations": 1}, messages=MESSAGES)
    return TrajectoryRecord(**{**base, **kw})


def test_episode_unit_is_the_whole_list_with_every_turn_supervised():
    keep = episode_conversation(record(), "keep")
    assert (keep.sample_id, keep.episode_id, keep.task_id, keep.step) == ("e", "e", "t", None)
    assert keep.supervised == [2, 4, 6]
    assert keep.messages == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
        {"role": "assistant", "content": "A0", "reasoning_content": "R0"}, {"role": "user", "content": "o0\nline"},
        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "o1"},
        {"role": "assistant", "content": "A2", "reasoning_content": "R2"}, {"role": "user", "content": "o2"},
    ]
    drop = episode_conversation(record(), "drop")
    assert [m for m in drop.messages if m["role"] == "assistant"] == [
        {"role": "assistant", "content": "A0"}, {"role": "assistant", "content": "A1"},
        {"role": "assistant", "content": "A2"}]


def test_step_unit_rebuilds_each_prompt_as_the_agent_saw_it():
    convs = step_conversations(record(), "keep")
    assert [c.sample_id for c in convs] == ["e/0", "e/1", "e/2"]
    assert [c.step for c in convs] == [0, 1, 2]
    assert [c.supervised for c in convs] == [[2], [4], [6]]
    assert convs[0].messages == [MESSAGES[0], MESSAGES[1], {"role": "assistant", "content": "A0", "reasoning_content": "R0"}]
    assert convs[2].messages == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
        {"role": "assistant", "content": "A0"}, {"role": "user", "content": "Old output omitted (2 lines)"},
        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "o1"},
        {"role": "assistant", "content": "A2", "reasoning_content": "R2"},
    ]
    # an episode recorded with the earlier note's wording rebuilds with it
    old = step_conversations(record().model_copy(update={"history": record().history.model_copy(
        update={"omitted_note": "synthscale-v1"})}), "keep")
    assert old[2].messages[3] == {"role": "user", "content": "Old environment output: (2 lines omitted)"}
    for c, i in zip(convs, [2, 4, 6]):  # the same function the agent's loop calls, with the record's settings
        assert c.messages[:-1] == build_prompt(MESSAGES[:i], keep_last_observations=1)


def test_step_unit_drop_removes_the_targets_reasoning_only():
    convs = step_conversations(record(history={"keep_last_observations": 5}), "drop")
    assert [c.messages[-1] for c in convs] == [
        {"role": "assistant", "content": "A0"}, {"role": "assistant", "content": "A1"},
        {"role": "assistant", "content": "A2"}]
    assert convs[2].messages[3] == {"role": "user", "content": "o0\nline"}  # kept: within the last 5


def test_unusable_records_are_rejected_with_a_reason():
    infra = record(episode_id="i", infra_error="SandboxError: container gone")
    silent = record(episode_id="n", messages=MESSAGES[:2])
    assert unusable_reason(infra) == "infra_error"
    assert unusable_reason(silent) == "no_assistant_turn"
    assert unusable_reason(record()) is None
    kept = build_conversations([infra, silent, record()], "episode", "drop")
    assert [c.sample_id for c in kept.items] == ["e"]
    assert kept.rejects == {"infra_error": 1, "no_assistant_turn": 1}
    with pytest.raises(ValueError, match="episode i \\(task t\\) gives no sample: infra_error"):
        to_conversations(infra, "step", "keep")


def test_store_rows_become_records():
    rec = record(sampling={"temperature": 1.0, "top_p": None})
    (row,) = records_to_table([rec]).to_pylist()
    assert isinstance(row["history"], str)  # JSON columns as stored
    assert row["messages"][4]["reasoning_content"] is None
    assert record_from_row(row) == rec
    assert build_conversations([row], "step", "keep").items == step_conversations(rec, "keep")
    with pytest.raises(ArtifactError, match="episode e: not a trajectory-store row"):
        record_from_row({**row, "seed": "not a number"})


def test_docstring_examples():
    result = doctest.testmod(conversation_module)
    assert result.failed == 0 and result.attempted > 0
