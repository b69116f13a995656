"""MLGym export: reads TrajectoryRecords, writes `<out>/traj/<model>__<task_id>__run_<n>/<task_id>.traj` and
its results.json.

Each file is what MLGym's agent writes (checked against its published ``trajectories/mlgym_bench_v0``), so that
MLGym's analysis scripts and viewers read it; ``tests/fixtures/traj/mlgym/`` holds golden files:

- the document: ``environment`` (``"mlgym_main"``, MLGym's environment name), ``trajectory``, ``history``,
  ``info``, then our one extra key ``synthscale`` (MLGym's readers ignore it); ``json.dumps(indent=2)`` as
  MLGym writes it (ASCII escapes, no final newline);
- ``trajectory``: one entry per step with MLGym's key order ``state``, ``response``, ``thought``, ``action``,
  ``execution_time``, ``observation``; ``state`` a JSON *string* ``{"open_file": …, "working_dir": …}``
  (``"n/a"`` when no file is open) holding, as MLGym's does, the state *before* the step's action (the
  previous step's; the workspace with no open file for the first); ``thought`` and ``action`` split from the
  response as MLGym's parser does (``mlgym_split``): the thought is the response without its command block,
  ``DISCUSSION`` header and blank lines kept, the action the block's text with its final newline. A step that ended the episode on
  format errors is MLGym's ``Exit due to format error`` / ``exit_format`` step;
- ``history``: every message as ``{role, content, agent}``, assistant turns as ``{role, content, thought,
  action, agent}``; ``agent`` is ``primary_<run number>`` as in MLGym's parallel runs. The model's reasoning
  (our ``reasoning_content``) is not in MLGym's history; it stays in ``synthscale``;
- ``info``: ``model_stats`` (``total_cost``, ``task_cost``, ``tokens_sent``, ``tokens_received``,
  ``api_calls``), ``exit_status``, ``submission`` (the absolute workspace path of the artefact when the episode
  ended on a successful submit or auto-submission, else None, as MLGym records it), ``score`` (the metrics the
  agent saw, one dict per successful scoring), ``summarizer`` (``{}``, as MLGym writes it);
- ``synthscale``: what MLGym's fields cannot hold (episode id, run id, seed, task hash, every score with its
  held-out test metrics, our step records, messages' reasoning, …), from which the importer restores the
  episode exactly.

``results.json`` beside each ``.traj`` holds ``{"agent": <info.score>, "baseline": <baseline metrics>}``
(``baseline`` only when the task has one, as MLGym writes it). Runs of one (model, task) are numbered from 0 in
episode order: by seed, then start time, then episode id, so the numbering does not depend on shard order.
Episodes with an ``infra_error`` are not exported.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable

import pyarrow.fs as pafs

from engine.artifacts import atomic_write_bytes, join, resolve
from engine.records import ScoreRecord, TrajectoryRecord

log = logging.getLogger(__name__)

MLGYM_ENVIRONMENT = "mlgym_main"
EXTRAS_KEY = "synthscale"
NO_OPEN_FILE = "n/a"
WORKSPACE = "/home/agent/workspace"
FORMAT_EXIT = ("Exit due to format error", "exit_format", "Exited (exit_format)")  # thought, action, observation
STEP_KEYS = ("state", "response", "thought", "action", "execution_time", "observation")
_FENCE = re.compile(r"```(\S*)[ \t]*")


def agent_name(run: int) -> str:
    """MLGym's agent name in parallel run ``run``: ``primary_0``, ``primary_1``, …"""
    return f"primary_{run}"


def visible_metrics(score: ScoreRecord) -> dict[str, float] | None:
    """The metrics the agent was shown for one scoring: validation rows, or MLGym's one dict for mlgym grading."""
    if score.grading == "mlgym":
        return score.validation if score.validation is not None else score.test
    return score.validation


def sanitize_model_name(model: str) -> str:
    """A model name usable as one path component: ``Qwen/Qwen3-8B`` → ``Qwen-Qwen3-8B``."""
    return re.sub(r"[/\\\s]+", "-", model).strip("-.") or "model"


def run_folder_name(record: TrajectoryRecord, run: int, cost_limit_usd: float = 4.0) -> str:
    """MLGym's folder name for one run: ``<model>__<task>__default__t-<temperature>__p-<top_p>__c-<cost limit>__
    install-0__parallel_agents_run_<n>`` (its evaluation scripts glob ``*<model>__<task>__*``). An unset
    temperature is 0 and an unset top_p 1, what an OpenAI-compatible server then samples with."""
    def num(key: str, unset: float) -> float:
        value = record.sampling.get(key)
        return float(value) if isinstance(value, (int, float)) else unset

    return (f"{sanitize_model_name(record.model)}__{record.task_id}__default__t-{num('temperature', 0.0):.2f}"
            f"__p-{num('top_p', 1.0):.2f}__c-{cost_limit_usd:.2f}__install-0__parallel_agents_run_{run}")


def mlgym_split(response: str) -> tuple[str, str] | None:
    """(thought, action) of a response as MLGym's parser splits it; None when it holds no closed fenced block.

    The action is the text of the last top-level fenced block (its final newline kept); the thought is the
    response with that block's fence lines cut out, everything else kept as it is.

    >>> mlgym_split("DISCUSSION\\nLook.\\n\\n```\\nls -la\\n```")
    ('DISCUSSION\\nLook.\\n\\n', 'ls -la\\n')
    >>> mlgym_split("no command") is None
    True
    """
    depth, opened, last = 0, (0, 0), None
    pos = 0
    for line in response.splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        fence = _FENCE.fullmatch(line.rstrip("\r\n"))
        if fence is None:
            continue
        if depth and not fence.group(1):
            depth -= 1
            if depth == 0:
                last = (opened, (start, pos))
        else:
            if depth == 0:
                opened = (start, pos)
            depth += 1
    if last is None:
        return None
    (open_start, open_end), (close_start, close_end) = last
    open_end, close_end = _past_blank_lines(response, open_end), _past_blank_lines(response, close_end)
    return response[:open_start] + response[close_end:], response[open_end:close_start]


def _past_blank_lines(text: str, pos: int) -> int:
    """A fence line takes the blank lines after it along (MLGym's fence pattern ends in ``\\s*\\n``)."""
    end = pos
    while end < len(text) and text[end].isspace():
        end += 1
    newline = text.rfind("\n", pos, end)
    return newline + 1 if newline >= 0 else pos


def _state_string(open_file: str | None, working_dir: str) -> str:
    return json.dumps({"open_file": open_file or NO_OPEN_FILE, "working_dir": working_dir})


def _is_format_exit(record: TrajectoryRecord, index: int) -> bool:
    step = record.steps[index]
    return index == len(record.steps) - 1 and not step.action and bool(step.format_errors)


def thought_action(record: TrajectoryRecord, index: int) -> tuple[str, str]:
    """MLGym's ``thought`` and ``action`` of step ``index`` (see ``mlgym_split``)."""
    step = record.steps[index]
    if _is_format_exit(record, index):
        return FORMAT_EXIT[0], FORMAT_EXIT[1]
    split = mlgym_split(step.response)
    if split is not None and split[1].strip() == step.action.strip():
        return split
    return step.thought, step.action if step.action.endswith("\n") else step.action + "\n"


def _state_before(record: TrajectoryRecord, index: int) -> str:
    """MLGym's ``state`` is what the step's prompt showed: the state after the previous step (ours keep the state
    after their own action); the first step starts with no open file in the workspace."""
    if index == 0:
        return _state_string(None, WORKSPACE)
    before = record.steps[index - 1]
    return _state_string(before.open_file, before.working_dir)


def _trajectory(record: TrajectoryRecord) -> list[dict]:
    steps = []
    for i, step in enumerate(record.steps):
        thought, action = thought_action(record, i)
        observation = FORMAT_EXIT[2] if _is_format_exit(record, i) else step.observation
        values = (_state_before(record, i), step.response, thought, action, step.execution_time_s, observation)
        steps.append(dict(zip(STEP_KEYS, values)))
    return steps


def _history(record: TrajectoryRecord, agent: str) -> list[dict]:
    """Messages as MLGym's history; a final format-error step, which our messages lack, is appended as MLGym has it."""
    history: list[dict] = []
    turn = 0
    for message in record.messages:
        if message.get("role") == "assistant":
            if turn < len(record.steps):
                thought, action = thought_action(record, turn)
            else:
                thought, action = message.get("content", ""), ""
            history.append({"role": "assistant", "content": message["content"], "thought": thought,
                            "action": action, "agent": agent})
            turn += 1
        else:
            history.append({"role": message["role"], "content": message["content"], "agent": agent})
    if turn == len(record.steps) - 1 and _is_format_exit(record, turn):
        thought, action = thought_action(record, turn)
        history.append({"role": "assistant", "content": record.steps[turn].response, "thought": thought,
                        "action": action, "agent": agent})
        turn += 1
    if turn != len(record.steps):
        log.warning("episode %s (task %s): %d assistant messages but %d steps; thought/action matched by position",
                    record.episode_id, record.task_id, turn, len(record.steps))
    return history


def agent_scores(record: TrajectoryRecord) -> list[dict[str, float]]:
    """``info.score`` / ``results.json["agent"]``: the metrics the agent saw, one dict per successful scoring."""
    seen = (visible_metrics(s) for s in record.scores if s.error is None)
    return [dict(m) for m in seen if m is not None]


def mlgym_submission(record: TrajectoryRecord) -> str | None:
    """``info.submission``: the artefact's absolute path when the last scoring is a successful submit or
    auto-submission (MLGym sets it only then), else None."""
    last = record.scores[-1] if record.scores else None
    if last is None or last.kind == "validate" or last.error is not None:
        return None
    artefact = last.artefact or record.submission
    if artefact is None:
        return ""  # MLGym records "" for an artefact without a path (its LM tasks)
    return posixpath.join(WORKSPACE, artefact)


def _extras(record: TrajectoryRecord, environment: str) -> dict:
    reasoning = [[i, m["reasoning_content"]] for i, m in enumerate(record.messages) if m.get("reasoning_content")]
    return {
        "episode_id": record.episode_id, "run_id": record.run_id, "task_id": record.task_id,
        "task_hash": record.task_hash, "model": record.model, "policy": record.policy, "seed": record.seed,
        "metric": record.metric, "direction": record.direction, "environment": environment,
        "submission": record.submission, "scores": [s.model_dump(mode="json") for s in record.scores],
        "test_scores": [s.test for s in record.scores if s.test is not None],
        "steps": [s.model_dump(mode="json") for s in record.steps], "message_count": len(record.messages),
        "reasoning_content": reasoning, "history_config": record.history.model_dump(mode="json"),
        "sampling": record.sampling, "cost_usd": record.cost_usd, "started_at": record.started_at,
        "wall_time_s": record.wall_time_s, "infra_error": record.infra_error,
    }


def traj_document(record: TrajectoryRecord, environment: str = "synthscale-local", run: int = 0) -> dict:
    """The ``.traj`` JSON object for one episode, run number ``run`` of its (model, task).

    ``environment`` names our runtime (e.g. ``synthscale-docker``); it goes into the extras, since MLGym's
    ``environment`` is its environment's name, ``mlgym_main``.
    """
    return {
        "environment": MLGYM_ENVIRONMENT,
        "trajectory": _trajectory(record),
        "history": _history(record, agent_name(run)),
        "info": {
            "model_stats": {
                "total_cost": record.cost_usd,
                "task_cost": record.cost_usd,
                "tokens_sent": record.tokens_sent,
                "tokens_received": record.tokens_received,
                "api_calls": record.api_calls,
            },
            "exit_status": record.exit_status,
            "submission": mlgym_submission(record),
            "score": agent_scores(record),
            "summarizer": {},
        },
        EXTRAS_KEY: _extras(record, environment),
    }


def results_document(record: TrajectoryRecord) -> dict:
    """``results.json``: ``agent`` (``info.score``), then ``baseline`` when the task has one."""
    results: dict = {"agent": agent_scores(record)}
    if record.baseline:
        results["baseline"] = dict(record.baseline)
    return results


def mlgym_json(obj: dict) -> bytes:
    """JSON bytes as MLGym writes them: two-space indent, ASCII escapes, no final newline."""
    return json.dumps(obj, indent=2).encode("ascii")


def number_runs(records: Iterable[TrajectoryRecord]) -> list[tuple[int, TrajectoryRecord]]:
    """(run number, record) for every exportable record, numbered per (model, task) in episode order."""
    groups: dict[tuple[str, str], list[TrajectoryRecord]] = defaultdict(list)
    for record in records:
        if record.infra_error is None:
            groups[(record.model, record.task_id)].append(record)
    numbered = []
    for key in sorted(groups):
        ordered = sorted(groups[key], key=lambda r: (r.seed, r.started_at, r.episode_id))
        numbered.extend(enumerate(ordered))
    return numbered


def export_mlgym(records: Iterable[TrajectoryRecord], out_dir: str | os.PathLike, *,
                 environment: str = "synthscale-local", cost_limit_usd: float = 4.0,
                 filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Write MLGym's ``traj/`` layout under ``out_dir`` (a local path or URI); return the ``.traj`` paths written.

    Returned paths are inside the resolved filesystem: absolute local paths, or ``bucket/key`` for S3.

    ``environment`` names our runtime, e.g. ``f"synthscale-{config.sandbox.runtime}"`` (kept in the extras);
    ``cost_limit_usd`` (the agent's per-episode limit) goes into MLGym's folder name (`run_folder_name`).
    """
    records = list(records)
    fs, base = resolve(out_dir, filesystem)
    written = []
    for n, record in number_runs(records):
        folder = join(base, "traj", run_folder_name(record, n, cost_limit_usd))
        traj_path = join(folder, f"{record.task_id}.traj")
        atomic_write_bytes(fs, traj_path, mlgym_json(traj_document(record, environment, run=n)))
        atomic_write_bytes(fs, join(folder, "results.json"), mlgym_json(results_document(record)))
        written.append(traj_path)
    skipped = len(records) - len(written)
    if skipped:
        log.info("MLGym export to %s: skipped %d episodes with infra errors", out_dir, skipped)
    return written
