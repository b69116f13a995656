"""Fans a per-item engine function out over Ray tasks, with a bound on work in flight (`ray.wait`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ray


@ray.remote
def _call(fn: Callable[..., Any], item: Any, ctx: Any) -> Any:
    return fn(item, ctx)


class RayExecutor:
    """`map(fn, items, ctx)` on the cluster, yielding results as they finish; at most `max_in_flight` at once.

    The function runs in a Ray task; a task whose worker dies is retried by Ray (the item functions are
    idempotent: they skip work whose outputs exist)."""

    def __init__(self, max_in_flight: int, num_cpus: float = 1.0):
        self.max_in_flight = max_in_flight
        self.remote = _call.options(num_cpus=num_cpus, max_retries=2)

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], ctx: Any) -> Iterator[Any]:
        ctx_ref = ray.put(ctx)
        pending: list[ray.ObjectRef] = []
        for item in items:
            if len(pending) >= self.max_in_flight:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
            pending.append(self.remote.remote(fn, item, ctx_ref))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
