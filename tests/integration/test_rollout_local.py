"""The rollout stage over the in-process pool (what `synthscale episode` and `rollout --in-process` run), with real
bubblewrap sandboxes: a worker that crashes after k stored episodes of a lease does not play them again; GPU
tasks get their worker's GPUs; a sandbox that will not start is an infra record, not an abort; the budget
stops the stage cleanly; and a re-run resumes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from engine.errors import SandboxError
from engine.sandbox.local import LocalRuntime
from engine.trajectories.store import read_trajectories

sys.path.insert(0, str(Path(__file__).parent))
from rollout_helpers import (  # noqa: E402
    EXAMPLES, QUICK, DieAfterWrite, PlaybookFactory, assert_exactly_once, local_stage, rollout_config, written_twice)

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")]


def _variant(tmp_path: Path, name: str, **task_fields) -> Path:
    """A copy of the wine task with some task.yaml fields changed (its folder is returned as a tasks root)."""
    root = tmp_path / "tasks" / name
    shutil.copytree(EXAMPLES / "wine-classification", root)
    cfg = yaml.safe_load((root / "task.yaml").read_text())
    cfg.update(id=name, **task_fields)
    (root / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def _config(run: Path, tasks: list[Path], **rollout):
    cfg = rollout_config(run, n=rollout.pop("n", 2), **rollout)
    return cfg.model_copy(update={"episodes": cfg.episodes.model_copy(update={"tasks": tasks})})


def test_a_crash_after_k_stored_episodes_of_a_lease_does_not_play_them_again(tmp_path):
    cfg = rollout_config(tmp_path / "k", tasks=["wine-classification"], n=3, lease_size=3, cpu_workers=1,
                         episodes_per_cpu_worker=1)
    log = str(tmp_path / "written.log")
    stage = local_stage(cfg, model_factory=PlaybookFactory(QUICK),
                        after_write=DieAfterWrite(str(tmp_path / "crashed"), after=2, log=log, crash=True))
    manifest = stage.run()
    assert (tmp_path / "crashed").exists() and manifest is not None
    assert stage.stats["leases_lost"] == 1 and stage.stats["episodes_replayed"] == 2
    assert not written_twice(log) and len(Path(log).read_text().split()) == 3
    assert_exactly_once(cfg)


def test_gpu_tasks_run_on_their_workers_gpus(tmp_path):
    task = _variant(tmp_path, "wine-gpu", gpus=1)
    cfg = _config(tmp_path / "gpu", [task], n=4, lease_size=1, gpu_workers=2, cpu_workers=0)
    stage = local_stage(cfg, model_factory=PlaybookFactory(QUICK), gpu_ids=["3", "5"])
    assert stage.run() is not None
    seen = {rec.steps[0].observation.split("CVD=", 1)[1].split()[0] for rec in read_trajectories(cfg.run_dir)}
    assert seen <= {"3", "5"} and seen  # each sandbox saw exactly its worker's GPU, never "none"


def test_a_sandbox_that_will_not_start_is_an_infra_record_and_the_task_is_given_up(tmp_path, monkeypatch):
    broken = _variant(tmp_path, "wine-broken")
    real_start = LocalRuntime.start

    def start(self, spec):  # the node's sandbox runtime refuses this task's sandboxes (a full disk, say)
        if spec.workspace == (broken / "workspace").resolve() and spec.labels.get("role") != "grader":
            raise SandboxError("no space left on device (injected)")
        return real_start(self, spec)

    monkeypatch.setattr(LocalRuntime, "start", start)
    cfg = _config(tmp_path / "broken", [broken, EXAMPLES / "diabetes-regression"], n=2, max_infra_retries=1,
                  max_infra_failures_per_task=1, cpu_workers=1, episodes_per_cpu_worker=1)
    manifest = local_stage(cfg, model_factory=PlaybookFactory(QUICK)).run()
    assert manifest is not None and manifest.counts["tasks_failed"] == 1
    assert manifest.rejects == {"task_failed:wine-broken": 2}
    records = read_trajectories(cfg.run_dir)
    failed = [r for r in records if r.task_id == "wine-broken"]
    assert len(failed) == 2 and all(r.infra_error.startswith("SandboxError:") for r in failed)
    assert sum(r.infra_error is None for r in records) == 2  # the other task was not held up


def test_the_budget_stops_cleanly_and_a_rerun_resumes(tmp_path):
    cfg = rollout_config(tmp_path / "budget", tasks=["wine-classification"], n=3, lease_size=1, cpu_workers=1,
                         episodes_per_cpu_worker=1, budget_usd=0.05)
    factory = PlaybookFactory(QUICK, cost_per_call_usd=0.02)  # 3 calls an episode: the budget buys < 1 episode
    stage = local_stage(cfg, model_factory=factory)
    assert stage.run() is None and stage.scheduler.stopping == "budget"
    assert all(r.exit_status == "submitted" for r in read_trajectories(cfg.run_dir))  # nothing cut is kept
    more = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"budget_usd": 10.0})})
    assert local_stage(more, model_factory=factory).run() is not None
    assert_exactly_once(more)
