"""Edit/insert line arithmetic, the viewer's window and its movements, and the search formats."""

import pytest

from engine.agent.editing import (
    EditError, apply_edit, apply_insert, first_line_centred, first_line_showing, format_dir_matches,
    format_file_matches, format_found_files, render_window, scrolled, search_in_text, split_lines,
)

TEXT = "l1\nl2\nl3\nl4\nl5\n"


def test_split_lines() -> None:
    assert split_lines("") == []
    assert split_lines("\n") == [""]
    assert split_lines("a\nb") == ["a", "b"]
    assert split_lines("a\nb\n") == ["a", "b"]
    assert split_lines("a\n\n") == ["a", ""]


@pytest.mark.parametrize(
    ("start", "end", "replacement", "expected"),
    [
        (2, 3, "X\n", "l1\nX\nl4\nl5\n"),  # two lines become one
        (2, 2, "X\nY\nZ\n", "l1\nX\nY\nZ\nl3\nl4\nl5\n"),  # one becomes three
        (1, 5, "only\n", "only\n"),  # the whole file
        (4, 5, "", "l1\nl2\nl3\n"),  # deletion
        (3, 3, "\n", "l1\nl2\n\nl4\nl5\n"),  # one empty line
        (3, 2, "new\n", "l1\nl2\nnew\nl3\nl4\nl5\n"),  # end = start-1: insert before line 3
        (6, 5, "tail\n", "l1\nl2\nl3\nl4\nl5\ntail\n"),  # one past the end: append
        (5, 5, "last", "l1\nl2\nl3\nl4\nlast\n"),  # a replacement without final newline
    ],
)
def test_apply_edit(start: int, end: int, replacement: str, expected: str) -> None:
    assert apply_edit(TEXT, start, end, replacement) == expected


def test_apply_edit_keeps_a_missing_final_newline_and_fills_an_empty_file() -> None:
    assert apply_edit("a\nb", 1, 1, "A\n") == "A\nb"
    assert apply_edit("", 1, 1, "x = 1\n") == "x = 1\n"
    assert apply_edit("\n", 1, 1, "x = 1\ny = 2\n") == "x = 1\ny = 2\n"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (0, 1, "start line 0 is out of range: line numbers start at 1"),
        (7, 7, "start line 7 is past the end of the file, which has 5 lines; use a start line from 1 to 5"),
        (4, 6, "end line 6 is past the end of the file, which has 5 lines; use an end line from 4 to 5"),
        (4, 2, "end line 2 is before start line 4; write the range as <start_line>:<end_line> with start ≤ end"),
    ],
)
def test_apply_edit_out_of_range(start: int, end: int, message: str) -> None:
    with pytest.raises(EditError) as e:
        apply_edit(TEXT, start, end, "x\n")
    assert str(e.value) == message


def test_apply_insert() -> None:
    assert apply_insert(TEXT, 0, "top\n") == "top\nl1\nl2\nl3\nl4\nl5\n"
    assert apply_insert(TEXT, 2, "a\nb\n") == "l1\nl2\na\nb\nl3\nl4\nl5\n"
    assert apply_insert(TEXT, 5, "end\n") == "l1\nl2\nl3\nl4\nl5\nend\n"
    assert apply_insert("", 0, "x\n") == "x\n"
    with pytest.raises(EditError) as e:
        apply_insert(TEXT, 6, "x\n")
    assert str(e.value) == "line 6 is out of range: insert after a line from 0 (the top of the file) to 5"


def _numbered(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(1, n + 1))


def test_render_window_middle_of_a_file() -> None:
    assert render_window("/w/a.py", _numbered(10), first_line=4, window_lines=3) == (
        "[File: /w/a.py (10 lines total)]\n(3 more lines above)\n4:line 4\n5:line 5\n6:line 6\n(4 more lines below)"
    )


def test_render_window_whole_file_and_empty_file() -> None:
    assert render_window("/w/a.py", "x\n\n  y\n", 1, 100) == "[File: /w/a.py (3 lines total)]\n1:x\n2:\n3:  y"
    assert render_window("/w/e.txt", "", 1, 100) == "[File: /w/e.txt (0 lines total)]"


def test_render_window_clamps_past_the_end() -> None:
    assert render_window("/f", _numbered(5), first_line=5, window_lines=3) == (
        "[File: /f (5 lines total)]\n(2 more lines above)\n3:line 3\n4:line 4\n5:line 5"
    )


def test_window_positions() -> None:
    # open/goto: the line sits a sixth of the way down (window 100 → 15 lines above it, as in MLGym)
    assert first_line_showing(50, total_lines=1000, window_lines=100) == 35
    assert first_line_showing(500, total_lines=5000, window_lines=1000) == 335
    assert first_line_showing(10, total_lines=1000, window_lines=100) == 1
    assert first_line_showing(990, total_lines=1000, window_lines=100) == 901
    assert first_line_showing(5, total_lines=20, window_lines=100) == 1
    # after an edit: centred on the first changed line
    assert first_line_centred(300, total_lines=1000, window_lines=100) == 250
    assert first_line_centred(20, total_lines=1000, window_lines=100) == 1


def test_scrolling_moves_a_window_less_two_lines_and_stops_at_the_ends() -> None:
    assert scrolled(1, total_lines=1000, window_lines=100, down=True) == 99
    assert scrolled(99, total_lines=1000, window_lines=100, down=True) == 197
    assert scrolled(850, total_lines=1000, window_lines=100, down=True) == 901
    assert scrolled(901, total_lines=1000, window_lines=100, down=True) == 901
    assert scrolled(197, total_lines=1000, window_lines=100, down=False) == 99
    assert scrolled(50, total_lines=1000, window_lines=100, down=False) == 1
    assert scrolled(1, total_lines=30, window_lines=100, down=True) == 1


def test_search_in_text_and_its_format() -> None:
    matches = search_in_text("import os\nx = os.sep\ny = 1\n", "os")
    assert matches == [(1, "import os"), (2, "x = os.sep")]
    assert format_file_matches("os", "/w/a.py", matches) == (
        'Found 2 matches for "os" in /w/a.py:\nLine 1:import os\nLine 2:x = os.sep\nEnd of matches for "os" in /w/a.py'
    )
    assert format_file_matches("zz", "/w/a.py", []) == 'No matches found for "zz" in /w/a.py'
    assert format_file_matches("x", "/f", [(i, "x") for i in range(1, 4)], limit=2) == (
        'More than 3 lines matched for "x" in /f. Please narrow your search.'
    )


def test_dir_and_find_formats() -> None:
    assert format_dir_matches("lr", "/w", {"/w/b.py": 1, "/w/a.py": 3}) == (
        'Found 4 matches for "lr" in /w:\n/w/a.py (3 matches)\n/w/b.py (1 matches)\nEnd of matches for "lr" in /w'
    )
    assert format_dir_matches("lr", "/w", {}) == 'No matches found for "lr" in /w'
    assert format_found_files("*.py", "/w", ["/w/z.py", "/w/a.py"]) == (
        'Found 2 matches for "*.py" in /w:\n/w/z.py\n/w/a.py'
    )
