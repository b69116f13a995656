"""Lints Python source for the errors that make an agent's edit be reverted (reads text, writes nothing).

The checked classes are MLGym's (flake8 codes): syntax and indentation errors (E999), undefined names
(F821), undefined names in `__all__` (F822), duplicate arguments (F831) and indentation that is not a
multiple of four (E111). Style problems and unused imports are not errors here.

>>> lint_python("print(x)\\n", "a.py")
["a.py:1:7: F821 undefined name 'x'"]
>>> new_lint_errors(["a.py:3:1: F821 undefined name 'x'"], ["a.py:5:1: F821 undefined name 'x'"])
[]
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from collections import Counter

from pyflakes import checker, messages

_CODES: dict[type, str] = {
    messages.UndefinedName: "F821",
    messages.UndefinedExport: "F822",
    messages.DuplicateArgument: "F831",
}
_ISSUE = re.compile(r":(\d+):(\d+): (?P<what>[A-Z]\d{3} .*)$")
_LOGICAL_START_SKIP = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE,
                       tokenize.ENCODING, tokenize.ENDMARKER}


def lint_python(source: str, filename: str) -> list[str]:
    """Errors in `source` as "{filename}:{line}:{col}: {code} {message}", in line order.

    A file that does not compile reports only that (E999), as flake8 does: names cannot be checked then.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = compile(source, filename, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
            compile(tree, filename, "exec", dont_inherit=True)  # scope errors (e.g. `return` outside a function)
    except SyntaxError as e:
        return [_fmt(filename, e.lineno or 1, (e.offset or 1), "E999", f"{type(e).__name__}: {e.msg}")]
    except ValueError as e:  # NUL bytes in the source
        return [_fmt(filename, 1, 1, "E999", f"SyntaxError: {e}")]
    issues: list[tuple[int, int, str]] = []
    for m in checker.Checker(tree, filename=filename).messages:
        code = _CODES.get(type(m))
        if code is not None:
            issues.append((m.lineno, m.col + 1, f"{code} {m.message % m.message_args}"))
    issues += [(line, col, "E111 indentation is not a multiple of 4") for line, col in _bad_indents(source)]
    return [_fmt(filename, line, col, *what.split(" ", 1)) for line, col, what in sorted(issues)]


def _fmt(filename: str, line: int, col: int, code: str, message: str) -> str:
    return f"{filename}:{line}:{col}: {code} {message}"


def _bad_indents(source: str) -> list[tuple[int, int]]:
    """(line, col) of each logical line whose indentation (tabs to 8 columns) is not a multiple of 4."""
    out: list[tuple[int, int]] = []
    at_line_start = True
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.NEWLINE, tokenize.ENCODING):
                at_line_start = True
                continue
            if tok.type in _LOGICAL_START_SKIP:
                continue
            if at_line_start:
                indent = len(tok.line.expandtabs(8)) - len(tok.line.expandtabs(8).lstrip())
                if indent % 4:
                    out.append((tok.start[0], indent + 1))
                at_line_start = False
    except (tokenize.TokenError, SyntaxError):  # already reported by compile()
        return out
    return out


def new_lint_errors(before: list[str], after: list[str]) -> list[str]:
    """The errors of `after` that `before` did not have. Errors are compared by code and message, not by
    position, so that pre-existing errors that an edit merely moved up or down are not counted as new."""
    remaining = Counter(_what(e) for e in before)
    new: list[str] = []
    for err in after:
        key = _what(err)
        if remaining[key] > 0:
            remaining[key] -= 1
        else:
            new.append(err)
    return new


def _what(error: str) -> str:
    m = _ISSUE.search(error)
    return m.group("what") if m else error
