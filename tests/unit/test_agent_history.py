"""build_prompt keeps system, task and every assistant turn, and only the last k observations verbatim."""

import copy

from engine.agent.history import build_prompt, omitted_note


def _episode(n_observations: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": "TASK\nline 2"}]
    for i in range(1, n_observations + 1):
        msgs.append({"role": "assistant", "content": f"A{i}"})
        msgs.append({"role": "user", "content": "\n".join(f"o{i}.{j}" for j in range(i))})  # observation i has i lines
    return msgs


def test_keep_last_five_of_eight_observations() -> None:
    msgs = _episode(8)
    before = copy.deepcopy(msgs)
    prompt = build_prompt(msgs, keep_last_observations=5)
    assert [m["content"] for m in prompt] == [
        "SYSTEM", "TASK\nline 2",
        "A1", "Old environment output: (1 line omitted)",
        "A2", "Old environment output: (2 lines omitted)",
        "A3", "Old environment output: (3 lines omitted)",
        "A4", "o4.0\no4.1\no4.2\no4.3",
        "A5", "o5.0\no5.1\no5.2\no5.3\no5.4",
        "A6", "\n".join(f"o6.{j}" for j in range(6)),
        "A7", "\n".join(f"o7.{j}" for j in range(7)),
        "A8", "\n".join(f"o8.{j}" for j in range(8)),
    ]
    assert [m["role"] for m in prompt] == [m["role"] for m in msgs]
    assert msgs == before  # the input is not changed
    prompt[0]["content"] = "changed"
    assert msgs[0]["content"] == "SYSTEM"  # and shares no dicts with the output


def test_fewer_observations_than_k_and_a_pending_assistant_turn() -> None:
    msgs = _episode(3) + [{"role": "assistant", "content": "A4"}]
    assert build_prompt(msgs, keep_last_observations=5) == msgs


def test_omitted_note_counts_lines() -> None:
    assert omitted_note("") == "Old environment output: (0 lines omitted)"
    assert omitted_note("a\nb\n") == "Old environment output: (2 lines omitted)"
