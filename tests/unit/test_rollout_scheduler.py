"""The rollout scheduler: targets, affinity, infra replacements, lost and expired leases, resume, stopping."""

from __future__ import annotations

import pytest

from engine.rollout.scheduler import EpisodeOutcome, Scheduler, TaskTarget, lease_id_for


def ok(*seeds):
    return [EpisodeOutcome(seed=s) for s in seeds]


def drain(s: Scheduler, worker="w", gpu=False, now=0.0, infra_seeds=()):
    """Run every lease to completion on one worker; infra_seeds end in infra errors."""
    seen = []
    while (lease := s.next_lease(worker, gpu=gpu, now=now)) is not None:
        seen.append(lease)
        s.complete(lease.lease_id, [EpisodeOutcome(seed=x, infra_error="SandboxError: x" if x in infra_seeds else None)
                                    for x in lease.seeds], now)
    return seen


def test_every_task_reaches_its_target_in_leases_of_at_most_lease_size():
    s = Scheduler([TaskTarget(task_id="a", target=5), TaskTarget(task_id="b", target=3)], lease_size=2,
                  lease_timeout_s=10)
    leases = drain(s)
    assert s.finished() and s.done_total() == 8
    assert all(len(lease.seeds) <= 2 for lease in leases)
    assert sorted(x for lease in leases if lease.task_id == "a" for x in lease.seeds) == [0, 1, 2, 3, 4]


def test_infra_failures_are_replaced_by_fresh_seeds_and_counted_apart():
    s = Scheduler([TaskTarget(task_id="a", target=3)], lease_size=3, lease_timeout_s=10)
    drain(s, infra_seeds={1})
    p = s.progress()["a"]
    assert (p["done"], p["infra_failed"], p["failed"]) == (3, 1, False)
    assert s.tasks["a"].used == {0, 1, 2, 3}  # seed 3 replaced seed 1


def test_a_task_with_too_many_infra_failures_is_given_up():
    s = Scheduler([TaskTarget(task_id="a", target=2)], lease_size=2, lease_timeout_s=10, max_infra_failures=2)
    drain(s, infra_seeds=set(range(100)))
    assert s.progress()["a"]["failed"] and s.progress()["a"]["infra_failed"] == 4 and s.finished()  # two leases of two


def test_lost_lease_goes_out_again_unchanged_and_stale_errors_are_ignored():
    s = Scheduler([TaskTarget(task_id="a", target=4)], lease_size=2, lease_timeout_s=10)
    first = s.next_lease("w1", gpu=False, now=0)
    attempt = s.attempt_of(first.lease_id)
    s.lost(first.lease_id, now=1, attempt=attempt)
    again = s.next_lease("w2", gpu=False, now=2)
    assert again == first and s.attempt_of(first.lease_id) == attempt + 1
    s.lost(first.lease_id, now=3, attempt=attempt)  # the first holder's late error: not the current holder
    assert s.in_flight == 1
    s.complete(again.lease_id, ok(*again.seeds), now=4)
    drain(s)
    assert s.done_total() == 4 and s.finished()


def test_a_lease_that_keeps_killing_workers_is_given_up_after_max_attempts():
    s = Scheduler([TaskTarget(task_id="a", target=1)], lease_size=1, lease_timeout_s=10, max_lease_attempts=2,
                  max_infra_failures=0)
    for _ in range(2):
        lease = s.next_lease("w", gpu=False, now=0)
        s.lost(lease.lease_id, now=0)
    assert s.failed_leases == [lease.lease_id] and s.progress()["a"]["failed"] and s.finished()


def test_expired_leases_are_reported_with_their_worker():
    s = Scheduler([TaskTarget(task_id="a", target=4)], lease_size=2, lease_timeout_s=10)
    lease = s.next_lease("w7", gpu=False, now=0)
    assert s.expired(now=19) == []
    assert s.expired(now=21) == [(lease, "w7")]  # 2 episodes × 10 s


def test_affinity_keeps_a_worker_on_its_task_and_spreads_new_workers():
    s = Scheduler([TaskTarget(task_id="a", target=8), TaskTarget(task_id="b", target=8)], lease_size=2,
                  lease_timeout_s=10)
    w1 = s.next_lease("w1", gpu=False, now=0)
    w2 = s.next_lease("w2", gpu=False, now=0)
    assert {w1.task_id, w2.task_id} == {"a", "b"}  # spread: each worker gets its own task
    s.complete(w1.lease_id, ok(*w1.seeds), now=1)
    assert s.next_lease("w1", gpu=False, now=1, prefer_task=w1.task_id).task_id == w1.task_id


def test_gpu_tasks_only_go_to_gpu_workers():
    s = Scheduler([TaskTarget(task_id="g", target=2, needs_gpu=True), TaskTarget(task_id="c", target=2)],
                  lease_size=2, lease_timeout_s=10)
    assert s.next_lease("cpu", gpu=False, now=0).task_id == "c"
    assert s.next_lease("cpu", gpu=False, now=0) is None
    assert s.next_lease("gpu", gpu=True, now=0).task_id == "g"


def test_resume_skips_stored_seeds_and_counts_stored_infra_failures():
    s = Scheduler([TaskTarget(task_id="a", target=4, done_seeds=[0, 2], infra_seeds=[1])], lease_size=4,
                  lease_timeout_s=10)
    lease = s.next_lease("w", gpu=False, now=0)
    assert lease.seeds == [3, 4] and s.progress()["a"]["infra_failed"] == 1


def test_budget_stop_hands_out_nothing_and_returns_unreported_seeds():
    s = Scheduler([TaskTarget(task_id="a", target=4)], lease_size=4, lease_timeout_s=10)
    lease = s.next_lease("w", gpu=False, now=0)
    s.complete(lease.lease_id, ok(0), now=1, budget_exhausted=True)
    assert s.stopping == "budget" and s.next_lease("w", gpu=False, now=1) is None and s.finished()
    assert s.tasks["a"].used == {0} and s.tasks["a"].next_seed == 1  # seeds 1–3 were never stored


def test_lease_ids_are_deterministic_in_their_episodes():
    assert lease_id_for("h", "a", "m|p", [0, 1]) == lease_id_for("h", "a", "m|p", [0, 1])
    assert lease_id_for("h", "a", "m|p", [0, 1]) != lease_id_for("h", "a", "m|p", [0, 2])
    assert lease_id_for("h", "a", "m|p", [0, 1]) != lease_id_for("h", "a", "other|p", [0, 1])


def test_duplicate_task_ids_are_refused():
    with pytest.raises(ValueError):
        Scheduler([TaskTarget(task_id="a", target=1)] * 2, lease_size=1, lease_timeout_s=1)


def test_a_rerun_tries_a_failed_task_again_with_fresh_seeds():
    """Infra failures stored by an earlier attempt are reported, not held against this attempt."""
    s = Scheduler([TaskTarget(task_id="a", target=2, infra_seeds=list(range(20)))], lease_size=2,
                  lease_timeout_s=10, max_infra_failures=16)
    lease = s.next_lease("w", gpu=False, now=0)
    assert lease.seeds == [20, 21] and s.progress()["a"]["infra_failed"] == 20
