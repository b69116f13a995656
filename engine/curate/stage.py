"""The curation stage: reads the trajectory stores of one or several rollout runs (`RUN/rollouts/trajectories/`),
writes `RUN/curate/`: `shards/part-*.parquet` (packed token rows), `messages/part-*.parquet` (the same samples as
chat messages), `stats.json`, and `manifest.json` last.

The stage decides on the driver, from small tables: which episodes to curate (`plan.select_records`) and how
the samples are deduplicated and packed (`plan.plan_packing`). The heavy work — tokenizing every episode,
building and writing the packed shards — goes to a `CurateExecutor`: this process (`LocalExecutor`), or Ray
Data on a cluster (`actors.curate.RayDataExecutor`); both run the same functions of `engine.curate.batch`,
so they write the same rows.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from engine.artifacts import begin_stage, read_manifest, resolve, run_path, write_config, write_json, write_manifest
from engine.config import RunConfig, config_digest
from engine.curate.batch import KEEP_KEY, SAMPLE_SCHEMA, rejects_of, samples_of_batch, write_shard_group
from engine.curate.config import CurateConfig
from engine.curate.kept import merge_rejects
from engine.curate.plan import RECORD_COLUMNS, PackingPlan, plan_packing, select_records
from engine.curate.shards import MESSAGES_SCHEMA, PACKED_SCHEMA, read_shard
from engine.curate.tokenize import check_reasoning_supported
from engine.curate.tokenizer import StudentTokenizer, load_student_tokenizer
from engine.errors import ArtifactError
from engine.records import Manifest
from engine.trajectories.store import read_shard as read_trajectory_shard
from engine.trajectories.store import read_stores, shard_paths

log = logging.getLogger(__name__)

LIGHT_COLUMNS = ["sample_id", "episode_id", "step", "n_tokens", "supervised_tokens", "hash"]


class CurateExecutor(Protocol):
    """Where curation's heavy work runs. `tokenize` returns an opaque handle on the sample rows."""

    def tokenize(self, shards: list[tuple[str, str]], keep: set[tuple[str, str]], cfg: CurateConfig) -> object:
        """Sample rows (`engine.curate.batch.SAMPLE_SCHEMA`) of the kept episodes of `shards` ((run dir, shard path))."""
        ...

    def light(self, samples: object) -> tuple[pa.Table, dict[str, int]]:
        """The samples' light columns (LIGHT_COLUMNS) and the rejects counted while tokenizing."""
        ...

    def write(self, samples: object, plan: PackingPlan, out_dir: str) -> list[dict]:
        """Write every shard of the plan; one summary per shard."""
        ...


class LocalExecutor:
    """Curation in this process: shard by shard, with the tokenizer loaded once."""

    def __init__(self, student: StudentTokenizer):
        self.student = student

    def tokenize(self, shards: list[tuple[str, str]], keep: set[tuple[str, str]], cfg: CurateConfig) -> pa.Table:
        tables = []
        for run_dir, path in shards:
            fs, _ = resolve(run_dir)
            table = read_trajectory_shard(fs, path, None)
            table = table.append_column(KEEP_KEY, pa.array([path] * table.num_rows, pa.string()))
            tables.append(samples_of_batch(table, self.student, cfg, keep))
        return pa.concat_tables(tables) if tables else SAMPLE_SCHEMA.empty_table()

    def light(self, samples: pa.Table) -> tuple[pa.Table, dict[str, int]]:
        is_sample = pc.equal(samples["kind"], "sample")
        return samples.filter(is_sample).select(LIGHT_COLUMNS), rejects_of(samples)

    def write(self, samples: pa.Table, plan: PackingPlan, out_dir: str) -> list[dict]:
        rows = [r for r in samples.to_pylist() if r["kind"] == "sample" and r["sample_id"] in plan.assignment]
        groups: dict[int, list[dict]] = {}
        for r in rows:
            groups.setdefault(plan.assignment[r["sample_id"]][0], []).append(r)
        return [write_shard_group(pa.Table.from_pylist(groups[k]), plan.assignment, out_dir, k) for k in sorted(groups)]


@dataclass
class CuratedData:
    """A handle on `RUN/curate/`: its manifest and stats, and its shards as Arrow tables."""

    out_dir: str
    manifest: Manifest
    stats: dict = field(default_factory=dict)

    def to_arrow(self) -> pa.Table:
        """Every packed row (input_ids, loss_mask, position_ids, seq_lens, sample_ids)."""
        return _read_all(self.out_dir, "shards", PACKED_SCHEMA)

    def messages(self) -> pa.Table:
        """Every sample as chat messages (the format TRL and LLaMA-Factory load)."""
        return _read_all(self.out_dir, "messages", MESSAGES_SCHEMA)

    def to_pandas(self):
        return self.to_arrow().to_pandas()


def _read_all(out_dir: str, sub: str, schema: pa.Schema) -> pa.Table:
    fs, base = resolve(run_path(out_dir, sub))
    from pyarrow import fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    paths = sorted(i.path for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))
    tables = [read_shard(p, schema, fs=fs) for p in paths]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def curate_inputs(cfg: RunConfig) -> list[str]:
    """The rollout runs curated: `curate.inputs`, or this run."""
    return list(cfg.curate.inputs) or [cfg.run_dir]


def run_curate(cfg: RunConfig, executor_for, *, start_over: bool = False) -> CuratedData:
    """The whole stage; `executor_for(student) -> CurateExecutor`. Re-running with the same inputs and settings
    reuses the output; other inputs or settings are refused unless `start_over`."""
    started = time.time()
    out_dir = run_path(cfg.run_dir, "curate")
    cur = cfg.curate
    student = load_student_tokenizer(cur.student)
    check_reasoning_supported(cur.sample_unit, cur.reasoning, student)
    inputs = curate_inputs(cfg)
    light = read_stores(inputs, RECORD_COLUMNS, with_path=True, set_aside=True)  # unreadable shards go aside first
    shards = [(run_dir, p) for run_dir in inputs for p in shard_paths(run_dir)]
    if not shards:
        raise ArtifactError(f"curate: no trajectory shards in {inputs} (rollouts/trajectories/part-*.parquet); run "
                            "`synthscale rollout` or `synthscale import-traj` first, or set curate.inputs")
    key = {**cfg.stage_inputs("curate"), "tokenizer": student.content_hash,
           "trajectories": config_digest(sorted(p for _, p in shards))}
    done = begin_stage(out_dir, "curate", config_digest(key), start_over=start_over, inputs=key)
    if done is not None:
        log.info("run %s: curation already done under these inputs and settings; reusing %s", cfg.run_id, out_dir)
        return CuratedData(out_dir, done, _read_stats(out_dir))
    write_config(out_dir, cfg)
    selection = select_records(light, cur.filters)
    executor = executor_for(student)
    samples = executor.tokenize(shards, selection.keep, cur)
    table, tokenize_rejects = executor.light(samples)
    plan = plan_packing(table, cur, cur.rows_per_shard)
    summaries = executor.write(samples, plan, out_dir)
    stats = _stats(table, plan, selection.records, student)
    rejects = merge_rejects(selection.rejects, tokenize_rejects, plan.rejects)
    write_json(*resolve(run_path(out_dir, "stats.json")), {**stats, "rejects": rejects, "shards": summaries})
    manifest = Manifest(stage="curate", run_id=cfg.run_id, config_hash=config_digest(key), rejects=rejects,
                        wall_time_s=time.time() - started, counts={
                            "records": selection.records, "records_kept": len(selection.keep),
                            "samples": len(plan.assignment), "rows": plan.rows, "shards": plan.shards,
                            "tokens": plan.tokens, "supervised_tokens": stats["supervised_tokens"]})
    write_manifest(out_dir, manifest)
    return CuratedData(out_dir, manifest, stats)


def _stats(table: pa.Table, plan: PackingPlan, records: int, student: StudentTokenizer) -> dict:
    rows = [r for r in table.to_pylist() if r["sample_id"] in plan.assignment]
    kept = [r["n_tokens"] for r in rows]
    return {"records_in": records, "samples": len(kept), "tokens": plan.tokens,
            "supervised_tokens": sum(r["supervised_tokens"] for r in rows), "packing_efficiency": plan.efficiency,
            "rows": plan.rows,
            "budget": plan.budget, "tokenizer": {"source": student.source, "content_hash": student.content_hash},
            "sample_tokens_histogram": _histogram(kept), "row_tokens_histogram": _histogram(plan.lengths)}


def _histogram(values: list[int]) -> dict[str, int]:
    """Counts by power-of-two bucket of token counts ("≤1024": …)."""
    counts: Counter[int] = Counter()
    for v in values:
        counts[1 << max(0, (max(v, 1) - 1).bit_length())] += 1
    return {f"<={k}": counts[k] for k in sorted(counts)}


def _read_stats(out_dir: str) -> dict:
    from engine.artifacts import read_json

    fs, path = resolve(run_path(out_dir, "stats.json"))
    return read_json(fs, path)


def completed(cfg: RunConfig) -> Manifest | None:
    """The curation manifest of this run, if the stage finished."""
    return read_manifest(run_path(cfg.run_dir, "curate"))
