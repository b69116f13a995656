"""Request construction (reasoning vs. sampling models) and reply parsing, on the chat-completions wire format."""

import json

import pytest

from engine.config import ModelConfig
from engine.models.retry import MalformedReply
from engine.models.wire import SAMPLE_KEY_HEADER, is_local_url, is_reasoning_model, parse_reply, request_kwargs
from engine.protocols import SampleKey, SamplingParams, Usage

MSGS = [{"role": "user", "content": "hi"}]
FULL = SamplingParams(
    temperature=0.7, top_p=0.95, max_tokens=128, reasoning_effort="high", seed=11, stop=("END",),
    sample_key=SampleKey(episode_id="ep", step=2, attempt=1),
)
HEADER = {SAMPLE_KEY_HEADER: '{"attempt":1,"episode_id":"ep","step":2}'}


def cfg(name, **kw):
    return ModelConfig(provider="openai", name=name, **kw)


@pytest.mark.parametrize(
    ("name", "override", "expected"),
    [
        ("gpt-5", None, True), ("gpt-5-mini-2025-08-07", None, True), ("o1", None, True), ("o3-mini", None, True),
        ("o4-mini", None, True), ("openai/gpt-5", None, True), ("gpt-4o", None, False), ("Qwen/Qwen3-8B", None, False),
        ("o1x", None, False), ("Qwen/Qwen3-8B", True, True), ("gpt-5", False, False),
    ],
)
def test_is_reasoning_model(name, override, expected):
    assert is_reasoning_model(cfg(name, reasoning_model=override)) is expected


def test_reasoning_model_request():
    assert request_kwargs(cfg("gpt-5"), MSGS, FULL) == {
        "model": "gpt-5",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 128,
        "reasoning_effort": "high",
        "seed": 11,
        "stop": ["END"],
        "extra_headers": HEADER,
    }


def test_reasoning_model_ignores_legacy_max_tokens():
    got = request_kwargs(cfg("o3"), MSGS, SamplingParams(max_tokens=5), legacy_max_tokens=True)
    assert got == {"model": "o3", "messages": MSGS, "max_completion_tokens": 5}


def test_sampling_model_request():
    assert request_kwargs(cfg("gpt-4o"), MSGS, FULL) == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 128,
        "temperature": 0.7,
        "top_p": 0.95,
        "reasoning_effort": "high",
        "seed": 11,
        "stop": ["END"],
        "extra_headers": HEADER,
    }


def test_sampling_model_legacy_max_tokens():
    got = request_kwargs(cfg("Qwen/Qwen3-8B"), MSGS, SamplingParams(temperature=0.0, max_tokens=9), legacy_max_tokens=True)
    assert got == {"model": "Qwen/Qwen3-8B", "messages": MSGS, "max_tokens": 9, "temperature": 0.0}


def test_defaults_send_only_model_and_messages():
    assert request_kwargs(cfg("gpt-4o"), MSGS, SamplingParams()) == {"model": "gpt-4o", "messages": MSGS}


def test_request_messages_are_copies():
    got = request_kwargs(cfg("gpt-4o"), MSGS, SamplingParams())
    got["messages"][0]["content"] = "changed"
    assert MSGS[0]["content"] == "hi"


def test_reasoning_content_is_never_sent_back():
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": "```\nls\n```", "reasoning_content": "look around first"},
               {"role": "user", "content": "a.txt"}]
    got = request_kwargs(cfg("Qwen/Qwen3-8B"), history, SamplingParams())
    assert got["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "```\nls\n```"},
                               {"role": "user", "content": "a.txt"}]
    assert history[1]["reasoning_content"] == "look around first"  # the caller's list is not changed


@pytest.mark.parametrize(
    ("url", "local"),
    [
        (None, False), ("https://api.openai.com/v1", False), ("https://x.openai.azure.com/openai/v1", False),
        ("http://127.0.0.1:8000/v1", True), ("http://localhost:8000/v1", True), ("http://[::1]:8000/v1", True),
        ("http://10.1.2.3:8000/v1", True), ("http://192.168.0.5/v1", True), ("http://vllm:8000/v1", True),
        ("http://vllm.ml.svc:8000/v1", True), ("http://8.8.8.8/v1", False), ("http://example.com/v1", False),
    ],
)
def test_is_local_url(url, local):
    assert is_local_url(url) is local


def body(message, finish="stop", usage=None, **extra):
    data = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        data["usage"] = usage
    data.update(extra)
    return json.dumps(data)


def test_parse_reply_with_reasoning_content_and_usage():
    usage = {
        "prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
        "completion_tokens_details": {"reasoning_tokens": 30}, "prompt_tokens_details": {"cached_tokens": 64},
    }
    reply = parse_reply(body({"role": "assistant", "content": "answer", "reasoning_content": "think"}, usage=usage))
    assert reply.text == "answer"
    assert reply.reasoning == "think"
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=100, completion_tokens=40, reasoning_tokens=30)
    assert reply.cached_prompt_tokens == 64


def test_parse_reply_reasoning_field_and_null_details():
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "completion_tokens_details": None, "prompt_tokens_details": None}
    reply = parse_reply(body({"role": "assistant", "content": "a", "reasoning": "r"}, usage=usage))
    assert (reply.reasoning, reply.usage, reply.cached_prompt_tokens) == ("r", Usage(prompt_tokens=1, completion_tokens=2), 0)


def test_parse_reply_without_usage():
    reply = parse_reply(body({"role": "assistant", "content": "a"}))
    assert (reply.reasoning, reply.usage, reply.cached_prompt_tokens) == (None, Usage(), 0)


def test_null_content_at_length_is_an_empty_answer():
    reply = parse_reply(body({"role": "assistant", "content": None, "reasoning_content": "long"}, finish="length"))
    assert (reply.text, reply.reasoning, reply.finish_reason) == ("", "long", "length")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("<html>bad gateway</html>", "not JSON"),
        ("[1, 2]", "JSON list"),
        (json.dumps({"choices": []}), "no choices"),
        (json.dumps({"object": "chat.completion"}), "no choices"),
        (json.dumps({"choices": [{"index": 0}]}), "no message"),
        (body({"role": "assistant", "content": None}), "NoneType"),
        (json.dumps({"error": {"message": "overloaded"}}), "overloaded"),
    ],
)
def test_malformed_replies(raw, why):
    with pytest.raises(MalformedReply, match=why):
        parse_reply(raw)
