"""AgentEnvironment against `DirSandbox`, a test double that runs bash in a temporary directory (no isolation)."""

import shlex
from pathlib import Path

import pytest
from sandbox_double import DirSandbox

from engine.agent.environment import SHELL_FUNCTIONS, AgentEnvironment
from engine.config import AgentConfig
from engine.protocols import ShellResult

_MARK = "__test_pwd__"


class LoneCallShell:
    """Stand-in for `DirSandbox.shell()` while it does not exist: a lone special command goes to `on_call`, any
    other command runs in a fresh bash that starts where the last one ended (variables do not persist)."""

    def __init__(self, sandbox: DirSandbox, functions: tuple[str, ...]):
        self.sandbox, self.functions, self.cwd, self.alive = sandbox, functions, sandbox.workdir, True

    def run(self, command, timeout_s, on_call=None) -> ShellResult:
        words = shlex.split(command) if command.strip() else []
        if words and words[0] in self.functions and not any(c in command for c in ";&|\n"):
            out, code = on_call(words[0], words[1:], self.cwd)
            return ShellResult(exit_code=code, output=out, cwd=self.cwd)
        res = self.sandbox.exec(f"cd {shlex.quote(self.cwd)}\n{command}\nprintf '\\n{_MARK}%s' \"$PWD\"", timeout_s)
        out, _, pwd = res.output.rpartition(f"\n{_MARK}")
        self.cwd = pwd.strip() or self.cwd
        return ShellResult(exit_code=res.exit_code, output=out if pwd else res.output, timed_out=res.timed_out, cwd=self.cwd)

    def close(self) -> None:
        self.alive = False


def _sandbox(ws: Path) -> DirSandbox:
    sandbox = DirSandbox(ws)
    if not hasattr(DirSandbox, "shell"):
        sandbox.shell = lambda functions=(): LoneCallShell(sandbox, tuple(functions))  # type: ignore[attr-defined]
    return sandbox

EMPTY = "Your command ran successfully and did not produce any output."


class RecordingScorer:
    """Scorer test double: answers with a fixed text and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def score(self, kind: str, step: int) -> str:
        self.calls.append((kind, step))
        return f"{kind} score at step {step}"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.txt").write_text("".join(f"line {i}\n" for i in range(1, 13)))
    (root / "m.py").write_text("import os\n\n\ndef f(x):\n    return x + 1\n\n\nprint(f(os.sep))\n")
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text("x,y\n1,2\n")
    (root / "src").mkdir()
    (root / "src" / "model.py").write_text("lr = 0.1\nepochs = 3\nlr_decay = 0.5\n")
    return root.resolve()


def make_env(ws: Path, **cfg: object) -> tuple[AgentEnvironment, DirSandbox, RecordingScorer]:
    sandbox, scorer = _sandbox(ws), RecordingScorer()
    settings = {"window_lines": 6, "command_timeout_s": 5.0, **cfg}
    env = AgentEnvironment(sandbox, AgentConfig(**settings), training_timeout_s=60.0,
                           read_only_paths=["data"], scorer=scorer)
    return env, sandbox, scorer


def test_open_shows_the_first_window(ws: Path) -> None:
    env, _, _ = make_env(ws)
    r = env.execute("open a.txt", 0)
    path = f"{ws}/a.txt"
    assert r.observation == (f"[File: {path} (12 lines total)]\n1:line 1\n2:line 2\n3:line 3\n4:line 4\n"
                             "5:line 5\n6:line 6\n(6 more lines below)")
    assert (env.open_file, env.first_line) == (path, 1)
    assert not r.submitted and not r.timed_out


def test_open_at_a_line_goto_and_scroll(ws: Path) -> None:
    env, _, _ = make_env(ws)
    r = env.execute('open "a.txt" 6', 0)  # window 6: MLGym puts the line 6 // 6 - 1 = 0 lines below the top
    assert r.observation.splitlines()[1:] == ["(5 more lines above)", "6:line 6", "7:line 7", "8:line 8",
                                              "9:line 9", "10:line 10", "11:line 11", "(1 more lines below)"]
    assert env.execute("goto 12", 1).observation.splitlines()[1:3] == ["(6 more lines above)", "7:line 7"]
    assert env.first_line == 7
    assert env.execute("scroll_up", 2).observation.splitlines()[1:3] == ["(2 more lines above)", "3:line 3"]
    assert env.execute("scroll_up", 3).observation.splitlines()[1] == "1:line 1"
    env.execute("scroll_down", 4)
    assert env.first_line == 5
    assert env.execute("goto 13", 5).observation == "Error: <line> must be less than or equal to 12"
    assert env.first_line == 5


def test_open_past_the_end_warns_and_shows_the_last_line(ws: Path) -> None:
    env, _, _ = make_env(ws)
    obs = env.execute("open a.txt 40", 0).observation
    assert obs.splitlines()[:3] == ["Warning: <line_number> (40) is greater than the number of lines in the file (12)",
                                    "Warning: Setting <line_number> to 12", f"[File: {ws}/a.txt (12 lines total)]"]


def test_commands_that_need_an_open_file(ws: Path) -> None:
    env, _, _ = make_env(ws)
    assert env.execute("scroll_down", 0).observation == (
        "No file open. Use the open command first."
    )
    assert env.execute("edit 1:1\nx\nend_of_edit", 0).observation == (
        "No file open. Use the `open` command first."
    )


def test_open_refuses_directories_missing_binary_and_image_files(ws: Path) -> None:
    (ws / "blob.bin").write_bytes(b"\x00\x01\x02garbage")
    (ws / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    env, _, _ = make_env(ws)
    assert env.execute("open src", 0).observation == (
        "Error: src is a directory. You can only open files. Use cd or ls to navigate directories."
    )
    assert env.execute("open nope.py", 0).observation == "File nope.py not found"
    assert env.execute("open blob.bin", 0).observation == "Error: blob.bin is a binary file and cannot be shown as text."
    assert env.execute("open plot.png", 0).observation == "Error: plot.png is an image file. Current environment does not support image viewing."
    assert env.open_file is None


def test_edit_writes_the_file_and_shows_the_window(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("open a.txt", 0)
    obs = env.execute("edit 8:9\nEIGHT\nend_of_edit", 1).observation
    assert (ws / "a.txt").read_text().splitlines()[6:9] == ["line 7", "EIGHT", "line 10"]
    assert obs == (f"[File: {ws}/a.txt (11 lines total)]\n(4 more lines above)\n5:line 5\n6:line 6\n7:line 7\n"
                   "8:EIGHT\n9:line 10\n10:line 11\n(1 more lines below)\n"
                   "File updated. Please review the changes and make sure they are correct (correct indentation, no "
                   "duplicate lines, etc). Edit the file again if necessary.")
    env.execute("insert 0\nTOP\nend_of_insert", 2)
    assert (ws / "a.txt").read_text().splitlines()[:2] == ["TOP", "line 1"]


def test_edit_out_of_range_is_reported_and_changes_nothing(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("open a.txt", 0)
    before = (ws / "a.txt").read_text()
    assert env.execute("edit 11:14\nx\nend_of_edit", 1).observation == (
        "Usage: edit <start_line>:<end_line>\n<replacement lines>\nend_of_edit\n"
        "Error: end line 14 is past the end of the file, which has 12 lines; use an end line from 11 to 12. "
        "The file was not changed."
    )
    assert (ws / "a.txt").read_text() == before


def test_python_edit_that_adds_a_lint_error_is_reverted(ws: Path) -> None:
    env, _, _ = make_env(ws, window_lines=100)
    env.execute("open m.py", 0)
    before = (ws / "m.py").read_text()
    obs = env.execute("edit 5:5\n    return y + 1\nend_of_edit", 1).observation
    assert (ws / "m.py").read_text() == before
    rule = "-" * 49
    assert obs == (
        "Your proposed edit has introduced new syntax error(s). Please read this error message carefully and then "
        "retry editing the file.\n\n"
        "ERRORS:\n- m.py:5:12: F821 undefined name 'y'\n\n"
        f"This is how your edit would have looked if applied\n{rule}\n[File: {ws}/m.py (8 lines total)]\n"
        "1:import os\n2:\n3:\n4:def f(x):\n5:    return y + 1\n6:\n7:\n8:print(f(os.sep))\n"
        f"{rule}\n\nThis is the original code before your edit\n{rule}\n[File: {ws}/m.py (8 lines total)]\n"
        "1:import os\n2:\n3:\n4:def f(x):\n5:    return x + 1\n6:\n7:\n8:print(f(os.sep))\n"
        f"{rule}\nYour changes have NOT been applied. Please fix your edit command and try again.\n"
        "You either need to 1) Specify the correct start/end line arguments or 2) Correct your edit code.\n"
        "DO NOT re-run the same failed edit command. Running it again will lead to the same error."
    )
    bad_indent = env.execute("edit 5:5\nreturn x + 1\nend_of_edit", 2).observation
    assert "E999 IndentationError: expected an indented block after function definition on line 4" in bad_indent
    assert (ws / "m.py").read_text() == before


def test_python_edit_keeps_errors_that_were_already_there(ws: Path) -> None:
    (ws / "old.py").write_text("print(undefined_thing)\nx = 1\n")
    env, _, _ = make_env(ws)
    env.execute("open old.py", 0)
    obs = env.execute("insert 0\nimport sys\nend_of_insert", 1).observation
    assert obs.endswith("Edit the file again if necessary.")
    assert (ws / "old.py").read_text() == "import sys\nprint(undefined_thing)\nx = 1\n"


def test_read_only_files_refuse_edits_and_create(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("open data/train.csv", 0)
    assert env.execute("edit 1:1\na,b\nend_of_edit", 1).observation == (
        f"Error: You cannot edit read-only file {ws}/data/train.csv"
    )
    assert (ws / "data" / "train.csv").read_text() == "x,y\n1,2\n"
    assert env.execute("create data/new.csv", 2).observation == (
        "bash: data/new.csv: Permission denied\nFile data/new.csv not found")


def test_create(ws: Path) -> None:
    env, _, _ = make_env(ws)
    assert env.execute("create src/new.py", 0).observation == f"[File: {ws}/src/new.py (1 lines total)]\n1:"
    assert (ws / "src" / "new.py").read_text() == "\n"
    assert env.open_file == f"{ws}/src/new.py"
    env.execute("edit 1:1\nimport os\nprint(os.sep)\nend_of_edit", 1)
    assert (ws / "src" / "new.py").read_text() == "import os\nprint(os.sep)\n"
    assert env.execute("create src/new.py", 2).observation.startswith(
        f"Error: File 'src/new.py' already exists.\n[File: {ws}/src/new.py (2 lines total)]"
    )
    assert env.execute("create nodir/x.py", 3).observation == (
        "bash: nodir/x.py: No such file or directory\nFile nodir/x.py not found"
    )


def test_searches(ws: Path) -> None:
    env, _, _ = make_env(ws)
    assert env.execute("search_file lr src/model.py", 0).observation == (
        f'Found 2 matches for "lr" in {ws}/src/model.py:\nLine 1:lr = 0.1\nLine 3:lr_decay = 0.5\n'
        f'End of matches for "lr" in {ws}/src/model.py'
    )
    assert env.execute("search_file lr", 1).observation == "No file open. Use the open command first."
    assert env.execute('search_dir "return x"', 2).observation == (
        f'Found 1 matches for "return x" in {ws}:\n{ws}/m.py (1 matches)\nEnd of matches for "return x" in {ws}'
    )
    assert env.execute("search_dir lr nowhere", 3).observation == "Directory nowhere not found"
    assert env.execute("find_file '*.py'", 4).observation == (
        f'Found 2 matches for "*.py" in {ws}:\n' + "\n".join(
            __import__("subprocess").check_output(["find", str(ws), "-type", "f", "-name", "*.py"], text=True).split())
    )
    assert env.execute("find_file zzz src", 5).observation == f'No matches found for "zzz" in {ws}/src'


def test_bash_output_cwd_tracking_and_empty_output(ws: Path) -> None:
    env, _, _ = make_env(ws)
    assert env.execute("cd src", 0).observation == EMPTY
    assert env.cwd == f"{ws}/src"
    assert env.execute("pwd && ls", 1).observation == f"{ws}/src\nmodel.py"
    assert env.execute("open model.py", 2).observation.startswith(f"[File: {ws}/src/model.py")
    env.execute("cd .. ; exit 4", 3)  # the directory is tracked even when the command exits early
    assert env.cwd == str(ws)
    assert env.execute("false", 4).observation == EMPTY
    assert env.execute("echo out; echo err >&2", 5).observation == "out\nerr"


def test_refused_commands_do_not_run_in_the_synthscale_profile(ws: Path) -> None:
    env, sandbox, _ = make_env(ws, profile="synthscale")
    obs = env.execute("vim m.py", 0).observation
    assert obs.startswith("`vim` is not allowed here.")
    assert sandbox.calls == []


def test_timeouts_by_command_class(ws: Path) -> None:
    env, sandbox, _ = make_env(ws)
    seen: list[float] = []
    shell = sandbox.shell(functions=())
    env._shell = type("Recording", (), {"alive": True, "close": lambda self: shell.close(),
                                        "run": lambda self, c, t, on_call=None: (seen.append(t), shell.run(c, t, on_call))[1]})()
    env.execute("ls", 0)
    env.execute("python3 -c 'print(1)'", 1)
    assert seen == [5.0, 60.0]

def test_a_command_past_its_limit_is_interrupted(ws: Path) -> None:
    env, _, _ = make_env(ws, command_timeout_s=0.5)
    r = env.execute("echo started; sleep 30", 0)
    assert r.timed_out
    assert r.observation.startswith("started\n")
    assert r.observation.endswith("\nEXECUTION TIMED OUT BECAUSE THE COMMAND WAS RUNNING FOR MORE THAN 0.5 SECONDS.")


def test_long_output_is_truncated(ws: Path) -> None:
    env, _, _ = make_env(ws, max_observation_chars=300)
    obs = env.execute("seq 1 1000", 0).observation
    assert len(obs) <= 300
    assert obs.startswith("1\n2\n3\n") and obs.endswith("999\n1000")
    assert "[... observation truncated: " in obs


def test_validate_and_submit_ask_the_scorer(ws: Path) -> None:
    env, _, scorer = make_env(ws)
    r = env.execute("validate", 3)
    assert (r.observation, r.submitted) == ("validate score at step 3", False)
    r = env.execute("submit", 4)
    assert (r.observation, r.submitted) == ("submit score at step 4", True)
    assert scorer.calls == [("validate", 3), ("submit", 4)]


def test_usage_errors_become_the_observation(ws: Path) -> None:
    env, sandbox, _ = make_env(ws)
    assert env.execute("goto", 0).observation == "No file open. Use the open command first."
    env.execute("open a.txt", 1)
    assert env.execute("goto x", 2).observation == "Usage: goto <line>\nError: <line> must be a number"
    assert env.execute("open", 3).observation == 'Usage: open "<file>"'


def test_footer_shows_state(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("open src/model.py", 0)
    env.execute("cd data", 1)
    assert env.footer(2, 48) == (
        f"(Current Step: 2, Remaining Steps: 48)\n(Open file: {ws}/src/model.py)\n(Current directory: {ws}/data)\nbash-$"
    )


@pytest.mark.skipif(not hasattr(DirSandbox, "shell"), reason="needs DirSandbox.shell (the persistent shell double)")
def test_special_commands_work_inside_command_lines_and_state_persists(ws: Path) -> None:
    env, _, scorer = make_env(ws)
    assert env.execute("export K=7 && cd src", 0).observation == EMPTY
    assert env.execute("echo $K && open model.py | head -n 2", 1).observation == (
        f"7\n[File: {ws}/src/model.py (3 lines total)]\n1:lr = 0.1")
    assert env.open_file == f"{ws}/src/model.py"
    r = env.execute("echo trained && submit", 2)
    assert (r.observation, r.submitted, scorer.calls) == ("submit score at step 2", True, [("submit", 2)])
