"""Task proposals and the shared JSON-reply helper, with a scripted teacher: parsing, one re-ask, rejects."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.testing.scripted import ScriptedModel
from engine.protocols import Completion, SampleKey
from engine.synth.proposals import ProposalReply, proposal_id, propose_task
from engine.synth.records import DatasetProposal, ProposalRecord, RejectRecord, TopicRecord
from engine.synth.teacher_json import JSONExtractError, ask_json, extract_json
from engine.synth.topics import TopicBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "teacher"))
import replies  # noqa: E402  (tests/fixtures/teacher/replies.py)

TOPIC = TopicRecord(topic_id="t0", topic="Predicting rain from weather measurements", domain="tabular", batch=0)
GAME_TOPIC = TopicRecord(topic_id="t1", topic="Cooperation in repeated stag hunts", domain="game-theory", batch=0)


class PricedModel(ScriptedModel):
    def complete(self, messages, params) -> Completion:
        return super().complete(messages, params).model_copy(update={"cost_usd": 0.5})


# ---------------------------------------------------------------- extract_json / ask_json


def test_extract_json_from_fences_prose_and_nested_strings():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('text ```\n[1, 2]\n``` more') == [1, 2]
    assert extract_json('Here it is: {"code": "if x: {\\"y\\": [1]}", "n": 2} -- done') == \
        {"code": 'if x: {"y": [1]}', "n": 2}
    assert extract_json('```python\nx = {1}\n```\n{"ok": true}') == {"ok": True}
    with pytest.raises(JSONExtractError, match="no JSON object or array"):
        extract_json("nothing here")
    with pytest.raises(JSONExtractError, match="not valid JSON"):
        extract_json("```json\n{'a': 1}\n```")


def test_ask_json_unwraps_a_single_key_object_for_an_array_schema():
    model = ScriptedModel(['{"topics": [{"topic": "abc def", "domain": "nlp"}]}'])
    parsed, call = ask_json(model, [{"role": "user", "content": "q"}], TopicBatch, key="k")
    assert [t.topic for t in parsed.root] == ["abc def"]
    assert call.calls == 1 and call.errors == [] and call.error is None


# ---------------------------------------------------------------- propose_task


def test_valid_fenced_proposal():
    model = PricedModel([replies.proposal_reply(fenced=True)])
    record, reject, cost = propose_task(model, TOPIC, key="propose-t0")
    assert reject is None and cost == 0.5
    assert record == ProposalRecord(
        proposal_id=proposal_id("t0", "Next-day rain prediction from weather measurements"), topic_id="t0",
        topic=TOPIC.topic, domain="tabular", name="Next-day rain prediction from weather measurements",
        description=replies.proposal_dict()["description"], task_type="classification", metric="accuracy",
        direction="max", needs_dataset=True,
        dataset=DatasetProposal(hf_id="example-org/weather-rain", config=None, split="train",
                                input_columns=replies.FEATURES, target_column="rain"))
    assert record.proposal_id == proposal_id("t0", "next day rain prediction from weather measurements")
    prompt = model.calls[0][0][0]["content"]
    assert TOPIC.topic in prompt and "never be negative" in prompt
    assert "classification, regression, forecasting, image-classification, control, game, other" in prompt
    assert model.calls[0][1].sample_key == SampleKey(episode_id="propose-t0", step=0, attempt=0)


def test_malformed_json_is_reasked_once_then_accepted():
    bad = "{'name': 'single quotes are not JSON'}"
    model = PricedModel([bad, replies.proposal_reply(fenced=False)])
    record, reject, cost = propose_task(model, TOPIC, key="propose-t0")
    assert reject is None and record.metric == "accuracy" and cost == 1.0
    messages, params = model.calls[1]
    assert params.sample_key == SampleKey(episode_id="propose-t0", step=0, attempt=1)
    assert messages[1] == {"role": "assistant", "content": bad}
    assert messages[2]["content"].startswith("Your reply was not valid: not valid JSON: Expecting property name")
    assert messages[2]["content"].endswith("Reply again with only the JSON.")


def test_malformed_twice_is_rejected_with_the_error():
    no_metric = json.dumps({k: v for k, v in replies.proposal_dict().items() if k != "metric"})
    model = ScriptedModel([no_metric, no_metric])
    record, reject, cost = propose_task(model, TOPIC, key="propose-t0")
    assert record is None and cost == 0.0
    assert reject == RejectRecord(stage="proposals", item_id="t0", reason="invalid_json",
                                  detail="the JSON does not match the schema: metric: Field required")
    assert len(model.calls) == 2


def test_schema_errors_name_the_field():
    model = ScriptedModel([replies.proposal_reply(direction="up"), replies.proposal_reply(task_type="vision")])
    record, reject, _ = propose_task(model, TOPIC, key="k")
    assert record is None and reject.reason == "invalid_json"
    assert reject.detail.startswith("the JSON does not match the schema: task_type: Input should be 'classification'")
    assert "direction: Input should be 'max' or 'min'" in model.calls[1][0][2]["content"]


def test_needs_dataset_without_one_is_rejected():
    model = ScriptedModel([replies.proposal_reply(dataset=None)])
    record, reject, _ = propose_task(model, TOPIC, key="k")
    assert record is None
    assert reject == RejectRecord(stage="proposals", item_id="t0", reason="no_dataset",
                                  detail="Next-day rain prediction from weather measurements: "
                                         "needs_dataset is true but dataset is null")


def test_game_needs_no_dataset():
    model = ScriptedModel([replies.game_proposal_reply()])
    record, reject, _ = propose_task(model, GAME_TOPIC, key="k")
    assert reject is None
    assert (record.task_type, record.needs_dataset, record.dataset, record.metric) == ("game", False, None, "mean_payoff")
    assert record.domain == "game-theory" and record.topic_id == "t1"


def test_a_dataset_offered_for_a_dataless_task_is_dropped():
    reply = ProposalReply.model_validate(replies.proposal_dict(needs_dataset=False))
    assert reply.dataset is not None
    record, _, _ = propose_task(ScriptedModel([reply.model_dump_json()]), TOPIC, key="k")
    assert record.needs_dataset is False and record.dataset is None
