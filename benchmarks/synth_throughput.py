"""Benchmark: verified tasks per minute of the synthesis stage.

Teacher mode: a loopback teacher that answers every call after a fixed delay (default 2 s) and writes trivial,
standard-library task code, so that the model's delay dominates; run at concurrency 1 and 32 and compare with
ideal scaling. Procedural mode: the offline catalogue's tasks verified per minute on this machine.
Writes benchmarks/results/synth_throughput.json and prints one summary line.
Run: `.venv/bin/python benchmarks/synth_throughput.py [--tasks 32] [--delay 2] [--procedural 12]`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import ModelConfig, Price, RunConfig, SandboxConfig, SynthConfig  # noqa: E402
from engine.models.ratelimit import RateLimiter  # noqa: E402
from engine.models.server import ChatCompletionsServer  # noqa: E402
from engine.protocols import Completion, Usage  # noqa: E402
from engine.testing.loopback_hub import LoopbackDataset, LoopbackHub, parquet_bytes  # noqa: E402
from engine.synth.stage import run_synth  # noqa: E402

WORDS = ("amber basalt cedar delta ember fjord granite harbor iris juniper kelp lagoon meadow nimbus onyx prairie "
         "quartz ridge sierra tundra umber valley willow xenon yarrow zephyr").split()

BASELINE = '''"""Trivial baseline: a threshold on x (standard library only)."""
import csv

THRESHOLD = 0.8
out = open("submission.csv", "w", newline="")
w = csv.writer(out)
w.writerow(["id", "label"])
for name in ("validation", "test"):
    for r in csv.DictReader(open(f"data/{name}.csv")):
        w.writerow([r["id"], "1" if float(r["x"]) > THRESHOLD else "0"])
out.close()
print("wrote submission.csv")
'''

EVALUATE = '''"""Trivial grader: accuracy on the validation and test labels next to this file."""
import argparse, csv, json, sys
from pathlib import Path

here = Path(__file__).resolve().parent
p = argparse.ArgumentParser()
p.add_argument("--submission_file", required=True)
args = p.parse_args()
try:
    sub = {r["id"]: r["label"] for r in csv.DictReader(open(args.submission_file))}
except (OSError, KeyError) as e:
    sys.exit(f"invalid submission: {e}")
scores = {}
for split in ("validation", "test"):
    labels = list(csv.DictReader(open(here / f"labels_{split}.csv")))
    missing = [r["id"] for r in labels if r["id"] not in sub]
    if missing:
        sys.exit(f"invalid submission: {len(missing)} {split} ids missing")
    scores[split] = {"accuracy": sum(sub[r["id"]] == r["label"] for r in labels) / len(labels)}
print(json.dumps(scores))
'''


class DelayedTeacher:
    """Answers after `delay_s`: topics, a proposal per topic, trivial code per proposal."""

    name = "bench-teacher"

    def __init__(self, n: int, delay_s: float):
        self.n, self.delay_s = n, delay_s
        self.lock = threading.Lock()
        self.calls = 0

    def complete(self, messages, params) -> Completion:
        time.sleep(self.delay_s)
        with self.lock:
            self.calls += 1
        prompt = next(m["content"] for m in messages if m["role"] == "user")
        text = self._answer(prompt)
        return Completion(text=text, model=self.name, usage=Usage(prompt_tokens=len(prompt) // 4,
                                                                  completion_tokens=len(text) // 4))

    async def acomplete(self, messages, params) -> Completion:
        return self.complete(messages, params)

    def _answer(self, prompt: str) -> str:
        if "Research topic:" in prompt:
            i = int(prompt.split("Research topic: bench topic ")[1].split()[0])
            rng = random.Random(i)
            words = " ".join(rng.sample(WORDS, 12))
            return json.dumps({"name": f"Bench task {i}", "description": f"Classify {words} readings; accuracy.",
                               "task_type": "classification", "metric": "accuracy", "direction": "max",
                               "needs_dataset": True, "dataset": {"hf_id": f"bench/data-{i}", "config": None,
                               "split": "train", "input_columns": ["x"], "target_column": "label"}})
        if "research topics" in prompt:
            return json.dumps([{"topic": f"bench topic {i} {' '.join(random.Random(i).sample(WORDS, 4))}",
                                "domain": "tabular"} for i in range(self.n)])
        return json.dumps({
            "files": {"baseline.py": BASELINE, "evaluate.py": EVALUATE},
            "task": {"description": "Predict label from x; accuracy, higher is better.", "metric": "accuracy",
                     "direction": "max", "training_timeout": 120},
            "heuristic_moves": [{"file": "baseline.py", "find": "THRESHOLD = 0.8", "replace": "THRESHOLD = 0.5",
                                 "note": "label is 1 when x is large"}]})


def _hub(n: int) -> LoopbackHub:
    rng = random.Random(0)
    xs = [rng.random() for _ in range(200)]
    data = parquet_bytes({"x": xs, "label": [int(x > 0.5) if rng.random() > 0.1 else int(x <= 0.5) for x in xs]})
    return LoopbackHub({f"bench/data-{i}": LoopbackDataset(f"bench/data-{i}", {"data/train-0.parquet": data})
                        for i in range(n)})


def bench_teacher(n: int, concurrency: int, delay_s: float) -> dict:
    teacher = DelayedTeacher(n, delay_s)
    with tempfile.TemporaryDirectory(prefix="ss-bench-") as tmp, _hub(n) as hub, ChatCompletionsServer(teacher) as srv:
        model = ModelConfig(provider="openai", name=teacher.name, base_url=srv.base_url, max_concurrency=64,
                            prices={teacher.name: Price(input_per_mtok=0, output_per_mtok=0)})
        synth = SynthConfig(source="teacher", teacher=model, n_topics=n, topics_per_call=n, concurrency=concurrency,
                            hub={"endpoint": hub.endpoint, "viewer_url": hub.viewer_url}, verify_max_steps=12)
        cfg = RunConfig(run_id="bench", run_dir=f"{tmp}/run", synth=synth, sandbox=SandboxConfig(workspace_mb=64))
        t0 = time.perf_counter()
        manifest = run_synth(cfg, limiter=RateLimiter(synth.rate_limit))
        wall = time.perf_counter() - t0
    verified = manifest.counts["verified"]
    return {"tasks": n, "concurrency": concurrency, "verified": verified, "wall_s": wall,
            "verified_per_min": verified / wall * 60, "teacher_calls": teacher.calls, "rejects": manifest.rejects}


def bench_procedural(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ss-bench-") as tmp:
        cfg = RunConfig(run_id="bench", run_dir=f"{tmp}/run", synth=SynthConfig(source="procedural", n_tasks=n,
                                                                                 concurrency=2))
        t0 = time.perf_counter()
        manifest = run_synth(cfg, limiter=RateLimiter(cfg.synth.rate_limit))
        wall = time.perf_counter() - t0
    return {"tasks": n, "verified": manifest.counts["verified"], "wall_s": wall,
            "verified_per_min": manifest.counts["verified"] / wall * 60, "rejects": manifest.rejects}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--delay", type=float, default=2.0)
    ap.add_argument("--procedural", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "synth_throughput.json"))
    args = ap.parse_args()
    one = bench_teacher(max(4, args.tasks // 8), 1, args.delay)
    many = bench_teacher(args.tasks, 32, args.delay)
    ideal = one["verified_per_min"] * 32
    result = {"teacher_c1": one, "teacher_c32": many, "ideal_c32_per_min": ideal,
              "scaling_efficiency": many["verified_per_min"] / ideal if ideal else 0.0,
              "procedural": bench_procedural(args.procedural) if args.procedural else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    proc = result["procedural"]
    print(f"synth_throughput: teacher ({args.delay:g} s/call) c=1 {one['verified_per_min']:.1f}/min, c=32 "
          f"{many['verified_per_min']:.1f}/min ({result['scaling_efficiency']:.0%} of ideal); procedural "
          + (f"{proc['verified_per_min']:.1f}/min ({proc['verified']}/{proc['tasks']} verified)" if proc else "skipped"))


if __name__ == "__main__":
    main()
