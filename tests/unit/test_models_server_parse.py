"""The served endpoint's request parsing and reply body (pure functions of the server module)."""

import pytest

from engine.models.server import BadRequest, completion_body, parse_request
from engine.protocols import Completion, SampleKey, SamplingParams, Usage

MSGS = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_full_request():
    body = {
        "model": "m", "messages": MSGS, "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 50,
        "max_tokens": 10, "reasoning_effort": "low", "seed": 4, "stop": "END",
        "sample_key": {"episode_id": "e", "step": 1, "attempt": 2},
    }
    messages, params = parse_request(body, {})
    assert messages == MSGS
    assert params == SamplingParams(
        temperature=0.2, top_p=0.9, max_tokens=50, reasoning_effort="low", seed=4, stop=("END",),
        sample_key=SampleKey(episode_id="e", step=1, attempt=2),
    )


def test_sample_key_from_header_and_max_tokens_fallback():
    _, params = parse_request(
        {"model": "m", "messages": MSGS, "max_tokens": 10},
        {"x-synthscale-sample-key": '{"episode_id":"e","step":3}'},
    )
    assert params == SamplingParams(max_tokens=10, sample_key=SampleKey(episode_id="e", step=3))


def test_text_content_parts_are_joined():
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert parse_request(body, {})[0] == [{"role": "user", "content": "ab"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MSGS, "stream": True}, "stream"),
        ({"messages": MSGS, "n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"messages": MSGS, "stop": [1]}, "stop"),
        ({"messages": MSGS, "max_tokens": 0}, "max_tokens"),
        ({"messages": MSGS, "sample_key": {"episode_id": "e", "step": -1}}, "sample_key"),
        ({"messages": MSGS, "reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_bad_requests_name_the_parameter(body, param):
    with pytest.raises(BadRequest) as e:
        parse_request(body, {})
    assert e.value.param == param


def test_completion_body():
    completion = Completion(text="t", reasoning="r", finish_reason="length",
                            usage=Usage(prompt_tokens=5, completion_tokens=3, reasoning_tokens=2))
    got = completion_body(completion, "served")
    assert got["id"].startswith("chatcmpl-") and isinstance(got["created"], int)
    del got["id"], got["created"]
    assert got == {
        "object": "chat.completion",
        "model": "served",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "t", "reasoning_content": "r"},
                     "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                  "completion_tokens_details": {"reasoning_tokens": 2}},
    }
    assert "reasoning_content" not in completion_body(Completion(text="t"), "m")["choices"][0]["message"]
