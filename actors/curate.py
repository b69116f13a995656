"""Curation on Ray: a Ray Data dataset of trajectory shard paths (any `pyarrow.fs`), read and tokenized in a pool of
actors that load the student tokenizer once each; the packed and messages shards written by plain tasks. Ray
wiring only: every transform is a function of `engine.curate.batch`, as the in-process executor runs them
(`engine.curate.stage.LocalExecutor`).

On a small machine an actor pool that reserves whole CPUs starves the read tasks that feed it; the actors
reserve `curate.cpus_per_actor` (0.5 by default).

Per-call costs are amortised: a store holds one shard per episode (one row), and `ray.data.read_parquet` spends
tens of milliseconds per file on such shards (listing, a read task's block per file), so the dataset is the
list of shard paths and each tokenizing call reads up to `EPISODES_PER_CALL` of them itself, with the store's
own reader (schema checked, v1 upgraded, as the in-process executor reads them), and tokenizes their
conversations in one batch. Each output shard's samples are gathered by a two-step shuffle of plain tasks (one
partition per output shard, at most one per CPU), where Ray Data's groupby spent seconds of fixed cost on its
default 200 partitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from engine.artifacts import resolve
from engine.curate.batch import KEEP_KEY, rejects_of, samples_of_batch, write_shard_group
from engine.curate.config import CurateConfig
from engine.curate.plan import PackingPlan
from engine.curate.tokenizer import load_student_tokenizer
from engine.trajectories.store import read_shard as read_trajectory_shard

LIGHT = ["kind", "reason", "count", "sample_id", "episode_id", "step", "n_tokens", "supervised_tokens", "hash"]

EPISODES_PER_CALL = 16
"""Most trajectory rows (episodes) one tokenizing call gets; fewer when that would leave an actor without work."""

CALLS_PER_ACTOR = 4
"""Aim for at least this many tokenizing calls per actor, so that the actors finish together."""


class Tokenize:
    """Trajectory shards (rows of `run_dir`, `path`) → sample rows, with the student tokenizer loaded once per
    actor."""

    def __init__(self, cfg: CurateConfig, keep: set[tuple[str, str]]):
        self.student = load_student_tokenizer(cfg.student)
        self.cfg, self.keep = cfg, keep

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = []
        for run_dir, path in zip(batch.column("run_dir").to_pylist(), batch.column("path").to_pylist()):
            table = read_trajectory_shard(resolve(run_dir)[0], path, None)
            tables.append(table.append_column(KEEP_KEY, pa.array([path] * table.num_rows, pa.string())))
        return samples_of_batch(pa.concat_tables(tables), self.student, self.cfg, self.keep)


def split_by_partition(block: pa.Table, assignment: Mapping[str, tuple[int, int, int]],
                       partitions: int) -> list[pa.Table]:
    """A block's samples that the packing plan kept (reject rows and dropped samples left out), with their output
    shard as a column, split into `partitions` tables: shard s goes to partition s % partitions."""
    block = block.filter(pc.equal(block["kind"], "sample"))
    ids = block.column("sample_id").to_pylist()
    keep = [i for i, s in enumerate(ids) if s in assignment]
    shards = [assignment[ids[i]][0] for i in keep]
    block = block.take(pa.array(keep, pa.int64())).append_column("shard", pa.array(shards, pa.int64()))
    part = np.asarray(shards, dtype=np.int64) % partitions
    return [block.filter(pa.array(part == p)) for p in range(partitions)]


def _split_task(block: pa.Table, assignment: Mapping[str, tuple[int, int, int]], partitions: int):
    parts = split_by_partition(block, assignment, partitions)
    return parts if partitions > 1 else parts[0]  # a task with one return returns the value itself


def write_partition(assignment: Mapping[str, tuple[int, int, int]], out_dir: str, *parts: pa.Table) -> list[dict]:
    """Writes every output shard of one partition from its pieces (one per tokenized block)."""
    table = pa.concat_tables(parts)
    shards = table.column("shard").to_pylist()
    rows: dict[int, list[int]] = {}
    for i, s in enumerate(shards):
        rows.setdefault(s, []).append(i)
    return [write_shard_group(table.take(pa.array(rows[s], pa.int64())).drop_columns(["shard"]), assignment, out_dir, s)
            for s in sorted(rows)]


def batch_size(episodes: int, actors: int) -> int:
    """Trajectory rows per tokenizing call: `EPISODES_PER_CALL`, fewer when there are not enough to give each actor
    `CALLS_PER_ACTOR` calls.

    >>> batch_size(160, 1), batch_size(12, 2), batch_size(0, 1)
    (16, 2, 1)
    """
    return max(1, min(EPISODES_PER_CALL, math.ceil(episodes / (actors * CALLS_PER_ACTOR))))


class RayDataExecutor:
    """`CurateExecutor` on the connected Ray cluster."""

    def __init__(self, concurrency: int | None = None):
        self.concurrency = concurrency

    def tokenize(self, shards: list[tuple[str, str]], keep: set[tuple[str, str]], cfg: CurateConfig):
        actors = cfg.concurrency or self.concurrency or max(1, int(self._cpus()) // 2)
        rows = batch_size(len(shards), actors)
        ds = ray.data.from_items([{"run_dir": run_dir, "path": path} for run_dir, path in shards],
                                 override_num_blocks=max(1, math.ceil(len(shards) / rows)))
        ds = ds.map_batches(Tokenize, fn_constructor_args=(cfg, keep), batch_format="pyarrow", batch_size=rows,
                            concurrency=actors, num_cpus=cfg.cpus_per_actor)
        return ds.materialize()

    def light(self, samples) -> tuple[pa.Table, dict[str, int]]:
        batches = list(samples.select_columns(LIGHT).iter_batches(batch_format="pyarrow", batch_size=None))
        table = pa.concat_tables(batches) if batches else pa.table({c: [] for c in LIGHT})
        only = table.filter(pc.equal(table["kind"], "sample"))
        return only.select(LIGHT[3:]), rejects_of(table)

    def write(self, samples, plan: PackingPlan, out_dir: str) -> list[dict]:
        """A two-step shuffle of plain tasks (split each tokenized block by partition, then write each partition's
        shards): Ray Data's groupby costs seconds of fixed overhead, even for a few megabytes."""
        if not plan.assignment:
            return []
        partitions = max(1, min(plan.shards, int(self._cpus())))
        assignment = ray.put(dict(plan.assignment))
        # whole CPUs: the work is CPU-bound, and fractional ones make Ray start a worker process (each importing
        # the engine) for every task that fits
        split = ray.remote(num_cpus=1, num_returns=partitions)(_split_task)
        write = ray.remote(num_cpus=1)(write_partition)
        pieces = [split.remote(block, assignment, partitions) for block in samples.to_arrow_refs()]
        pieces = [p if isinstance(p, list) else [p] for p in pieces]  # one return: one ref, not a list
        done = ray.get([write.remote(assignment, out_dir, *[p[q] for p in pieces]) for q in range(partitions)])
        return sorted((s for summaries in done for s in summaries), key=lambda s: s["shard"])

    @staticmethod
    def _cpus() -> float:
        return ray.cluster_resources().get("CPU", 2)
