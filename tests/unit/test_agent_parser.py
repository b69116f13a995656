"""parse_response: exactly one fenced block is the command; the rest (and <think> text, first) is the thought."""

import pytest

from engine.agent.parser import FormatError, ParsedResponse, parse_response


def test_discussion_and_one_block() -> None:
    text = "DISCUSSION\nLet me look around.\n\n```\nls -la\n```\n"
    assert parse_response(text) == ParsedResponse(thought="Let me look around.", action="ls -la")


def test_language_tag_trailing_whitespace_and_text_after_block() -> None:
    text = "I will check the data.  \n```bash   \n  head -n 3 data/train.csv  \n```   \nThen decide.\n\n"
    assert parse_response(text) == ParsedResponse(thought="I will check the data.\n\nThen decide.",
                                                  action="head -n 3 data/train.csv")


def test_discussion_colon_on_same_line() -> None:
    assert parse_response("DISCUSSION: run it\n```\npython a.py\n```") == ParsedResponse("run it", "python a.py")


def test_no_block_is_a_format_error() -> None:
    with pytest.raises(FormatError) as e:
        parse_response("DISCUSSION\nI think I should run ls.")
    assert e.value.reason.startswith("it holds no fenced code block")


def test_two_blocks_is_a_format_error() -> None:
    with pytest.raises(FormatError) as e:
        parse_response("First\n```\nls\n```\nthen\n```\npwd\n```\n")
    assert e.value.reason.startswith("it holds 2 fenced code blocks")


def test_empty_block_and_unclosed_block() -> None:
    with pytest.raises(FormatError, match="code block is empty"):
        parse_response("x\n```\n   \n```")
    with pytest.raises(FormatError, match="opened on line 2 of your reply is never closed"):
        parse_response("x\n```\nls -la\n")


def test_inline_triple_backticks_are_not_a_fence() -> None:
    assert parse_response("Use ```ls``` here\n```\nls\n```") == ParsedResponse("Use ```ls``` here", "ls")


def test_think_text_comes_first_and_its_blocks_do_not_count() -> None:
    text = "<think>\nMaybe `ls`:\n```\nls\n```\nyes.\n</think>\nDISCUSSION\nListing files.\n```\nls -la\n```"
    assert parse_response(text) == ParsedResponse(
        thought="Maybe `ls`:\n```\nls\n```\nyes.\n\nListing files.", action="ls -la"
    )


def test_orphan_closing_think_tag() -> None:
    text = "reasoning here\n</think>\n\nDISCUSSION\nGo.\n```\npwd\n```"
    assert parse_response(text) == ParsedResponse(thought="reasoning here\n\nGo.", action="pwd")


def test_unclosed_think_tag_is_dropped() -> None:
    assert parse_response("<think>hmm\n```\npwd\n```") == ParsedResponse(thought="hmm", action="pwd")


def test_edit_block_keeps_indentation_and_terminator() -> None:
    text = "Fix the loss.\n```\nedit 12:13\n    loss = f(x)\n\n    return loss\nend_of_edit\n```\n"
    assert parse_response(text).action == "edit 12:13\n    loss = f(x)\n\n    return loss\nend_of_edit"


def test_edit_block_whose_text_holds_a_fence_stays_one_block() -> None:
    text = "Update the README.\n```\nedit 1:3\n# Title\n```python\nprint(1)\n```\nend_of_edit\n```\n"
    assert parse_response(text) == ParsedResponse(
        thought="Update the README.", action="edit 1:3\n# Title\n```python\nprint(1)\n```\nend_of_edit"
    )


def test_insert_block_with_fence_inside() -> None:
    text = "```\ninsert 0\n```\nend_of_insert\n```"
    assert parse_response(text).action == "insert 0\n```\nend_of_insert"


def test_four_backtick_fence_holds_three_backtick_lines() -> None:
    text = "Write docs.\n````\ncat > notes.md <<'EOF'\n```\ncode\n```\nEOF\n````\n"
    assert parse_response(text) == ParsedResponse(thought="Write docs.", action="cat > notes.md <<'EOF'\n```\ncode\n```\nEOF")


def test_indented_fence_dedents_its_content() -> None:
    assert parse_response("Run:\n  ```\n  python a.py\n    --x\n  ```").action == "python a.py\n  --x"
