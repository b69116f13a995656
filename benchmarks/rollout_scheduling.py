"""Benchmark: rollout-stage throughput on a real local Ray cluster with 8 logical GPUs, against the ideal.

Eight GPU rollout workers (`engine.rollout.stage.RolloutStage` over `actors.rollout.RayWorkerPool`, or over
the in-process pool with `--pool process`; local bubblewrap sandboxes, or Docker with `--runtime docker`)
play episodes of tiny tasks: a `PlaybookModel` answers every turn after `--delay` s and
the playbook runs `sleep SLEEP` `--sleeps` times, then `cp answer.csv submission.csv`, then `submit` (graded by a
standard-library grader in its own sandbox). The ideal episode lasts exactly the configured time,
(sleeps + 2) × delay + sleeps × sleep (the `cp` and `submit` commands count as zero), and the ideal span of
the stage is total work / workers. Measured: the steady-state span (first episode's start to last episode's
end) and, separately, the end-to-end wall time including Ray and worker start-up. The overhead is split into
model-call overshoot, command overhead (sandbox exec beyond the configured sleeps), grading, the agent loop
(prompt building, records, the shared rate limiter's Ray round-trips), and the workers' time outside episodes:
before their first episode, between episodes (sandbox reset, shard write, the lease's round-trip through the
driver) and after their last (the tail). The parts add up to workers × span / episodes − ideal. Goal: ratio ≥ 0.95.
The scheduler efficiency (measured episode time / workers' time over the span) isolates what the scheduler,
driver and Ray cost from what the sandboxes cost.
Writes benchmarks/results/rollout_scheduling.json and prints one summary line.
Run: `.venv/bin/python benchmarks/rollout_scheduling.py [--episodes 64] [--sleeps 8] [--sleep 0.3] [--delay 0.2]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import RunConfig  # noqa: E402
from engine.rollout.plan import TaskRef  # noqa: E402
from engine.rollout.stage import RolloutStage  # noqa: E402
from engine.tasks.folder import load_tasks  # noqa: E402
from engine.testing.playbook import PlaybookModel  # noqa: E402
from engine.trajectories.store import read_trajectories  # noqa: E402

TEMPLATE = ROOT / "examples" / "tasks" / "wine-classification"
GRADER = '''"""Standard-library grader: accuracy of submission.csv against the labels beside this file."""
import argparse, csv, json, sys
from pathlib import Path

here = Path(__file__).resolve().parent
p = argparse.ArgumentParser()
p.add_argument("--submission_file", required=True)
args = p.parse_args()
sub = {r["id"]: r["label"] for r in csv.DictReader(open(args.submission_file))}
out = {}
for split in ("validation", "test"):
    rows = list(csv.DictReader(open(here / f"labels_{split}.csv")))
    if any(r["id"] not in sub for r in rows):
        sys.exit(f"submission rejected: {split} ids missing")
    out[split] = {"accuracy": sum(sub[r["id"]] == r["label"] for r in rows) / len(rows)}
print(json.dumps(out))
'''


class BenchFactory:
    """The workers' model: a playbook answering after a fixed delay (pickled by value: defined in __main__)."""

    def __init__(self, commands: list[str], delay_s: float):
        self.commands, self.delay_s = commands, delay_s

    def __call__(self, cfg, tasks):
        return PlaybookModel(self.commands, name="bench-playbook", delay_s=self.delay_s), "playbook"


class WorkerOf:
    """A StageObserver noting which worker played each episode."""

    def __init__(self) -> None:
        self.worker_of: dict[str, str] = {}

    def queued(self, episodes: int) -> None:
        pass

    def acknowledged(self, scheduler, result) -> None:
        self.worker_of.update((o.episode_id, result.worker_id) for o in result.outcomes)


def build_tasks(dest: Path, n: int) -> list[Path]:
    """`n` copies of the wine task whose answer ships in the workspace and whose grader needs no pandas."""
    labels = [row for split in ("validation", "test")
              for row in csv.DictReader(open(TEMPLATE / "grader" / f"labels_{split}.csv"))]
    answer = "id,label\n" + "".join(f"{r['id']},{r['label']}\n" for r in labels)
    roots = []
    for i in range(n):
        root = dest / f"tiny-{i}"
        shutil.copytree(TEMPLATE, root)
        cfg = yaml.safe_load((root / "task.yaml").read_text())
        cfg.update(id=f"tiny-{i}", requirements=[])
        (root / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        (root / "grader" / "evaluate.py").write_text(GRADER)
        (root / "workspace" / "answer.csv").write_text(answer)
        roots.append(root)
    return roots


def run_config(run_dir: Path, tasks: list[Path], args: argparse.Namespace) -> RunConfig:
    gpu = args.worker_kind == "gpu"
    workers = {"gpu_workers": args.workers if gpu else 0, "cpu_workers": 0 if gpu else args.workers}
    return RunConfig.model_validate({
        "run_id": "bench-sched", "run_dir": str(run_dir),
        "episodes": {"tasks": [str(t) for t in tasks], "episodes_per_task": args.episodes // len(tasks)},
        "agent": {"max_steps": args.sleeps + 4}, "sandbox": {"runtime": args.runtime},
        "rollout": {"progress": False, "cpus_per_worker": 0.1, "gpus_per_worker": 1.0, "lease_size": args.lease_size,
                    "episodes_per_cpu_worker": 1, **workers},
    })


def idle_split(records, worker_of: dict[str, str]) -> dict:
    """Total worker-seconds outside episodes: before a worker's first episode, between its episodes (reset,
    shard write, lease round-trip through the driver), and after its last one (the tail)."""
    first = min(r.started_at for r in records)
    last = max(r.started_at + r.wall_time_s for r in records)
    by_worker: dict[str, list] = {}
    for r in records:
        by_worker.setdefault(worker_of[r.episode_id], []).append(r)
    lag = gaps = tail = 0.0
    for recs in by_worker.values():
        recs.sort(key=lambda r: r.started_at)
        lag += recs[0].started_at - first
        tail += last - (recs[-1].started_at + recs[-1].wall_time_s)
        gaps += sum(b.started_at - (a.started_at + a.wall_time_s) for a, b in zip(recs, recs[1:]))
    return {"first_lease_lag_s": lag, "between_episodes_s": gaps, "tail_s": tail, "workers_used": len(by_worker)}


def breakdown(records, idle: dict, delay_s: float, sleep_s: float, sleeps: int) -> dict:
    """Mean seconds per episode lost to each kind of overhead (they add up to span × workers / N − ideal)."""
    n = len(records)
    model = sum(s.model_latency_s for r in records for s in r.steps)
    calls = sum(len(r.steps) for r in records)
    grading = sum(s.execution_time_s for r in records for s in r.steps if s.action.strip() == "submit")
    execs = sum(s.execution_time_s for r in records for s in r.steps) - grading
    wall = sum(r.wall_time_s for r in records)
    return {
        "model_overshoot_s": (model - calls * delay_s) / n,
        "command_overhead_s": (execs - n * sleeps * sleep_s) / n,
        "grading_s": grading / n,
        "agent_loop_and_limiter_s": (wall - model - execs - grading) / n,
        "between_episodes_s": idle["between_episodes_s"] / n,
        "first_lease_lag_s": idle["first_lease_lag_s"] / n,
        "tail_s": idle["tail_s"] / n,
    }


def run(args: argparse.Namespace, tmp: Path) -> dict:
    tasks = build_tasks(tmp / "tasks", args.tasks)
    cfg = run_config(tmp / "run", tasks, args)
    commands = [f"sleep {args.sleep}"] * args.sleeps + ["cp answer.csv submission.csv", "submit"]
    ideal_ep = (args.sleeps + 2) * args.delay + args.sleeps * args.sleep
    load_before = os.getloadavg()[0]
    t0 = time.time()
    refs = [TaskRef.of(t) for t in load_tasks(list(cfg.episodes.tasks))]
    factory = BenchFactory(commands, args.delay)
    if args.pool == "ray":
        from actors.rollout import RayWorkerPool

        pool = RayWorkerPool(cfg, refs, model_factory=factory)
    else:
        from engine.rollout.local_pool import InProcessPool

        pool = InProcessPool(cfg, refs, model_factory=factory, gpu_ids=[str(i) for i in range(args.workers)],
                             cpus=args.num_cpus)
    note = WorkerOf()
    stage = RolloutStage(cfg, refs, pool, observers=[note])
    manifest = stage.run()
    worker_of = note.worker_of
    t_end = time.time()
    records = read_trajectories(cfg.run_dir)
    if manifest is None or len(records) != cfg.episodes.episodes_per_task * len(tasks):
        raise RuntimeError(f"stage incomplete: {len(records)} episodes stored")
    bad = [r.exit_status for r in records if r.exit_status != "submitted" or r.infra_error]
    if bad:
        raise RuntimeError(f"episodes did not submit cleanly: {bad[:5]}")
    n = len(records)
    first = min(r.started_at for r in records)
    span = max(r.started_at + r.wall_time_s for r in records) - first
    ideal_span = n * ideal_ep / args.workers
    idle = idle_split(records, worker_of)
    return {
        "config": vars(args), "episodes": n, "ideal_episode_s": ideal_ep,
        "episode_wall_s_mean": sum(r.wall_time_s for r in records) / n,
        "ideal_span_s": ideal_span, "steady_span_s": span, "ratio_steady": ideal_span / span,
        # the scheduler's own share: measured episode time (sandbox and grading costs included) / worker time
        "scheduler_efficiency": sum(r.wall_time_s for r in records) / (idle["workers_used"] * span),
        "ideal_traj_per_hour": 3600 * args.workers / ideal_ep, "traj_per_hour_steady": 3600 * n / span,
        "end_to_end_s": t_end - t0, "startup_s": stage.workers_ready_at - t0,
        "ratio_end_to_end": ideal_span / (t_end - t0),
        "overhead_per_episode_s": breakdown(records, idle, args.delay, args.sleep, args.sleeps),
        "workers_used": idle["workers_used"],
        "stage_stats": stage.stats, "cpu_cores": os.cpu_count(),
        "load_avg_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=8, help="GPU rollout workers (= logical GPUs)")
    ap.add_argument("--episodes", type=int, default=64, help="total episodes (split evenly over --tasks)")
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--sleeps", type=int, default=8, help="`sleep SLEEP` commands per episode")
    ap.add_argument("--sleep", type=float, default=0.3, help="seconds each command sleeps")
    ap.add_argument("--delay", type=float, default=0.2, help="simulated model latency per turn (s)")
    ap.add_argument("--lease-size", type=int, default=4)
    ap.add_argument("--runtime", choices=["local", "docker"], default="local")
    ap.add_argument("--worker-kind", choices=["gpu", "cpu"], default="gpu",
                    help="cpu: the same workers without GPUs (docker without the NVIDIA runtime refuses GPU requests)")
    ap.add_argument("--num-cpus", type=int, default=16, help="logical CPUs declared to Ray (or the in-process pool)")
    ap.add_argument("--pool", choices=["ray", "process"], default="ray",
                    help="ray: RolloutWorker actors; process: the in-process pool's threads (no Ray)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout_scheduling.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="rsb"))
    if args.pool == "ray":
        ray.init(address="local", num_cpus=args.num_cpus, num_gpus=args.workers, _temp_dir=str(tmp / "ray"),
                 include_dashboard=False, log_to_driver=False)
    try:
        result = run(args, tmp)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    o = result["overhead_per_episode_s"]
    print(f"rollout_scheduling: {args.workers} {args.worker_kind.upper()} workers ({args.pool} pool, {args.runtime}), {result['episodes']} episodes, ideal "
          f"{result['ideal_episode_s']:.2f} s/episode → {result['traj_per_hour_steady']:.0f} traj/h vs ideal "
          f"{result['ideal_traj_per_hour']:.0f} (ratio {result['ratio_steady']:.3f} steady, "
          f"{result['ratio_end_to_end']:.3f} with {result['startup_s']:.1f} s start-up; scheduler efficiency "
          f"{result['scheduler_efficiency']:.3f}); overhead s/episode: "
          + ", ".join(f"{k.removesuffix('_s')} {v:.3f}" for k, v in o.items())
          + f" (load avg {result['load_avg_1min']['after']:.1f} on {result['cpu_cores']} cores)")


if __name__ == "__main__":
    main()
