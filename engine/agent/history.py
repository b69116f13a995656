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
['S', 'T', 'A1', 'Old output omitted (2 lines)', 'A2', 'o2']
"""

from __future__ import annotations

from typing import Literal

from engine.protocols import Message

PREFIX_MESSAGES = 2
"""messages[0] is the system prompt and messages[1] the task; observations are the user messages after them."""


NoteStyle = Literal["mlgym", "synthscale-v1"]


def omitted_note(content: str, style: NoteStyle = "mlgym") -> str:
    """What replaces an old observation in the prompt: MLGym's note, which counts the footer's lines too and
    never uses the singular; `synthscale-v1`, the note episodes recorded before (kept to rebuild their prompts)."""
    n = len(content.splitlines())
    if style == "synthscale-v1":
        return f"Old environment output: ({n} {'line' if n == 1 else 'lines'} omitted)"
    return f"Old output omitted ({n} lines)"


def build_prompt(messages: list[Message], keep_last_observations: int, note: NoteStyle = "mlgym") -> list[Message]:
    """A new list: copies of `messages` without `reasoning_content`, and with all but the last
    `keep_last_observations` observations replaced by a note of how many lines they had (`note`: its wording,
    a record's `history.omitted_note`). `messages` itself is not changed."""
    observation_at = [i for i, m in enumerate(messages) if i >= PREFIX_MESSAGES and m["role"] == "user"]
    shorten = set(observation_at[: max(0, len(observation_at) - keep_last_observations)])
    out: list[Message] = []
    for i, m in enumerate(messages):
        copy = {k: v for k, v in m.items() if k != "reasoning_content"}
        if i in shorten:
            copy["content"] = omitted_note(m["content"], note)
        out.append(copy)
    return out
