"""Benchmark: tokens per second of the curation stage against `datasets.map` and the tokenizer's own batch speed,
and packing efficiency.

Reads the trajectories stored in `--source` (a run dir: `RUN/rollouts/trajectories/`, default /tmp/r1, made by
`synthscale episode --task examples/tasks -n 8 --out /tmp/r1`); writes a throwaway store and curation outputs
in a temp folder, then benchmarks/results/curate_throughput.json, and prints one summary line.
Run: `.venv/bin/python benchmarks/curate_throughput.py [--source /tmp/r1] [--trajectories 200] [--units step,episode]`.

Workload: `--trajectories` records built from the stored ones, round robin, each copy made distinct and
deterministic: its own episode id and seed; every digit of each observation shifted by a seeded random amount (so
lengths and line structure stay real); and on every assistant turn a reasoning text (150–1,800 characters of
English from the system prompt, chosen by a seeded RNG), which the heuristic policy that played the stored
episodes does not write but a reasoning model does. The copies are written as a real store (one
`part-ep-<id>.parquet` per episode, as rollout workers write them). Per sample unit (`step`, reasoning kept,
the default; `episode`, reasoning dropped) with the default limits (`pack_tokens` 32K, drop over 48K, cut at
32K), every path below works on the same samples, and every throughput is the same number of tokens (every
sample's whole rendering, as tokenized, before length filters) over that path's wall time. With the default
200 trajectories (from the 6 of /tmp/r1: 18–28 assistant turns each): `step`, 4,595 samples, 15.6M tokens (mean
3.4K, at most 5.3K); `episode`, 200 samples, 1.49M tokens (mean 7.5K, at most 9.2K). The paths:

- `stage_local`: `engine.curate.stage.run_curate` with `LocalExecutor` (read, select, tokenize, plan, write
  shards and messages, stats, manifest), into a fresh run dir;
- `stage_ray`: the same with `actors.curate.RayDataExecutor` on `ray.init(num_cpus=2)` (started before the
  clock; the Ray Data pipeline, its actors and their tokenizer loads are timed);
- `pipeline`: `engine.curate.pipeline.curate` over the records in memory (every transform, nothing written);
- `datasets_ours`: `datasets.Dataset.map` (`num_proc=2`, cache off) over the samples' conversations calling
  our per-example `tokenize_conversation` (render, tokenize, the checked assistant-only mask): the same work
  per example, in two processes where the stage's in-process executor has one; the conversations are built
  before the clock, in its favour;
- `datasets_template`: the same map calling only `apply_chat_template(messages, tokenize=True)` (no mask,
  no checks): a reference;
- `tokenizer_raw`: `tokenizer(texts)` over the samples' rendered texts (rendered before the clock): the
  tokenizer's batch speed, the limit of any path that tokenizes every sample's whole text.

Goals: stage_local ≥ 1.5× datasets_ours, stage_local ≥ 0.8× tokenizer_raw, packing ≥ 0.97 non-padding tokens.
Every path runs `--repeats` times (default 2: the best counts), each with a tokenizer loaded before its clock
starts and never used before (`engine.curate.tokenize` remembers the stretches of text a tokenizer object has
tokenized). The JSON also holds each stage run's seconds by phase (tokenize, light columns, write; the rest is
the stage's own: tokenizer load, reading the light columns, planning, stats) and the machine's 1-minute load
average before and after: other work on this 2-core machine skews every figure (rerun when it is idle).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import RunConfig  # noqa: E402
from engine.curate.config import CurateConfig, StudentTokenizerConfig  # noqa: E402
from engine.curate.conversation import Conversation, build_conversations  # noqa: E402
from engine.curate.pipeline import curate  # noqa: E402
from engine.curate.stage import LocalExecutor, run_curate  # noqa: E402
from engine.curate.tokenize import render, tokenize_conversation  # noqa: E402
from engine.curate.tokenizer import load_student_tokenizer  # noqa: E402
from engine.records import TrajectoryRecord  # noqa: E402
from engine.trajectories.episode_shards import write_episode  # noqa: E402
from engine.trajectories.store import read_trajectories  # noqa: E402

UNITS = {"step": "keep", "episode": "drop"}  # sample unit → reasoning (Qwen3: episode needs drop)


def workload(source: list[TrajectoryRecord], n: int) -> list[TrajectoryRecord]:
    """`n` distinct records made from `source` (see the module docstring); deterministic."""
    out = []
    for j in range(n):
        base = source[j % len(source)]
        rng = random.Random(j)
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", base.messages[0]["content"]) if len(s) > 20]
        messages = []
        for i, m in enumerate(base.messages):
            m = dict(m)
            if i >= 2 and m["role"] == "user":
                shift = rng.randrange(1, 10)
                m["content"] = re.sub(r"\d", lambda d: str((int(d.group()) + shift) % 10), m["content"])
            elif i >= 2 and m["role"] == "assistant":
                target = int(150 + rng.random() ** 2 * 1650)
                words = []
                while sum(len(w) + 1 for w in words) < target:
                    words.append(rng.choice(sentences))
                m["reasoning_content"] = f"Step {i // 2}, variant {j}. " + " ".join(words)
            messages.append(m)
        out.append(base.model_copy(update={"episode_id": f"{base.episode_id}-{j:04d}", "seed": j,
                                           "messages": messages}))
    return out


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def fresh():
    return load_student_tokenizer(StudentTokenizerConfig())


def timed_with(student, fn):
    """(seconds, result) of `fn(student)`; the tokenizer is loaded before the clock starts."""
    return timed(lambda: fn(student))


def raw_run(tok, texts: list[str]):
    """(seconds, token count of each text, {}) of one batch call of the tokenizer."""
    seconds, enc = timed(lambda: tok(texts, add_special_tokens=False))
    return seconds, [len(ids) for ids in enc["input_ids"]], {}


def stage_run(store: str, out_root: str, name: str, cfg: CurateConfig, executor_for):
    run = RunConfig.model_validate({"run_id": name, "run_dir": f"{out_root}/{name}",
                                    "curate": {**cfg.model_dump(), "inputs": [store]}})
    return run_curate(run, executor_for, start_over=True)


def bench_datasets(convs: list[Conversation], fn, num_proc: int) -> float:
    """Seconds of `Dataset.map(fn, num_proc)` over the conversations (as JSON), cache and fingerprinting off."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"conversation": [c.model_dump_json() for c in convs]})
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # forked workers tokenize one text at a time anyway
    try:
        seconds, out = timed(lambda: ds.map(fn, num_proc=num_proc, remove_columns=["conversation"],
                                            load_from_cache_file=False, new_fingerprint=f"bench-{time.time_ns()}"))
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old
    assert len(out) == len(convs)
    return seconds


class OursPerExample:
    """Our per-example function, as a datasets map function."""

    def __init__(self, student):
        self.student = student

    def __call__(self, example: dict) -> dict:
        s = tokenize_conversation(Conversation.model_validate_json(example["conversation"]), self.student)
        return {"input_ids": s.input_ids, "loss_mask": s.loss_mask}


class TemplatePerExample:
    """`apply_chat_template(tokenize=True)` only: no mask, no checks."""

    def __init__(self, student):
        self.tokenizer = student.tokenizer

    def __call__(self, example: dict) -> dict:
        conv = json.loads(example["conversation"])
        enc = self.tokenizer.apply_chat_template(conv["messages"], tokenize=True)
        return {"input_ids": enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc}


class PhaseTimer:
    """Wraps a `CurateExecutor` and adds up the seconds of its three phases (tokenize, light, write)."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, {"tokenize": 0.0, "light": 0.0, "write": 0.0}

    def _timed(self, phase: str, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def tokenize(self, *args):
        return self._timed("tokenize", self.inner.tokenize, *args)

    def light(self, *args):
        return self._timed("light", self.inner.light, *args)

    def write(self, *args):
        return self._timed("write", self.inner.write, *args)


def timed_stage(store: str, tmp: str, name: str, cfg: CurateConfig, make):
    """One whole-stage run: (seconds, CuratedData, its phase seconds)."""
    timers = []

    def executor_for(student):
        timers.append(PhaseTimer(make(student)))
        return timers[-1]

    seconds, data = timed(lambda: stage_run(store, tmp, name, cfg, executor_for))
    return seconds, data, timers[-1].seconds


def same_outputs(a: str, b: str) -> bool:
    """Whether two curate dirs hold equal shard and messages files."""
    import pyarrow.parquet as pq

    files = [sorted(Path(d, "curate", sub).glob("part-*.parquet")) for d in (a, b) for sub in ("shards", "messages")]
    return [p.name for p in files[0] + files[1]] == [p.name for p in files[2] + files[3]] and all(
        pq.read_table(x).equals(pq.read_table(y)) for x, y in zip(files[0] + files[1], files[2] + files[3]))


def bench_unit(unit: str, records, store: str, tmp: str, student, args) -> dict:
    import ray

    from actors.curate import RayDataExecutor

    cfg = CurateConfig(sample_unit=unit, reasoning=UNITS[unit])
    convs = build_conversations(records, unit, UNITS[unit]).items
    texts = [render(c.messages, student) for c in convs]
    tok = student.tokenizer
    tok(texts[:8], add_special_tokens=False)  # warm-up
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    # Each path starts from a freshly loaded tokenizer (tokenize.py memoises the stretches of text a tokenizer
    # object has tokenized, and forked datasets workers would inherit a warm memo). Rounds run every path once,
    # so that load from elsewhere on the machine falls on all of them alike; the best round of each counts.
    paths = {
        "tokenizer_raw": lambda: raw_run(tok, texts),
        "pipeline": lambda: timed_with(fresh(), lambda s: curate(records, s, cfg)) + ({},),
        "stage_local": lambda: timed_stage(store, tmp, f"local-{unit}", cfg, LocalExecutor),
        "stage_ray": lambda: timed_stage(store, tmp, f"ray-{unit}", cfg, lambda s: RayDataExecutor()),
        "datasets_ours": lambda: (bench_datasets(convs, OursPerExample(fresh()), args.num_proc), None, {}),
        "datasets_template": lambda: (bench_datasets(convs, TemplatePerExample(fresh()), args.num_proc), None, {}),
    }
    load = {"before": os.getloadavg()[0]}
    best: dict = {}
    for _ in range(args.repeats):
        for name, run in paths.items():
            result = run()
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    seconds = {name: r[0] for name, r in best.items()}
    phases = {name: best[name][2] for name in ("stage_local", "stage_ray")}
    lengths = best["tokenizer_raw"][1]
    tokens = sum(lengths)
    curated, local, on_ray = best["pipeline"][1], best["stage_local"][1], best["stage_ray"][1]
    load["after"] = os.getloadavg()[0]
    if (local.manifest.counts, local.manifest.rejects) != (on_ray.manifest.counts, on_ray.manifest.rejects) \
            or local.manifest.counts["tokens"] != curated.counts["tokens"] \
            or not same_outputs(f"{tmp}/local-{unit}", f"{tmp}/ray-{unit}"):
        raise RuntimeError(f"{unit}: the paths disagree: {local.manifest.counts} {on_ray.manifest.counts} "
                           f"{curated.counts}")
    tps = {k: tokens / v for k, v in seconds.items()}
    return {
        "samples": len(convs), "tokens": tokens, "tokens_per_sample_mean": tokens / len(convs),
        "tokens_per_sample_max": max(lengths), "seconds": seconds, "tokens_per_second": tps,
        "stage_phase_seconds": phases,
        "stage_local_over_datasets_ours": tps["stage_local"] / tps["datasets_ours"],
        "stage_ray_over_datasets_ours": tps["stage_ray"] / tps["datasets_ours"],
        "stage_local_over_tokenizer_raw": tps["stage_local"] / tps["tokenizer_raw"],
        "stage_ray_over_tokenizer_raw": tps["stage_ray"] / tps["tokenizer_raw"],
        "pipeline_over_tokenizer_raw": tps["pipeline"] / tps["tokenizer_raw"],
        "packing_efficiency": local.stats["packing_efficiency"], "packed_rows": local.manifest.counts["rows"],
        "curated": {"samples": local.manifest.counts["samples"], "tokens": local.manifest.counts["tokens"],
                    "supervised_tokens": local.manifest.counts["supervised_tokens"],
                    "rejects": local.manifest.rejects},
        "load_average_1min": load,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="/tmp/r1", help="run dir whose stored trajectories seed the workload")
    ap.add_argument("--trajectories", type=int, default=200)
    ap.add_argument("--units", default="step,episode")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "curate_throughput.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    source = read_trajectories(args.source)
    if not source:
        raise SystemExit(f"no stored trajectories in {args.source}; run `.venv/bin/synthscale episode --task "
                         f"examples/tasks -n 8 --out {args.source}` first")
    records = workload(source, args.trajectories)
    student = load_student_tokenizer(StudentTokenizerConfig())
    results: dict = {"config": {**vars(args), "source_trajectories": len(source), "cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as tmp:
        store = f"{tmp}/store"
        for r in records:
            write_episode(store, r)
        for unit in args.units.split(","):
            results[unit] = bench_unit(unit, records, store, tmp, student, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    parts = []
    for unit in args.units.split(","):
        r = results[unit]
        t = {k: v / 1e6 for k, v in r["tokens_per_second"].items()}
        parts.append(
            f"{unit}: {r['samples']} samples, {r['tokens'] / 1e6:.1f}M tokens; Mtok/s local {t['stage_local']:.2f}, "
            f"ray {t['stage_ray']:.2f}, pipeline {t['pipeline']:.2f}, datasets.map ours {t['datasets_ours']:.2f} "
            f"(template only {t['datasets_template']:.2f}), raw tokenizer {t['tokenizer_raw']:.2f}; local "
            f"{r['stage_local_over_datasets_ours']:.2f}x datasets, {r['stage_local_over_tokenizer_raw']:.2f} of raw "
            f"(pipeline {r['pipeline_over_tokenizer_raw']:.2f}); packing {r['packing_efficiency']:.3f}")
    load = max(v for unit in args.units.split(",") for v in results[unit]["load_average_1min"].values())
    print(f"curate_throughput: {args.trajectories} trajectories, {os.cpu_count()} CPUs (load ≤ {load:.1f}); "
          + "; ".join(parts))


if __name__ == "__main__":
    main()
