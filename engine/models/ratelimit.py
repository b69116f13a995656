"""A shared limit on model calls (requests and tokens per minute, calls in flight, total cost), and a ChatModel
wrapper that passes every call through it. Ray shares one limiter across workers by wrapping it in an actor
(`actors/ratelimit.py`); in-process, the plain class serves threads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from engine.config import RateLimitConfig
from engine.errors import BudgetExceededError
from engine.protocols import ChatModel, Completion, Message, SamplingParams


class Limiter(Protocol):
    """What LimitedModel needs: ask for a slot (0 = granted, else seconds to wait), give it back with usage."""

    def try_acquire(self, tokens: int) -> tuple[float, str | None]: ...

    def release(self, lease: str, tokens: int, cost_usd: float) -> None: ...


class RateLimiter:
    """Token buckets for requests and tokens per minute, a cap on calls in flight, and an optional cost cap.

    >>> t = [0.0]
    >>> rl = RateLimiter(RateLimitConfig(requests_per_minute=60, max_concurrency=8), clock=lambda: t[0])
    >>> rl.try_acquire(10)[0]  # a full bucket grants at once
    0.0
    """

    def __init__(self, cfg: RateLimitConfig, *, budget_usd: float | None = None, budget_name: str = "the budget",
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.budget_usd = budget_usd
        self.budget_name = budget_name  # the setting that holds it, named when it is spent
        self.clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._req = (float(cfg.requests_per_minute or 0), now)
        self._tok = (float(cfg.tokens_per_minute or 0), now)
        self._leases: dict[str, int] = {}
        self.spent_usd = 0.0
        self.calls = 0
        self.tokens = 0

    def try_acquire(self, tokens: int) -> tuple[float, str | None]:
        with self._lock:
            if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
                raise BudgetExceededError(f"the stage's budget of ${self.budget_usd:.2f} is spent "
                                          f"(${self.spent_usd:.2f}); raise {self.budget_name} to go on")
            if len(self._leases) >= self.cfg.max_concurrency:
                return 0.05, None
            now = self.clock()
            req_level = self._level(self._req, self.cfg.requests_per_minute, now)
            tok_level = self._level(self._tok, self.cfg.tokens_per_minute, now)
            waits = []
            if self.cfg.requests_per_minute and req_level < 1:
                waits.append((1 - req_level) * 60 / self.cfg.requests_per_minute)
            if self.cfg.tokens_per_minute and tok_level < min(tokens, self.cfg.tokens_per_minute):
                need = min(tokens, self.cfg.tokens_per_minute) - tok_level
                waits.append(need * 60 / self.cfg.tokens_per_minute)
            if waits:
                self._req, self._tok = (req_level, now), (tok_level, now)
                return max(waits), None
            self._req = (req_level - 1, now)
            self._tok = (tok_level - tokens, now)
            lease = uuid.uuid4().hex
            self._leases[lease] = tokens
            return 0.0, lease

    def release(self, lease: str, tokens: int, cost_usd: float) -> None:
        """Return the slot; charge the difference between the estimate and the tokens really used."""
        with self._lock:
            estimated = self._leases.pop(lease, 0)
            level, at = self._tok
            self._tok = (level - (tokens - estimated), at)
            self.spent_usd += cost_usd
            self.calls += 1
            self.tokens += tokens

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {"calls": self.calls, "tokens": self.tokens, "spent_usd": self.spent_usd,
                    "in_flight": len(self._leases)}

    @staticmethod
    def _level(state: tuple[float, float], per_minute: float | None, now: float) -> float:
        if not per_minute:
            return float("inf")
        level, at = state
        return min(per_minute, level + (now - at) * per_minute / 60)


def limits_anything(cfg: RateLimitConfig, budget_usd: float | None, callers: int) -> bool:
    """Whether a shared limiter could ever hold a call back: a rate, a budget, or fewer slots than callers.
    When it cannot, callers skip it (each call through it costs round trips to a shared actor on a cluster).

    >>> limits_anything(RateLimitConfig(max_concurrency=256), None, callers=8)
    False
    >>> limits_anything(RateLimitConfig(max_concurrency=256), 10.0, callers=8)
    True
    """
    return bool(cfg.requests_per_minute or cfg.tokens_per_minute or budget_usd is not None
                or cfg.max_concurrency < callers)


class LimitedModel:
    """A ChatModel whose calls each wait for a slot of a shared limiter (throttling slows, never fails)."""

    def __init__(self, model: ChatModel, limiter: Limiter, sleep: Callable[[float], None] = time.sleep):
        self.model = model
        self.limiter = limiter
        self.name = model.name
        self._sleep = sleep

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        estimate = sum(len(m["content"]) for m in messages) // 4 + (params.max_tokens or 1024)
        while True:
            wait_s, lease = self.limiter.try_acquire(estimate)
            if lease is not None:
                break
            self._sleep(wait_s)
        completion: Completion | None = None
        try:
            completion = self.model.complete(messages, params)
            return completion
        finally:
            used = completion.usage.prompt_tokens + completion.usage.completion_tokens if completion else 0
            self.limiter.release(lease, used, completion.cost_usd if completion else 0.0)

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion:
        import asyncio

        return await asyncio.to_thread(self.complete, messages, params)
