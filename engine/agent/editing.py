"""Pure functions on file text for the agent's viewer and editor: edits, inserts, windows, searches.

Line numbers are 1-based. A file's lines are its text split at "\\n", a final newline ending the last line
rather than starting an empty one, so "a\\nb\\n" and "a\\nb" both have 2 lines and "" has none.

>>> apply_edit("a\\nb\\nc\\n", 2, 2, "B\\n")
'a\\nB\\nc\\n'
>>> print(render_window("/w/f.py", "x = 1\\ny = 2\\n", first_line=1, window_lines=100))
[File: /w/f.py (2 lines total)]
1:x = 1
2:y = 2
"""

from __future__ import annotations

SCROLL_OVERLAP = 2
"""Lines that stay in view when scrolling by a window, so the reader keeps their place."""

MAX_LISTED = 100
"""Searches that match more lines (or files) than this ask the agent to narrow the search."""


class EditError(Exception):
    """An edit or insert names lines the file does not have; the message says which lines it has."""


def split_lines(text: str) -> list[str]:
    """The lines of `text`: "a\\nb\\n" → ["a", "b"]; "a\\n\\n" → ["a", ""]; "" → []."""
    if text == "":
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def _join(lines: list[str], trailing_newline: bool) -> str:
    if not lines:
        return ""
    return "\n".join(lines) + ("\n" if trailing_newline else "")


def _ends_line(text: str) -> bool:
    """Whether a file's text ends its last line with a newline (an empty file counts as doing so)."""
    return text == "" or text.endswith("\n")


def apply_edit(text: str, start: int, end: int, replacement: str) -> str:
    """Replace lines `start`..`end` (inclusive) of `text` with the lines of `replacement`.

    `end == start - 1` replaces nothing: the lines go in before line `start` (and `start` may be one past
    the last line, appending). An empty `replacement` deletes the range; "\\n" replaces it with one empty
    line. An empty file accepts `1:1` (what `create` followed by `edit 1:1` does on any empty file).

    >>> apply_edit("a\\nb\\nc\\n", 2, 3, "")
    'a\\n'
    >>> apply_edit("a\\nb\\n", 2, 1, "x\\n")
    'a\\nx\\nb\\n'
    """
    lines = split_lines(text)
    n = len(lines)
    if n == 0 and (start, end) == (1, 1):
        end = 0
    if start < 1:
        raise EditError(f"start line {start} is out of range: line numbers start at 1")
    if start > n + 1:
        raise EditError(f"start line {start} is past the end of the file, which has {n} lines; "
                        f"use a start line from 1 to {n}")
    if end > n:
        raise EditError(f"end line {end} is past the end of the file, which has {n} lines; "
                        f"use an end line from {start} to {n}")
    if end < start - 1:
        raise EditError(f"end line {end} is before start line {start}; "
                        "write the range as <start_line>:<end_line> with start ≤ end")
    new_lines = lines[: start - 1] + split_lines(replacement) + lines[end:]
    return _join(new_lines, _ends_line(text))


def apply_insert(text: str, line: int, lines: str) -> str:
    """Insert the lines of `lines` after line `line` of `text` (0 inserts at the top).

    >>> apply_insert("a\\nb\\n", 0, "top\\n")
    'top\\na\\nb\\n'
    """
    current = split_lines(text)
    n = len(current)
    if line < 0 or line > n:
        raise EditError(f"line {line} is out of range: insert after a line from 0 (the top of the file) to {n}")
    new_lines = current[:line] + split_lines(lines) + current[line:]
    return _join(new_lines, _ends_line(text))


# --- the viewer's window --------------------------------------------------------------------------------


def clamp_first_line(first_line: int, total_lines: int, window_lines: int) -> int:
    """Keep a window inside the file: it starts at line 1 or later and is full whenever the file allows."""
    return max(1, min(first_line, total_lines - window_lines + 1))


def first_line_showing(line: int, total_lines: int, window_lines: int) -> int:
    """The window for `open path line` and `goto line`: `line` sits a sixth of the way down, so that the
    reader sees a little of what precedes it and mostly what follows (MLGym's placement: the window starts
    `window_lines // 6 - 1` lines above `line`)."""
    return clamp_first_line(line - window_lines // 6 + 1, total_lines, window_lines)


def first_line_centred(line: int, total_lines: int, window_lines: int) -> int:
    """The window shown after an edit or insert: centred on the first changed line."""
    return clamp_first_line(line - window_lines // 2, total_lines, window_lines)


def scrolled(first_line: int, total_lines: int, window_lines: int, down: bool, overlap: int = SCROLL_OVERLAP) -> int:
    """The window after `scroll_down` (down=True) or `scroll_up`: moved by a window less the overlap."""
    step = max(1, window_lines - overlap)
    return clamp_first_line(first_line + (step if down else -step), total_lines, window_lines)


def render_window(path: str, text: str, first_line: int, window_lines: int) -> str:
    """The viewer's output: a header, the count of hidden lines above, the numbered lines of the window as
    `{n}:{line}`, and the count of hidden lines below. Counts of zero are not shown."""
    lines = split_lines(text)
    total = len(lines)
    first = clamp_first_line(first_line, total, window_lines)
    last = min(total, first + window_lines - 1)
    out = [f"[File: {path} ({total} lines total)]"]
    if first > 1:
        out.append(f"({first - 1} more lines above)")
    out += [f"{n}:{lines[n - 1]}" for n in range(first, last + 1)]
    if last < total:
        out.append(f"({total - last} more lines below)")
    return "\n".join(out)


# --- searches -------------------------------------------------------------------------------------------


def search_in_text(text: str, term: str) -> list[tuple[int, str]]:
    """(line number, line) of every line of `text` that contains `term` literally (the environment's
    search_file runs grep instead, for MLGym's regular expressions)."""
    return [(n, line) for n, line in enumerate(split_lines(text), start=1) if term in line]


def format_file_matches(term: str, path: str, matches: list[tuple[int, str]], limit: int = MAX_LISTED) -> str:
    """What `search_file` shows."""
    if not matches:
        return f'No matches found for "{term}" in {path}'
    if len(matches) > limit:
        return f'More than {len(matches)} lines matched for "{term}" in {path}. Please narrow your search.'
    body = "\n".join(f"Line {n}:{line}" for n, line in matches)
    return f'Found {len(matches)} matches for "{term}" in {path}:\n{body}\nEnd of matches for "{term}" in {path}'


def format_dir_matches(term: str, directory: str, counts: dict[str, int], limit: int = MAX_LISTED) -> str:
    """What `search_dir` shows: matching lines per file, files in path order."""
    if not counts:
        return f'No matches found for "{term}" in {directory}'
    if len(counts) > limit:
        return f'More than {len(counts)} files matched for "{term}" in {directory}. Please narrow your search.'
    body = "\n".join(f"{path} ({k} matches)" for path, k in sorted(counts.items()))
    total = sum(counts.values())
    return f'Found {total} matches for "{term}" in {directory}:\n{body}\nEnd of matches for "{term}" in {directory}'


def format_found_files(name: str, directory: str, paths: list[str]) -> str:
    """What `find_file` shows: every path, in the order given (MLGym lists them all, unsorted)."""
    if not paths:
        return f'No matches found for "{name}" in {directory}'
    return f'Found {len(paths)} matches for "{name}" in {directory}:\n' + "\n".join(paths)
