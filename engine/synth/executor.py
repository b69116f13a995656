"""Runs a per-item function over items in this process, `max_workers` at a time (the local twin of Ray's)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol


class Executor(Protocol):
    """Maps `fn(item, ctx)` over items, yielding results in completion order."""

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], ctx: Any) -> Iterator[Any]: ...


class ThreadExecutor:
    """Threads suit this work: it waits on sandboxes and model endpoints, not on the GIL."""

    def __init__(self, max_workers: int):
        self.max_workers = max_workers

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], ctx: Any) -> Iterator[Any]:
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="synth") as pool:
            pending: set[Future] = set()
            for item in items:
                if len(pending) >= self.max_workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
                pending.add(pool.submit(fn, item, ctx))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
