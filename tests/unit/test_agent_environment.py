"""AgentEnvironment against `DirSandbox`, a test double that runs bash in a temporary directory (no isolation)."""

from pathlib import Path

import pytest
from sandbox_double import DirSandbox

from engine.agent.environment import AgentEnvironment
from engine.config import AgentConfig

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
    sandbox, scorer = DirSandbox(ws), RecordingScorer()
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
    r = env.execute('open "a.txt" 6', 0)  # window 6: the line is 6 // 6 = 1 line below the top
    assert r.observation.splitlines()[1:] == ["(4 more lines above)", "5:line 5", "6:line 6", "7:line 7",
                                              "8:line 8", "9:line 9", "10:line 10", "(2 more lines below)"]
    assert env.execute("goto 12", 1).observation.splitlines()[1:3] == ["(6 more lines above)", "7:line 7"]
    assert env.first_line == 7
    assert env.execute("scroll_up", 2).observation.splitlines()[1:3] == ["(2 more lines above)", "3:line 3"]
    assert env.execute("scroll_up", 3).observation.splitlines()[1] == "1:line 1"
    env.execute("scroll_down", 4)
    assert env.first_line == 5
    assert env.execute("goto 13", 5).observation == f"Error: <line_number> must be from 1 to 12, the number of lines in {ws}/a.txt."
    assert env.first_line == 5


def test_open_past_the_end_warns_and_shows_the_last_line(ws: Path) -> None:
    env, _, _ = make_env(ws)
    obs = env.execute("open a.txt 40", 0).observation
    assert obs.splitlines()[:3] == ["Warning: line 40 is past the end of the file (12 lines); showing line 12.",
                                    f"[File: {ws}/a.txt (12 lines total)]", "(6 more lines above)"]


def test_commands_that_need_an_open_file(ws: Path) -> None:
    env, _, _ = make_env(ws)
    assert env.execute("scroll_down", 0).observation == (
        "No file is open. Open one first with `open <path>` (usage: scroll_down)."
    )
    assert env.execute("edit 1:1\nx\nend_of_edit", 0).observation == (
        "No file is open. Open one first with `open <path>` (usage: edit <start_line>:<end_line>)."
    )


def test_open_refuses_directories_missing_binary_and_image_files(ws: Path) -> None:
    (ws / "blob.bin").write_bytes(b"\x00\x01\x02garbage")
    (ws / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    env, _, _ = make_env(ws)
    assert env.execute("open src", 0).observation == (
        f"Error: {ws}/src is a directory. Only files can be opened; list it with `ls {ws}/src`."
    )
    assert env.execute("open nope.py", 0).observation == f"Error: file {ws}/nope.py not found."
    assert env.execute("open blob.bin", 0).observation == f"Error: {ws}/blob.bin is a binary file and cannot be shown as text."
    assert env.execute("open plot.png", 0).observation == f"Error: {ws}/plot.png is an image file. This environment cannot show images."
    assert env.open_file is None


def test_edit_writes_the_file_and_shows_the_window(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("open a.txt", 0)
    obs = env.execute("edit 8:9\nEIGHT\nend_of_edit", 1).observation
    assert (ws / "a.txt").read_text().splitlines()[6:9] == ["line 7", "EIGHT", "line 10"]
    assert obs == (f"[File: {ws}/a.txt (11 lines total)]\n(4 more lines above)\n5:line 5\n6:line 6\n7:line 7\n"
                   "8:EIGHT\n9:line 10\n10:line 11\n(1 more lines below)\n"
                   "File updated. Check the lines above: the indentation, and no duplicated or missing lines. "
                   "Edit again if anything is wrong.")
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
    rule = "-" * 48
    assert obs == (
        "Your edit was NOT applied: it would introduce new error(s) in the file.\n\n"
        "ERRORS (line numbers as in the edited version):\n- m.py:5:12: F821 undefined name 'y'\n\n"
        f"How the code would look with your edit:\n{rule}\n[File: {ws}/m.py (8 lines total)]\n"
        "1:import os\n2:\n3:\n4:def f(x):\n5:    return y + 1\n6:\n7:\n8:print(f(os.sep))\n"
        f"{rule}\n\nThe code as it is now, unchanged:\n{rule}\n[File: {ws}/m.py (8 lines total)]\n"
        "1:import os\n2:\n3:\n4:def f(x):\n5:    return x + 1\n6:\n7:\n8:print(f(os.sep))\n"
        f"{rule}\n\nFix the line range or the replacement text (mind the indentation) and issue the edit again. "
        "Sending the same edit again gives the same error."
    )
    bad_indent = env.execute("edit 5:5\nreturn x + 1\nend_of_edit", 2).observation
    assert "E999 IndentationError: expected an indented block after function definition on line 4" in bad_indent
    assert (ws / "m.py").read_text() == before


def test_python_edit_keeps_errors_that_were_already_there(ws: Path) -> None:
    (ws / "old.py").write_text("print(undefined_thing)\nx = 1\n")
    env, _, _ = make_env(ws)
    env.execute("open old.py", 0)
    obs = env.execute("insert 0\nimport sys\nend_of_insert", 1).observation
    assert obs.endswith("Edit again if anything is wrong.")
    assert (ws / "old.py").read_text() == "import sys\nprint(undefined_thing)\nx = 1\n"


def test_read_only_files_refuse_edits_and_create(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("open data/train.csv", 0)
    assert env.execute("edit 1:1\na,b\nend_of_edit", 1).observation == (
        f"Error: {ws}/data/train.csv is read-only and cannot be changed. Write your changes in another file."
    )
    assert (ws / "data" / "train.csv").read_text() == "x,y\n1,2\n"
    assert env.execute("create data/new.csv", 2).observation.startswith(f"Error: {ws}/data/new.csv is read-only")


def test_create(ws: Path) -> None:
    env, _, _ = make_env(ws)
    assert env.execute("create src/new.py", 0).observation == f"[File: {ws}/src/new.py (1 lines total)]\n1:"
    assert (ws / "src" / "new.py").read_text() == "\n"
    assert env.open_file == f"{ws}/src/new.py"
    env.execute("edit 1:1\nimport os\nprint(os.sep)\nend_of_edit", 1)
    assert (ws / "src" / "new.py").read_text() == "import os\nprint(os.sep)\n"
    assert env.execute("create src/new.py", 2).observation.startswith(
        f"Error: file {ws}/src/new.py already exists.\n[File: {ws}/src/new.py (2 lines total)]"
    )
    assert env.execute("create nodir/x.py", 3).observation == (
        f"Error: directory {ws}/nodir does not exist. Create it first: mkdir -p {ws}/nodir"
    )


def test_searches(ws: Path) -> None:
    env, _, _ = make_env(ws)
    assert env.execute("search_file lr src/model.py", 0).observation == (
        f'Found 2 matches for "lr" in {ws}/src/model.py:\nLine 1:lr = 0.1\nLine 3:lr_decay = 0.5\n'
        f'End of matches for "lr" in {ws}/src/model.py'
    )
    assert env.execute("search_file lr", 1).observation.startswith("No file is open.")
    assert env.execute('search_dir "return x"', 2).observation == (
        f'Found 1 matches for "return x" in {ws}:\n{ws}/m.py (1 matches)\nEnd of matches for "return x" in {ws}'
    )
    assert env.execute("search_dir lr nowhere", 3).observation == f"Error: directory {ws}/nowhere not found."
    assert env.execute("find_file '*.py'", 4).observation == (
        f'Found 2 matches for "*.py" in {ws}:\n{ws}/m.py\n{ws}/src/model.py'
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
    assert env.execute("false", 4).observation == "The command exited with status 1 and did not produce any output."
    assert env.execute("echo out; echo err >&2", 5).observation == "out\nerr"


def test_bash_in_a_deleted_directory_falls_back_to_the_workspace(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("mkdir gone && cd gone", 0)
    env.execute("rmdir ../gone", 1)
    obs = env.execute("pwd", 2).observation
    assert obs == f"(the directory {ws}/gone no longer exists; running in {ws})\n{ws}"
    assert env.cwd == str(ws)


def test_refused_commands_do_not_run(ws: Path) -> None:
    env, sandbox, _ = make_env(ws)
    obs = env.execute("vim m.py", 0).observation
    assert obs.startswith("`vim` is not allowed here.")
    assert sandbox.calls == []


def test_timeouts_by_command_class(ws: Path) -> None:
    env, sandbox, _ = make_env(ws)
    env.execute("ls", 0)
    env.execute("python3 -c 'print(1)'", 1)
    assert [t for _, t in sandbox.calls] == [5.0, 60.0]


def test_a_command_past_its_limit_is_interrupted(ws: Path) -> None:
    env, _, _ = make_env(ws, command_timeout_s=0.5)
    r = env.execute("echo started; sleep 30", 0)
    assert r.timed_out
    assert r.observation == ("started\n\nThe command was interrupted: it ran longer than its 0.5-second limit. "
                             "Make it faster (less data, fewer epochs, a smaller model) or split it into shorter steps.")


def test_long_output_is_truncated(ws: Path) -> None:
    env, _, _ = make_env(ws, max_observation_chars=300)
    obs = env.execute("seq 1 1000", 0).observation
    assert len(obs) <= 300
    assert obs.startswith("1\n2\n3\n") and obs.endswith("999\n1000")
    assert "[... observation truncated: " in obs


def test_special_command_inside_a_shell_line_gets_a_hint(ws: Path) -> None:
    env, _, _ = make_env(ws)
    obs = env.execute("cd src && open model.py", 0).observation
    assert "open: command not found" in obs
    assert obs.endswith("send one of them alone in the code block, not as part of a shell command line.")


def test_validate_and_submit_ask_the_scorer(ws: Path) -> None:
    env, _, scorer = make_env(ws)
    r = env.execute("validate", 3)
    assert (r.observation, r.submitted) == ("validate score at step 3", False)
    r = env.execute("submit", 4)
    assert (r.observation, r.submitted) == ("submit score at step 4", True)
    assert scorer.calls == [("validate", 3), ("submit", 4)]


def test_usage_errors_become_the_observation(ws: Path) -> None:
    env, sandbox, _ = make_env(ws)
    assert env.execute("goto x", 0).observation == "Usage: goto <line_number>\nError: <line_number> must be a number, got 'x'."
    assert sandbox.calls == []


def test_footer_shows_state(ws: Path) -> None:
    env, _, _ = make_env(ws)
    env.execute("open src/model.py", 0)
    env.execute("cd data", 1)
    assert env.footer(2, 48) == (
        f"(Current Step: 2, Remaining Steps: 48)\n(Open file: {ws}/src/model.py)\n(Current directory: {ws}/data)\nbash-$"
    )
