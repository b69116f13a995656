"""The agent's research environment: runs one command on a sandbox and returns what the agent sees.

Reads and writes the sandbox's files (through `Sandbox.read_file`/`write_file`/`exec`); keeps the viewer's
state (open file, first visible line) and the shell's working directory between commands. Scoring is the
`Scorer`'s job; this module only asks for it.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shlex
import time
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from engine.agent import commands as cmds
from engine.agent.editing import (
    EditError, apply_edit, apply_insert, first_line_centred, first_line_showing, format_dir_matches,
    format_file_matches, format_found_files, render_window, scrolled, search_in_text, split_lines,
)
from engine.agent.lint import lint_python, new_lint_errors
from engine.agent.observation import EMPTY_OUTPUT, render_footer, truncate_observation
from engine.config import AgentConfig
from engine.errors import SandboxError
from engine.protocols import ExecResult, Sandbox

log = logging.getLogger(__name__)

CWD_MARKER = "__SYNTHSCALE_PWD_4b1d__"
"""Printed with the shell's final directory after each bash command, then cut from the output."""
MAX_OPEN_BYTES = 5_000_000
"""Larger files are not opened in the viewer; head, tail and grep read them in parts."""
SCROLL_WARNING_AFTER = 3
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ico")
_IMAGE_MAGIC = (b"\x89PNG\r\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_SPECIAL_NOT_FOUND = re.compile(rf"\b({'|'.join(cmds.USAGE)}): command not found")
_EDIT_DONE = ("File updated. Check the lines above: the indentation, and no duplicated or missing lines. "
              "Edit again if anything is wrong.")


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
    """MLGym's file viewer/editor, search commands, bash, validate and submit over one sandbox."""

    def __init__(self, sandbox: Sandbox, cfg: AgentConfig, *, training_timeout_s: float,
                 read_only_paths: list[str], scorer: Scorer):
        self.sandbox = sandbox
        self.cfg = cfg
        self.training_timeout_s = training_timeout_s
        self.scorer = scorer
        self.workdir: str = sandbox.workdir
        self.read_only = [posixpath.normpath(posixpath.join(self.workdir, p)) for p in read_only_paths]
        self.reset_state()

    def reset_state(self) -> None:
        """Back to the start: no open file, in the workspace (call after `sandbox.reset()`)."""
        self.cwd: str = self.workdir
        self.open_file: str | None = None
        self.first_line = 1
        self._scrolls = 0

    # --- the step -------------------------------------------------------------------------------------

    def execute(self, action: str, step: int) -> EnvResult:
        """Run `action` (one command as parsed from the reply) at `step`; never raises for the agent's
        mistakes, which become the observation. SandboxError means the sandbox itself failed."""
        started = time.monotonic()
        observation, submitted, timed_out = self._dispatch(action, step)
        observation = truncate_observation(observation or EMPTY_OUTPUT, self.cfg.max_observation_chars)
        return EnvResult(observation=observation, submitted=submitted, timed_out=timed_out,
                         duration_s=time.monotonic() - started)

    def _dispatch(self, action: str, step: int) -> tuple[str, bool, bool]:
        """(observation, submitted, timed_out) of one command."""
        try:
            command = cmds.parse_command(action)
        except cmds.UsageError as e:
            return str(e), False, False
        if not isinstance(command, (cmds.ScrollUp, cmds.ScrollDown)):
            self._scrolls = 0
        if isinstance(command, cmds.Bash):
            observation, timed_out = self._bash(command.command)
            return observation, False, timed_out
        if isinstance(command, cmds.Validate):
            return self.scorer.score("validate", step), False, False
        if isinstance(command, cmds.Submit):
            return self.scorer.score("submit", step), True, False
        try:
            return self._file_command(command), False, False
        except _Refusal as e:
            return str(e), False, False

    def footer(self, step: int, remaining: int) -> str:
        """The status lines that follow every observation."""
        return render_footer(step=step, remaining_steps=remaining, open_file=self.open_file, cwd=self.cwd)

    def resolve(self, path: str) -> str:
        """An absolute in-sandbox path: `path` taken relative to the current directory."""
        return posixpath.normpath(posixpath.join(self.cwd, path))

    def _file_command(self, c: cmds.Command) -> str:
        if isinstance(c, cmds.Open):
            return self._open(c)
        if isinstance(c, cmds.Create):
            return self._create(c.path)
        if isinstance(c, cmds.SearchDir):
            return self._search_dir(c.term, self.resolve(c.dir) if c.dir else self.cwd)
        if isinstance(c, cmds.FindFile):
            return self._find_file(c.name, self.resolve(c.dir) if c.dir else self.cwd)
        if isinstance(c, cmds.SearchFile):
            target = self.resolve(c.path) if c.path else self._require_open("search_file <term> <file>")
            return format_file_matches(c.term, target, search_in_text(self._load(target), c.term))
        path = self._require_open(cmds.USAGE[_name_of(c)])
        text = self._load(path)
        if isinstance(c, cmds.Goto):
            return self._goto(path, text, c.line)
        if isinstance(c, (cmds.ScrollUp, cmds.ScrollDown)):
            return self._scroll(path, text, down=isinstance(c, cmds.ScrollDown))
        if isinstance(c, (cmds.Edit, cmds.Insert)):
            return self._change(path, text, c)
        raise AssertionError(f"unhandled command {c!r}")

    # --- viewer ---------------------------------------------------------------------------------------

    def _open(self, c: cmds.Open) -> str:
        path = self.resolve(c.path)
        text = self._load(path)
        total = len(split_lines(text))
        notes: list[str] = []
        first = 1
        if c.line is not None:
            line = c.line
            if line > total:
                notes.append(f"Warning: line {line} is past the end of the file ({total} lines); showing line {total}.")
                line = total
            elif line < 1:
                notes.append(f"Warning: line {line} is before the first line; showing line 1.")
                line = 1
            first = first_line_showing(line, total, self.cfg.window_lines)
        self.open_file, self.first_line = path, first
        return "\n".join(notes + [self._window(path, text)])

    def _goto(self, path: str, text: str, line: int) -> str:
        total = len(split_lines(text))
        if not 1 <= line <= total:
            raise _Refusal(f"Error: <line_number> must be from 1 to {total}, the number of lines in {path}.")
        self.first_line = first_line_showing(line, total, self.cfg.window_lines)
        return self._window(path, text)

    def _scroll(self, path: str, text: str, down: bool) -> str:
        total = len(split_lines(text))
        self.first_line = scrolled(self.first_line, total, self.cfg.window_lines, down)
        self._scrolls += 1
        out = self._window(path, text)
        if self._scrolls >= SCROLL_WARNING_AFTER:
            out += ("\n\nNote: scrolling page by page is slow. If you know what you are looking for, "
                    "`search_file <term>` or `goto <line_number>` gets there in one step.")
        return out

    def _window(self, path: str, text: str) -> str:
        return render_window(path, text, self.first_line, self.cfg.window_lines)

    def _create(self, raw: str) -> str:
        path = self.resolve(raw)
        self._refuse_read_only(path)
        parent = posixpath.dirname(path)
        state = self._probe(f"if [ -e {_q(path)} ]; then echo exists; elif [ -d {_q(parent)} ]; then echo ok; "
                            f"else echo noparent; fi")
        if state == "exists":
            return f"Error: file {path} already exists.\n" + self._open(cmds.Open(raw))
        if state == "noparent":
            raise _Refusal(f"Error: directory {parent} does not exist. Create it first: mkdir -p {parent}")
        self.sandbox.write_file(path, b"\n")
        return self._open(cmds.Open(raw))

    # --- editor ---------------------------------------------------------------------------------------

    def _change(self, path: str, text: str, c: cmds.Edit | cmds.Insert) -> str:
        self._refuse_read_only(path)
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
        return self._window(path, new) + "\n" + _EDIT_DONE

    def _lint_failure(self, path: str, old: str, new: str, start: int, old_span: int, new_span: int,
                      errors: list[str]) -> str:
        first = max(1, start - 5)
        rule = "-" * 48
        proposed = render_window(path, new, first, start - first + new_span + 5)
        original = render_window(path, old, first, start - first + old_span + 5)
        listed = "\n".join(f"- {e}" for e in errors)
        return (
            "Your edit was NOT applied: it would introduce new error(s) in the file.\n\n"
            f"ERRORS (line numbers as in the edited version):\n{listed}\n\n"
            f"How the code would look with your edit:\n{rule}\n{proposed}\n{rule}\n\n"
            f"The code as it is now, unchanged:\n{rule}\n{original}\n{rule}\n\n"
            "Fix the line range or the replacement text (mind the indentation) and issue the edit again. "
            "Sending the same edit again gives the same error."
        )

    def _refuse_read_only(self, path: str) -> None:
        if any(path == r or path.startswith(r + "/") for r in self.read_only):
            raise _Refusal(f"Error: {path} is read-only and cannot be changed. Write your changes in another file.")

    # --- files and searches through the sandbox ------------------------------------------------------

    def _require_open(self, usage: str) -> str:
        if self.open_file is None:
            raise _Refusal(f"No file is open. Open one first with `open <path>` (usage: {usage.splitlines()[0]}).")
        return self.open_file

    def _load(self, path: str) -> str:
        """The text of a file the viewer may show; _Refusal for directories, missing, huge, binary files."""
        q = _q(path)
        kind = self._probe(f"if [ -d {q} ]; then echo dir; elif [ -f {q} ]; then wc -c < {q}; else echo missing; fi")
        if kind == "dir":
            raise _Refusal(f"Error: {path} is a directory. Only files can be opened; list it with `ls {path}`.")
        if not kind.isdigit():
            raise _Refusal(f"Error: file {path} not found.")
        if int(kind) > MAX_OPEN_BYTES:
            raise _Refusal(f"Error: {path} is {int(kind)} bytes, too large for the viewer. "
                           "Read parts of it with head, tail or grep.")
        try:
            data = self.sandbox.read_file(path, MAX_OPEN_BYTES)
        except (ConnectionError, TimeoutError):
            raise
        except OSError as e:  # a link out of the workspace, a special file, …: refused, as the agent's own doing
            raise _Refusal(f"Error: {path} cannot be opened ({e.strerror or e}).") from None
        if path.lower().endswith(_IMAGE_SUFFIXES) or data.startswith(_IMAGE_MAGIC):
            raise _Refusal(f"Error: {path} is an image file. This environment cannot show images.")
        try:
            if b"\0" in data[:8192]:
                raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refusal(f"Error: {path} is a binary file and cannot be shown as text.") from None

    def _probe(self, script: str) -> str:
        res = self.sandbox.exec(script, self.cfg.command_timeout_s)
        if res.timed_out:
            raise SandboxError(f"a file check timed out after {self.cfg.command_timeout_s}s ({script!r}); "
                               "the sandbox is unresponsive")
        lines = res.output.strip().splitlines()
        return lines[-1].strip() if lines else ""  # the answer is the last line; a runtime may print notices first

    def _search_dir(self, term: str, directory: str) -> str:
        q = _q(directory)
        res = self.sandbox.exec(f"test -d {q} || exit 3; grep -rIcF -e {_q(term)} -- {q} 2>/dev/null | grep -v ':0$'; "
                                "exit 0", self.cfg.command_timeout_s)
        self._check_search(res, directory)
        counts = {}
        for line in res.output.splitlines():
            path, _, k = line.rpartition(":")
            if path and k.isdigit():
                counts[path] = int(k)
        return format_dir_matches(term, directory, counts)

    def _find_file(self, name: str, directory: str) -> str:
        q = _q(directory)
        res = self.sandbox.exec(f"test -d {q} || exit 3; find {q} -type f -name {_q(name)} 2>/dev/null; exit 0",
                                self.cfg.command_timeout_s)
        self._check_search(res, directory)
        return format_found_files(name, directory, [p for p in res.output.splitlines() if p])

    def _check_search(self, res: ExecResult, directory: str) -> None:
        if res.timed_out:
            raise _Refusal(f"The search was interrupted after {self.cfg.command_timeout_s:g} seconds. "
                           "Search a smaller directory.")
        if res.exit_code == 3:
            raise _Refusal(f"Error: directory {directory} not found.")

    # --- bash -----------------------------------------------------------------------------------------

    def _bash(self, command: str) -> tuple[str, bool]:
        reason = cmds.refusal(command)
        if reason is not None:
            log.debug("refused command %r: %s", command[:80], reason)
            return reason, False
        if "\0" in command:
            return "The command contains a NUL character, which a shell command cannot hold. Remove it.", False
        timeout_s = cmds.timeout_for(command, self.cfg.command_timeout_s, self.training_timeout_s)
        cwd, home = _q(self.cwd), _q(self.workdir)
        script = (
            f"cd -- {cwd} 2>/dev/null || {{ printf '(the directory %s no longer exists; running in %s)\\n' "
            f"{cwd} {home}; cd -- {home}; }}; trap 'printf \"\\n{CWD_MARKER}%s\\n\" \"$PWD\"' EXIT\n"
            f"{command}\n"
        )
        res = self.sandbox.exec(script, timeout_s, cwd=self.workdir)
        output = res.output
        at = output.rfind("\n" + CWD_MARKER)
        if at >= 0:
            new_cwd = output[at + 1 + len(CWD_MARKER):].split("\n", 1)[0].strip()
            if new_cwd.startswith("/"):
                self.cwd = new_cwd
            output = output[:at]
        output = output.rstrip()
        if _SPECIAL_NOT_FOUND.search(output):
            output += ("\n\nNote: open, goto, scroll_up, scroll_down, create, edit, insert, search_file, search_dir, "
                       "find_file, validate and submit are commands of this environment, not programs: send one of "
                       "them alone in the code block, not as part of a shell command line.")
        if res.output_truncated:
            output += "\n[The command printed more output than the sandbox keeps; the rest was dropped.]"
        if res.timed_out:
            note = (f"The command was interrupted: it ran longer than its {timeout_s:g}-second limit. Make it "
                    "faster (less data, fewer epochs, a smaller model) or split it into shorter steps.")
            output = f"{output}\n\n{note}" if output else note
            log.debug("command timed out after %ss: %r", timeout_s, command[:80])
        if not output.strip():
            output = EMPTY_OUTPUT if res.exit_code == 0 else _silent_failure(res.exit_code)
        return output, res.timed_out


def _silent_failure(exit_code: int) -> str:
    return f"The command exited with status {exit_code} and did not produce any output."


def _q(path: str) -> str:
    return shlex.quote(path)


def _name_of(c: cmds.Command) -> str:
    return {cmds.Goto: "goto", cmds.ScrollUp: "scroll_up", cmds.ScrollDown: "scroll_down", cmds.Edit: "edit",
            cmds.Insert: "insert"}[type(c)]
