"""Retry policy of the model client: which failures are transient, how long to wait, and what the failure says
(redacted). Pure functions."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import openai

from engine.redact import redact

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Besides every 5xx: request timeout, conflict (a lock timeout on OpenAI's side) and rate limit."""


@dataclass(frozen=True)
class Failure:
    """How the client should treat one failed attempt."""

    retryable: bool
    description: str
    status: int | None = None
    retry_after_s: float | None = None
    unreachable: bool = False  # nothing answered at the address (connection refused, reset, DNS): not a timeout


class MalformedReply(Exception):
    """The server answered 200 with something that is not a usable chat completion."""


def parse_retry_after(headers: Mapping[str, str], now_s: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, else `Retry-After` (seconds or an HTTP date), else None.

    >>> parse_retry_after({"retry-after-ms": "250"}), parse_retry_after({"Retry-After": "3"})
    (0.25, 3.0)
    >>> parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:05 GMT"}, now_s=1445412480.0)
    5.0
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
        if value is not None and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
        return max(0.0, seconds)
    return seconds if seconds >= 0 else None


def backoff_delay_s(retry_index: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2**retry_index)].

    retry_index counts from 0 (the wait before the first retry).
    """
    ceiling = min(max_s, base_s * (2 ** min(retry_index, 62)))
    return rng.uniform(0.0, ceiling)


def classify(exc: BaseException, secrets: Iterable[str] = ()) -> Failure:
    """Sort an exception raised by one attempt into transient (retry) or permanent (fail now).

    The description is redacted (`engine.redact.redact`, with `secrets`, say the key the client sent): a server
    may echo the request, Authorization header included, in its error body."""
    failure = _classify(exc)
    return replace(failure, description=redact(failure.description, secrets))


def _classify(exc: BaseException) -> Failure:
    if isinstance(exc, MalformedReply):
        return Failure(True, f"malformed reply: {exc}")
    if isinstance(exc, openai.APITimeoutError):
        return Failure(True, "request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return Failure(True, f"connection error: {exc.message}", unreachable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = parse_retry_after(dict(exc.response.headers))
        description = f"HTTP {status}: {server_message(exc)}"
        retryable = status >= 500 or status in RETRYABLE_STATUS
        return Failure(retryable, description, status=status, retry_after_s=retry_after)
    if isinstance(exc, openai.APIError):
        return Failure(True, f"API error: {exc.message}")
    raise TypeError(f"not a model-call failure: {type(exc).__name__}")


def server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message: body.error.message (OpenAI, vLLM), body.message, else the text."""
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    if isinstance(body, str) and body:
        return body[:2000]
    try:
        text = exc.response.text
    except Exception:  # the body was a stream that is gone; the SDK's message is all there is
        text = ""
    return (text or exc.message)[:2000]
