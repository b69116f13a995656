"""The agent's research environment: runs one command on a sandbox and returns what the agent sees.

Reads and writes the sandbox's files (through `Sandbox.read_file`/`write_file`/`exec`); keeps the viewer's
state (open file, first visible line) and the shell's working directory between commands. Scoring is the
`Scorer`'s job; this module only asks for it.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import time
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from engine.agent import commands as cmds
from engine.agent.editing import (
    EditError, apply_edit, apply_insert, clamp_first_line, first_line_centred, first_line_showing,
    format_dir_matches, format_file_matches, format_found_files, render_window, scrolled, split_lines,
)
from engine.agent.lint import lint_python, new_lint_errors
from engine.agent.observation import EMPTY_OUTPUT, render_footer, timeout_notice, truncate_observation
from engine.config import AgentConfig
from engine.errors import SandboxError
from engine.protocols import Sandbox, Shell

log = logging.getLogger(__name__)

SHELL_FUNCTIONS = ("open", "goto", "scroll_up", "scroll_down", "create", "search_dir", "search_file", "find_file",
                   "validate", "submit")
"""The special commands defined as functions of the shell session (edit and insert have a body: alone only)."""
MAX_OPEN_BYTES = 5_000_000
"""Larger files are not opened in the viewer; head, tail and grep read them in parts."""
MLGYM_OPEN_AT_LINE_MAX_CHARS = 20_000
"""MLGym's `open <file> <line>` refuses files larger than this (without a line number it opens any size)."""
SCROLL_WARNING_AFTER = 3
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ico")
_IMAGE_MAGIC = (b"\x89PNG\r\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
NO_FILE_OPEN = "No file open. Use the open command first."
NO_FILE_FOR_EDIT = "No file open. Use the `open` command first."
SCROLL_WARNING = ("WARNING: Scrolling many times in a row is very inefficient.\n"
                  "If you know what you are looking for, use `search_file <pattern>` instead.")
EDIT_DONE = ("File updated. Please review the changes and make sure they are correct (correct indentation, no "
             "duplicate lines, etc). Edit the file again if necessary.")


class Scorer(Protocol):
    """Grades the current submission and says what the agent is shown (the lead's episode scorer)."""

    def score(self, kind: Literal["validate", "submit"], step: int) -> str: ...


class EnvResult(BaseModel):
    """What one command led to. `observation` excludes the step footer (see `AgentEnvironment.footer`)."""

    model_config = ConfigDict(extra="forbid")
    observation: str
    submitted: bool = False
    timed_out: bool = False
    duration_s: float = 0.0


class _Refusal(Exception):
    """A file command cannot proceed; the message is the observation."""


class AgentEnvironment:
    """MLGym's file viewer/editor, search commands, bash, validate and submit over one sandbox.

    Commands run in one persistent shell per episode (`Sandbox.shell`), started at the first command. The special
    commands other than edit/insert are shell functions of that session, so they work inside command lines
    (`ls && open a.py`, `search_dir foo | head`); they call back into `_on_call`, which runs them here in Python
    against the directory the shell reports."""

    def __init__(self, sandbox: Sandbox, cfg: AgentConfig, *, training_timeout_s: float,
                 read_only_paths: list[str], scorer: Scorer):
        self.sandbox = sandbox
        self.cfg = cfg
        self.training_timeout_s = training_timeout_s
        self.scorer = scorer
        self.workdir: str = sandbox.workdir
        self.read_only = [posixpath.normpath(posixpath.join(self.workdir, p)) for p in read_only_paths]
        self._shell: Shell | None = None
        self.reset_state()

    def reset_state(self) -> None:
        """Back to the start: no open file, in the workspace, no shell session (call after `sandbox.reset()`,
        which ended the session)."""
        self.close()
        self.cwd: str = self.workdir
        self.open_file: str | None = None
        self.first_line = 1
        self._scrolls = 0
        self._last_action = ""
        self._scored: list[str] = []

    def close(self) -> None:
        """End the shell session, if one is running."""
        if self._shell is not None:
            shell, self._shell = self._shell, None
            try:
                shell.close()
            except SandboxError as e:  # the sandbox is going away anyway
                log.debug("closing the shell session failed: %s", e)

    # --- the step -------------------------------------------------------------------------------------

    def execute(self, action: str, step: int) -> EnvResult:
        """Run `action` (one command as parsed from the reply) at `step`; never raises for the agent's
        mistakes, which become the observation. SandboxError means the sandbox itself failed."""
        started = time.monotonic()
        observation, submitted, timed_out = self._dispatch(action, step)
        self._last_action = action.strip()
        if not observation.strip():
            observation = EMPTY_OUTPUT
        observation = truncate_observation(observation, self.cfg.max_observation_chars)
        return EnvResult(observation=observation, submitted=submitted, timed_out=timed_out,
                         duration_s=time.monotonic() - started)

    def _dispatch(self, action: str, step: int) -> tuple[str, bool, bool]:
        """(observation, submitted, timed_out) of one command."""
        words = action.split(maxsplit=1)
        if words and words[0] in ("edit", "insert"):  # they carry a body, so they are not shell functions
            try:
                command = cmds.parse_command(action)
                return self._edit_command(command), False, False
            except cmds.UsageError as e:
                return str(e), False, False
            except _Refusal as e:
                return str(e), False, False
        observation, timed_out = self._bash(action)
        if "validate" in self._scored:  # as in MLGym, the score replaces the command's own output
            return self.scorer.score("validate", step), False, timed_out
        if "submit" in self._scored:
            return self.scorer.score("submit", step), True, timed_out
        return observation, False, timed_out

    def footer(self, step: int, remaining: int) -> str:
        """The status lines that follow every observation."""
        return render_footer(step=step, remaining_steps=remaining, open_file=self.open_file, cwd=self.cwd)

    def resolve(self, path: str) -> str:
        """An absolute in-sandbox path: `path` taken relative to the current directory."""
        return posixpath.normpath(posixpath.join(self.cwd, path))

    def _edit_command(self, c: cmds.Command) -> str:
        assert isinstance(c, (cmds.Edit, cmds.Insert))
        if self.open_file is None:
            return NO_FILE_FOR_EDIT
        path = self.open_file
        return self._change(path, self._load(path), c)

    # --- the special commands as shell functions -----------------------------------------------------

    def _on_call(self, name: str, argv: list[str], pwd: str) -> tuple[str, int]:
        """Run special command `name` with the shell's arguments, in the shell's directory `pwd`."""
        if pwd.startswith("/"):
            self.cwd = pwd
        if name in ("validate", "submit"):
            self._scored.append(name)
            return "", 0
        handler = {"open": self._open_call, "goto": self._goto_call, "scroll_up": self._scroll_call,
                   "scroll_down": self._scroll_call, "create": self._create_call, "search_dir": self._search_dir,
                   "search_file": self._search_file, "find_file": self._find_file}[name]
        try:
            return handler(name, argv), 0
        except _Refusal as e:
            return str(e), 0

    def _open_call(self, _name: str, argv: list[str]) -> str:
        if not argv or not argv[0]:
            return 'Usage: open "<file>"'
        line: int | None = None
        if len(argv) > 1 and argv[1]:
            if not argv[1].isdigit():
                return 'Usage: open "<file>" [<line_number>]\nError: <line_number> must be a number'
            line = int(argv[1])
        return self._open(argv[0], line)

    def _goto_call(self, _name: str, argv: list[str]) -> str:
        if len(argv) > 1:
            return "goto allows only one line number at a time."
        path = self._require_open()
        if not argv or not argv[0]:
            return "Usage: goto <line>"
        if not argv[0].isdigit():
            return "Usage: goto <line>\nError: <line> must be a number"
        text = self._load(path)
        total = len(split_lines(text))
        if int(argv[0]) > total:
            return f"Error: <line> must be less than or equal to {total}"
        self.first_line = first_line_showing(int(argv[0]), total, self.cfg.window_lines)
        return self._window(path, text)

    def _scroll_call(self, name: str, _argv: list[str]) -> str:
        path = self._require_open()
        text = self._load(path)
        total = len(split_lines(text))
        self.first_line = scrolled(self.first_line, total, self.cfg.window_lines, name == "scroll_down",
                                   self.cfg.scroll_overlap)
        if self._last_action not in ("scroll_up", "scroll_down"):
            self._scrolls = 0
        self._scrolls += 1
        out = self._window(path, text)
        if self._scrolls >= SCROLL_WARNING_AFTER:
            out += "\n\n" + SCROLL_WARNING
        return out

    def _create_call(self, _name: str, argv: list[str]) -> str:
        if not argv or not argv[0]:
            return "Usage: create <filename>"
        raw = argv[0]
        path = self.resolve(raw)
        parent = posixpath.dirname(path)
        state = self._probe(f"if [ -e {_q(path)} ]; then echo exists; elif [ -d {_q(parent)} ]; then echo ok; "
                            f"else echo noparent; fi")
        if state == "exists":
            return f"Error: File '{raw}' already exists.\n" + self._open(raw, None)
        if state == "noparent":
            return f"bash: {raw}: No such file or directory\nFile {raw} not found"
        if self._is_read_only(path):
            return f"bash: {raw}: Permission denied\nFile {raw} not found"
        self.sandbox.write_file(path, b"\n")
        return self._open(raw, None)

    # --- viewer ---------------------------------------------------------------------------------------

    def _open(self, raw: str, line: int | None) -> str:
        path = self.resolve(raw)
        text = self._load(path, shown_as=raw)
        total = len(split_lines(text))
        notes: list[str] = []
        first = 1
        if line is not None:
            if len(text.encode("utf-8")) > MLGYM_OPEN_AT_LINE_MAX_CHARS:
                return ("The file is larger than 20000 characters, please use 'head -n NUM_LINES' to open it")
            if line > total:
                notes += [f"Warning: <line_number> ({line}) is greater than the number of lines in the file ({total})",
                          f"Warning: Setting <line_number> to {total}"]
                first = clamp_first_line(total - self.cfg.window_lines // 2 + 1, total, self.cfg.window_lines)
            elif line < 1:
                notes += [f"Warning: <line_number> ({line}) is less than 1", "Warning: Setting <line_number> to 1"]
            else:
                first = first_line_showing(line, total, self.cfg.window_lines)
        self.open_file, self.first_line = path, first
        return "\n".join(notes + [self._window(path, text)])

    def _window(self, path: str, text: str) -> str:
        return render_window(path, text, self.first_line, self.cfg.window_lines)

    # --- editor ---------------------------------------------------------------------------------------

    def _change(self, path: str, text: str, c: cmds.Edit | cmds.Insert) -> str:
        if self._is_read_only(path):
            return f"Error: You cannot edit read-only file {path}"
        try:
            if isinstance(c, cmds.Edit):
                new, start, old_span = apply_edit(text, c.start, c.end, c.text), c.start, c.end - c.start + 1
            else:
                new, start, old_span = apply_insert(text, c.line, c.text), c.line + 1, 0
        except EditError as e:
            raise _Refusal(f"Usage: {cmds.USAGE[_name_of(c)]}\nError: {e}. The file was not changed.") from None
        if path.endswith(".py"):
            name = posixpath.basename(path)
            added = new_lint_errors(lint_python(text, name), lint_python(new, name))
            if added:
                new_span = len(split_lines(c.text))
                return self._lint_failure(path, text, new, start, old_span, new_span, added)
        self.sandbox.write_file(path, new.encode("utf-8"))
        self.first_line = first_line_centred(start, len(split_lines(new)), self.cfg.window_lines)
        return self._window(path, new) + "\n" + EDIT_DONE

    def _lint_failure(self, path: str, old: str, new: str, start: int, old_span: int, new_span: int,
                      errors: list[str]) -> str:
        first = max(1, start - 5)
        rule = "-" * 49
        proposed = render_window(path, new, first, start - first + new_span + 5)
        original = render_window(path, old, first, start - first + old_span + 5)
        listed = "\n".join(f"- {e}" for e in errors)
        return (
            "Your proposed edit has introduced new syntax error(s). Please read this error message carefully and "
            "then retry editing the file.\n\n"
            f"ERRORS:\n{listed}\n\n"
            f"This is how your edit would have looked if applied\n{rule}\n{proposed}\n{rule}\n\n"
            f"This is the original code before your edit\n{rule}\n{original}\n{rule}\n"
            "Your changes have NOT been applied. Please fix your edit command and try again.\n"
            "You either need to 1) Specify the correct start/end line arguments or 2) Correct your edit code.\n"
            "DO NOT re-run the same failed edit command. Running it again will lead to the same error."
        )

    def _is_read_only(self, path: str) -> bool:
        return any(path == r or path.startswith(r + "/") for r in self.read_only)

    # --- files and searches through the sandbox ------------------------------------------------------

    def _require_open(self) -> str:
        if self.open_file is None:
            raise _Refusal(NO_FILE_OPEN)
        return self.open_file

    def _load(self, path: str, shown_as: str | None = None) -> str:
        """The text of a file the viewer may show; _Refusal (MLGym's texts where it has one) for directories,
        missing, huge, binary files. `shown_as`: the path as the agent wrote it, which MLGym's messages repeat."""
        shown = shown_as if shown_as is not None else path
        q = _q(path)
        kind = self._probe(f"if [ -d {q} ]; then echo dir; elif [ -f {q} ]; then wc -c < {q}; else echo missing; fi")
        if kind == "dir":
            raise _Refusal(f"Error: {shown} is a directory. You can only open files. Use cd or ls to navigate "
                           "directories.")
        if not kind.isdigit():
            raise _Refusal(f"File {shown} not found")
        if int(kind) > MAX_OPEN_BYTES:
            raise _Refusal(f"Error: {shown} is {int(kind)} bytes, too large for the viewer. "
                           "Read parts of it with head, tail or grep.")
        try:
            data = self.sandbox.read_file(path, MAX_OPEN_BYTES)
        except (ConnectionError, TimeoutError):
            raise
        except OSError as e:  # a link out of the workspace, a special file, …: refused, as the agent's own doing
            raise _Refusal(f"Error: {shown} cannot be opened ({e.strerror or e}).") from None
        if path.lower().endswith(_IMAGE_SUFFIXES) or data.startswith(_IMAGE_MAGIC):
            raise _Refusal(f"Error: {shown} is an image file. Current environment does not support image viewing.")
        try:
            if b"\0" in data[:8192]:
                raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refusal(f"Error: {shown} is a binary file and cannot be shown as text.") from None

    def _probe(self, script: str) -> str:
        res = self.sandbox.exec(script, self.cfg.command_timeout_s)
        if res.timed_out:
            raise SandboxError(f"a file check timed out after {self.cfg.command_timeout_s}s ({script!r}); "
                               "the sandbox is unresponsive")
        lines = res.output.strip().splitlines()
        return lines[-1].strip() if lines else ""  # the answer is the last line; a runtime may print notices first

    def _search_root(self, usage: str, argv: list[str]) -> tuple[str, str]:
        """(term, the real path of the directory) of search_dir/find_file; _Refusal with MLGym's texts."""
        if len(argv) not in (1, 2):
            raise _Refusal(usage)
        where = argv[1] if len(argv) == 2 else "./"
        real = self._probe(f"cd -- {_q(self.cwd)} && if [ -d {_q(where)} ]; then realpath -- {_q(where)}; "
                           "else echo /dev/null/missing; fi")
        if real == "/dev/null/missing":
            raise _Refusal(f"Directory {where} not found")
        return argv[0], real

    def _run_search(self, script: str) -> str:
        res = self.sandbox.exec(script, self.cfg.command_timeout_s)
        if res.timed_out:
            raise _Refusal(timeout_notice(self.cfg.command_timeout_s, restarted=False).lstrip("\n"))
        return res.output

    def _search_dir(self, _name: str, argv: list[str]) -> str:
        term, directory = self._search_root("Usage: search_dir <search_term> [<dir>]", argv)
        out = self._run_search(f"find {_q(directory)} -type f ! -path '*/.*' -exec grep -nIH -- {_q(term)} {{}} + "
                               "2>/dev/null | cut -d: -f1 | LC_ALL=C sort | uniq -c")
        counts: dict[str, int] = {}
        for line in out.splitlines():
            k, _, path = line.strip().partition(" ")
            if k.isdigit() and path:
                counts[path] = int(k)
        return format_dir_matches(term, directory, counts)

    def _search_file(self, _name: str, argv: list[str]) -> str:
        if not argv or not argv[0]:
            return "Usage: search_file <search_term> [<file>]"
        if len(argv) > 1 and argv[1]:
            real = self._probe(f"cd -- {_q(self.cwd)} && if [ -f {_q(argv[1])} ]; then realpath -- {_q(argv[1])}; "
                               "else echo /dev/null/missing; fi")
            if real == "/dev/null/missing":
                return (f"Usage: search_file <search_term> [<file>]\nError: File name {argv[1]} not found. "
                        "Please provide a valid file name.")
        else:
            real = self._require_open()
        out = self._run_search(f"grep -n -- {_q(argv[0])} {_q(real)} 2>/dev/null")
        matches: list[tuple[int, str]] = []
        for line in out.splitlines():
            n, sep, text = line.partition(":")
            if sep and n.isdigit():
                matches.append((int(n), text))
        return format_file_matches(argv[0], real, matches)

    def _find_file(self, _name: str, argv: list[str]) -> str:
        name, directory = self._search_root("Usage: find_file <file_name> [<dir>]", argv)
        out = self._run_search(f"find {_q(directory)} -type f -name {_q(name)} 2>/dev/null")
        return format_found_files(name, directory, [p for p in out.splitlines() if p])

    # --- bash -----------------------------------------------------------------------------------------

    def _session(self) -> Shell:
        if self._shell is None or not self._shell.alive:
            if self._shell is not None:
                log.info("the shell session ended (the agent exited it?); starting a new one")
            self._shell = self.sandbox.shell(functions=SHELL_FUNCTIONS)
        return self._shell

    def _bash(self, command: str) -> tuple[str, bool]:
        self._scored = []
        if self.cfg.profile == "synthscale":
            reason = cmds.refusal(command)
            if reason is not None:
                log.debug("refused command %r: %s", command[:80], reason)
                return reason, False
        if "\0" in command:
            return "The command contains a NUL character, which a shell command cannot hold. Remove it.", False
        timeout_s = cmds.timeout_for(command, self.cfg.command_timeout_s, self.training_timeout_s)
        res = self._session().run(command, timeout_s, on_call=self._on_call)
        if res.cwd.startswith("/"):
            self.cwd = res.cwd
        output = res.output.rstrip()
        if res.output_truncated:
            output += "\n[The command printed more output than the sandbox keeps; the rest was dropped.]"
        if res.timed_out or res.session_restarted:
            output += timeout_notice(timeout_s, restarted=res.session_restarted)
            log.debug("command timed out after %ss (session restarted: %s): %r", timeout_s, res.session_restarted,
                      command[:80])
        if not output.strip() and res.exit_code != 0 and self.cfg.profile == "synthscale":
            output = f"The command exited with status {res.exit_code} and did not produce any output."
        return output, res.timed_out


def _q(path: str) -> str:
    return shlex.quote(path)


def _name_of(c: cmds.Command) -> str:
    return {cmds.Edit: "edit", cmds.Insert: "insert"}[type(c)]
