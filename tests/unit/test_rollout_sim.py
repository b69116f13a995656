"""The rollout simulator (benchmarks/rollout_sim.py): the real RolloutStage over simulated workers; processor
sharing, work conservation under failures (only the episode in progress is lost), and a GPU that never waits
when the teacher answers instantly."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import rollout_sim  # noqa: E402
from rollout_sim import GpuShare, SimConfig, simulate  # noqa: E402

# a fast workload: minutes-long episodes, a few simulated hours
SMALL = dict(gpus=4, tasks=3, per_task=12, lease_size=2, steps_median=10, teacher_median_s=5.0, train_median_s=20.0,
             shell_median_s=1.0, grade_median_s=2.0, seed=7)


def test_docstring_examples():
    assert doctest.testmod(rollout_sim).failed == 0


def test_processor_sharing_slows_each_job_by_one_plus_alpha_per_extra_job():
    gpu = GpuShare(alpha=0.5)
    assert gpu.change(0.0, 1, 3.0) == [(3.0, 1)]  # alone: full speed
    finishes = dict((w, t) for t, w in gpu.change(1.0, 2, 3.0))  # job 1 has 2 s left; both now at rate 1/1.5
    assert finishes == {1: pytest.approx(4.0), 2: pytest.approx(5.5)}
    assert gpu.change(4.0, 1, None) == [(pytest.approx(5.0), 2)]  # job 2 did 2 of 3 s; alone again
    gpu.advance(5.0)
    assert gpu.busy_s == pytest.approx(5.0) and gpu.work_s == pytest.approx(6.0)


@pytest.mark.parametrize("containers", [1, 2, 4])
def test_every_episode_is_acknowledged_once_and_busy_never_exceeds_held(containers):
    res = simulate(SimConfig(**SMALL, containers_per_gpu=containers, failure_per_worker_hour=0.0))
    assert sorted(res.completed_seeds) == ["t0", "t1", "t2"]
    assert all(sorted(s) == list(range(12)) for s in res.completed_seeds.values())
    assert res.episodes == res.episodes_played == 36 and res.failures == res.episodes_redone == 0
    assert res.workers == 4 * containers
    assert 0 < res.gpu_busy_s <= res.gpu_held_s
    assert 0 < res.gpu_busy_fraction <= 1 and 0 < res.gpu_busy_fraction_overall <= 1


def test_lost_leases_are_reissued_and_only_the_episode_in_progress_runs_again():
    res = simulate(SimConfig(**SMALL, containers_per_gpu=2, failure_per_worker_hour=3.0, restart_s=30.0))
    assert res.failures > 0 and res.leases_lost > 0 and res.episodes_interrupted > 0
    assert res.episodes_redone == 0 and res.episodes_replayed > 0  # finished episodes were found, not replayed
    assert all(sorted(s) == list(range(12)) for s in res.completed_seeds.values())  # each seed stored once
    assert res.episodes_played == res.episodes
    assert res.worker_hours_lost > 0 and res.gpu_busy_s <= res.gpu_held_s


def test_gpu_is_always_busy_when_the_teacher_answers_instantly():
    instant = dict(teacher_median_s=0.0, step_overhead_s=0.0, gpu_share=1.0, grade_median_s=0.0, start_s=0.0,
                   reset_s=0.0, failure_per_worker_hour=0.0)
    res = simulate(SimConfig(gpus=4, tasks=4, per_task=50, lease_size=1, containers_per_gpu=1, **instant))
    assert res.gpu_busy_fraction == pytest.approx(1.0, abs=1e-9)  # steady state: never idle
    assert 0.9 < res.gpu_busy_fraction_overall <= 1.0  # only the tail, once the queue is empty


def test_waiting_for_the_teacher_leaves_one_container_per_gpu_idle_and_sharing_fills_it():
    one = simulate(SimConfig(**SMALL, containers_per_gpu=1, failure_per_worker_hour=0.0))
    two = simulate(SimConfig(**SMALL, containers_per_gpu=2, failure_per_worker_hour=0.0))
    assert one.gpu_busy_fraction_overall < 0.9
    assert two.gpu_busy_fraction_overall > one.gpu_busy_fraction_overall


def test_a_simulation_is_deterministic_for_its_seed():
    cfg = SimConfig(**SMALL, containers_per_gpu=2, failure_per_worker_hour=1.0)
    assert simulate(cfg) == simulate(cfg)
