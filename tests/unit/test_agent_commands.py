"""parse_command's structured commands and usage errors, refusals of interactive programs, timeout classes."""

import pytest

from engine.agent.commands import (
    Bash, Create, Edit, FindFile, Goto, Insert, Open, ScrollDown, ScrollUp, SearchDir, SearchFile, Submit,
    UsageError, Validate, parse_command, refusal, timeout_for,
)


@pytest.mark.parametrize(
    ("action", "command"),
    [
        ('open "src/my file.py"', Open("src/my file.py", None)),
        ("open train.py 120", Open("train.py", 120)),
        ("goto 7", Goto(7)),
        ("scroll_up", ScrollUp()),
        ("scroll_down", ScrollDown()),
        ("create new.py", Create("new.py")),
        ('search_file "def main"', SearchFile("def main", None)),
        ("search_file lr src/train.py", SearchFile("lr", "src/train.py")),
        ("search_dir import", SearchDir("import", None)),
        ("search_dir import src", SearchDir("import", "src")),
        ("find_file '*.py' src", FindFile("*.py", "src")),
        ("validate", Validate()),
        ("submit", Submit()),
        ("submit submission.csv", Submit()),
        ("ls -la", Bash("ls -la")),
        ("python train.py --epochs 3\necho done", Bash("python train.py --epochs 3\necho done")),
        ("opener x", Bash("opener x")),
    ],
)
def test_parse_command(action: str, command: object) -> None:
    assert parse_command(action) == command


def test_edit_and_insert_blocks() -> None:
    assert parse_command("edit 3:5\n    x = 1\n\n    y = 2\nend_of_edit") == Edit(3, 5, "    x = 1\n\n    y = 2\n")
    assert parse_command("edit 4 : 4\nend_of_edit\n") == Edit(4, 4, "")
    assert parse_command("edit 2:2\n\nend_of_edit") == Edit(2, 2, "\n")
    assert parse_command("insert 0\nimport os\nend_of_insert") == Insert(0, "import os\n")


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("goto", "Usage: goto <line_number>\nError: give exactly one line number."),
        ("goto ten", "Usage: goto <line_number>\nError: <line_number> must be a number, got 'ten'."),
        ("open a.py x", "Usage: open \"<path>\" [<line_number>]\nError: <line_number> must be a number, got 'x'."),
        ("open", 'Usage: open "<path>" [<line_number>]\nError: give a path and, optionally, a line number.'),
        ("open 'a.py", "Usage: open \"<path>\" [<line_number>]\nError: its arguments could not be read "
                       "(No closing quotation); check the quotes."),
        ("scroll_down 5", "Usage: scroll_down\nError: it takes no arguments."),
        ("open a.py\nls", 'Usage: open "<path>" [<line_number>]\nError: a reply holds one command; '
                          "run the other lines in your next turn."),
        ("edit 1:2\nx = 1", "Usage: edit <start_line>:<end_line>\n<replacement lines>\nend_of_edit\n"
                            "Error: the lines must be followed by a line holding only end_of_edit."),
        ("edit 1-2\nx\nend_of_edit", "Usage: edit <start_line>:<end_line>\n<replacement lines>\nend_of_edit\n"
                                     "Error: the range must be two line numbers separated by a colon, got '1-2'."),
        ("edit 1:1\nx\nend_of_edit\nls", "Usage: edit <start_line>:<end_line>\n<replacement lines>\nend_of_edit\n"
                                         "Error: nothing may follow end_of_edit; run other commands in your next turn."),
        ("search_dir a b c", "Usage: search_dir <term> [<dir>]\nError: give the term and, optionally, where to look; "
                             "quote a term that has spaces."),
    ],
)
def test_usage_errors(action: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_command(action)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("command", "refused_prog"),
    [
        ("vim train.py", "vim"),
        ("ls && nano x.py", "nano"),
        ("emacs -nw a.py", "emacs"),
        ("less log.txt", "less"),
        ("cat log | more", "more"),
        ("top", "top"),
        ("watch nvidia-smi", "watch"),
        ("git status", "git"),
        ("nohup python train.py &", "nohup"),
        ("sudo vi a", "vi"),
        ("timeout 10 vim a", "vim"),
        ("X=1 ipython", "ipython"),
    ],
)
def test_refused_programs(command: str, refused_prog: str) -> None:
    reason = refusal(command)
    assert reason is not None and reason.startswith(f"`{refused_prog}` is not allowed here. ")


@pytest.mark.parametrize(
    "command", ["python", "python3 -u", "/usr/bin/python3", "python3.11", "bash", "sh", "python -i train.py",
                "python > out.txt"],
)
def test_bare_interpreters_are_refused(command: str) -> None:
    reason = refusal(command)
    assert reason is not None and "is not allowed here without a script to run (or with -i)" in reason


def test_tail_follow_is_refused() -> None:
    assert refusal("tail -f train.log") == (
        "`tail -f` never finishes. Show the end of the file once with `tail -n 50 <file>`."
    )
    assert refusal("tail -F x") is not None and refusal("tail --follow x") is not None


@pytest.mark.parametrize(
    "command",
    [
        "python train.py", "python3 -c 'print(1)'", "python -m pip list", "cat x.py | python",
        "python - <<'EOF'\nimport sys\nEOF", "bash run.sh", "bash -lc 'ls'", "sh -c 'echo hi'",
        "tail -n 20 log", "echo vim", "grep -r 'git' .", "ls  # then vim", "cat <<EOF > a.txt\nvim\ngit\nEOF",
        "echo 'a\nvim'", "python train.py > log.txt 2>&1", "ls 'unbalanced",
    ],
)
def test_allowed_commands(command: str) -> None:
    assert refusal(command) is None


def test_refusal_after_a_comment_on_an_earlier_line() -> None:
    assert refusal("ls # list\nvim a.py") is not None
    assert refusal("echo a#b; vim a.py") is not None


@pytest.mark.parametrize(
    ("command", "timeout_s"),
    [
        ("python train.py", 1800.0),
        ("cd src && python3 -u main.py", 1800.0),
        ("/usr/bin/python3.11 x.py", 1800.0),
        ("torchrun --nproc_per_node=2 train.py", 1800.0),
        ("accelerate launch train.py", 1800.0),
        ("deepspeed train.py", 1800.0),
        ("ls python_scripts/", 25.0),
        ("cat pythonic.txt", 25.0),
        ("ls -la", 25.0),
        ("pip install xgboost", 25.0),
    ],
)
def test_timeout_for(command: str, timeout_s: float) -> None:
    assert timeout_for(command, 25.0, 1800.0) == timeout_s
