"""build_prompt keeps system, task and every assistant turn, and only the last k observations verbatim; the
episode loop keeps the model's reasoning on its turns, and no prompt ever carries it back."""

import copy
from types import SimpleNamespace

from engine.agent.episode import _loop, _Totals
from engine.agent.history import build_prompt, omitted_note
from engine.config import AgentConfig, SamplingConfig
from engine.protocols import Completion
from engine.records import ScoreRecord, TrajectoryRecord
from engine.trajectories.store import reasoning_onto_messages


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
        "A1", "Old output omitted (1 lines)",
        "A2", "Old output omitted (2 lines)",
        "A3", "Old output omitted (3 lines)",
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
    assert omitted_note("") == "Old output omitted (0 lines)"
    assert omitted_note("a\nb\n") == "Old output omitted (2 lines)"


def test_reasoning_stays_in_the_messages_but_not_in_the_prompt() -> None:
    msgs = _episode(2)
    msgs[2]["reasoning_content"] = "I should list files first"
    before = copy.deepcopy(msgs)
    prompt = build_prompt(msgs, keep_last_observations=5)
    assert all(set(m) == {"role", "content"} for m in prompt)
    assert [m["content"] for m in prompt] == [m["content"] for m in msgs]
    assert msgs == before  # the trajectory keeps it


class _Env:
    """Stands in for AgentEnvironment: every command runs, nothing submits."""

    open_file, cwd = None, "/w"

    def execute(self, action: str, step: int) -> SimpleNamespace:
        return SimpleNamespace(observation=f"ran {action}", submitted=False)

    def footer(self, step: int, remaining: int) -> str:
        return f"(step {step}, {remaining} left)"


class _Scorer:
    def __init__(self) -> None:
        self.scores: list[ScoreRecord] = []

    def record(self, kind: str, step: int) -> ScoreRecord:
        self.scores.append(ScoreRecord(step=step, kind=kind, metric="m", direction="max", error="no artefact"))
        return self.scores[-1]


class _Model:
    """Answers (text, reasoning) pairs in order and keeps a copy of every prompt it was sent."""

    name = "fake"

    def __init__(self, replies: list[tuple[str, str | None]]) -> None:
        self.replies, self.prompts = list(replies), []

    def complete(self, messages, params) -> Completion:
        self.prompts.append(copy.deepcopy(messages))
        text, reasoning = self.replies.pop(0)
        return Completion(text=text, reasoning=reasoning)


def test_episode_loop_records_reasoning_on_assistant_turns_and_never_sends_it() -> None:
    ok = "DISCUSSION\n{0}\n```\n{0}\n```"
    model = _Model([(ok.format("ls"), "think 0"), (ok.format("pwd"), None),
                    ("no block", "bad 1"), (ok.format("cat x"), "think 2"),  # a re-ask, then an action
                    ("no block", None), ("none again", "bad 3")])  # format errors end the episode
    rec = TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="fake", policy="p",
                           messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "T"}])
    cfg = AgentConfig(max_steps=10, max_format_errors=2, keep_last_observations=1)
    status = _loop(rec, model, _Env(), _Scorer(), cfg, SamplingConfig(), _Totals())
    assert status == "evaluation_format_error (exit_format)"
    assistant = [m for m in rec.messages if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": ok.format("ls"), "reasoning_content": "think 0"},
                         {"role": "assistant", "content": ok.format("pwd")},
                         {"role": "assistant", "content": ok.format("cat x"), "reasoning_content": "think 2"}]
    assert [s.reasoning for s in rec.steps] == ["think 0", None, "think 2", None]
    assert len(model.prompts) == 6
    assert all(set(m) == {"role", "content"} for prompt in model.prompts for m in prompt)
    # the v1 upgrade rule reproduces exactly what the loop records
    v1_messages = [{"role": m["role"], "content": m["content"]} for m in rec.messages]
    assert reasoning_onto_messages(v1_messages, [s.model_dump() for s in rec.steps]) == rec.messages
