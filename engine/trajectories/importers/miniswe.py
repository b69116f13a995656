"""mini-swe-agent import: reads one ``.traj.json`` document, returns a TrajectoryRecord.

Three shapes are read: ``trajectory_format`` ``mini-swe-agent-1.1`` (v2: messages keep the model's native fields
plus ``extra``: parsed ``actions``, ``cost``, ``response``, ``timestamp``; tool-call models answer with
``tool_calls`` and get ``role: "tool"`` observations; the run ends with a ``role: "exit"`` message),
``mini-swe-agent-1`` (v1: plain ``role``/``content`` messages, commands in a fenced block) and the bare message list
of older files.

Field by field (``.traj.json`` → TrajectoryRecord):

- ``messages`` → ``messages`` and ``steps``. The system message and the task (``user``) lead, as in ours. Each
  assistant message is a step: ``response`` = its content, with each tool call's command appended as a fenced
  block (our agents' one-block format, so the turn keeps its action); ``action`` = its commands (``extra.actions``,
  else the tool calls, else the fenced block of the text), one per line; ``thought`` = the text outside the block;
  ``reasoning_content`` → ``reasoning`` (and kept on the message); ``extra.cost`` → ``cost_usd``;
  ``extra.response.usage`` → ``prompt_tokens``/``completion_tokens``. The observations that follow it (``user`` or
  ``tool`` messages) become one ``user`` message; the step's ``observation`` is their raw command output
  (``extra.raw_output``, else the rendered content). A format error (a ``user`` message with
  ``extra.interrupt_type == "FormatError"``; the bad response is in its ``extra``) is a re-ask, as in ours: it
  leaves the message list and its response goes to the next step's ``format_errors`` (a run ended by format
  errors gets a last step without action, as ours do). v1 files do not mark format errors: their turns stay.
- the ``exit`` message and ``info``: ``exit_status`` and ``submission`` as they are (mini-swe-agent's names, e.g.
  ``Submitted``, ``LimitsExceeded``; an empty submission is None); ``info.model_stats.instance_cost`` →
  ``cost_usd``, ``api_calls`` as it is; ``tokens_sent``/``tokens_received`` = the sums of every response's usage.
- ``info.config.model``: ``model_name`` → ``model``; ``model_kwargs``' ``temperature``, ``top_p``, ``max_tokens``,
  ``reasoning_effort`` → ``sampling``. ``info.config.environment.cwd`` → every step's ``working_dir``.
- task id: ``instance_id`` (SWE-bench runs), else the file name without ``.traj.json``. Timestamps: ``started_at``
  = the first message timestamp, ``wall_time_s`` = last minus first (the first model call is not counted).
- defaulted: ``task_hash`` ``""``, ``seed`` 0, ``scores`` none (mini-swe-agent does not grade; SWE-bench's
  evaluation is a separate report), so curation's success filter drops these episodes unless
  ``require_success`` is off; ``baseline`` ``{}``, ``metric``/``direction`` from the options or a task folder,
  else ``""``/``"max"``; ``history``: every observation kept (mini-swe-agent sends the whole history);
  ``open_file`` None, ``execution_time_s`` and ``model_latency_s`` 0. Lost: other ``extra`` fields (raw responses,
  return codes), the agent and environment config, non-text content parts.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

from engine.agent.parser import FormatError, parse_response
from engine.protocols import Message
from engine.records import HistoryConfig, StepRecord, TrajectoryRecord
from engine.trajectories.importers.common import (
    BadTrajectory,
    ImportOptions,
    content_text,
    count,
    expect_dict,
    expect_list,
    merge_prefix,
    number,
    resolve_metric,
    text,
)

SOURCE = "mini-swe-agent"
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "reasoning_effort")


def is_mini_document(doc: Any) -> bool:
    """mini-swe-agent's ``.traj.json``: an object with a ``messages`` list, or a bare list of messages."""
    if isinstance(doc, dict):
        return isinstance(doc.get("messages"), list) and "trajectory" not in doc
    return isinstance(doc, list) and bool(doc) and all(isinstance(m, dict) and "role" in m for m in doc)


def _extra(m: dict) -> dict:
    extra = m.get("extra")
    return extra if isinstance(extra, dict) else {}


def _tool_commands(m: dict, where: str) -> list[str]:
    commands = []
    for i, call in enumerate(expect_list(m.get("tool_calls") or [], f"{where}.tool_calls")):
        at = f"{where}.tool_calls[{i}]"
        function = expect_dict(expect_dict(call, at).get("function"), f"{at}.function")
        try:
            args = json.loads(function.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError):
            args = {}
        commands.append(args.get("command", "") if isinstance(args, dict) else "")
    return commands


def _turn(m: dict, where: str) -> dict[str, Any]:
    """A step's fields from one assistant message."""
    content = content_text(m.get("content"), f"{where}.content")
    calls = _tool_commands(m, where)
    actions = _extra(m).get("actions")
    try:
        parsed = parse_response(content)
        thought, block = parsed.thought, [parsed.action]
    except FormatError:  # a tool-call turn's content has no block: all of it is the thought
        thought, block = content.strip(), []
    if isinstance(actions, list) and all(isinstance(a, dict) for a in actions):
        commands = [text(a.get("command"), f"{where}.extra.actions[{i}].command") for i, a in enumerate(actions)]
    else:
        commands = calls or block
    response = content + "".join(f"\n\n```\n{c}\n```" for c in calls) if calls else content
    reasoning = m.get("reasoning_content") if isinstance(m.get("reasoning_content"), str) else None
    usage = _usage(m)
    return {"response": response, "thought": thought, "action": "\n".join(commands), "reasoning": reasoning,
            "cost_usd": number(_extra(m).get("cost"), f"{where}.extra.cost"),
            "prompt_tokens": usage[0], "completion_tokens": usage[1], "observations": [], "outputs": []}


def _usage(m: dict) -> tuple[int, int]:
    response = _extra(m).get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return (count(usage.get("prompt_tokens") or 0, "usage.prompt_tokens"),
            count(usage.get("completion_tokens") or 0, "usage.completion_tokens"))


def _bad_response(extra: dict) -> str:
    """The rejected response of a format error: text-based models keep it as ``model_response``, tool-call models
    as the raw ``response``."""
    if isinstance(extra.get("model_response"), str):
        return extra["model_response"]
    try:
        return extra["response"]["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return ""


def _walk(raw: list, cwd: str) -> tuple[list[Message], list[StepRecord], dict, list[float], tuple[int, int]]:
    """Messages, steps, the exit message's ``extra``, every timestamp and the token sums of a message list."""
    prefix: list[Message] = []
    turns: list[dict] = []
    reasks: list[list[str]] = []  # format errors before each turn
    pending: list[str] = []
    exit_extra: dict = {}
    stamps: list[float] = []
    sent = received = 0
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        m = expect_dict(m, where)
        role, extra = text(m.get("role"), f"{where}.role"), _extra(m)
        if isinstance(extra.get("timestamp"), (int, float)):
            stamps.append(float(extra["timestamp"]))
        tokens = _usage(m)
        sent, received = sent + tokens[0], received + tokens[1]
        if role == "exit" or "exit_status" in extra:
            exit_extra = extra
        elif role == "assistant":
            turns.append(_turn(m, where))
            reasks.append(pending)
            pending = []
        elif role in ("user", "tool") and extra.get("interrupt_type") == "FormatError":
            pending.append(_bad_response(extra))
        elif role in ("system", "user", "tool"):
            content = content_text(m.get("content"), f"{where}.content")
            if not turns:
                prefix.append({"role": "system" if role == "system" else "user", "content": content})
            else:
                turns[-1]["observations"].append(content)
                raw_output = extra.get("raw_output")
                turns[-1]["outputs"].append(raw_output if isinstance(raw_output, str) else content)
        else:
            raise BadTrajectory(f"{where}.role is {role!r}, expected system, user, assistant, tool or exit")
    messages = list(prefix)
    steps = []
    for n, (turn, errors) in enumerate(zip(turns, reasks)):
        message: Message = {"role": "assistant", "content": turn["response"]}
        if turn["reasoning"]:
            message["reasoning_content"] = turn["reasoning"]
        messages.append(message)
        if turn["observations"]:
            messages.append({"role": "user", "content": "\n".join(turn["observations"])})
        steps.append(StepRecord(step=n, response=turn["response"], thought=turn["thought"], action=turn["action"],
                                observation="\n".join(turn["outputs"]), reasoning=turn["reasoning"], working_dir=cwd,
                                prompt_tokens=turn["prompt_tokens"], completion_tokens=turn["completion_tokens"],
                                cost_usd=turn["cost_usd"], format_errors=errors))
    if pending:  # the run ended on format errors
        steps.append(StepRecord(step=len(steps), response=pending[-1], thought="", action="", observation="",
                                working_dir=cwd, format_errors=pending))
    return merge_prefix(messages), steps, exit_extra, stamps, (sent, received)


def _config(info: dict) -> tuple[str | None, dict, str]:
    """(model name, sampling, working dir) from ``info.config``."""
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    kwargs = model.get("model_kwargs") if isinstance(model.get("model_kwargs"), dict) else {}
    sampling = {k: kwargs[k] for k in SAMPLING_KEYS
                if k in kwargs and (kwargs[k] is None or isinstance(kwargs[k], (int, float, str)))}
    env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
    name = model.get("model_name") if isinstance(model.get("model_name"), str) else None
    return name, sampling, env.get("cwd") if isinstance(env.get("cwd"), str) else ""


def mini_record(doc: dict | list, path: PurePath, episode_id: str, opts: ImportOptions) -> TrajectoryRecord:
    """One mini-swe-agent document as a TrajectoryRecord (see the module docstring for the mapping)."""
    if isinstance(doc, list):
        doc = {"messages": doc}
    info = expect_dict(doc.get("info") or {}, "info")
    model, sampling, cwd = _config(info)
    messages, steps, exit_extra, stamps, (sent, received) = _walk(expect_list(doc["messages"], "messages"), cwd)
    name = path.name
    stem = name[: -len(".traj.json")] if name.endswith(".traj.json") else PurePath(name).stem
    instance = doc.get("instance_id")
    task_id = opts.task_id or (instance if isinstance(instance, str) and instance else stem)
    known = resolve_metric(task_id, opts)
    task = opts.tasks.get(task_id)
    stats = expect_dict(info.get("model_stats") or {}, "info.model_stats")
    status = info.get("exit_status") or exit_extra.get("exit_status") or ""
    submission = info.get("submission") or exit_extra.get("submission") or None
    return TrajectoryRecord(
        run_id=opts.run_id, task_id=task_id, task_hash=task.task_hash if task else "", episode_id=episode_id, seed=0,
        model=opts.model or model or "unknown", policy=opts.policy(SOURCE), sampling=sampling,
        history=HistoryConfig(keep_last_observations=max(1, len(steps))), messages=messages, steps=steps,
        baseline=dict(task.baseline) if task else {}, metric=known[0] if known else "",
        direction=known[1] if known else "max", exit_status=text(status, "info.exit_status"),
        submission=text(submission, "info.submission") or None, tokens_sent=sent, tokens_received=received,
        api_calls=count(stats.get("api_calls", 0), "info.model_stats.api_calls"),
        cost_usd=number(stats.get("instance_cost"), "info.model_stats.instance_cost"),
        started_at=min(stamps, default=0.0), wall_time_s=(max(stamps) - min(stamps)) if stamps else 0.0,
    )
