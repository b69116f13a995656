"""The heuristic policy: it finds its edit lines in the shown window, plans episodes that differ by episode
id but replay exactly, and writes responses the production parser accepts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.agent.commands import Edit, Open, parse_command
from engine.agent.heuristic import HeuristicModel, HeuristicPlan, _locate
from engine.agent.parser import parse_response
from engine.errors import ModelError
from engine.protocols import SampleKey, SamplingParams
from engine.tasks.folder import find_tasks, load_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"
TASKS = [load_task(p) for p in find_tasks(EXAMPLES)]


def test_locate_finds_multi_line_blocks_by_window_numbers() -> None:
    window = "[File: /w/a.py (5 lines total)]\n1:import os\n2:x = 1\n3:y = 2\n4:print(x)\n5:"
    assert _locate(window, "x = 1\ny = 2\n") == (2, 3)
    assert _locate(window, "print(x)") == (4, 4)
    assert _locate(window, "z = 3") is None


def test_plans_differ_by_episode_but_replay_exactly() -> None:
    model = HeuristicModel(TASKS)
    plan = HeuristicPlan.load(TASKS[0])
    a1 = model.intents(plan, random.Random(1))
    a2 = model.intents(plan, random.Random(1))
    plans = {tuple(model.intents(plan, random.Random(s))) for s in range(20)}
    assert a1 == a2
    assert len(plans) > 3
    for p in plans:
        assert p[-1] == ("submit",) and ("validate",) in p


def _params(episode: str, step: int) -> SamplingParams:
    return SamplingParams(seed=0, sample_key=SampleKey(episode_id=episode, step=step))


def test_first_turns_parse_and_identify_the_task() -> None:
    model = HeuristicModel(TASKS)
    task = TASKS[0]
    from engine.agent.episode import initial_messages
    from engine.config import AgentConfig

    messages = initial_messages(task, AgentConfig())
    first = model.complete(messages, _params("ep", 0))
    parsed = parse_response(first.text)
    assert parsed.action == "ls -la" and first.cost_usd == 0.0
    # after an `open` of the move's file, the edit targets the lines shown in the window
    plan = HeuristicPlan.load(task)
    move = plan.moves[0]
    body = (task.workspace_dir / move.file).read_text().splitlines()
    window = "\n".join(f"{i + 1}:{line}" for i, line in enumerate(body))
    intents = model.intents(plan, random.Random(0))
    k = next(i for i, it in enumerate(intents) if it[0] == "edit")
    fake = messages + [m for _ in range(k) for m in ({"role": "assistant", "content": "x"},
                                                     {"role": "user", "content": window})]
    reply = parse_response(model.complete(fake, _params("ep", k)).text)
    cmd = parse_command(reply.action)
    assert isinstance(cmd, (Edit, Open)) or reply.action.startswith("search_file")
    if isinstance(cmd, Edit):
        want = intents[k][2].rstrip("\n").split("\n")
        assert body[cmd.start - 1:cmd.end] == want


def test_unknown_task_is_a_clear_error() -> None:
    model = HeuristicModel(TASKS)
    with pytest.raises(ModelError, match="matches none of its known tasks"):
        model.complete([{"role": "system", "content": "s"}, {"role": "user", "content": "something else"}],
                       _params("ep", 0))


MLGYM = Path(__file__).resolve().parents[1] / "fixtures" / "mlgym"


def test_locate_accepts_right_aligned_line_numbers() -> None:
    window = "[File: /w/a.py (3 lines total)]\n  9:x = 1\n 10:y = 2\n 11:"
    assert _locate(window, "x = 1\ny = 2") == (9, 10)


def test_task_without_heuristic_yaml_gets_the_generic_playbook(tmp_path: Path) -> None:
    from engine.tasks.mlgym import import_mlgym_task

    game = import_mlgym_task(MLGYM, "blotto", tmp_path)
    csv = import_mlgym_task(MLGYM, "regressionKaggleHousePrice", tmp_path)
    titanic = import_mlgym_task(MLGYM, "titanic", tmp_path, metric="Accuracy", direction="max")
    plans = {t.id: HeuristicPlan.load(t) for t in (game, csv, titanic)}
    assert {k: (p.inspect, p.run, p.moves) for k, p in plans.items()} == {
        "blotto": ("target.py", "python evaluate.py", []),
        "regressionKaggleHousePrice": ("baseline.py", "python baseline.py", []),
        "titanicSurvival": ("evaluate.py", "cp sample_submission.csv submission.csv", []),
    }
    model = HeuristicModel([game, csv, titanic])
    for seed in range(6):
        intents = model.intents(plans["blotto"], random.Random(seed))
        assert intents[0][0] == "bash" and intents[-4:] == [
            ("open", "target.py"), ("bash", "python evaluate.py", "Let me run the baseline as it is to get a submission."),
            ("validate",), ("submit",)]
