"""The shared limiter: buckets refill with time, concurrency is capped, budgets stop calls, usage is charged."""

import pytest

from engine.config import RateLimitConfig
from engine.errors import BudgetExceededError
from engine.models.ratelimit import LimitedModel, RateLimiter
from engine.testing.scripted import ScriptedModel
from engine.protocols import SamplingParams


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_requests_per_minute_bucket_refills() -> None:
    clock = Clock()
    rl = RateLimiter(RateLimitConfig(requests_per_minute=2, max_concurrency=10), clock=clock)
    assert rl.try_acquire(1)[0] == 0.0
    assert rl.try_acquire(1)[0] == 0.0
    wait, lease = rl.try_acquire(1)
    assert lease is None and wait == pytest.approx(30.0)
    clock.t = 30.0
    assert rl.try_acquire(1)[1] is not None


def test_tokens_per_minute_and_release_charges_real_usage() -> None:
    clock = Clock()
    rl = RateLimiter(RateLimitConfig(tokens_per_minute=600, max_concurrency=10), clock=clock)
    _, lease = rl.try_acquire(100)
    rl.release(lease, 400, cost_usd=0.5)  # used 300 more than estimated: 200 left
    wait, lease2 = rl.try_acquire(300)
    assert lease2 is None and wait == pytest.approx(10.0)  # 100 tokens short at 10 tokens/s
    assert rl.stats() == {"calls": 1, "tokens": 400, "spent_usd": 0.5, "in_flight": 0}


def test_concurrency_cap_and_budget() -> None:
    rl = RateLimiter(RateLimitConfig(max_concurrency=1), budget_usd=1.0)
    _, lease = rl.try_acquire(1)
    assert rl.try_acquire(1)[1] is None
    rl.release(lease, 1, cost_usd=1.0)
    with pytest.raises(BudgetExceededError, match=r"budget of \$1.00 is spent"):
        rl.try_acquire(1)


def test_limited_model_waits_for_a_slot_then_calls() -> None:
    clock = Clock()
    rl = RateLimiter(RateLimitConfig(requests_per_minute=1, max_concurrency=4), clock=clock)
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.t += s

    model = LimitedModel(ScriptedModel(["a", "b"]), rl, sleep=sleep)
    assert model.complete([{"role": "user", "content": "x"}], SamplingParams(max_tokens=5)).text == "a"
    assert model.complete([{"role": "user", "content": "x"}], SamplingParams(max_tokens=5)).text == "b"
    assert slept == [pytest.approx(60.0)]
    assert rl.stats()["calls"] == 2
