"""The curation stage's global decisions, made on the driver from light columns: which stored episodes to curate
(`select_records`: usable, successful, under the per-task cap) and how the tokenized samples are deduplicated
and packed into shards (`plan_packing`: first-fit decreasing over every sample's length).

Both are pure functions of small tables, so the local and the Ray executor plan identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from engine.curate.config import CurateConfig, FilterConfig
from engine.curate.filters import cap_per_task, success_reason
from engine.curate.kept import Kept, merge_rejects
from engine.curate.pack import first_fit_decreasing
from engine.records import TrajectoryRecord
from engine.trajectories.store import table_to_records

RECORD_COLUMNS = ["run_id", "task_id", "task_hash", "episode_id", "seed", "model", "policy", "scores", "baseline",
                  "metric", "direction", "exit_status", "infra_error"]
"""What the record-level filters read (never messages or steps)."""


@dataclass
class Selection:
    """The episodes to curate, as (shard path, episode id), and what the record filters rejected."""

    keep: set[tuple[str, str]]
    rejects: dict[str, int]
    records: int


def select_records(table: pa.Table, cfg: FilterConfig) -> Selection:
    """Record-level filters over the store's light columns plus `path` (`read_stores(..., with_path=True)`): no
    infra error, success, the per-task cap. `no_assistant_turn` needs the messages, so the tokenizing step
    rejects it; the cap counts episodes that passed the filters decided here."""
    paths = table.column("path").to_pylist()
    records = table_to_records(table.drop_columns(["path"]))
    path_of = {id(r): p for r, p in zip(records, paths)}

    def reason(r: TrajectoryRecord) -> str | None:
        if r.infra_error is not None:
            return "infra_error"
        return success_reason(r, cfg.beat_baseline) if cfg.require_success else None

    first = Kept.split(records, reason)
    capped = cap_per_task(first.items, cfg.max_per_task)
    return Selection(keep={(path_of[id(r)], r.episode_id) for r in capped.items},
                     rejects=merge_rejects(first.rejects, capped.rejects), records=len(records))


@dataclass
class PackingPlan:
    """Where every kept sample goes: sample id → (shard, row in shard, position in row)."""

    assignment: dict[str, tuple[int, int, int]]
    rows: int
    shards: int
    tokens: int
    budget: int
    rejects: dict[str, int] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        """Sample tokens / slots (rows × budget)."""
        return self.tokens / (self.rows * self.budget) if self.rows else 0.0


def plan_packing(samples: pa.Table, cfg: CurateConfig, rows_per_shard: int) -> PackingPlan:
    """Deduplicate (same tokens and mask: the first by episode id and turn wins) and pack first-fit decreasing.

    `samples`: columns sample_id, episode_id, step, n_tokens, hash (one row per tokenized sample).

    >>> t = pa.table({"sample_id": ["a", "b", "c", "d"], "episode_id": ["e1", "e1", "e2", "e3"],
    ...               "step": [0, 1, 0, 0], "n_tokens": [6, 5, 4, 6], "hash": ["x", "y", "z", "x"]})
    >>> p = plan_packing(t, CurateConfig(pack_tokens=10, filters={"max_tokens_drop": 10, "max_tokens_truncate": 8}), 1)
    >>> sorted(p.assignment.items()), p.rejects
    ([('a', (0, 0, 0)), ('b', (1, 0, 0)), ('c', (0, 0, 1))], {'duplicate': 1})
    """
    rows = sorted(samples.to_pylist(), key=lambda r: (r["episode_id"], -1 if r["step"] is None else r["step"]))
    rejects: dict[str, int] = {}
    if cfg.filters.dedup:
        seen: set[str] = set()
        unique = []
        for r in rows:
            if r["hash"] in seen:
                rejects["duplicate"] = rejects.get("duplicate", 0) + 1
            else:
                seen.add(r["hash"])
                unique.append(r)
        rows = unique
    fits = [r for r in rows if r["n_tokens"] <= cfg.pack_tokens]
    if len(fits) < len(rows):
        rejects["over_pack_budget"] = len(rows) - len(fits)
    bins = first_fit_decreasing([r["n_tokens"] for r in fits], cfg.pack_tokens)
    assignment = {fits[i]["sample_id"]: (b // rows_per_shard, b % rows_per_shard, pos)
                  for b, members in enumerate(bins) for pos, i in enumerate(members)}
    return PackingPlan(assignment=assignment, rows=len(bins), shards=-(-len(bins) // rows_per_shard),
                       tokens=sum(r["n_tokens"] for r in fits), budget=cfg.pack_tokens, rejects=rejects,
                       lengths=[sum(fits[i]["n_tokens"] for i in members) for members in bins])
