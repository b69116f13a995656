"""Splits a model's reply into its thought and its one command (reads text, writes nothing).

A well-formed reply is free text (the discussion, optionally headed `DISCUSSION`) and exactly one fenced
code block holding the command. Text inside `<think>…</think>` is reasoning: it is kept, first, in the
thought, and code blocks inside it do not count as commands.

>>> parse_response("DISCUSSION\\nLook around.\\n```bash\\nls -la\\n```\\n")
ParsedResponse(thought='Look around.', action='ls -la')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_EDIT_HEAD = re.compile(r"^\s*(edit\s+\d+\s*:\s*\d+|insert\s+\d+)\s*$")
_TERMINATOR = {"edit": "end_of_edit", "insert": "end_of_insert"}
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_DISCUSSION_HEAD = re.compile(r"^DISCUSSION\b:?\s*")


class FormatError(Exception):
    """The reply does not hold exactly one command block: the agent's mistake, answered by a re-ask."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedResponse:
    thought: str
    action: str


@dataclass(frozen=True)
class _Block:
    start: int  # index of the opening fence line
    end: int  # index of the closing fence line
    content: str


def parse_response(text: str) -> ParsedResponse:
    """Return the thought and the command of `text`; raise FormatError unless there is exactly one block."""
    thinking, rest = _split_thinking(text)
    lines = rest.split("\n")
    blocks = _find_blocks(lines)
    if not blocks:
        raise FormatError(
            "it holds no fenced code block, so there is no command to run. "
            "Put your command in a block that opens and closes with ``` lines."
        )
    if len(blocks) > 1:
        raise FormatError(
            f"it holds {len(blocks)} fenced code blocks, and only one command can run per turn. "
            "Reply with exactly one code block; put any other text in the discussion without fences."
        )
    block = blocks[0]
    action = block.content.strip()
    if not action:
        raise FormatError("its code block is empty. Put the one command you want to run inside the block.")
    before = _DISCUSSION_HEAD.sub("", "\n".join(lines[: block.start]).strip(), count=1).strip()
    after = "\n".join(lines[block.end + 1 :]).strip()
    thought = "\n\n".join(part for part in (thinking, before, after) if part)
    return ParsedResponse(thought=thought, action=action)


def _split_thinking(text: str) -> tuple[str, str]:
    """Pull reasoning out of `text`: closed <think> pairs, and a leading orphan `</think>` (chat templates
    often put the opening tag in the prompt). An unclosed `<think>` tag is dropped and its text kept."""
    parts: list[str] = []
    if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
        head, text = text.split("</think>", 1)
        parts.append(head.strip())
    parts += [m.group(1).strip() for m in _THINK.finditer(text)]
    rest = _THINK.sub("", text).replace("<think>", "")
    return "\n\n".join(p for p in parts if p), rest


def _find_blocks(lines: list[str]) -> list[_Block]:
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i].rstrip())
        if m is None:
            i += 1
            continue
        block = _read_block(lines, i, m)
        if block is None:
            raise FormatError(
                f"the code block opened on line {i + 1} of your reply is never closed. "
                f"End the block with a line holding only {m.group('fence')}."
            )
        blocks.append(block)
        i = block.end + 1
    return blocks


def _read_block(lines: list[str], start: int, opening: re.Match[str]) -> _Block | None:
    """The block opened at `lines[start]`. An `edit`/`insert` block runs at least to its terminator, so
    that replacement text holding fence lines of its own stays inside the block."""
    fence, indent = opening.group("fence"), len(opening.group("indent"))
    body_from = start + 1
    search_from = body_from
    first = next((ln for ln in lines[body_from:] if ln.strip()), "")
    head = _EDIT_HEAD.match(first)
    if head is not None:
        terminator = _TERMINATOR[head.group(1).split()[0]]
        term_at = next((j for j in range(body_from, len(lines)) if lines[j].strip() == terminator), None)
        if term_at is not None:
            search_from = term_at + 1
    for j in range(search_from, len(lines)):
        if _closes(lines[j], fence):
            body = [_dedent(ln, indent) for ln in lines[body_from:j]]
            return _Block(start=start, end=j, content="\n".join(body))
    return None


def _closes(line: str, fence: str) -> bool:
    """A closing fence: only fence characters of the opening kind, at least as many, nothing else."""
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


def _dedent(line: str, indent: int) -> str:
    """Remove up to `indent` leading spaces, the opening fence's own indentation."""
    n = 0
    while n < indent and n < len(line) and line[n] in " \t":
        n += 1
    return line[n:]
