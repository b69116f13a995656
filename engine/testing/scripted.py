"""A ChatModel that answers from a fixed list of replies, in order; for tests. Reads and writes nothing."""

from __future__ import annotations

import threading

from engine.errors import ModelError
from engine.protocols import Completion, Message, SamplingParams, Usage


class ScriptedModel:
    """Returns `replies` one after another, whatever it is asked; raises ModelError once they run out.

    Usage is estimated at about four characters a token. Every call is recorded in `calls` (messages and params), so a test can check what the model was sent.

    >>> m = ScriptedModel(["a", "b"])
    >>> [m.complete([], SamplingParams()).text for _ in range(2)]
    ['a', 'b']
    """

    def __init__(self, replies: list[str], name: str = "scripted") -> None:
        self.name = name
        self._replies = list(replies)
        self._next = 0
        self._lock = threading.Lock()
        self.calls: list[tuple[list[Message], SamplingParams]] = []

    def __repr__(self) -> str:
        return f"ScriptedModel(name={self.name!r}, replies={len(self._replies)}, used={self._next})"

    @property
    def remaining(self) -> int:
        return len(self._replies) - self._next

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        with self._lock:
            if self._next >= len(self._replies):
                raise ModelError(
                    f"scripted model {self.name!r} has no reply left after {len(self._replies)} calls; "
                    f"give it more replies"
                )
            text = self._replies[self._next]
            self._next += 1
            self.calls.append(([dict(m) for m in messages], params))
        # usage estimated at ~4 characters a token, so that cost accounting and budgets can be exercised
        usage = Usage(prompt_tokens=sum(len(m.get("content", "")) for m in messages) // 4,
                      completion_tokens=len(text) // 4)
        return Completion(text=text, finish_reason="stop", usage=usage, model=self.name)

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion:
        return self.complete(messages, params)
