"""MLGym / SWE-agent import: reads one ``.traj`` document (and its ``results.json``), returns a TrajectoryRecord.

MLGym's layout is ``<model>__<task>__<agent config>__t-<temperature>__p-<top_p>__c-<cost limit>__install-<n>__
[parallel_agents_]run_<n>/<task>.traj``; synthscale's export writes ``<model>__<task>__run_<n>/<task>.traj``.

Field by field (``.traj`` → TrajectoryRecord):

- path: task id = the file's stem (MLGym names the file after the task); model = the folder name's first ``__``
  part when its second part is that task; seed = ``run_<n>`` (MLGym records no seed; its run number keeps the
  runs' order), else 0; sampling = ``t-``/``p-`` as ``temperature``/``top_p`` (the cost limit ``c-`` is lost).
  A SWE-agent ``replay_config`` names the model and its temperature/top_p instead.
- ``trajectory[i]`` → ``steps[i]``: ``action``, ``observation``, ``response``, ``thought`` as they are, ``step = i``,
  ``execution_time`` → ``execution_time_s``; ``state`` (a JSON string, or an object in SWE-agent) → ``open_file``
  (``"n/a"`` → None) and ``working_dir``, other state keys (MLGym's memory records) are lost. MLGym takes the
  state before the step's action (it is what the step's prompt showed); our records keep the state after it, so
  step i gets the state of step i+1, and the last step its own.
- ``history`` → ``messages``: ``role`` and ``content`` (SWE-agent's ``tool`` results become ``user`` messages, the
  text parts of a list content are joined); ``agent``, ``thought``, ``action`` and ``is_demo`` are dropped (thought
  and action live on the steps); a demonstration message before the task joins the task message (see
  ``merge_prefix``).
- ``info.model_stats``: ``task_cost`` (else ``instance_cost``, else ``total_cost``) → ``cost_usd``; ``tokens_sent``,
  ``tokens_received``, ``api_calls`` as they are. ``info.exit_status``, ``info.submission`` as they are.
- ``info.score`` (one metric dict per successful validate, submit or auto-submission) → ``scores``: MLGym's
  ``evaluate.py`` prints one dict, both what the agent saw and what MLGym ranks, so each becomes a
  ``grading="mlgym"`` score with that dict as ``validation`` and ``test`` (as synthscale stores its own runs of
  MLGym tasks). The i-th validate score goes to the i-th step whose observation says the artefact was valid,
  with the artefact path it names; a final score (exit status ``submitted`` or ``autosubmission (…)``) to the last
  step, as ``submit``/``autosubmit`` with ``info.submission``. An exit status ``submission_not_found (…)`` or
  ``evaluation_format_error (…)`` adds a failed final scoring (``error`` = the status). Validates that failed
  leave no score in MLGym's file and none here.
- metric/direction: ``ImportOptions`` (``--metric/--direction``), else the task folder given for the task
  (``--task``), else MLGym-Bench's table (``MLGYM_METRICS``); otherwise unknown: the record's ``metric`` is ``""``
  and its ``direction`` ``"max"``, each score names its dict's first key (see ``mlgym_score``), so curation's
  success filter counts every imported score dict as a scoring that produced a score, while ``beat_baseline``
  rejects the episode as ``no_baseline`` (no baseline has the metric ``""``).
- ``results.json``: ``baseline`` → ``baseline`` (else the task folder's baseline); its ``agent`` list repeats
  ``info.score`` and is not read.
- defaulted: ``task_hash`` ``""`` (the task folder's hash when ``--task`` gives it), ``history`` MLGym's defaults
  (5 observations kept verbatim; ``max_observation_chars`` ours, unused after the episode), ``started_at`` and
  ``wall_time_s`` 0 (MLGym records neither), per-step reasoning, latency, tokens, cost and format errors
  (MLGym keeps none), ``infra_error`` None. Lost: ``environment``, ``info.summarizer``.

A ``.traj`` written by synthscale's export (a top-level ``synthscale`` key; ``info.synthscale`` in older exports)
comes back as the episode it was: ids, run id, policy, seed, sampling, metric, direction, history settings, every
score (with test metrics), the step records, the submission, messages with their ``reasoning_content`` (history
entries the export added for MLGym, a final format-error turn, cut off), cost, start and wall time and
``infra_error`` from that key. Older exports without step records take the steps from ``trajectory`` (state as
written, after the action) and default the rest as above. Options given (task id, model, source, metric) still win.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath
from typing import Any

from engine.protocols import Message
from engine.records import HistoryConfig, ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.importers.common import (
    BadTrajectory,
    ImportOptions,
    content_text,
    count,
    expect_dict,
    expect_list,
    merge_prefix,
    metrics_dict,
    mlgym_score,
    number,
    resolve_metric,
    text,
)

EXTRAS_KEY = "synthscale"  # the export's one key beyond MLGym's (engine.trajectories.mlgym_export)
MLGYM_KEEP_LAST_OBSERVATIONS = 5  # MLGym's default history processor
NO_OPEN_FILE = "n/a"
VALID_ARTEFACT = re.compile(r"Your code produced a valid submission artefact at (.*?)\.?\n")
_RUN = re.compile(r"(?:^|_)run_(\d+)$")
_SAMPLING = {"t": "temperature", "p": "top_p"}
_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "user"}  # SWE-agent: tool results


def is_traj_document(doc: Any) -> bool:
    """MLGym's and SWE-agent's ``.traj``: an object with ``trajectory`` and ``history``."""
    return isinstance(doc, dict) and "trajectory" in doc and "history" in doc


def source_of(doc: dict) -> str:
    """The default import source: SWE-agent files carry a ``replay_config``, MLGym's do not."""
    return "swe-agent" if "replay_config" in doc else "mlgym"


def path_facts(path: PurePath) -> dict[str, Any]:
    """Task id, model, run number and sampling from MLGym's layout (what the path does not say is absent).

    >>> folder = "gpt4o__blotto__default__t-0.00__p-0.95__c-4.00__install-0__parallel_agents_run_2"
    >>> path_facts(PurePath(folder, "blotto.traj"))
    {'task_id': 'blotto', 'model': 'gpt4o', 'run': 2, 'sampling': {'temperature': 0.0, 'top_p': 0.95}}
    >>> path_facts(PurePath("somewhere/blotto.traj"))
    {'task_id': 'blotto', 'sampling': {}}
    """
    task_id = path.name.removesuffix(".traj")
    parts = path.parent.name.split("__")
    facts: dict[str, Any] = {"task_id": task_id}
    if len(parts) >= 3 and parts[1] == task_id:
        facts["model"] = parts[0]
        if m := _RUN.search(parts[-1]):
            facts["run"] = int(m.group(1))
    sampling = {}
    for part in parts[2:]:
        key, _, value = part.partition("-")
        if key in _SAMPLING and re.fullmatch(r"\d+(\.\d+)?", value):
            sampling[_SAMPLING[key]] = float(value)
    facts["sampling"] = sampling
    return facts


def parse_state(value: Any) -> tuple[str | None, str]:
    """(open file, working dir) of a step's ``state``: MLGym's JSON string or SWE-agent's object.

    >>> parse_state('{"open_file": "n/a", "working_dir": "/home/agent/workspace"}')
    (None, '/home/agent/workspace')
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        return None, ""
    open_file, cwd = value.get("open_file"), value.get("working_dir")
    open_file = open_file if isinstance(open_file, str) and open_file not in ("", NO_OPEN_FILE) else None
    return open_file, cwd if isinstance(cwd, str) else ""


def _steps(raw: list, state_after: bool) -> list[StepRecord]:
    entries = [expect_dict(s, f"trajectory[{i}]") for i, s in enumerate(raw)]
    states = [parse_state(s.get("state")) for s in entries]
    if not state_after:  # MLGym's state precedes the action: the next step's is this one's result
        states = states[1:] + states[-1:]
    steps = []
    for i, (s, (open_file, cwd)) in enumerate(zip(entries, states)):
        where = f"trajectory[{i}]"
        steps.append(StepRecord(
            step=i, response=text(s.get("response"), f"{where}.response"),
            thought=text(s.get("thought"), f"{where}.thought"), action=text(s.get("action"), f"{where}.action"),
            observation=text(s.get("observation"), f"{where}.observation"), open_file=open_file, working_dir=cwd,
            execution_time_s=number(s.get("execution_time"), f"{where}.execution_time"),
        ))
    return steps


def _messages(raw: list) -> list[Message]:
    messages: list[Message] = []
    for i, m in enumerate(raw):
        m = expect_dict(m, f"history[{i}]")
        role = text(m.get("role"), f"history[{i}].role")
        if role not in _ROLES:
            raise BadTrajectory(f"history[{i}].role is {role!r}, expected one of {list(_ROLES)}")
        messages.append({"role": _ROLES[role], "content": content_text(m.get("content"), f"history[{i}].content")})
    return merge_prefix(messages)


def _scores(info: dict, steps: list[StepRecord], known, exit_status: str,
            submission: str | None) -> list[ScoreRecord]:
    raw = expect_list(info.get("score") or [], "info.score")
    dicts = [metrics_dict(m, f"info.score[{i}]") for i, m in enumerate(raw)]
    last = max(len(steps) - 1, 0)
    final = ("submit" if exit_status == "submitted"
             else "autosubmit" if exit_status.startswith("autosubmission") else None)
    validated = [(s.step, m.group(1)) for s in steps if (m := VALID_ARTEFACT.match(s.observation))]
    validates = dicts[:-1] if final and dicts else dicts
    scores = [mlgym_score(validated[i][0] if i < len(validated) else last, "validate", d, known,
                          artefact=validated[i][1] if i < len(validated) else None)
              for i, d in enumerate(validates)]
    if final and dicts:
        scores.append(mlgym_score(last, final, dicts[-1], known, artefact=submission))
    elif exit_status.startswith(("submission_not_found", "evaluation_format_error")):
        kind = "submit" if exit_status.endswith("(submit)") else "autosubmit"
        scores.append(mlgym_score(last, kind, None, known, error=exit_status))
    return scores


def _model_stats(info: dict) -> dict[str, Any]:
    stats = expect_dict(info.get("model_stats") or {}, "info.model_stats")
    cost = next((stats[k] for k in ("task_cost", "instance_cost", "total_cost") if stats.get(k) is not None), None)
    return {
        "cost_usd": number(cost, "info.model_stats cost"),
        "tokens_sent": count(stats.get("tokens_sent", 0), "info.model_stats.tokens_sent"),
        "tokens_received": count(stats.get("tokens_received", 0), "info.model_stats.tokens_received"),
        "api_calls": count(stats.get("api_calls", 0), "info.model_stats.api_calls"),
    }


def _replay_config(doc: dict) -> dict[str, Any]:
    """Model name and sampling from SWE-agent's ``replay_config`` (a JSON string or object); {} when absent."""
    raw = doc.get("replay_config")
    try:
        cfg = json.loads(raw) if isinstance(raw, str) else raw
        model = cfg["agent"]["model"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return {}
    if not isinstance(model, dict):
        return {}
    sampling = {k: model[k] for k in ("temperature", "top_p") if isinstance(model.get(k), (int, float))}
    name = model.get("name")
    return {"model": name, "sampling": sampling} if isinstance(name, str) else {"sampling": sampling}


def _submission(info: dict) -> str | None:
    value = info.get("submission")
    return None if value is None else text(value, "info.submission")


def _baseline(results: dict | None, facts_baseline: dict[str, float]) -> dict[str, float]:
    if isinstance(results, dict) and isinstance(results.get("baseline"), dict):
        return metrics_dict(results["baseline"], "results.json baseline")
    return dict(facts_baseline)


def mlgym_record(doc: dict, path: PurePath, episode_id: str, opts: ImportOptions,
                 results: dict | None = None) -> TrajectoryRecord:
    """One ``.traj`` document as a TrajectoryRecord (see the module docstring for the mapping).

    ``path`` names the file in MLGym's layout (task id, model, run, sampling); ``episode_id`` is used unless the
    file is synthscale's own export; ``results`` is the ``results.json`` beside it, if any. A malformed document
    raises BadTrajectory (or pydantic's ValidationError) naming the field.
    """
    info = expect_dict(doc.get("info") or {}, "info")
    extras = doc.get(EXTRAS_KEY, info.get(EXTRAS_KEY))  # info.synthscale: exports before the key moved up
    if extras is not None:
        return _own_export(doc, info, expect_dict(extras, EXTRAS_KEY), episode_id, opts, results)
    facts = path_facts(path)
    replay = _replay_config(doc)
    task_id = opts.task_id or facts["task_id"]
    known = resolve_metric(task_id, opts)
    task = opts.tasks.get(task_id)
    steps = _steps(expect_list(doc["trajectory"], "trajectory"), state_after=False)
    exit_status = text(info.get("exit_status"), "info.exit_status")
    submission = _submission(info)
    return TrajectoryRecord(
        run_id=opts.run_id, task_id=task_id, task_hash=task.task_hash if task else "", episode_id=episode_id,
        seed=facts.get("run", 0), model=opts.model or facts.get("model") or replay.get("model") or "unknown",
        policy=opts.policy(source_of(doc)), sampling=facts["sampling"] or replay.get("sampling", {}),
        history=HistoryConfig(keep_last_observations=MLGYM_KEEP_LAST_OBSERVATIONS),
        messages=_messages(expect_list(doc["history"], "history")), steps=steps,
        scores=_scores(info, steps, known, exit_status, submission),
        baseline=_baseline(results, task.baseline if task else {}),
        metric=known[0] if known else "", direction=known[1] if known else "max",
        exit_status=exit_status, submission=submission, started_at=0.0, **_model_stats(info),
    )


def _own_export(doc: dict, info: dict, extras: dict, episode_id: str, opts: ImportOptions,
                results: dict | None) -> TrajectoryRecord:
    """A ``.traj`` of synthscale's export: its ``synthscale`` key holds what MLGym's fields cannot."""
    task_id = opts.task_id or text(extras.get("task_id"), "synthscale.task_id")
    if extras.get("steps") is not None:
        steps = [StepRecord.model_validate(s) for s in expect_list(extras["steps"], "synthscale.steps")]
    else:  # an export from before the step records were kept: MLGym's fields, state after the action
        steps = _steps(expect_list(doc["trajectory"], "trajectory"), state_after=True)
    scores = [ScoreRecord.model_validate(s) for s in expect_list(extras.get("scores") or [], "synthscale.scores")]
    metric, direction = extras.get("metric", ""), extras.get("direction", "max")
    if opts.metric is not None:
        metric, direction = opts.metric, opts.direction
    history = (HistoryConfig.model_validate(extras["history_config"]) if extras.get("history_config")
               else HistoryConfig())
    submission = extras["submission"] if "submission" in extras else _submission(info)
    return TrajectoryRecord(
        run_id=extras.get("run_id") or opts.run_id, task_id=task_id, task_hash=extras.get("task_hash", ""),
        episode_id=text(extras.get("episode_id"), "synthscale.episode_id") or episode_id,
        seed=extras.get("seed", 0), model=opts.model or extras.get("model") or "unknown",
        policy=opts.policy("mlgym") if opts.source or not extras.get("policy") else extras["policy"],
        sampling=extras.get("sampling") or {}, history=history,
        messages=_own_messages(doc, extras), steps=steps, scores=scores,
        baseline=_baseline(results, {}), metric=metric, direction=direction,
        exit_status=text(info.get("exit_status"), "info.exit_status"), submission=submission,
        wall_time_s=extras.get("wall_time_s", 0.0), started_at=extras.get("started_at", 0.0),
        infra_error=extras.get("infra_error"), **_own_stats(info, extras),
    )


def _own_messages(doc: dict, extras: dict) -> list[Message]:
    """The export's history back as our messages: the entries the export added (a final format-error turn) cut
    off, the reasoning put back on its assistant messages."""
    raw = expect_list(doc["history"], "history")
    count_ = extras.get("message_count")
    messages = _messages(raw[:count_] if isinstance(count_, int) else raw)
    for index, reasoning in expect_list(extras.get("reasoning_content") or [], "synthscale.reasoning_content"):
        if isinstance(index, int) and 0 <= index < len(messages):
            messages[index]["reasoning_content"] = reasoning
    return messages


def _own_stats(info: dict, extras: dict) -> dict[str, Any]:
    stats = _model_stats(info)
    if extras.get("cost_usd") is not None:
        stats["cost_usd"] = number(extras["cost_usd"], "synthscale.cost_usd")
    return stats
