"""Benchmark: the rollout stage (`engine.rollout.stage.RolloutStage`, the class every pool runs under) over simulated
workers on a virtual clock, projecting a GPU cluster's throughput.

Writes a throwaway run dir (a temp folder: the stage's stage.json, config and manifest), then
benchmarks/results/rollout_sim.json, and prints one summary line.
Run: `.venv/bin/python benchmarks/rollout_sim.py [--gpus 64] [--tasks 500] [--per-task 16] [--containers 1,2,4]`.

A discrete-event simulation (a heap of timed events, no Ray, no sleeping) behind the `WorkerPool` seam:
every GPU holds `c` task containers (rollout workers with `rollout.gpus_per_worker = 1/c`); the real stage
plans the workers, asks its real `Scheduler` for leases (`prefer_task` = the task a worker's container
holds), rests and re-issues after losses, exactly as on a cluster; `SimPool` plays each lease's episodes one
after another in virtual time. `c = 1` is the paper's setup (one GPU per container, the GPU idle while the
teacher thinks) and the baseline; `c = 2, 4` share a GPU.

An episode (all durations drawn per episode from a seeded RNG; lognormal(m, s) = m·exp(s·N(0,1))):
- steps: round(lognormal(40, 0.4)) clipped to [5, 50] (MLGym's 50-step limit; teachers often submit early).
- each step: teacher latency lognormal(20 s, 0.6) (a reasoning model; mean ≈ 24 s) plus the engine's own
  per-step overhead of 0.129 s (docker exec 127.9 ms + agent loop 0.7 ms), then one command:
  with probability 0.2 a GPU training command, lognormal(180 s, 0.8) at full speed, capped at 1800 s
  (the training timeout); otherwise a short CPU shell command, lognormal(2 s, 1.0), capped at 25 s.
- the final `submit` is graded in a separate CPU sandbox: lognormal(15 s, 0.5).
- container: a worker starts one (0.456 s) when it takes a lease of a task it holds no container for, and
  resets it (0.147 s) before every further episode of that task.
GPU sharing (processor sharing): while n training commands use one GPU, each runs at rate
1 / (1 + α (n − 1)); α = 0.5 by default (two small MLGym-scale jobs on one GPU each run at 2/3 speed:
together 1.33× one job); α = 1 would be a GPU that one job already saturates (no gain from sharing).
Memory is assumed to fit; the teacher endpoint's latency is assumed independent of load (rate limits are
not modelled). Failures: each worker dies at rate λ per worker-hour (default 0.01; Poisson); its lease comes
back lost, the stage rests the worker and hands the same lease out again, and — episodes being stored as
they end — the next holder plays only the episodes not yet stored: a death costs the episode in progress
(`episodes_interrupted`), never a finished one (`episodes_redone` stays 0). The worker comes back after
60 s (actor restart) with no container.

Calibration. Measured on this project's machine (2 cores, no GPU; benchmarks/agent_step.py): docker start
0.456 s, reset 0.147 s, 127.9 ms exec + 0.7 ms engine time per step (benchmarks/rollout_scheduling.py
measures the stage's own cost between episodes on top of these, under 0.05% of a simulated ≈ 50-minute
episode, and not modelled). Assumed, because no GPU machine or teacher endpoint was available: the
teacher's latency, the step counts, the share and length of training commands, grading time, α, the
failure rate and the restart delay. Every one of them is a flag; the projection is only as good as these
assumptions. Throughput is reported over the steady state (between 10% and 90% of episodes stored) and
over the whole simulated run (with the tail), and scaled to `--project-per-task` episodes per task.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import RunConfig  # noqa: E402
from engine.rollout.leases import EpisodeOutcome, Lease, LeaseDone, LeaseResult, WorkerInfo, WorkerSpec  # noqa: E402
from engine.rollout.plan import TaskRef  # noqa: E402
from engine.rollout.stage import RolloutStage  # noqa: E402


class SimConfig(BaseModel):
    """One simulated cluster and workload (durations in seconds)."""

    model_config = ConfigDict(extra="forbid")
    gpus: int = Field(64, gt=0, description="GPUs in the cluster.")
    containers_per_gpu: int = Field(1, gt=0, description="Task containers (rollout workers) sharing one GPU.")
    tasks: int = Field(500, gt=0, description="Tasks rolled out.")
    per_task: int = Field(16, gt=0, description="Trajectories wanted per task.")
    lease_size: int = Field(4, gt=0, description="Episodes per lease (rollout.lease_size).")
    steps_median: float = Field(40.0, gt=0, description="Median steps per episode (lognormal, σ steps_sigma).")
    steps_sigma: float = Field(0.4, ge=0)
    max_steps: int = Field(50, gt=0, description="Steps are clipped to [5, max_steps].")
    teacher_median_s: float = Field(20.0, ge=0, description="Median teacher latency per step (lognormal).")
    teacher_sigma: float = Field(0.6, ge=0)
    step_overhead_s: float = Field(0.129, ge=0, description="Engine + sandbox exec cost per step (measured).")
    gpu_share: float = Field(0.2, ge=0, le=1, description="Share of steps that are GPU training commands.")
    train_median_s: float = Field(180.0, ge=0, description="Median training command at full GPU speed.")
    train_sigma: float = Field(0.8, ge=0)
    train_cap_s: float = Field(1800.0, gt=0, description="Training timeout.")
    shell_median_s: float = Field(2.0, ge=0, description="Median short CPU command.")
    shell_sigma: float = Field(1.0, ge=0)
    shell_cap_s: float = Field(25.0, gt=0, description="Short-command timeout.")
    grade_median_s: float = Field(15.0, ge=0, description="Median grading of the final submission (CPU).")
    grade_sigma: float = Field(0.5, ge=0)
    start_s: float = Field(0.456, ge=0, description="Container start (measured, docker).")
    reset_s: float = Field(0.147, ge=0, description="Container reset between episodes (measured, docker).")
    alpha: float = Field(0.5, ge=0, description="GPU sharing slowdown: rate 1/(1+α(n−1)) with n jobs on a GPU.")
    failure_per_worker_hour: float = Field(0.01, ge=0, description="Worker deaths per worker-hour (Poisson).")
    restart_s: float = Field(60.0, ge=0, description="A dead worker's restart delay.")
    seed: int = Field(0, description="RNG seed.")


class SimResult(BaseModel):
    """What one simulation measured."""

    model_config = ConfigDict(extra="forbid")
    containers_per_gpu: int
    workers: int
    episodes: int
    makespan_h: float
    traj_per_hour: float = Field(description="Steady state: between 10% and 90% of episodes done.")
    traj_per_hour_overall: float = Field(description="Episodes / makespan (tail included).")
    gpu_busy_fraction: float = Field(description="Steady state: GPU time with ≥ 1 training command running.")
    gpu_busy_fraction_overall: float
    gpu_work_per_gpu_hour: float = Field(description="Full-speed training seconds done per GPU-second held.")
    gpu_busy_s: float
    gpu_held_s: float
    episode_wall_s_mean: float
    episodes_played: int = Field(description="Episodes played to the end (each stored as it ends).")
    failures: int
    leases_lost: int
    episodes_redone: int = Field(description="Stored episodes played again (0: episodes are stored as they end).")
    episodes_interrupted: int = Field(description="Episodes in progress when their worker died (played again).")
    episodes_replayed: int = Field(description="Episodes of re-issued leases found stored (acknowledged, not played).")
    worker_hours_lost: float = Field(description="Work of interrupted episodes + restarts.")
    worker_hours_lost_share: float = Field(description="worker_hours_lost / (workers × makespan).")
    completed_seeds: dict[str, list[int]] = Field(description="Seeds stored per task (each exactly once).")


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(sigma * rng.gauss(0.0, 1.0)) if median > 0 else 0.0


def plan_episode(rng: random.Random, cfg: SimConfig) -> list[tuple[bool, float]]:
    """Phases of one episode, (uses_gpu, seconds at full speed); consecutive CPU phases are merged.

    >>> cfg = SimConfig(gpu_share=0.0, teacher_median_s=1.0, teacher_sigma=0.0, step_overhead_s=0.0,
    ...                 shell_median_s=1.0, shell_sigma=0.0, grade_median_s=1.0, grade_sigma=0.0, steps_sigma=0.0,
    ...                 steps_median=5)
    >>> plan_episode(random.Random(0), cfg)
    [(False, 11.0)]
    """
    steps = min(cfg.max_steps, max(5, round(lognormal(rng, cfg.steps_median, cfg.steps_sigma))))
    phases: list[tuple[bool, float]] = []
    cpu = 0.0
    for _ in range(steps):
        cpu += lognormal(rng, cfg.teacher_median_s, cfg.teacher_sigma) + cfg.step_overhead_s
        if rng.random() < cfg.gpu_share:
            phases.append((False, cpu))
            phases.append((True, min(cfg.train_cap_s, lognormal(rng, cfg.train_median_s, cfg.train_sigma))))
            cpu = 0.0
        else:
            cpu += min(cfg.shell_cap_s, lognormal(rng, cfg.shell_median_s, cfg.shell_sigma))
    phases.append((False, cpu + lognormal(rng, cfg.grade_median_s, cfg.grade_sigma)))
    return [p for p in phases if p[0] or p[1] > 0] or [(False, 0.0)]


class GpuShare:
    """Processor sharing on one GPU: n jobs each progress at 1/(1+α(n−1)); `version` invalidates old finish events."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.left: dict[int, float] = {}  # worker → full-speed seconds still to do
        self.t = 0.0
        self.busy_s = 0.0
        self.work_s = 0.0
        self.version = 0

    def rate(self) -> float:
        return 1.0 / (1.0 + self.alpha * (len(self.left) - 1)) if self.left else 0.0

    def advance(self, now: float) -> None:
        dt, r = now - self.t, self.rate()
        if self.left and dt > 0:
            for w in self.left:
                self.left[w] -= dt * r
            self.busy_s += dt
            self.work_s += dt * r * len(self.left)
        self.t = now

    def change(self, now: float, worker: int, work: float | None) -> list[tuple[float, int]]:
        """Add (work) or remove (None) a worker's job; returns every running job's new finish time."""
        self.advance(now)
        if work is None:
            self.left.pop(worker, None)
        else:
            self.left[worker] = work
        self.version += 1
        r = self.rate()
        return [(now + max(0.0, left) / r, w) for w, left in self.left.items()]


class Clock:
    """The virtual clock the stage and the pool share (`clock()` and `sleep`)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class _Worker:
    wid: int
    worker_id: str
    gpu: int
    gen: int = 0  # bumped when the worker dies: its pending events are void
    up_at: float = 0.0  # restarting until then
    task: str | None = None
    fresh: bool = False
    ticket: int = -1
    lease: Lease | None = None
    waiting: tuple[Lease, int] | None = None  # handed out while the worker restarts: starts when it is up
    todo: list[int] = field(default_factory=list)
    replayed: int = 0
    phases: list[tuple[bool, float]] = field(default_factory=list)
    episode_started: float = 0.0


class SimPool:
    """`WorkerPool` of simulated workers: plays leases in virtual time; episodes are stored as they end."""

    def __init__(self, cfg: SimConfig, clock: Clock):
        self.cfg = cfg
        self.clock = clock
        self.rng = random.Random(cfg.seed)
        self.fail_rng = random.Random(cfg.seed + 1)
        self.gpus = [GpuShare(cfg.alpha) for _ in range(cfg.gpus)]
        self.workers: dict[str, _Worker] = {}
        self.by_wid: list[_Worker] = []
        self.heap: list[tuple[float, int, str, int, int]] = []
        self.seq = 0
        self.done: list[LeaseDone] = []
        self.stored: dict[str, list[int]] = {}  # seeds stored per task (each once)
        self.store_times: list[float] = []
        self.snapshots: dict[int, tuple[float, float]] = {}  # stored episodes → (time, GPU busy-seconds so far)
        self.episode_walls: list[float] = []
        self.stats = {"episodes_played": 0, "failures": 0, "leases_lost": 0, "episodes_redone": 0,
                      "episodes_interrupted": 0}
        self.lost_worker_s = 0.0

    # -- the WorkerPool seam --------------------------------------------------------------------------
    def resources(self) -> tuple[float, float]:
        return float(self.cfg.gpus), 1e9

    def start(self, workers: list[WorkerSpec]) -> list[WorkerInfo]:
        for i, spec in enumerate(workers):
            w = _Worker(wid=i, worker_id=spec.worker_id, gpu=i // self.cfg.containers_per_gpu)
            self.workers[spec.worker_id] = w
            self.by_wid.append(w)
            self._schedule_failure(w, self.clock.now)
        return [WorkerInfo(worker_id=s.worker_id, model="sim", policy="sim") for s in workers]

    def submit(self, worker_id: str, lease: Lease, ticket: int) -> None:
        w = self.workers[worker_id]
        if w.up_at > self.clock.now:
            w.waiting = (lease, ticket)
            return
        self._take(w, lease, ticket, self.clock.now)

    def wait(self, timeout_s: float) -> list[LeaseDone]:
        while not self.done and self.heap:
            t, _, kind, wid, tag = heapq.heappop(self.heap)
            self.clock.now = max(self.clock.now, t)
            self._event(self.by_wid[wid], kind, tag, t)
        out, self.done = self.done, []
        return out

    def restart(self, worker_id: str) -> None:
        self._fail(self.workers[worker_id], self.clock.now)

    def reap(self) -> int:
        return 0

    def close(self) -> None:
        pass

    # -- a worker's life ------------------------------------------------------------------------------
    def _push(self, t: float, kind: str, w: _Worker, tag: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, w.wid, tag))

    def _schedule_failure(self, w: _Worker, now: float) -> None:
        if self.cfg.failure_per_worker_hour > 0:
            self._push(now + self.fail_rng.expovariate(self.cfg.failure_per_worker_hour / 3600), "fail", w, w.gen)

    def _event(self, w: _Worker, kind: str, tag: int, now: float) -> None:
        if kind == "gpu":
            if tag == self.gpus[w.gpu].version:
                self._reschedule(w.gpu, now, self.gpus[w.gpu].change(now, w.wid, None))
                self._next_phase(w, now)
        elif tag == w.gen:
            if kind == "cpu":
                self._next_phase(w, now)
            elif kind == "fail":
                self._fail(w, now)
            elif kind == "restart":
                self._schedule_failure(w, now)
                if w.waiting is not None:
                    (lease, ticket), w.waiting = w.waiting, None
                    self._take(w, lease, ticket, now)

    def _take(self, w: _Worker, lease: Lease, ticket: int, now: float) -> None:
        stored = set(self.stored.get(lease.task_id, []))
        w.lease, w.ticket = lease, ticket
        w.todo = [s for s in lease.seeds if s not in stored]
        w.replayed = len(lease.seeds) - len(w.todo)
        if not w.todo:
            self._acknowledge(w)
            return
        setup = 0.0
        if w.task != lease.task_id:
            w.task, w.fresh, setup = lease.task_id, True, self.cfg.start_s
        self._start_episode(w, now, setup)

    def _start_episode(self, w: _Worker, now: float, setup: float) -> None:
        if not w.fresh:
            setup += self.cfg.reset_s
        w.fresh = False
        w.phases = plan_episode(self.rng, self.cfg)
        w.phases.reverse()  # popped from the end
        uses_gpu, seconds = w.phases[-1]
        if not uses_gpu:
            w.phases[-1] = (False, seconds + setup)
        else:
            w.phases.append((False, setup))
        w.episode_started = now
        self._next_phase(w, now)

    def _next_phase(self, w: _Worker, now: float) -> None:
        if not w.phases:
            self._end_episode(w, now)
            return
        uses_gpu, seconds = w.phases.pop()
        if uses_gpu:
            self._reschedule(w.gpu, now, self.gpus[w.gpu].change(now, w.wid, seconds))
        else:
            self._push(now + seconds, "cpu", w, w.gen)

    def _reschedule(self, gpu: int, now: float, finishes: list[tuple[float, int]]) -> None:
        version = self.gpus[gpu].version
        for t, wid in finishes:
            self._push(t, "gpu", self.by_wid[wid], version)

    def _end_episode(self, w: _Worker, now: float) -> None:
        assert w.lease is not None
        self.episode_walls.append(now - w.episode_started)
        self.stats["episodes_played"] += 1
        seed = w.todo.pop(0)
        stored = self.stored.setdefault(w.lease.task_id, [])
        if seed in stored:
            self.stats["episodes_redone"] += 1
        else:
            stored.append(seed)
            self.store_times.append(now)
            self._snapshot(now)
        if w.todo:
            self._start_episode(w, now, 0.0)
        else:
            self._acknowledge(w)

    def _acknowledge(self, w: _Worker) -> None:
        assert w.lease is not None
        lease, w.lease = w.lease, None
        result = LeaseResult(lease_id=lease.lease_id, worker_id=w.worker_id, replayed=w.replayed,
                             outcomes=[EpisodeOutcome(seed=s) for s in lease.seeds])
        self.done.append(LeaseDone(ticket=w.ticket, result=result))

    def _snapshot(self, now: float) -> None:
        total = self.cfg.tasks * self.cfg.per_task
        n = len(self.store_times)
        if n in (math.ceil(0.1 * total), math.ceil(0.9 * total)):
            for g in self.gpus:
                g.advance(now)
            self.snapshots[n] = (now, sum(g.busy_s for g in self.gpus))

    def _fail(self, w: _Worker, now: float) -> None:
        self.stats["failures"] += 1
        if w.lease is not None:
            self.stats["leases_lost"] += 1
            if w.todo:  # the episode in progress is lost; the ones it finished are stored
                self.stats["episodes_interrupted"] += 1
                self.lost_worker_s += now - w.episode_started
            if w.wid in self.gpus[w.gpu].left:
                self._reschedule(w.gpu, now, self.gpus[w.gpu].change(now, w.wid, None))
            self.done.append(LeaseDone(ticket=w.ticket, error="worker died (simulated)", worker_lost=True))
        if w.waiting is not None:
            self.done.append(LeaseDone(ticket=w.waiting[1], error="worker died (simulated)", worker_lost=True))
        self.lost_worker_s += self.cfg.restart_s
        w.gen += 1
        w.lease, w.waiting, w.task, w.todo, w.phases = None, None, None, [], []
        w.up_at = now + self.cfg.restart_s
        self._push(w.up_at, "restart", w, w.gen)


def sim_run_config(cfg: SimConfig, run_dir: str) -> RunConfig:
    """The stage's config for a simulated cluster: every GPU holds `containers_per_gpu` workers."""
    return RunConfig.model_validate({
        "run_id": "sim", "run_dir": run_dir,
        "episodes": {"episodes_per_task": cfg.per_task},
        "rollout": {"gpus_per_worker": 1 / cfg.containers_per_gpu, "cpu_workers": 0, "cpus_per_worker": 1,
                    "lease_size": cfg.lease_size, "episode_timeout_s": 1e7, "max_lease_attempts": 1000,
                    "progress": False},
    })


def simulate(cfg: SimConfig) -> SimResult:
    """Run one configuration through the real stage (deterministic for a given seed)."""
    clock = Clock()
    pool = SimPool(cfg, clock)
    tasks = [TaskRef(task_id=f"t{i}", task_hash=f"h{i}", root=f"/sim/t{i}", gpus=1, training_timeout_s=1800)
             for i in range(cfg.tasks)]
    with tempfile.TemporaryDirectory(prefix="rollout-sim-") as tmp:
        stage = RolloutStage(sim_run_config(cfg, tmp), tasks, pool, clock=clock, sleep=clock.sleep)
        if stage.run() is None:
            raise RuntimeError(f"the simulated stage stopped early: {stage.scheduler.stopping}")
    return _result(cfg, pool, stage, max(pool.store_times))


def _result(cfg: SimConfig, pool: SimPool, stage: RolloutStage, makespan: float) -> SimResult:
    for g in pool.gpus:
        g.advance(makespan)
    n = len(pool.store_times)
    busy = sum(g.busy_s for g in pool.gpus)
    held = cfg.gpus * makespan
    marks = sorted(pool.snapshots)
    if len(marks) == 2 and pool.snapshots[marks[1]][0] > pool.snapshots[marks[0]][0]:
        (t10, b10), (t90, b90) = pool.snapshots[marks[0]], pool.snapshots[marks[1]]
        steady = (marks[1] - marks[0]) / (t90 - t10)
    else:  # too few episodes to tell a steady state: the whole run
        t10, b10, t90, b90, steady = 0.0, 0.0, makespan, busy, n / makespan
    workers = len(pool.workers)
    return SimResult(
        containers_per_gpu=cfg.containers_per_gpu, workers=workers, episodes=n, makespan_h=makespan / 3600,
        traj_per_hour=3600 * steady, traj_per_hour_overall=3600 * n / makespan,
        gpu_busy_fraction=(b90 - b10) / (cfg.gpus * (t90 - t10)), gpu_busy_fraction_overall=busy / held,
        gpu_work_per_gpu_hour=sum(g.work_s for g in pool.gpus) / held, gpu_busy_s=busy, gpu_held_s=held,
        episode_wall_s_mean=sum(pool.episode_walls) / len(pool.episode_walls),
        worker_hours_lost=pool.lost_worker_s / 3600, worker_hours_lost_share=pool.lost_worker_s / (workers * makespan),
        completed_seeds={t: sorted(s) for t, s in pool.stored.items()}, episodes_replayed=stage.stats["episodes_replayed"],
        **pool.stats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--per-task", type=int, default=16, help="trajectories simulated per task")
    ap.add_argument("--project-per-task", type=int, default=256, help="per-task target of the projected stage")
    ap.add_argument("--containers", default="1,2,4", help="containers per GPU to compare (first = baseline)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override any SimConfig field, e.g. --set alpha=1.0 --set teacher_median_s=40")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout_sim.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the stage logs every simulated failure at WARNING
    overrides = dict(kv.split("=", 1) for kv in args.set)
    results = []
    for c in [int(x) for x in args.containers.split(",")]:
        cfg = SimConfig.model_validate({**overrides, "gpus": args.gpus, "tasks": args.tasks,
                                        "per_task": args.per_task, "containers_per_gpu": c})
        results.append((cfg, simulate(cfg)))
    base = results[0][1]
    full = args.tasks * args.project_per_task
    rows = [{"config": cfg.model_dump(), **res.model_dump(exclude={"completed_seeds"}),
             "speedup_vs_baseline": res.traj_per_hour / base.traj_per_hour,
             "projected_hours": full / res.traj_per_hour} for cfg, res in results]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"projected_episodes": full, "runs": rows}, indent=2))
    parts = [f"{r['containers_per_gpu']}/GPU: {r['traj_per_hour']:.0f} traj/h ({r['speedup_vs_baseline']:.2f}x), "
             f"GPU busy {r['gpu_busy_fraction']:.2f}, {full:,} traj in {r['projected_hours']:.0f} h, "
             f"{r['failures']} failures cost {100 * r['worker_hours_lost_share']:.1f}% ({r['episodes_interrupted']} "
             f"episodes interrupted, {r['episodes_redone']} redone)" for r in rows]
    print(f"rollout_sim: {args.gpus} GPUs, α={results[0][0].alpha}, teacher median {results[0][0].teacher_median_s:g} s"
          f", {args.tasks}×{args.per_task} simulated; " + "; ".join(parts))


if __name__ == "__main__":
    main()
