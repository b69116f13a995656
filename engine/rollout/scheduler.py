"""The rollout stage's scheduler: which episodes of which task go to which worker, and when a lease is lost.

Pure logic on an injected clock (no Ray, no I/O), driven by the rollout stage (`engine/rollout/stage.py`)
whatever its worker pool: threads, Ray actors, or the virtual-clock simulator (`benchmarks/rollout_sim.py`).

Work is counted in *seeds*: episode i of a task has seed `seed_base + i` and a deterministic episode id
(task content, model, policy, seed). A task is done when `target` of its episodes ended without an
infra error. An episode given up on after the worker's own R retries counts as an infra failure and a
fresh seed takes its place, up to `max_infra_failures` per task. A lease whose worker died or overran
its deadline is handed out again *unchanged* (same id, same seeds): workers store each episode under its
deterministic id as it ends, so the next holder finds the episodes the last one finished and plays only
the rest (exactly once, and no finished episode is lost).

>>> s = Scheduler([TaskTarget(task_id="t", target=3)], lease_size=2, lease_timeout_s=60)
>>> a = s.next_lease("w1", gpu=False, now=0.0); a.seeds
[0, 1]
>>> b = s.next_lease("w2", gpu=False, now=0.0); b.seeds
[2]
>>> s.complete(a.lease_id, [EpisodeOutcome(seed=0), EpisodeOutcome(seed=1, infra_error="SandboxError: gone")], now=5)
>>> s.lost(b.lease_id, now=6)           # w2 died: the same lease goes out again
>>> [l.seeds for l in (s.next_lease("w1", gpu=False, now=7), s.next_lease("w3", gpu=False, now=7))]
[[2], [3]]
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from engine.rollout.leases import EpisodeOutcome, Lease


class TaskTarget(BaseModel):
    """One task's share of the stage."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    task_hash: str = ""
    target: int = Field(gt=0, description="Trajectories wanted (infra errors do not count).")
    seed_base: int = 0
    needs_gpu: bool = False
    done_seeds: list[int] = Field(default_factory=list, description="Seeds already stored cleanly (resume).")
    infra_seeds: list[int] = Field(default_factory=list, description="Seeds stored as given-up infra errors.")


def lease_id_for(task_hash: str, task_id: str, salt: str, seeds: list[int]) -> str:
    """Deterministic: the same episodes make the same lease (and so the same shard name)."""
    text = f"{task_hash}|{task_id}|{salt}|{','.join(map(str, seeds))}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class _TaskState:
    spec: TaskTarget
    next_seed: int
    done: int
    infra_failed: int
    used: set[int]
    in_flight: int = 0
    infra_now: int = 0  # infra failures of this attempt of the stage (what the give-up threshold counts)
    requeued: deque[Lease] = field(default_factory=deque)
    failed: bool = False

    @property
    def need(self) -> int:
        """Episodes still to hand out (fresh seeds), beyond what is done or in flight."""
        queued = sum(len(lease.seeds) for lease in self.requeued)
        return max(0, self.spec.target - self.done - self.in_flight - queued)

    @property
    def finished(self) -> bool:
        return self.failed or (self.done >= self.spec.target and self.in_flight == 0 and not self.requeued)


@dataclass
class _Issued:
    lease: Lease
    worker_id: str
    issued_at: float
    attempt: int


class Scheduler:
    """Hands out leases with task affinity, tracks them, re-issues lost ones, knows when the stage is done."""

    def __init__(self, tasks: list[TaskTarget], *, lease_size: int, lease_timeout_s: float,
                 max_infra_failures: int = 16, max_lease_attempts: int = 4, salt: str = "", slots: int | None = None):
        if len({t.task_id for t in tasks}) != len(tasks):
            raise ValueError("task ids must be unique")
        self.lease_size = lease_size
        self.slots = slots  # episodes the workers play at once: leases shrink as the queue drains (less tail)
        self.lease_timeout_s = lease_timeout_s
        self.max_infra_failures = max_infra_failures
        self.max_lease_attempts = max_lease_attempts
        self.salt = salt
        self.tasks = {t.task_id: _TaskState(spec=t, next_seed=t.seed_base, done=len(set(t.done_seeds)),
                                            infra_failed=len(set(t.infra_seeds)),
                                            used=set(t.done_seeds) | set(t.infra_seeds)) for t in tasks}
        self.issued: dict[str, _Issued] = {}
        self.attempts: dict[str, int] = {}
        self.stopping: str | None = None
        self.failed_leases: list[str] = []

    # -- handing out ----------------------------------------------------------------------------------
    def next_lease(self, worker_id: str, *, gpu: bool, now: float, prefer_task: str | None = None) -> Lease | None:
        """A lease for this worker, or None when there is nothing it may take now.

        Affinity: the task the worker holds a container for, while it has work; then the task with the
        fewest workers on it (spreads tasks so containers are not swapped), most work left first. GPU
        tasks go only to GPU workers; CPU workers take CPU tasks; GPU workers take CPU tasks as well."""
        if self.stopping:
            return None
        st = self._pick(worker_id, gpu, prefer_task)
        if st is None:
            return None
        if st.requeued:
            lease = st.requeued.popleft()
        else:
            seeds = self._fresh_seeds(st, min(self._size(), st.need))
            lease = Lease(lease_id=lease_id_for(st.spec.task_hash, st.spec.task_id, self.salt, seeds),
                          task_id=st.spec.task_id, seeds=seeds)
        st.in_flight += len(lease.seeds)
        self.attempts[lease.lease_id] = self.attempts.get(lease.lease_id, 0) + 1
        self.issued[lease.lease_id] = _Issued(lease, worker_id, now, self.attempts[lease.lease_id])
        return lease

    def _size(self) -> int:
        """Episodes in the next fresh lease: `lease_size`, but no more than an even share of what is queued over
        the workers' slots, so that the last episodes spread over the workers instead of queueing behind one
        (guided self-scheduling).

        >>> s = Scheduler([TaskTarget(task_id="t", target=7)], lease_size=4, lease_timeout_s=60, slots=3)
        >>> [len(s.next_lease(w, gpu=False, now=0).seeds) for w in ("a", "b", "c", "d")]
        [3, 2, 1, 1]
        """
        if not self.slots:
            return self.lease_size
        return max(1, min(self.lease_size, -(-self.queued_episodes() // self.slots)))

    def _pick(self, worker_id: str, gpu: bool, prefer_task: str | None) -> _TaskState | None:
        def has_work(st: _TaskState) -> bool:
            return not st.failed and (bool(st.requeued) or st.need > 0) and (gpu or not st.spec.needs_gpu)

        if prefer_task in self.tasks and has_work(self.tasks[prefer_task]):
            return self.tasks[prefer_task]
        holders: dict[str, int] = {}
        for iss in self.issued.values():
            holders[iss.lease.task_id] = holders.get(iss.lease.task_id, 0) + 1
        candidates = [st for st in self.tasks.values() if has_work(st)]
        if not candidates:
            return None
        # a worker's own kind first (GPU workers on GPU tasks), then spread, then most work left
        return min(candidates, key=lambda st: (st.spec.needs_gpu != gpu, holders.get(st.spec.task_id, 0),
                                               -(st.need + sum(len(x.seeds) for x in st.requeued))))

    def _fresh_seeds(self, st: _TaskState, n: int) -> list[int]:
        seeds: list[int] = []
        while len(seeds) < n:
            if st.next_seed not in st.used:
                seeds.append(st.next_seed)
                st.used.add(st.next_seed)
            st.next_seed += 1
        return seeds

    # -- hearing back ---------------------------------------------------------------------------------
    def complete(self, lease_id: str, outcomes: list[EpisodeOutcome], now: float,
                 budget_exhausted: bool = False) -> None:
        """A worker acknowledged a lease. Episodes of the lease it did not report (cut by the budget) go back."""
        iss = self.issued.pop(lease_id, None)
        if iss is None:
            return  # a late answer for a lease already re-issued and acknowledged elsewhere
        st = self.tasks[iss.lease.task_id]
        st.in_flight -= len(iss.lease.seeds)
        reported = {o.seed for o in outcomes}
        for o in outcomes:
            if o.infra_error is None:
                st.done += 1
            else:
                st.infra_failed += 1
                st.infra_now += 1
        missing = [s for s in iss.lease.seeds if s not in reported]
        st.used.difference_update(missing)
        st.next_seed = min([st.next_seed, *missing])
        if st.infra_now > self.max_infra_failures:
            st.failed = True
        if budget_exhausted:
            self.stop("budget")

    def lost(self, lease_id: str, now: float, attempt: int | None = None) -> None:
        """The lease's worker died (or was killed for overrunning): hand the same lease out again.

        `attempt` (from `attempt_of` when the lease went out) makes a late error of an earlier holder harmless."""
        iss = self.issued.get(lease_id)
        if iss is None or (attempt is not None and iss.attempt != attempt):
            return
        del self.issued[lease_id]
        st = self.tasks[iss.lease.task_id]
        st.in_flight -= len(iss.lease.seeds)
        if self.attempts.get(lease_id, 0) >= self.max_lease_attempts:
            # a lease that kills its worker again and again: give its episodes up as infra failures
            self.failed_leases.append(lease_id)
            st.infra_failed += len(iss.lease.seeds)
            st.infra_now += len(iss.lease.seeds)
            st.failed = st.infra_now > self.max_infra_failures
            return
        st.requeued.append(iss.lease)

    def expired(self, now: float) -> list[tuple[Lease, str]]:
        """Leases past their deadline (`lease_timeout_s` per episode), with the worker holding each."""
        return [(iss.lease, iss.worker_id) for iss in self.issued.values()
                if now - iss.issued_at > self.lease_timeout_s * len(iss.lease.seeds)]

    def stop(self, reason: str) -> None:
        """Hand out nothing more (budget spent, cancel requested); leases in flight still finish."""
        self.stopping = self.stopping or reason

    def attempt_of(self, lease_id: str) -> int:
        """How many times the lease has gone out (the current holder's attempt number)."""
        return self.attempts.get(lease_id, 0)

    # -- state ----------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self.issued)

    def finished(self) -> bool:
        if self.issued:
            return False
        return self.stopping is not None or all(st.finished for st in self.tasks.values())

    def queued_episodes(self) -> int:
        """Episodes not yet handed out (fresh and re-queued)."""
        return sum(st.need + sum(len(x.seeds) for x in st.requeued)
                   for st in self.tasks.values() if not st.failed)

    def progress(self) -> dict[str, dict[str, int | bool]]:
        return {tid: {"target": st.spec.target, "done": st.done, "in_flight": st.in_flight,
                      "infra_failed": st.infra_failed, "failed": st.failed} for tid, st in self.tasks.items()}

    def done_total(self) -> int:
        return sum(min(st.done, st.spec.target) for st in self.tasks.values())
