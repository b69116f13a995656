"""Observation truncation (head and tail around a marker), the empty-output sentence, the step footer."""

from engine.agent.observation import EMPTY_OUTPUT, render_footer, truncate_observation


def test_short_text_is_unchanged() -> None:
    assert truncate_observation("abc\n", 300) == "abc\n"
    assert truncate_observation("x" * 300, 300) == "x" * 300


def test_head_and_tail_are_kept_at_line_boundaries() -> None:
    text = "".join(f"line {i}\n" for i in range(100))  # lines 0-9 are 7 chars, 10-99 are 8: 790 chars
    out = truncate_observation(text, 250)
    # budget 250-120 = 130: head 65 chars → lines 0-8 (63), tail 65 chars → lines 92-99 (64)
    expected_head = "".join(f"line {i}\n" for i in range(9))
    expected_tail = "".join(f"line {i}\n" for i in range(92, 100))
    assert out == (expected_head + "[... observation truncated: 663 characters (83 lines) omitted ...]\n"
                   + expected_tail)
    assert len(out) <= 250


def test_one_long_line_is_cut_mid_line() -> None:
    out = truncate_observation("a" * 500 + "b" * 500, 320)
    assert out == "a" * 100 + "\n[... observation truncated: 800 characters (1 line) omitted ...]\n" + "b" * 100


def test_empty_output_message() -> None:
    assert EMPTY_OUTPUT == "Your command ran successfully and did not produce any output."


def test_footer() -> None:
    assert render_footer(step=3, remaining_steps=47, open_file="/home/agent/workspace/train.py",
                         cwd="/home/agent/workspace") == (
        "(Current Step: 3, Remaining Steps: 47)\n"
        "(Open file: /home/agent/workspace/train.py)\n"
        "(Current directory: /home/agent/workspace)\n"
        "bash-$"
    )
    assert render_footer(step=1, remaining_steps=49, open_file=None, cwd="/w").splitlines()[1] == "(Open file: n/a)"
