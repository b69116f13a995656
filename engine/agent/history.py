"""Builds the prompt of one step from the episode's full message list (reads messages, writes a new list).

The system message, the task message and every assistant turn are kept; only the last k observations are
kept verbatim and older ones become a one-line note, so the prompt stays short while the agent still sees
everything it did. The full list is what the trajectory records. The model's past reasoning
(``reasoning_content`` on assistant turns) stays in the trajectory and is never put in a prompt: MLGym does
not show it, and OpenAI's API would reject or bill it.

>>> msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
...         {"role": "assistant", "content": "A1"}, {"role": "user", "content": "o1\\no1"},
...         {"role": "assistant", "content": "A2"}, {"role": "user", "content": "o2"}]
>>> [m["content"] for m in build_prompt(msgs, keep_last_observations=1)]
['S', 'T', 'A1', 'Old environment output: (2 lines omitted)', 'A2', 'o2']
"""

from __future__ import annotations

from engine.protocols import Message

PREFIX_MESSAGES = 2
"""messages[0] is the system prompt and messages[1] the task; observations are the user messages after them."""


def omitted_note(content: str) -> str:
    """What replaces an old observation in the prompt."""
    n = len(content.splitlines())
    return f"Old environment output: ({n} {'line' if n == 1 else 'lines'} omitted)"


def build_prompt(messages: list[Message], keep_last_observations: int) -> list[Message]:
    """A new list: copies of `messages` without `reasoning_content`, and with all but the last
    `keep_last_observations` observations replaced by a note of how many lines they had. `messages` itself
    is not changed."""
    observation_at = [i for i, m in enumerate(messages) if i >= PREFIX_MESSAGES and m["role"] == "user"]
    shorten = set(observation_at[: max(0, len(observation_at) - keep_last_observations)])
    out: list[Message] = []
    for i, m in enumerate(messages):
        copy = {k: v for k, v in m.items() if k != "reasoning_content"}
        if i in shorten:
            copy["content"] = omitted_note(m["content"])
        out.append(copy)
    return out
