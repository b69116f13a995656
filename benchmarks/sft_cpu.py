"""Benchmark: supervised tokens per second of SFT through Ray Train + DeepSpeed against a plain PyTorch loop, on the
same tiny Qwen3 (the offline Qwen3 tokenizer's vocabulary) and the same packed rows, side by side in one run.

Workload: `--samples` synthetic samples (`engine.testing.curated`: a prompt, then a supervised answer; 64–512 tokens)
packed into rows of `--pack-tokens` (default 2048) and written as a curated run; `--steps` optimizer steps of one
row each. Paths, each a fresh run:

- `plain`: `engine.train.reference.train_reference` in this process (PyTorch AdamW, the same loss, schedule and
  clipping), with `torch.set_num_threads(--threads)`;
- `ray_zero2`, `ray_zero3`: `engine.runner.run_train_stage` on `ray.init(num_cpus=--threads)` with one Ray Train
  worker holding all of them (its OMP threads = `--threads`), DeepSpeed ZeRO-2 / ZeRO-3 on DeepSpeed's CPU
  accelerator;
- `ray_zero3_2w` (with `--two-workers`): two workers of `--threads / 2` CPUs each (data parallel over gloo).

Two figures per path: steady-state supervised tokens per second (the median step after the first `--warmup` steps:
what orchestration costs per step) and end to end (all steps' supervised tokens over the wall time from the call to
its return: worker start-up, DeepSpeed's initialisation, checkpoints and the export included). The goal, orchestration
under 20%: steady-state `ray_zero*` ≥ 0.8 × `plain`. Writes benchmarks/results/sft_cpu.json and prints one line.
Run: `.venv/bin/python benchmarks/sft_cpu.py [--steps 24] [--two-workers]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--pack-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--two-workers", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sft_cpu.json"))
    args = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

    import ray
    import torch

    from engine.config import RunConfig
    from engine.curate.stage import CuratedData
    from engine.curate.tokenizer import load_student_tokenizer
    from engine.runner import run_train_stage
    from engine.testing.curated import synthetic_samples, write_curated
    from engine.train.reference import train_reference
    from engine.train.stage import step_plan

    work = Path(tempfile.mkdtemp(prefix="sftbench-"))
    samples = synthetic_samples(args.samples, min_len=64, max_len=512)
    tiny = {"hidden_size": args.hidden, "layers": args.layers, "heads": 4, "kv_heads": 2}

    def cfg(run: Path, **train) -> RunConfig:
        return RunConfig.model_validate({"run_id": run.name, "run_dir": str(run), "train": {
            "workers": 1, "cpus_per_worker": args.threads, "epochs": 1, "max_steps": args.steps,
            "learning_rate": 1e-3, "checkpoint_every": 10**6, "shuffle_rows": False, "student": {"tiny": tiny},
            **train}})

    def curated(name: str) -> Path:
        run = work / name
        write_curated(str(run), samples, pack_tokens=args.pack_tokens, rows_per_shard=8)
        return run

    results: dict[str, dict] = {}
    c = cfg(curated("plain"))
    rows = CuratedData(str(work / "plain" / "curate"), None).to_arrow().to_pylist()
    vocab = len(load_student_tokenizer(c.curate.student).tokenizer)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    plain = train_reference(rows, c.train, step_plan(c, len(rows)), vocab)
    results["plain"] = summary([m["supervised_tokens"] for m in plain], [m["seconds"] for m in plain],
                               time.perf_counter() - started, args.warmup)

    ray.init(address="local", num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
             _temp_dir=f"/tmp/ry{os.getpid() % 10**6}")
    paths = {"ray_zero2": {"zero_stage": 2}, "ray_zero3": {"zero_stage": 3}}
    if args.two_workers:
        paths["ray_zero3_2w"] = {"zero_stage": 3, "workers": 2, "cpus_per_worker": args.threads / 2,
                                 "max_steps": args.steps // 2}
    for name, train in paths.items():
        run = curated(name)
        started = time.perf_counter()
        student = run_train_stage(cfg(run, **train))
        wall = time.perf_counter() - started
        metrics = student.metrics()
        steps = [m["supervised_tokens"] - (metrics[i - 1]["supervised_tokens"] if i else 0)
                 for i, m in enumerate(metrics)]
        results[name] = summary(steps, [m["step_seconds"] for m in metrics], wall, args.warmup)
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)

    base = results["plain"]["steady_supervised_tokens_per_s"]
    for name in paths:
        results[name]["steady_over_plain"] = results[name]["steady_supervised_tokens_per_s"] / base
        results[name]["end_to_end_over_plain"] = (results[name]["end_to_end_supervised_tokens_per_s"]
                                                  / results["plain"]["end_to_end_supervised_tokens_per_s"])
    out = {"config": vars(args), "rows": len(rows), "vocab": vocab, "results": results,
           "load_average_1min": os.getloadavg()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    parts = [f"{n}: steady {r['steady_supervised_tokens_per_s']:.0f} sup tok/s"
             + (f" ({r['steady_over_plain']:.2f}x plain, end to end {r['end_to_end_over_plain']:.2f}x)"
                if n != "plain" else f", end to end {r['end_to_end_supervised_tokens_per_s']:.0f}")
             for n, r in results.items()]
    print(f"sft_cpu: {args.steps} steps of one {args.pack_tokens}-token row, tiny Qwen3 h{args.hidden} "
          f"l{args.layers}, {args.threads} threads; " + "; ".join(parts))


def summary(supervised: list[int], seconds: list[float], wall: float, warmup: int) -> dict:
    steady = [s / t for s, t in zip(supervised[warmup:], seconds[warmup:]) if t > 0]
    return {"steps": len(seconds), "supervised_tokens": sum(supervised), "wall_s": wall,
            "steady_supervised_tokens_per_s": statistics.median(steady) if steady else 0.0,
            "end_to_end_supervised_tokens_per_s": sum(supervised) / wall if wall > 0 else 0.0}


if __name__ == "__main__":
    main()
