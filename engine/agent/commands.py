"""Parses an agent's command text into a structured command, refuses interactive programs, picks timeouts.

Reads command strings, writes nothing. The special commands (open, goto, …, submit) are recognised by their
first word; anything else is a bash command.

>>> parse_command('open "src/train.py" 40')
Open(path='src/train.py', line=40)
>>> parse_command("edit 3:4\\n    x = 1\\nend_of_edit")
Edit(start=3, end=4, text='    x = 1\\n')
>>> timeout_for("python train.py", 25, 1800)
1800
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass


class UsageError(Exception):
    """A special command was used with the wrong arguments; the message shows the correct usage."""


@dataclass(frozen=True)
class Open:
    path: str
    line: int | None = None


@dataclass(frozen=True)
class Goto:
    line: int


@dataclass(frozen=True)
class ScrollUp:
    pass


@dataclass(frozen=True)
class ScrollDown:
    pass


@dataclass(frozen=True)
class Create:
    path: str


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str
    """The replacement lines, each ending with "\\n"; "" deletes the range."""


@dataclass(frozen=True)
class Insert:
    line: int
    text: str


@dataclass(frozen=True)
class SearchFile:
    term: str
    path: str | None = None


@dataclass(frozen=True)
class SearchDir:
    term: str
    dir: str | None = None


@dataclass(frozen=True)
class FindFile:
    name: str
    dir: str | None = None


@dataclass(frozen=True)
class Validate:
    pass


@dataclass(frozen=True)
class Submit:
    pass


@dataclass(frozen=True)
class Bash:
    command: str


Command = (Open | Goto | ScrollUp | ScrollDown | Create | Edit | Insert | SearchFile | SearchDir | FindFile
           | Validate | Submit | Bash)

USAGE: dict[str, str] = {
    "open": 'open "<path>" [<line_number>]',
    "goto": "goto <line_number>",
    "scroll_up": "scroll_up",
    "scroll_down": "scroll_down",
    "create": "create <filename>",
    "edit": "edit <start_line>:<end_line>\n<replacement lines>\nend_of_edit",
    "insert": "insert <line_number>\n<lines>\nend_of_insert",
    "search_file": "search_file <term> [<file>]",
    "search_dir": "search_dir <term> [<dir>]",
    "find_file": "find_file <name> [<dir>]",
    "validate": "validate",
    "submit": "submit",
}
_BLOCK_TERMINATOR = {"edit": "end_of_edit", "insert": "end_of_insert"}
_EDIT_RANGE = re.compile(r"^(\d+)\s*:\s*(\d+)$")


def parse_command(action: str) -> Command:
    """The structured form of `action`; raises UsageError when a special command is misused."""
    action = action.strip()
    first_line, _, rest = action.partition("\n")
    name = first_line.split(maxsplit=1)[0] if first_line.split() else ""
    if name not in USAGE:
        return Bash(action)
    args_text = first_line[len(name):].strip()
    if name in _BLOCK_TERMINATOR:
        return _parse_block(name, args_text, rest)
    if rest.strip():
        raise _usage(name, "a reply holds one command; run the other lines in your next turn")
    args = _split_args(name, args_text)
    if name in ("validate", "submit"):
        return Validate() if name == "validate" else Submit()  # extra words are ignored, as in MLGym
    if name in ("scroll_up", "scroll_down"):
        if args:
            raise _usage(name, "it takes no arguments")
        return ScrollUp() if name == "scroll_up" else ScrollDown()
    if name == "goto":
        if len(args) != 1:
            raise _usage(name, "give exactly one line number")
        return Goto(_line_number(name, args[0], "<line_number>"))
    if name == "open":
        if not 1 <= len(args) <= 2:
            raise _usage(name, "give a path and, optionally, a line number")
        line = _line_number(name, args[1], "<line_number>") if len(args) == 2 else None
        return Open(args[0], line)
    if name == "create":
        if len(args) != 1:
            raise _usage(name, "give exactly one file name (quote it if it has spaces)")
        return Create(args[0])
    if not 1 <= len(args) <= 2:
        raise _usage(name, "give the term and, optionally, where to look; quote a term that has spaces")
    where = args[1] if len(args) == 2 else None
    return {"search_file": SearchFile, "search_dir": SearchDir, "find_file": FindFile}[name](args[0], where)


def _parse_block(name: str, args_text: str, body: str) -> Edit | Insert:
    terminator = _BLOCK_TERMINATOR[name]
    lines = body.split("\n") if body else []
    end_at = next((i for i, ln in enumerate(lines) if ln.strip() == terminator), None)
    if end_at is None:
        raise _usage(name, f"the lines must be followed by a line holding only {terminator}")
    if any(ln.strip() for ln in lines[end_at + 1 :]):
        raise _usage(name, f"nothing may follow {terminator}; run other commands in your next turn")
    text = "".join(ln + "\n" for ln in lines[:end_at])
    if name == "edit":
        m = _EDIT_RANGE.match(args_text)
        if m is None:
            raise _usage(name, f"the range must be two line numbers separated by a colon, got {args_text!r}")
        return Edit(int(m.group(1)), int(m.group(2)), text)
    return Insert(_line_number(name, args_text, "<line_number>"), text)


def _split_args(name: str, args_text: str) -> list[str]:
    try:
        return shlex.split(args_text)
    except ValueError as e:
        raise _usage(name, f"its arguments could not be read ({e}); check the quotes") from None


def _line_number(name: str, value: str, what: str) -> int:
    if not value.isdigit():
        raise _usage(name, f"{what} must be a number, got {value!r}")
    return int(value)


def _usage(name: str, why: str) -> UsageError:
    return UsageError(f"Usage: {USAGE[name]}\nError: {why}.")


# --- refusals -------------------------------------------------------------------------------------------

_EDITOR_HINT = ("There is no terminal to run an editor in. Read files with `open`, `goto` and `scroll_down`, "
                "change them with `edit` and `insert`, and make new ones with `create`.")
_PAGER_HINT = "There is no terminal to page through. Use `open <file>`, or `head -n 50 <file>` / `tail -n 50 <file>`."
_INTERPRETER_HINT = ("An interactive {prog} would wait for keyboard input that never comes. Put the code in a file "
                     "and run it ({example}), or pass it inline with -c.")
_REFUSED: dict[str, str] = {
    **{p: _EDITOR_HINT for p in ("vim", "vi", "nvim", "nano", "emacs", "pico", "ed")},
    **{p: _PAGER_HINT for p in ("less", "more", "most")},
    "top": "top never finishes. Run `ps aux` for a snapshot of the processes (or `nvidia-smi` for the GPUs).",
    "htop": "htop needs a terminal and never finishes. Run `ps aux` for a snapshot of the processes.",
    "watch": "watch repeats forever. Run the command once; run it again in a later turn if you need to.",
    "git": ("git is not available in this environment. Keep copies of files you may want back "
            "(e.g. `cp a.py a.py.bak`)."),
    "nohup": ("Background jobs are not supported: the command's output would be lost. Run it in the foreground; "
              "commands that run python get the long training time limit."),
    "ipython": _INTERPRETER_HINT.format(prog="ipython", example="python script.py"),
    "jupyter": "Notebooks need an interactive session. Write a script and run it with `python script.py`.",
}
_INTERPRETERS = {"python": "python script.py", "python3": "python script.py", "bash": "bash script.sh",
                 "sh": "sh script.sh", "zsh": "bash script.sh"}
_WRAPPERS = {"sudo", "env", "time", "exec", "command", "nice", "stdbuf"}
_SEPARATORS = {";", "&&", "||", "|", "&", "|&", "(", ")", ";;", "{", "}"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def refusal(command: str) -> str | None:
    """Why `command` is refused (an interactive or editor program somewhere in it), or None to run it."""
    tokens = _tokens(_drop_heredoc_bodies(command))
    if tokens is None:
        return None  # bash will report the quoting error itself
    segment: list[str] = []
    after_pipe = False
    for tok in tokens + [";"]:
        if tok in _SEPARATORS:
            reason = _refuse_segment(segment, piped_in=after_pipe)
            if reason is not None:
                return reason
            after_pipe, segment = tok in ("|", "|&"), []
        else:
            segment.append(tok)
    return None


def _refuse_segment(words: list[str], piped_in: bool) -> str | None:
    words = _program_and_args(words)
    if not words:
        return None
    prog = words[0].rsplit("/", 1)[-1]
    args = words[1:]
    if prog in _REFUSED:
        return f"`{prog}` is not allowed here. {_REFUSED[prog]}"
    if prog == "tail" and any(a in ("-f", "-F", "--follow") or (a.startswith("-") and not a.startswith("--")
                                                                 and "f" in a.lower()) for a in args):
        return "`tail -f` never finishes. Show the end of the file once with `tail -n 50 <file>`."
    interp = _INTERPRETERS.get(prog) or (_INTERPRETERS["python"] if re.fullmatch(r"python3\.\d+", prog) else None)
    if interp is not None and not piped_in and _is_bare(args):
        return (f"`{prog}` is not allowed here without a script to run (or with -i). "
                + _INTERPRETER_HINT.format(prog=prog, example=interp))
    return None


def _program_and_args(words: list[str]) -> list[str]:
    """Drop leading variable assignments and wrappers such as `sudo` or `env`, and `timeout <n>`."""
    i = 0
    while i < len(words):
        w = words[i]
        if _ASSIGNMENT.match(w) or w in _WRAPPERS or (w.startswith("-") and i > 0 and words[i - 1] in _WRAPPERS):
            i += 1
        elif w == "timeout":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 1
            i += 1  # the duration
        else:
            break
    return words[i:]


def _is_bare(args: list[str]) -> bool:
    """An interpreter that would wait for a keyboard: -i, or no script, no -c/-m and no redirected input."""
    positional: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("<", "<<", "<<<", "<<-"):
            return False
        if set(a) <= set("<>&"):  # an output redirection and its target
            i += 2
            continue
        if a.isdigit() and i + 1 < len(args) and set(args[i + 1]) <= set("<>&"):
            i += 1  # the file descriptor of a redirection
            continue
        if a == "-i":
            return True
        if a.startswith("-") and not a.startswith("--") and ("c" in a or "m" in a):
            return False  # -c CODE, -m MODULE, or a cluster such as bash -lc
        if not a.startswith("-"):
            positional.append(a)
        i += 1
    return not positional


def _drop_heredoc_bodies(command: str) -> str:
    """Remove the text of here-documents: it is input for a program, not commands."""
    out: list[str] = []
    pending: list[str] = []
    for line in command.split("\n"):
        if pending:
            if line.strip() == pending[0]:
                pending.pop(0)
            continue
        out.append(line)
        pending = [m.group(2) for m in _HEREDOC.finditer(line)]
    return "\n".join(out)


def _tokens(command: str) -> list[str] | None:
    """Shell words and operators, with unquoted newlines as `;`; None if the quoting does not balance."""
    lexer = shlex.shlex(_normalise_lines(command), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        return None


def _normalise_lines(command: str) -> str:
    """Turn unquoted newlines into `;` and drop comments (an unquoted `#` that starts a word)."""
    out: list[str] = []
    quote: str | None = None
    escaped = in_comment = False
    prev = "\n"
    for ch in command:
        if in_comment:
            if ch != "\n":
                continue
            in_comment = False
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (prev.isspace() or prev in ";&|()"):
            in_comment = True
            continue
        elif ch == "\n":
            ch = ";"
        out.append(ch)
        prev = ch
    return "".join(out)


# --- timeouts -------------------------------------------------------------------------------------------

_LONG_RUNNING = re.compile(r"\b(python3?|torchrun|accelerate|deepspeed)\b")


def timeout_for(action: str, default_s: float, training_s: float) -> float:
    """`training_s` for a command that mentions python, python3, torchrun, accelerate or deepspeed as a
    word (e.g. "python3.11 x.py", "/usr/bin/python"), else `default_s`."""
    return training_s if _LONG_RUNNING.search(action) else default_s
