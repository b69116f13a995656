"""Shapes what the environment shows the agent after a command: truncation, the empty-output sentence and
the step footer rendered from `prompts/agent/observation.j2` (reads templates, writes nothing).

>>> print(render_footer(step=3, remaining_steps=47, open_file=None, cwd="/home/agent/workspace"))
(Current Step: 3, Remaining Steps: 47)
(Open file: n/a)
(Current directory: /home/agent/workspace)
bash-$
"""

from __future__ import annotations

from engine.prompting import render

EMPTY_OUTPUT = "Your command ran successfully and did not produce any output."
TRUNCATION_RESERVE = 120
"""Characters kept free for the truncation marker, so a truncated observation stays within its limit."""


def truncate_observation(text: str, max_chars: int) -> str:
    """`text` if it fits in `max_chars`; else its head and tail around a marker saying what was cut.

    Head and tail get half the budget each and are cut at line boundaries where that keeps at least half of
    their share. The result is never longer than `max_chars`.

    >>> truncate_observation("".join(f"line {i}\\n" for i in range(100)), 250)[:30]
    'line 0\\nline 1\\nline 2\\nline 3\\nli'
    """
    if len(text) <= max_chars:
        return text
    budget = max(0, max_chars - TRUNCATION_RESERVE)
    head_chars = budget // 2
    tail_chars = budget - head_chars
    head = text[:head_chars]
    cut = head.rfind("\n") + 1
    if cut >= head_chars // 2 and cut > 0:
        head = head[:cut]
    tail = text[len(text) - tail_chars :] if tail_chars else ""
    cut = tail.find("\n") + 1
    if 0 < cut and len(tail) - cut >= tail_chars // 2:
        tail = tail[cut:]
    omitted = text[len(head) : len(text) - len(tail)]
    n_lines = omitted.count("\n") + (0 if omitted.endswith("\n") else 1)
    lines = "1 line" if n_lines == 1 else f"{n_lines} lines"
    marker = f"[... observation truncated: {len(omitted)} characters ({lines}) omitted ...]"
    before = "" if head.endswith("\n") or not head else "\n"
    after = "\n" if tail else ""
    return f"{head}{before}{marker}{after}{tail}"


def render_footer(*, step: int, remaining_steps: int, open_file: str | None, cwd: str) -> str:
    """The status lines that end every observation, last of them the prompt line `bash-$`."""
    return render("agent/observation.j2", step=step, remaining_steps=remaining_steps, open_file=open_file,
                  cwd=cwd).rstrip("\n")
