"""Retry policy: Retry-After parsing, backoff ceilings, and which failures are transient."""

import httpx2
import openai
import pytest

from engine.models.retry import MalformedReply, backoff_delay_s, classify, parse_retry_after


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "20", "Retry-After": "9"}, 0.02),  # the finer header wins
        ({"retry-after-ms": "soon", "Retry-After": "3"}, 3.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:05 GMT"}, 65.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:26:00 GMT"}, 0.0),  # a date in the past: go now
        ({"Retry-After": "tomorrow"}, None),
        ({"Retry-After": "-3"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    now = 1445412420.0  # Wed, 21 Oct 2015 07:27:00 GMT
    assert parse_retry_after(headers, now_s=now) == expected


class CeilingRng:
    """Returns the top of the jitter range, so that the ceilings can be checked exactly."""

    def __init__(self):
        self.ranges = []

    def uniform(self, a, b):
        self.ranges.append((a, b))
        return b


def test_backoff_ceilings_double_up_to_the_max():
    rng = CeilingRng()
    got = [backoff_delay_s(i, 0.5, 3.0, rng) for i in range(6)]
    assert got == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert [a for a, _ in rng.ranges] == [0.0] * 6  # full jitter starts at zero


def test_backoff_is_jittered_within_range():
    import random

    rng = random.Random(0)
    got = [backoff_delay_s(3, 1.0, 60.0, rng) for _ in range(50)]
    assert all(0.0 <= d <= 8.0 for d in got)
    assert len(set(got)) == 50


def status_error(status, headers=None, body=None):
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, json=body or {"error": {"message": "boom"}}, request=request)
    cls = {400: openai.BadRequestError, 429: openai.RateLimitError}.get(status, openai.APIStatusError)
    if status >= 500:
        cls = openai.InternalServerError
    return cls(f"Error code: {status}", response=response, body=(body or {"error": {"message": "boom"}})["error"])


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, False), (404, False), (408, True), (409, True),
                                                   (422, False), (429, True), (500, True), (503, True)])
def test_classify_status(status, retryable):
    failure = classify(status_error(status))
    assert (failure.retryable, failure.status, failure.description) == (retryable, status, f"HTTP {status}: boom")


def test_classify_keeps_retry_after():
    assert classify(status_error(429, headers={"Retry-After": "4"})).retry_after_s == 4.0


def test_classify_transport_and_malformed():
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    assert classify(openai.APITimeoutError(request)).retryable
    assert classify(openai.APIConnectionError(request=request)).retryable
    assert classify(MalformedReply("no choices")).description == "malformed reply: no choices"
