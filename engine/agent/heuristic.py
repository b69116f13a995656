"""The offline heuristic policy: a `ChatModel` that plays real episodes from a per-task list of improvement moves.

It exists so that the whole pipeline runs and is tested with no API key and no network. It is not a teacher:
it knows each task's moves (`heuristic.yaml` beside `task.yaml`; a task without one, such as an imported MLGym
task, gets the generic playbook: inspect the workspace, run the baseline, validate, submit), reads the files it edits from the
observations it is shown, writes DISCUSSION-and-command text that goes through the same parser as any
model's, and sometimes makes a mistake and repairs it. Its randomness is keyed on the episode id, so
episodes differ from one another while a re-run of one episode replays exactly.
"""

from __future__ import annotations

import hashlib
import random
import re

import yaml
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ModelError, TaskError
from engine.protocols import Completion, Message, SamplingParams, Usage
from engine.tasks.check import baseline_command
from engine.tasks.folder import describe
from engine.tasks.spec import TaskSpec

NUMBERED_LINE = re.compile(r"^ *(\d+):(.*)$")  # `12:text`, right-aligned numbers too


class Move(BaseModel):
    """Replace `find` (exact lines) with `replace` in `file`, then run `run`."""

    model_config = ConfigDict(extra="forbid")
    file: str
    find: str
    replace: str
    run: str | None = None
    note: str = ""


class HeuristicPlan(BaseModel):
    """`heuristic.yaml`: the improvement moves of one task, and plausible mistakes to make and repair."""

    model_config = ConfigDict(extra="forbid")
    run: str = Field("python baseline.py", description="Command that produces the artefact from the starter code.")
    moves: list[Move] = Field(default_factory=list, description="None: the generic playbook (no improvement).")
    mistakes: list[Move] = Field(default_factory=list)
    inspect: str | None = Field(None, description="File to open before running; default: the first move's file.")

    @classmethod
    def generic(cls, task: TaskSpec) -> HeuristicPlan:
        """The playbook of a task without heuristic.yaml: open its main file, run its baseline, validate, submit.

        The main file is the edited Python artefact (a game's target.py), else the baseline, else the evaluation
        script; the run is `task check`'s baseline command (`python baseline.py`, or a copy of the sample
        submission for a task without a baseline)."""
        cfg = task.config
        candidates = [p for p in (cfg.submission_path,) if p and p.endswith(".py")]
        candidates += [*cfg.baseline_paths, *cfg.evaluation_paths]
        inspect = next((p for p in candidates if (task.workspace_dir / p).is_file()), None)
        return cls(run=baseline_command(task), inspect=inspect)

    @classmethod
    def load(cls, task: TaskSpec) -> HeuristicPlan:
        path = task.root / "heuristic.yaml"
        if not path.is_file():
            return cls.generic(task)
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()))
        except Exception as e:
            raise TaskError(f"{path}: {e}") from None


Intent = tuple[str, ...]


class HeuristicModel:
    """A scripted-but-reactive policy over known tasks; cost is an explicit zero."""

    name = "synthscale-heuristic"

    def __init__(self, tasks: list[TaskSpec], mistake_rate: float = 0.4, max_moves: int | None = None,
                 name: str | None = None):
        self.mistake_rate = mistake_rate
        self.max_moves = max_moves  # a weaker policy: stop improving after this many moves (0: submit the baseline)
        if name is not None:
            self.name = name
        self._tasks = [(t, HeuristicPlan.load(t), _signature(t)) for t in tasks]

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        task, plan = self._identify(messages)
        key = params.sample_key.episode_id if params.sample_key else str(params.seed)
        intents = self.intents(plan, random.Random(_seed_of(key, params.seed)))
        done = sum(1 for m in messages[2:] if m["role"] == "assistant")
        intent = intents[min(done, len(intents) - 1)]
        last_obs = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        text = _render(intent, last_obs)
        tokens = sum(len(m["content"]) for m in messages) // 4
        return Completion(text=text, finish_reason="stop", model=self.name,
                          usage=Usage(prompt_tokens=tokens, completion_tokens=len(text) // 4), cost_usd=0.0)

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion:
        return self.complete(messages, params)

    def intents(self, plan: HeuristicPlan, rng: random.Random) -> list[Intent]:
        """The episode's plan: look around, run the baseline, validate, apply moves (maybe a mistake first), submit."""
        out: list[Intent] = [("bash", "ls -la", "Let me look at the workspace first.")]
        if rng.random() < 0.5:
            out.append(("bash", "ls data 2>/dev/null | head; head -n 3 data/*.csv 2>/dev/null | cut -c1-200",
                        "Let me peek at the data files."))
        first = plan.inspect or (plan.moves[0].file if plan.moves else None)
        out += [("open", first)] if first else []
        out += [("bash", plan.run, "Let me run the baseline as it is to get a submission."), ("validate",)]
        if not plan.moves:
            return [*out, ("submit",)]
        n_moves = len(plan.moves) if rng.random() < 0.7 else rng.randint(1, len(plan.moves))
        if self.max_moves is not None:
            n_moves = min(n_moves, self.max_moves)
        for i, move in enumerate(plan.moves[:n_moves]):
            if plan.mistakes and rng.random() < self.mistake_rate:
                bad = rng.choice(plan.mistakes)
                out += [("open", bad.file), ("edit", bad.file, bad.find, bad.replace, bad.note or "Trying a change."),
                        ("bash", bad.run or plan.run, "Let me run it."), ("open", bad.file),
                        ("edit", bad.file, bad.replace, bad.find, "That broke it; reverting my last change.")]
            out += [("open", move.file), ("edit", move.file, move.find, move.replace, move.note or "Improving the model."),
                    ("bash", move.run or plan.run, "Let me run the updated code."), ("validate",)]
        out.append(("submit",))
        return out

    def _identify(self, messages: list[Message]) -> tuple[TaskSpec, HeuristicPlan]:
        task_text = messages[1]["content"] if len(messages) > 1 else ""
        for task, plan, sig in self._tasks:
            if sig in task_text:
                return task, plan
        raise ModelError("heuristic policy: the task message matches none of its known tasks; "
                         "construct HeuristicModel with the task folders being run")


def _signature(task: TaskSpec) -> str:
    lines = [ln.strip() for ln in describe(task).splitlines() if ln.strip()]
    return max(lines[:5], key=len) if lines else task.config.name


def _seed_of(key: str, seed: int | None) -> int:
    return int(hashlib.sha256(f"{key}|{seed}".encode()).hexdigest()[:12], 16)


def _render(intent: Intent, last_obs: str) -> str:
    kind = intent[0]
    if kind == "bash":
        return _say(intent[2], intent[1])
    if kind == "open":
        return _say(f"Let me open {intent[1]} to see the current code.", f'open "{intent[1]}"')
    if kind == "validate":
        return _say("Let me check the validation score of the current submission.", "validate")
    if kind == "submit":
        return _say("I am done improving; submitting the current solution.", "submit")
    _, file, find, replace, note = intent
    span = _locate(last_obs, find)
    if span is None:
        first = find.strip().splitlines()[0] if find.strip() else file
        term = re.sub(r"[^A-Za-z0-9_ .=()]", " ", first).split("  ")[0].strip()[:60] or file
        return _say(f"I could not find the lines I wanted to change in the window; searching {file}.",
                    f'search_file "{term}" {file}')
    start, end = span
    return _say(f"{note}", f"edit {start}:{end}\n{replace.rstrip(chr(10))}\nend_of_edit")


def _say(thought: str, command: str) -> str:
    return f"DISCUSSION\n{thought}\n\n```\n{command}\n```\n"


def _locate(observation: str, find: str) -> tuple[int, int] | None:
    """Line numbers of `find` in the numbered file window of the last observation."""
    numbered: list[tuple[int, str]] = []
    for ln in observation.splitlines():
        m = NUMBERED_LINE.match(ln)
        if m:
            numbered.append((int(m.group(1)), m.group(2)))
    want = find.rstrip("\n").split("\n")
    texts = [t for _, t in numbered]
    for i in range(len(texts) - len(want) + 1):
        if texts[i:i + len(want)] == want:
            return numbered[i][0], numbered[i + len(want) - 1][0]
    return None

