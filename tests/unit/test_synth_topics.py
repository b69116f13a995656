"""Topic sampling with a scripted teacher: normalisation, dedup across batches, domains, prompts, stopping, resume."""

from __future__ import annotations

import json

from engine.testing.scripted import ScriptedModel
from engine.protocols import Completion, SampleKey, SamplingParams
from engine.synth.records import RejectRecord, TopicRecord
from engine.synth.topics import normalise_domain, normalise_topic, sample_topics, topic_id


def reply(*items: tuple[str, str]) -> str:
    return json.dumps([{"topic": t, "domain": d} for t, d in items])


def record(topic: str, domain: str, batch: int) -> TopicRecord:
    return TopicRecord(topic_id=topic_id(normalise_topic(topic)), topic=topic, domain=domain, batch=batch)


class PricedModel(ScriptedModel):
    """A scripted model whose every reply costs $0.25, to check cost accounting."""

    def complete(self, messages, params) -> Completion:
        return super().complete(messages, params).model_copy(update={"cost_usd": 0.25})


def test_normalise_topic_and_domain():
    assert normalise_topic("  The Effect of Label-Noise on  a CNN! ") == "effect of label noise on cnn"
    assert normalise_topic("Café reviews: sentiment") == "cafe reviews sentiment"
    assert normalise_domain("Computer Vision") == "vision"
    assert normalise_domain("time_series") == "time-series"
    assert normalise_domain("Reinforcement Learning") == "rl"
    assert normalise_domain("NLP") == "nlp"
    assert normalise_domain("chemistry") == "other"


def test_dedup_across_batches_domains_and_prompt_history():
    batch0 = reply(("Predicting bike-share demand from weather", "Time Series"),
                   ("Learning to rank search results with gradient boosted trees", "Recommendation"),
                   ("Predicting Bike-Share demand from the weather", "tabular"))  # exact duplicate after normalising
    batch1 = reply(("predicting bike share demand from weather", "tabular"),  # duplicate of batch 0
                   ("Learning to rank search results with boosted trees", "tabular"),  # Jaccard 8/9
                   ("Molecular property regression from SMILES strings", "chemistry"),
                   ("Never asked for: the sampler stops at n", "nlp"))
    model = PricedModel([batch0, batch1, "unused"])
    out = sample_topics(model, 3, per_call=3, seed=7)

    assert out.topics == [
        record("Predicting bike-share demand from weather", "time-series", 0),
        record("Learning to rank search results with gradient boosted trees", "recommender-systems", 0),
        record("Molecular property regression from SMILES strings", "other", 1),
    ]
    assert [(r.stage, r.reason, r.detail) for r in out.rejects] == [
        ("topics", "duplicate_topic", "exact: Predicting Bike-Share demand from the weather"),
        ("topics", "duplicate_topic", "exact: predicting bike share demand from weather"),
        ("topics", "duplicate_topic", "near: Learning to rank search results with boosted trees"),
    ]
    assert out.rejects[0].item_id == topic_id("predicting bike share demand from weather")
    assert model.remaining == 1 and out.calls == 2 and out.cost_usd == 0.5

    first, second = (msgs[0]["content"] for msgs, _ in model.calls)
    assert "Propose 3 new" in first and "chosen already" not in first
    assert "Propose 1 new" in second
    assert "2 topics have been chosen already" in second
    assert "- Predicting bike-share demand from weather\n" in second
    assert "- Learning to rank search results with gradient boosted trees\n" in second
    assert [p.sample_key for _, p in model.calls] == [SampleKey(episode_id="topics-7-batch-0", step=0, attempt=0),
                                                      SampleKey(episode_id="topics-7-batch-1", step=0, attempt=0)]


def test_stops_on_a_repetitive_teacher():
    same = reply(("Graph coloring heuristics for random graphs", "algorithms"),
                 ("Speech command recognition on short clips", "audio"))
    model = ScriptedModel([same] * 10)
    out = sample_topics(model, 10, per_call=2, seed=0, max_idle_batches=3)
    assert [t.topic for t in out.topics] == ["Graph coloring heuristics for random graphs",
                                             "Speech command recognition on short clips"]
    assert len(model.calls) == 4  # one productive batch, then three that add nothing
    assert [r.reason for r in out.rejects] == ["duplicate_topic"] * 6


def test_invalid_batch_is_reasked_once_then_rejected_and_counts_as_idle():
    model = ScriptedModel(["no json here", "still none", reply(("Tabular churn prediction", "tabular"))])
    out = sample_topics(model, 1, per_call=5, seed=0, max_idle_batches=2)
    assert [t.topic for t in out.topics] == ["Tabular churn prediction"]
    assert out.topics[0].batch == 1
    assert out.rejects == [RejectRecord(stage="topics", item_id="topics-0-batch-0", reason="invalid_json",
                                        detail="no JSON object or array found in the reply")]
    assert [p.sample_key.attempt for _, p in model.calls] == [0, 1, 0]
    reask = model.calls[1][0]
    assert reask[1] == {"role": "assistant", "content": "no json here"}
    assert reask[2]["content"].startswith("Your reply was not valid: no JSON object")


def test_resume_keeps_existing_shows_them_and_numbers_batches_after_them():
    existing = [record("Anomaly detection in server metrics", "time-series", 4)]
    model = ScriptedModel([json.dumps({"topics": [{"topic": "Anomaly detection in server metrics", "domain": "tabular"},
                                                  {"topic": "Poker hand strength estimation", "domain": "game theory"}]})])
    out = sample_topics(model, 2, per_call=5, seed=1, existing=existing,
                        params_base=SamplingParams(temperature=1.0))
    assert out.topics == existing + [record("Poker hand strength estimation", "game-theory", 5)]
    messages, params = model.calls[0]
    assert "- Anomaly detection in server metrics\n" in messages[0]["content"]
    assert params.sample_key == SampleKey(episode_id="topics-1-batch-5", step=0, attempt=0)
    assert params.temperature == 1.0


def test_nothing_asked_when_existing_already_has_n():
    existing = [record("Anomaly detection in server metrics", "time-series", 0)]
    model = ScriptedModel([])
    out = sample_topics(model, 1, per_call=5, seed=0, existing=existing)
    assert out.topics == existing and out.calls == 0 and model.calls == []
