"""RolloutStage over a scripted worker pool on a virtual clock: handing out, acknowledging, re-issuing lost leases,
resting a lost worker, restarting a worker past its deadline, the infra-error streak, cancel and budget."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from engine.config import RunConfig
from engine.errors import EngineError
from engine.rollout.control import request_cancel
from engine.rollout.leases import EpisodeOutcome, Lease, LeaseDone, LeaseResult, WorkerInfo, WorkerSpec
from engine.rollout.plan import TaskRef
from engine.rollout.stage import RolloutStage

Outcome = Callable[[str, Lease, int], LeaseDone]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class ScriptedPool:
    """Answers each lease with `behave(worker_id, lease, nth time this lease id was submitted)`, or never (None:
    hung, until its worker is restarted); every `wait` is one virtual second, an hour when only hung leases
    are left."""

    def __init__(self, clock: Clock, behave: Outcome | None = None, *, gpus: float = 0, cpus: float = 4,
                 identities: list[tuple[str, str]] | None = None):
        self.clock, self.behave = clock, behave or (lambda w, lease, n: ok(lease, w))
        self.gpus, self.cpus, self.identities = gpus, cpus, identities
        self.queue: list[tuple[str, Lease, int]] = []
        self.submitted: list[tuple[str, str, float]] = []  # (worker, lease id, time)
        self.restarted: list[str] = []
        self.hung: list[tuple[str, Lease, int]] = []
        self.closed = False

    def resources(self):
        return self.gpus, self.cpus

    def start(self, workers: list[WorkerSpec]) -> list[WorkerInfo]:
        ids = self.identities or [("m", "p")] * len(workers)
        return [WorkerInfo(worker_id=w.worker_id, model=m, policy=p) for w, (m, p) in zip(workers, ids)]

    def submit(self, worker_id, lease, ticket):
        self.submitted.append((worker_id, lease.lease_id, self.clock.now))
        self.queue.append((worker_id, lease, ticket))

    def wait(self, timeout_s):
        self.clock.now += 1
        out, self.queue = self.queue, []
        done = []
        for worker_id, lease, ticket in out:
            if worker_id in self.restarted and (worker_id, lease, ticket) in self.hung:
                done.append(LeaseDone(ticket=ticket, error="killed", worker_lost=True))
                continue
            nth = sum(1 for _, lid, _ in self.submitted if lid == lease.lease_id)
            answer = self.behave(worker_id, lease, nth)
            if answer is None:
                self.hung.append((worker_id, lease, ticket))
                self.queue.append((worker_id, lease, ticket))
            else:
                done.append(answer.model_copy(update={"ticket": ticket}))
        if not done:
            self.clock.now += 3600
        return done

    def restart(self, worker_id):
        self.restarted.append(worker_id)

    def reap(self):
        return 0

    def close(self):
        self.closed = True


def ok(lease: Lease, worker_id: str = "", infra: str | None = None, **kw) -> LeaseDone:
    return LeaseDone(ticket=0, result=LeaseResult(lease_id=lease.lease_id, worker_id=worker_id, outcomes=[
        EpisodeOutcome(seed=s, infra_error=infra) for s in lease.seeds], **kw))


def cfg_for(tmp_path, **rollout) -> RunConfig:
    return RunConfig.model_validate({"run_id": "t", "run_dir": str(tmp_path / "run"),
                                     "episodes": {"episodes_per_task": 4},
                                     "rollout": {"progress": False, "cpu_workers": 1, "episodes_per_cpu_worker": 2,
                                                 "lease_size": 2, **rollout}})


TASKS = [TaskRef(task_id=t, task_hash=f"h{t}", root=f"/nowhere/{t}", training_timeout_s=60) for t in ("a", "b")]


def stage_for(tmp_path, pool_behave: Outcome | None = None, **rollout):
    clock = Clock()
    pool = ScriptedPool(clock, pool_behave)
    return RolloutStage(cfg_for(tmp_path, **rollout), TASKS, pool, clock=clock, sleep=clock.sleep), pool


def test_every_lease_is_acknowledged_and_the_manifest_written_last(tmp_path):
    stage, pool = stage_for(tmp_path)
    manifest = stage.run()
    assert manifest is not None and pool.closed
    # 8 episodes on 2 slots in leases of at most 2; the last 2 go out one by one (leases shrink as the queue drains)
    assert stage.stats == {"leases": 5, "leases_lost": 0, "episodes_replayed": 0, "workers_restarted": 0}
    assert manifest.counts["tasks"] == 2 and manifest.counts["tasks_failed"] == 0
    assert {p["done"] for p in stage.scheduler.progress().values()} == {4}
    written = json.loads((tmp_path / "run" / "rollouts" / "manifest.json").read_text())
    assert written["config_hash"] == stage.cfg.stage_hash("rollouts")


def test_a_lost_lease_goes_out_again_unchanged_and_its_worker_rests_first(tmp_path):
    def behave(worker_id, lease, nth):
        if lease.task_id == "a" and lease.seeds == [0, 1] and nth == 1:
            return LeaseDone(ticket=0, error="RayActorError", worker_lost=True)
        return ok(lease, worker_id, replayed=1 if nth > 1 else 0)

    stage, pool = stage_for(tmp_path, behave, cpu_workers=2, episodes_per_cpu_worker=1)
    assert stage.run() is not None
    first = [s for s in pool.submitted if s[1] == pool.submitted[0][1]]
    assert len(first) == 2  # the same lease id, handed out twice
    lost_worker, _, lost_at = first[0]
    later = [t for w, _, t in pool.submitted if w == lost_worker and t > lost_at]
    assert later and min(later) >= lost_at + 1 + 1  # back 1 s later, then rested 1 s before the next lease
    assert stage.stats["leases_lost"] == 1 and stage.stats["episodes_replayed"] == 1


def test_a_lease_past_its_deadline_restarts_its_worker_and_goes_out_again(tmp_path):
    def behave(worker_id, lease, nth):
        return None if (lease.task_id, lease.seeds, nth) == ("a", [0, 1], 1) else ok(lease, worker_id)

    stage, pool = stage_for(tmp_path, behave)
    assert stage.run() is not None
    hung = pool.hung[0][1].lease_id
    assert pool.restarted == ["c0"] and stage.stats["workers_restarted"] == 1
    assert [lid for _, lid, _ in pool.submitted].count(hung) == 2
    assert {p["done"] for p in stage.scheduler.progress().values()} == {4}


def test_a_streak_of_infra_errors_stops_the_stage_with_the_cause(tmp_path):
    stage, pool = stage_for(tmp_path, lambda w, lease, n: ok(lease, w, infra="ModelError: endpoint down"),
                            max_consecutive_infra_errors=3)
    with pytest.raises(EngineError, match="in a row failed.*ModelError: endpoint down"):
        stage.run()
    assert pool.closed and not (tmp_path / "run" / "rollouts" / "manifest.json").exists()


def test_workers_that_disagree_on_the_model_are_refused(tmp_path):
    clock = Clock()
    pool = ScriptedPool(clock, identities=[("m1", "p"), ("m2", "p")])
    stage = RolloutStage(cfg_for(tmp_path, cpu_workers=2), TASKS, pool, clock=clock, sleep=clock.sleep)
    with pytest.raises(EngineError, match="disagree"):
        stage.run()


def test_cancel_and_budget_end_the_stage_without_a_manifest(tmp_path):
    def cancelling(worker_id, lease, nth):
        request_cancel(str(tmp_path / "run"), "review")
        return ok(lease, worker_id)

    stage, _ = stage_for(tmp_path, cancelling)
    assert stage.run() is None and stage.scheduler.stopping == "cancel requested: review"
    assert not (tmp_path / "run" / "rollouts" / "manifest.json").exists()

    stage, _ = stage_for(tmp_path, lambda w, lease, n: ok(lease, w, budget_exhausted=True))
    assert stage.run() is None and stage.scheduler.stopping == "budget"  # and the cancel of before was cleared
