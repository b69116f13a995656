"""Rollout progress: reads ``<run>/rollouts/`` (config.yaml, the trajectory store, manifest.json, cancel.json)
and returns a `RolloutStatus`; `render_status` turns it into a table for the terminal.

Counts come from the deduplicated store (`read_trajectory_table`, a few columns only): an episode counts
as done when its stored record has no ``infra_error``; one whose only record is an infra failure counts
as an infra failure (the scheduler retries it). Cost is the sum of ``cost_usd`` over those records.
Tasks the stage gave up after too many infra failures come from the manifest (its ``task_failed:<id>``
rejects, with the failures the stage counted, lost leases included, which the store never holds), so a
complete stage that gave tasks up says so. Shards the readers set aside as unreadable
(``rollouts/trajectories/corrupt/``) are listed: their episodes are missing until a re-run plays them again.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.artifacts import CONFIG_NAME, RERUN_COMMANDS, exists, join, read_bytes, read_manifest, resolve
from engine.config import RunConfig
from engine.errors import ArtifactError
from engine.rollout.control import cancel_requested
from engine.trajectories.store import read_trajectory_table, set_aside_shards

log = logging.getLogger(__name__)

_COLUMNS = ["task_id", "exit_status", "infra_error", "cost_usd"]
GIVEN_UP_PREFIX = "task_failed:"
"""Manifest rejects of the tasks the stage gave up (`engine.rollout.stage`): `task_failed:<task id>` → failures."""


class _Status(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskProgress(_Status):
    """Progress of one task."""

    task_id: str
    target: int | None = Field(None, description="Episodes wanted (episodes_per_task); None without a config.")
    done: int = Field(0, description="Stored episodes without an infra error (these count towards the target).")
    infra_failures: int = Field(0, description="Episodes whose only stored record is an infra error.")
    exit_statuses: dict[str, int] = Field(default_factory=dict, description="Done episodes by exit status.")
    infra_errors: dict[str, int] = Field(default_factory=dict, description="Stored infra failures by kind.")
    given_up: int | None = Field(
        None, description="The infra failures (stored or lost leases) after which the stage gave the task up "
                          "(the manifest's task_failed:<id>); None: not given up.")
    cost_usd: float = 0.0

    @property
    def remaining(self) -> int | None:
        return None if self.target is None else max(self.target - self.done, 0)


class RolloutStatus(_Status):
    """Progress of a run's rollout stage, from what is on disk."""

    run_dir: str
    run_id: str | None = Field(None, description="From rollouts/config.yaml; None when it is missing.")
    episodes_per_task: int | None = None
    tasks: list[TaskProgress] = Field(default_factory=list, description="Tasks with stored episodes, by id.")
    done: int = 0
    infra_failures: int = 0
    exit_statuses: dict[str, int] = Field(default_factory=dict, description="Done episodes by exit status.")
    infra_errors: dict[str, int] = Field(
        default_factory=dict, description="Infra failures by kind: the text of infra_error before its first ':'.")
    cost_usd: float = 0.0
    complete: bool = Field(False, description="rollouts/manifest.json exists.")
    given_up: dict[str, int] = Field(
        default_factory=dict, description="Tasks given up after too many infra failures → those failures.")
    set_aside: list[str] = Field(
        default_factory=list, description="Unreadable shards moved to rollouts/trajectories/corrupt/.")
    cancel_requested: bool = False
    cancel_reason: str | None = None

    @property
    def target(self) -> int | None:
        """Episodes wanted over the tasks seen so far."""
        return None if self.episodes_per_task is None else self.episodes_per_task * len(self.tasks)


def infra_error_kind(infra_error: str) -> str:
    """The kind of an infra error: its text before the first ':'.

    >>> infra_error_kind("SandboxError: container 3f2a died")
    'SandboxError'
    """
    return infra_error.split(":", 1)[0].strip() or "unknown"


def rollout_status(run_dir: str | os.PathLike) -> RolloutStatus:
    """Read the run's rollout stage and count progress per task, failures by kind and cost so far."""
    fs, base = resolve(run_dir)
    stage = join(base, "rollouts")
    if not exists(fs, stage):
        raise ArtifactError(f"{os.fspath(run_dir)}: no rollouts/ in it; pass a run directory that "
                            "`synthscale rollout` or `synthscale episode --out` wrote")
    cfg = _read_config(fs, join(stage, CONFIG_NAME))
    per_task = cfg.episodes.episodes_per_task if cfg else None
    table = read_trajectory_table(run_dir, fs, columns=_COLUMNS)
    manifest = read_manifest(stage, filesystem=fs)
    given_up = {} if manifest is None else {k[len(GIVEN_UP_PREFIX):]: n for k, n in sorted(manifest.rejects.items())
                                            if k.startswith(GIVEN_UP_PREFIX)}
    tasks: dict[str, TaskProgress] = {}
    infra_kinds: Counter[str] = Counter()
    for task_id, status, infra, cost in zip(*(table.column(c).to_pylist() for c in _COLUMNS)):
        t = tasks.setdefault(task_id, TaskProgress(task_id=task_id, target=per_task))
        t.cost_usd += cost or 0.0
        if infra is not None:
            t.infra_failures += 1
            kind = infra_error_kind(infra)
            infra_kinds[kind] += 1
            t.infra_errors[kind] = t.infra_errors.get(kind, 0) + 1
        else:
            t.done += 1
            t.exit_statuses[status] = t.exit_statuses.get(status, 0) + 1
    for task_id, failures in given_up.items():  # a task may have been given up with nothing stored
        tasks.setdefault(task_id, TaskProgress(task_id=task_id, target=per_task)).given_up = failures
    ordered = [tasks[k] for k in sorted(tasks)]
    exit_totals: Counter[str] = Counter()
    for t in ordered:
        exit_totals.update(t.exit_statuses)
        t.exit_statuses = _ranked(Counter(t.exit_statuses))
        t.infra_errors = _ranked(Counter(t.infra_errors))
    reason = cancel_requested(run_dir)
    return RolloutStatus(
        run_dir=os.fspath(run_dir), run_id=cfg.run_id if cfg else None, episodes_per_task=per_task,
        tasks=ordered, done=sum(t.done for t in ordered), infra_failures=sum(t.infra_failures for t in ordered),
        exit_statuses=_ranked(exit_totals), infra_errors=_ranked(infra_kinds),
        cost_usd=sum(t.cost_usd for t in ordered), complete=manifest is not None, given_up=given_up,
        set_aside=set_aside_shards(run_dir, fs), cancel_requested=reason is not None, cancel_reason=reason)


def _ranked(counts: Counter[str]) -> dict[str, int]:
    """Most frequent first, ties by name, so tables are stable."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _read_config(fs, path: str) -> RunConfig | None:
    if not exists(fs, path):
        log.info("%s: missing; targets unknown", path)
        return None
    try:
        return RunConfig.model_validate(yaml.safe_load(read_bytes(fs, path)) or {})
    except (yaml.YAMLError, ValidationError, ValueError) as e:
        raise ArtifactError(f"{path}: not a valid RunConfig ({e}); rerun `synthscale rollout` to rewrite it") from None


def render_status(status: RolloutStatus) -> str:
    """A plain-text table: the state line, one line per task, then totals, failures by kind, the tasks given up
    (with the infra failures the stage counted and those stored, by kind), and the shards set aside."""
    width = max([len("total"), *(len(t.task_id) for t in status.tasks)])
    lines = [f"run {status.run_id or '?'} ({status.run_dir}): {_state(status)}",
             f"{'task':<{width}}  {'done':>11}  {'infra':>5}  {'cost $':>9}  exit statuses"]
    for t in status.tasks:
        done = f"{t.done}/{t.target}" if t.target is not None else str(t.done)
        lines.append(f"{t.task_id:<{width}}  {done:>11}  {t.infra_failures:>5}  {t.cost_usd:>9.4f}  "
                     f"{_counts(t.exit_statuses)}".rstrip())
    if not status.tasks:
        lines.append("(no episodes stored yet)")
    total = f"{status.done}/{status.target}" if status.target is not None else str(status.done)
    lines.append(f"{'total':<{width}}  {total:>11}  {status.infra_failures:>5}  {status.cost_usd:>9.4f}  "
                 f"{_counts(status.exit_statuses)}".rstrip())
    lines.append(f"infra errors by kind: {_counts(status.infra_errors) or 'none'}")
    given_up = [t for t in status.tasks if t.given_up is not None]
    if given_up:
        lines.append("given up after too many infra failures (rollout.max_infra_failures_per_task; a re-run "
                     "tries them again):")
        lines += [f"  {t.task_id}: {t.given_up} infra failures; stored: {_counts(t.infra_errors) or 'none'}"
                  for t in given_up]
    if status.set_aside:
        lines.append(f"unreadable shards set aside ({len(status.set_aside)}; their episodes are missing until "
                     f"`{RERUN_COMMANDS['rollouts']}` or `synthscale rollout` plays them again):")
        lines += [f"  {p}" for p in status.set_aside]
    return "\n".join(lines)


def _state(status: RolloutStatus) -> str:
    state = "complete" if status.complete else "incomplete"
    if status.given_up:
        n = len(status.given_up)
        state += f", {n} task{'' if n == 1 else 's'} given up"
    if status.cancel_requested:
        state += f", cancel requested ({status.cancel_reason or 'no reason given'})"
    return state


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '(none)'}: {v}" for k, v in counts.items())
