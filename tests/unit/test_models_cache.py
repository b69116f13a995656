"""Response cache: key stability and sensitivity, sharded atomic entries, hits marked cached at zero cost."""

import hashlib
import json

import pytest

from engine.models.cache import ResponseCache, cache_key
from engine.protocols import Completion, SampleKey, SamplingParams, Usage

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo"}]
BASE = SamplingParams(
    temperature=1.0, top_p=0.9, max_tokens=64, reasoning_effort="low", seed=7, stop=("x",),
    sample_key=SampleKey(episode_id="ep1", step=3, attempt=0),
)


def test_key_is_sha256_of_canonical_json():
    payload = {
        "messages": [{"content": "be brief", "role": "system"}, {"content": "héllo", "role": "user"}],
        "model": "m",
        "sample_key": {"attempt": 0, "episode_id": "ep1", "step": 3},
        "sampling": {"max_tokens": 64, "reasoning_effort": "low", "seed": 7, "stop": ["x"], "temperature": 1.0, "top_p": 0.9},
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert cache_key("m", MSGS, BASE) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_key_ignores_dict_order_of_messages():
    reordered = [{"content": m["content"], "role": m["role"]} for m in MSGS]
    assert cache_key("m", reordered, BASE) == cache_key("m", MSGS, BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"top_p": 1.0},
        {"max_tokens": 65},
        {"reasoning_effort": "high"},
        {"seed": 8},
        {"stop": ("y",)},
        {"sample_key": SampleKey(episode_id="ep2", step=3)},
        {"sample_key": SampleKey(episode_id="ep1", step=4)},
        {"sample_key": SampleKey(episode_id="ep1", step=3, attempt=1)},
        {"sample_key": None},
    ],
)
def test_key_changes_with_every_setting(change):
    assert cache_key("m", MSGS, BASE.model_copy(update=change)) != cache_key("m", MSGS, BASE)


def test_key_changes_with_model_and_messages():
    other = [MSGS[0], {"role": "user", "content": "hello"}]
    assert cache_key("m2", MSGS, BASE) != cache_key("m", MSGS, BASE)
    assert cache_key("m", other, BASE) != cache_key("m", MSGS, BASE)


def test_put_then_get_marks_hit_cached_at_zero_cost(tmp_path):
    cache = ResponseCache(tmp_path)
    key = cache_key("m", MSGS, BASE)
    original = Completion(
        text="hi", reasoning="because", finish_reason="stop",
        usage=Usage(prompt_tokens=3, completion_tokens=2, reasoning_tokens=1), cost_usd=0.5, latency_s=1.5, model="m",
    )
    path = cache.put(key, original)
    assert path == tmp_path / key[:2] / f"{key}.json"
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{key}.json"]  # no temporary file left
    hit = cache.get(key)
    assert hit == original.model_copy(update={"cached": True, "cost_usd": 0.0, "latency_s": 0.0})
    stored = json.loads(path.read_text())
    assert stored["schema_version"] == 1 and stored["key"] == key
    assert stored["completion"]["cost_usd"] == 0.5  # the file keeps what was paid


def test_miss_and_unreadable_entries(tmp_path):
    cache = ResponseCache(tmp_path)
    key = "ab" + "0" * 62
    assert cache.get(key) is None
    cache.path_for(key).parent.mkdir(parents=True)
    cache.path_for(key).write_text("{not json")
    assert cache.get(key) is None
    cache.path_for(key).write_text(json.dumps({"schema_version": 99, "completion": {"text": "x"}}))
    assert cache.get(key) is None
    cache.put(key, Completion(text="fresh"))
    assert cache.get(key).text == "fresh"
