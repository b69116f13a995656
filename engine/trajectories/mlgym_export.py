"""MLGym export: reads TrajectoryRecords, writes `<out>/traj/<model>__<task_id>__run_<n>/<task_id>.traj` + results.json.

The layout and field names are MLGym's (see MLGYM.md, "Trajectory file"), so that MLGym's analysis scripts
and viewers read the files:

- ``environment``: e.g. ``"synthscale-docker"``;
- ``trajectory``: one entry per step, ``action``, ``observation``, ``response``, ``state`` (a JSON *string*
  ``{"open_file": …, "working_dir": …}``, ``"n/a"`` when no file is open, as MLGym stores it), ``thought``,
  ``execution_time``;
- ``history``: the full message list; every message gets ``agent: "primary"``, assistant turns also their
  ``thought`` and ``action`` (the i-th assistant message is the i-th step). The model's reasoning, which
  our messages carry as ``reasoning_content``, is left out: MLGym's history has no such field (it stays
  in our store, on the message and on its step);
- ``info``: ``model_stats``, ``exit_status``, ``submission``, ``score`` (the metrics the agent saw, one
  dict per successful scoring) and our extras under ``info["synthscale"]`` (every score with its held-out
  test metrics, episode id, seed, …).

``results.json`` beside each ``.traj`` holds ``{"agent": <info.score>, "baseline": <baseline metrics>}``.
Runs of one (model, task) are numbered from 0 in episode order: by seed, then start time, then episode id,
so the numbering does not depend on shard order. Episodes with an ``infra_error`` are not exported.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable

import pyarrow.fs as pafs

from engine.artifacts import join, resolve, write_json
from engine.records import ScoreRecord, TrajectoryRecord

log = logging.getLogger(__name__)

AGENT_NAME = "primary"
NO_OPEN_FILE = "n/a"


def visible_metrics(score: ScoreRecord) -> dict[str, float] | None:
    """The metrics the agent was shown for one scoring: validation rows, or MLGym's one dict for mlgym grading."""
    if score.grading == "mlgym":
        return score.validation if score.validation is not None else score.test
    return score.validation


def sanitize_model_name(model: str) -> str:
    """A model name usable as one path component: ``Qwen/Qwen3-8B`` → ``Qwen-Qwen3-8B``."""
    return re.sub(r"[/\\\s]+", "-", model).strip("-.") or "model"


def _state_string(open_file: str | None, working_dir: str) -> str:
    return json.dumps({"open_file": open_file or NO_OPEN_FILE, "working_dir": working_dir})


def _trajectory(record: TrajectoryRecord) -> list[dict]:
    return [
        {
            "action": step.action,
            "observation": step.observation,
            "response": step.response,
            "state": _state_string(step.open_file, step.working_dir),
            "thought": step.thought,
            "execution_time": step.execution_time_s,
        }
        for step in record.steps
    ]


def _history(record: TrajectoryRecord) -> list[dict]:
    history: list[dict] = []
    assistant_turn = 0
    for message in record.messages:
        entry = {"role": message["role"], "content": message["content"], "agent": AGENT_NAME}
        if message.get("role") == "assistant":
            if assistant_turn < len(record.steps):
                step = record.steps[assistant_turn]
                entry["thought"], entry["action"] = step.thought, step.action
            else:
                entry["thought"], entry["action"] = message.get("content", ""), ""
            assistant_turn += 1
        history.append(entry)
    if assistant_turn != len(record.steps):
        log.warning("episode %s (task %s): %d assistant messages but %d steps; thought/action matched by position",
                    record.episode_id, record.task_id, assistant_turn, len(record.steps))
    return history


def agent_scores(record: TrajectoryRecord) -> list[dict[str, float]]:
    """``info.score`` / ``results.json["agent"]``: the metrics the agent saw, one dict per successful scoring."""
    seen = (visible_metrics(s) for s in record.scores if s.error is None)
    return [dict(m) for m in seen if m is not None]


def traj_document(record: TrajectoryRecord, environment: str = "synthscale-local") -> dict:
    """The ``.traj`` JSON object for one episode."""
    return {
        "environment": environment,
        "trajectory": _trajectory(record),
        "history": _history(record),
        "info": {
            "model_stats": {
                "total_cost": record.cost_usd,
                "instance_cost": record.cost_usd,
                "tokens_sent": record.tokens_sent,
                "tokens_received": record.tokens_received,
                "api_calls": record.api_calls,
            },
            "exit_status": record.exit_status,
            "submission": record.submission,
            "score": agent_scores(record),
            "synthscale": {
                "episode_id": record.episode_id,
                "run_id": record.run_id,
                "task_id": record.task_id,
                "task_hash": record.task_hash,
                "model": record.model,
                "policy": record.policy,
                "seed": record.seed,
                "metric": record.metric,
                "direction": record.direction,
                "scores": [s.model_dump(mode="json") for s in record.scores],
                "test_scores": [s.test for s in record.scores if s.test is not None],
                "sampling": record.sampling,
                "wall_time_s": record.wall_time_s,
                "infra_error": record.infra_error,
            },
        },
    }


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
                 environment: str = "synthscale-local", filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Write MLGym's ``traj/`` layout under ``out_dir`` (a local path or URI); return the ``.traj`` paths written.

    Returned paths are inside the resolved filesystem: absolute local paths, or ``bucket/key`` for S3.

    ``environment`` names the runtime, e.g. ``f"synthscale-{config.sandbox.runtime}"``.
    """
    records = list(records)
    fs, base = resolve(out_dir, filesystem)
    written = []
    for n, record in number_runs(records):
        folder = join(base, "traj", f"{sanitize_model_name(record.model)}__{record.task_id}__run_{n}")
        traj_path = join(folder, f"{record.task_id}.traj")
        write_json(fs, traj_path, traj_document(record, environment))
        write_json(fs, join(folder, "results.json"), {"agent": agent_scores(record), "baseline": dict(record.baseline)})
        written.append(traj_path)
    skipped = len(records) - len(written)
    if skipped:
        log.info("MLGym export to %s: skipped %d episodes with infra errors", out_dir, skipped)
    return written
