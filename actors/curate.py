"""Curation on Ray Data: reads trajectory shards (`ray.data.read_parquet`, any `pyarrow.fs`), tokenizes them in a pool
of actors that load the student tokenizer once each, and writes the packed and messages shards from grouped
tasks. Ray wiring only: every transform is a function of `engine.curate.batch`, as the in-process executor
runs them (`engine.curate.stage.LocalExecutor`).

On a small machine an actor pool that reserves whole CPUs starves the read tasks that feed it; the actors
reserve `curate.cpus_per_actor` (0.5 by default).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc
import ray

from engine.artifacts import resolve
from engine.curate.batch import rejects_of, samples_of_batch, write_shard_group
from engine.curate.config import CurateConfig
from engine.curate.plan import PackingPlan
from engine.curate.tokenizer import load_student_tokenizer

LIGHT = ["kind", "reason", "count", "sample_id", "episode_id", "step", "n_tokens", "supervised_tokens", "hash"]


class Tokenize:
    """Trajectory rows → sample rows, with the student tokenizer loaded once per actor."""

    def __init__(self, cfg: CurateConfig, keep: set[tuple[str, str]]):
        self.student = load_student_tokenizer(cfg.student)
        self.cfg, self.keep = cfg, keep

    def __call__(self, batch: pa.Table) -> pa.Table:
        return samples_of_batch(batch, self.student, self.cfg, self.keep)


class ShardOf:
    """Adds each sample's output shard (from the packing plan); drops reject rows and samples the plan dropped."""

    def __init__(self, assignment: Mapping[str, tuple[int, int, int]]):
        self.assignment = assignment

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = batch.filter(pc.equal(batch["kind"], "sample"))
        ids = batch.column("sample_id").to_pylist()
        keep = [i for i, s in enumerate(ids) if s in self.assignment]
        batch = batch.take(pa.array(keep, pa.int64()))
        return batch.append_column("shard", pa.array([self.assignment[ids[i]][0] for i in keep], pa.int64()))


class WriteShard:
    """Writes one output shard from all of its samples (one group)."""

    def __init__(self, assignment: Mapping[str, tuple[int, int, int]], out_dir: str):
        self.assignment, self.out_dir = assignment, out_dir

    def __call__(self, group: pa.Table) -> pa.Table:
        shard = group.column("shard")[0].as_py()
        summary = write_shard_group(group.drop_columns(["shard"]), self.assignment, self.out_dir, shard)
        return pa.Table.from_pylist([summary])


class RayDataExecutor:
    """`CurateExecutor` on the connected Ray cluster."""

    def __init__(self, concurrency: int | None = None):
        self.concurrency = concurrency

    def tokenize(self, shards: list[tuple[str, str]], keep: set[tuple[str, str]], cfg: CurateConfig):
        by_fs: dict[str, list[str]] = {}
        for run_dir, path in shards:
            by_fs.setdefault(run_dir, []).append(path)
        actors = cfg.concurrency or self.concurrency or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
        parts = []
        for run_dir, paths in by_fs.items():
            fs, _ = resolve(run_dir)
            ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True)
            parts.append(ds.map_batches(Tokenize, fn_constructor_args=(cfg, keep), batch_format="pyarrow",
                                        batch_size=None, concurrency=actors, num_cpus=cfg.cpus_per_actor))
        ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        return ds.materialize()

    def light(self, samples) -> tuple[pa.Table, dict[str, int]]:
        batches = list(samples.select_columns(LIGHT).iter_batches(batch_format="pyarrow", batch_size=None))
        table = pa.concat_tables(batches) if batches else pa.table({c: [] for c in LIGHT})
        only = table.filter(pc.equal(table["kind"], "sample"))
        return only.select(LIGHT[3:]), rejects_of(table)

    def write(self, samples, plan: PackingPlan, out_dir: str) -> list[dict]:
        if not plan.assignment:
            return []
        ds = samples.map_batches(ShardOf, fn_constructor_args=(plan.assignment,), batch_format="pyarrow",
                                 concurrency=1, num_cpus=0.25)
        out = ds.groupby("shard").map_groups(WriteShard, fn_constructor_args=(plan.assignment, out_dir),
                                             batch_format="pyarrow", concurrency=1, num_cpus=0.25)
        return sorted(out.take_all(), key=lambda s: s["shard"])
