"""lint_python reports the error classes that revert an edit; new_lint_errors ignores errors that only moved."""

from engine.agent.lint import lint_python, new_lint_errors


def test_clean_code_and_ignored_classes() -> None:
    # unused imports and style problems are not errors here
    assert lint_python("import os\nimport sys\nx=1;y  =  2\n", "a.py") == []


def test_undefined_names() -> None:
    src = "def f(a):\n    return a + b\n\nprint(c)\n"
    assert lint_python(src, "m.py") == ["m.py:2:16: F821 undefined name 'b'", "m.py:4:7: F821 undefined name 'c'"]


def test_undefined_export() -> None:
    assert lint_python("__all__ = ['g']\n", "m.py") == ["m.py:1:1: F822 undefined name 'g' in __all__"]


def test_syntax_and_indentation_errors() -> None:
    assert lint_python("x = (1,\n", "s.py") == ["s.py:1:5: E999 SyntaxError: '(' was never closed"]
    assert lint_python("def f():\nreturn 1\n", "s.py") == [
        "s.py:2:1: E999 IndentationError: expected an indented block after function definition on line 1"
    ]
    assert lint_python("x = 1\n    y = 2\n", "s.py") == ["s.py:2:4: E999 IndentationError: unexpected indent"]
    assert lint_python("def f(a, a):\n    pass\n", "s.py") == [
        "s.py:1:10: E999 SyntaxError: duplicate argument 'a' in function definition"
    ]


def test_indentation_not_a_multiple_of_four() -> None:
    src = "if True:\n  x = 1\n  # a comment\n  y = (1,\n     2)\n"
    assert lint_python(src, "i.py") == [
        "i.py:2:3: E111 indentation is not a multiple of 4",
        "i.py:4:3: E111 indentation is not a multiple of 4",
    ]


def test_new_errors_only() -> None:
    before = ["a.py:3:1: F821 undefined name 'x'"]
    moved = ["a.py:9:1: F821 undefined name 'x'"]
    assert new_lint_errors(before, moved) == []
    added = ["a.py:2:5: F821 undefined name 'y'", "a.py:9:1: F821 undefined name 'x'"]
    assert new_lint_errors(before, added) == ["a.py:2:5: F821 undefined name 'y'"]
    twice = ["a.py:3:1: F821 undefined name 'x'", "a.py:7:1: F821 undefined name 'x'"]
    assert new_lint_errors(before, twice) == ["a.py:7:1: F821 undefined name 'x'"]
    assert new_lint_errors(twice, before) == []
