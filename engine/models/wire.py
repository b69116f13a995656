"""The OpenAI chat-completions wire format: builds request arguments, parses reply bodies. Pure functions."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.config import ModelConfig
from engine.models.retry import MalformedReply
from engine.protocols import Message, SampleKey, SamplingParams, Usage

OPENAI_BASE_URL = "https://api.openai.com/v1"

SAMPLE_KEY_HEADER = "X-Synthscale-Sample-Key"
"""Carries the sample key (JSON) to a served policy. A header, not a body field: OpenAI and Azure reject
unknown body fields with a 400, while every server ignores headers it does not know."""

_REASONING_NAME = re.compile(r"^(o1|o3|o4)(-|$)|^gpt-5")
_LOCAL_SUFFIXES = (".local", ".internal", ".svc", ".localhost")


def is_reasoning_model(cfg: ModelConfig) -> bool:
    """cfg.reasoning_model when set, else a guess from the name (o1, o3, o4 and gpt-5 families).

    >>> [is_reasoning_model(ModelConfig(provider="openai", name=n)) for n in ("gpt-5-mini", "o3", "gpt-4o")]
    [True, True, False]
    """
    if cfg.reasoning_model is not None:
        return cfg.reasoning_model
    return bool(_REASONING_NAME.search(cfg.name.rsplit("/", 1)[-1]))


def is_local_url(base_url: str | None) -> bool:
    """True for servers that usually run without an API key: loopback and private addresses, and
    cluster-internal host names (one label such as `vllm`, or *.local, *.internal, *.svc)."""
    if base_url is None:
        return False
    host = (urlsplit(base_url).hostname or "").lower()
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_LOCAL_SUFFIXES)
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


def request_kwargs(
    cfg: ModelConfig, messages: list[Message], params: SamplingParams, *, legacy_max_tokens: bool = False
) -> dict[str, Any]:
    """Arguments for `client.chat.completions.create(**kwargs)`.

    Reasoning models get `max_completion_tokens` and `reasoning_effort` and never temperature or top_p
    (they reject them). Other models get temperature, top_p and `max_completion_tokens`, or `max_tokens`
    when `legacy_max_tokens` (older vLLM rejects the new name). `seed`, `stop` and `reasoning_effort` are
    sent when set; the sample key travels in the SAMPLE_KEY_HEADER header. A message's `reasoning_content`
    (the trajectory keeps a model's reasoning on its turn) is never sent back: see `prompt_message`.

    >>> cfg = ModelConfig(provider="openai", name="gpt-5")
    >>> request_kwargs(cfg, [], SamplingParams(temperature=1.0, max_tokens=64))
    {'model': 'gpt-5', 'messages': [], 'max_completion_tokens': 64}
    """
    kwargs: dict[str, Any] = {"model": cfg.name, "messages": [prompt_message(m) for m in messages]}
    reasoning = is_reasoning_model(cfg)
    if params.max_tokens is not None:
        kwargs["max_tokens" if legacy_max_tokens and not reasoning else "max_completion_tokens"] = params.max_tokens
    if not reasoning:
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
    if params.reasoning_effort is not None:
        kwargs["reasoning_effort"] = params.reasoning_effort
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.sample_key is not None:
        kwargs["extra_headers"] = {SAMPLE_KEY_HEADER: encode_sample_key(params.sample_key)}
    return kwargs


def prompt_message(message: Message) -> dict[str, Any]:
    """A copy of `message` fit to send: without `reasoning_content`, which MLGym never shows the agent again
    and OpenAI's API would reject or bill.

    >>> prompt_message({"role": "assistant", "content": "ls", "reasoning_content": "look first"})
    {'role': 'assistant', 'content': 'ls'}
    """
    return {k: v for k, v in message.items() if k != "reasoning_content"}


def encode_sample_key(key: SampleKey) -> str:
    """ASCII JSON, safe in an HTTP header."""
    return json.dumps(key.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Reply:
    """What a chat-completions body says, before pricing."""

    text: str
    reasoning: str | None
    finish_reason: str | None
    usage: Usage
    cached_prompt_tokens: int


def parse_reply(body: str) -> Reply:
    """Parse a 200 body; anything unusable raises MalformedReply (which the client retries).

    A null content is malformed unless finish_reason is "length" (the budget ran out, often inside the
    reasoning): that is a real, empty answer, and asking again would spend the same budget again.
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedReply(f"body is not JSON: {body[:200]!r}") from None
    if not isinstance(data, dict):
        raise MalformedReply(f"body is a JSON {type(data).__name__}, not an object")
    if "error" in data and not data.get("choices"):
        raise MalformedReply(f"body carries an error: {str(data['error'])[:300]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedReply("no choices in the reply")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedReply("choices[0] has no message")
    finish = choice.get("finish_reason")
    content = message.get("content")
    if content is None and finish == "length":
        content = ""
    if not isinstance(content, str):
        raise MalformedReply(f"choices[0].message.content is {type(content).__name__}, not text")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    usage, cached = parse_usage(data.get("usage"))
    return Reply(
        text=content,
        reasoning=reasoning if isinstance(reasoning, str) else None,
        finish_reason=finish if isinstance(finish, str) else None,
        usage=usage,
        cached_prompt_tokens=cached,
    )


def parse_usage(raw: object) -> tuple[Usage, int]:
    """Usage and cached prompt tokens from a `usage` object; missing parts count as zero."""
    if not isinstance(raw, dict):
        return Usage(), 0
    completion_details = raw.get("completion_tokens_details") or {}
    prompt_details = raw.get("prompt_tokens_details") or {}
    usage = Usage(
        prompt_tokens=_int(raw.get("prompt_tokens")),
        completion_tokens=_int(raw.get("completion_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0),
    )
    cached = _int(prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0)
    return usage, cached


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
