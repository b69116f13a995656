"""The cluster-wide teacher pool's limiter: one actor every worker's model calls pass through."""

from __future__ import annotations

import ray

from engine.config import RateLimitConfig
from engine.models.ratelimit import RateLimiter


@ray.remote(num_cpus=0, max_concurrency=64)
class RateLimiterActor:
    """Owns the shared RateLimiter; its handle is passed explicitly to whoever calls the teacher."""

    def __init__(self, cfg: RateLimitConfig, budget_usd: float | None = None, budget_name: str = "the budget"):
        self.limiter = RateLimiter(cfg, budget_usd=budget_usd, budget_name=budget_name)

    def try_acquire(self, tokens: int) -> tuple[float, str | None]:
        return self.limiter.try_acquire(tokens)

    def release(self, lease: str, tokens: int, cost_usd: float) -> None:
        self.limiter.release(lease, tokens, cost_usd)

    def stats(self) -> dict[str, float]:
        return self.limiter.stats()


class ActorLimiter:
    """The `Limiter` seam over the actor's handle (picklable, so it travels to remote tasks)."""

    def __init__(self, handle: ray.actor.ActorHandle):
        self.handle = handle

    def try_acquire(self, tokens: int) -> tuple[float, str | None]:
        return ray.get(self.handle.try_acquire.remote(tokens))

    def release(self, lease: str, tokens: int, cost_usd: float) -> None:
        # not awaited: the caller goes on with its episode while the actor books the call (a few ms less per call)
        self.handle.release.remote(lease, tokens, cost_usd)

    def stats(self) -> dict[str, float]:
        return ray.get(self.handle.stats.remote())
