"""SFT end to end on a local Ray cluster with DeepSpeed's CPU accelerator (gloo): two Ray Train workers train the
offline tiny Qwen3 (the real Qwen3 tokenizer's vocabulary) on packed rows. ZeRO-2 and ZeRO-3 agree with a plain
single-process PyTorch loop step by step; the loss falls when over-fitting; a worker killed mid-run is restarted from
the last checkpoint and ends at the same step with the same loss as an uninterrupted run; so does a run whose
driver was killed and started again; and the exported checkpoint loads with `transformers` and generates.

One Ray instance for the module; DeepSpeed builds its CPU communication op once (cached in
~/.cache/torch_extensions between runs)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray

from engine.config import RunConfig
from engine.curate.tokenizer import offline_tokenizer_dir
from engine.runner import run_train_stage
from engine.testing.curated import synthetic_samples, write_curated
from engine.train.metrics import read_metrics

RAY_RESOURCES = {"num_cpus": 2}
ROOT = Path(__file__).resolve().parents[2]
STEPS = 12  # 13 rows → 2 ranks × 6 → 3 steps of 2 rows per epoch, 4 epochs

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(not (offline_tokenizer_dir() / "tokenizer.json").is_file(),
                       reason="offline qwen3 tokenizer absent: run `make tokenizer`"),
]


def _cfg(run: Path, **train) -> RunConfig:
    return RunConfig.model_validate({
        "run_id": run.name, "run_dir": str(run),
        "train": {"workers": 2, "cpus_per_worker": 0.5, "zero_stage": 3, "epochs": 4, "gradient_accumulation": 2,
                  "learning_rate": 1e-2, "warmup_ratio": 0.1, "checkpoint_every": 4, "shuffle_rows": False,
                  "max_failures": 2, "progress": False, **train},
    })


def _curated(run: Path) -> Path:
    manifest = write_curated(str(run), synthetic_samples(48, seed=1), pack_tokens=256, rows_per_shard=3)
    assert manifest.counts["rows"] == 13  # 2 ranks × 6, one row left out of every epoch
    return run


@pytest.fixture(scope="module")
def zero3(tmp_path_factory, local_ray):
    """The uninterrupted ZeRO-3 run every other run is compared with."""
    run = _curated(tmp_path_factory.mktemp("sft") / "z3")
    return run_train_stage(_cfg(run))


def _losses(student) -> list[float]:
    return [m["loss"] for m in student.metrics()]


def test_zero3_overfits_and_ends_where_the_plan_says(zero3):
    metrics = zero3.metrics()
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1)) and zero3.manifest.counts["steps"] == STEPS
    assert metrics[-1]["loss"] < 0.75 * metrics[0]["loss"], _losses(zero3)
    assert all(m["supervised_tokens_per_s"] > 0 and m["resumed_from"] == 0 for m in metrics)
    checkpoints = [p for p in Path(zero3.out_dir).glob("checkpoint_*") if p.is_dir()]
    assert len(checkpoints) == 2  # at steps 4, 8 and 12; keep_checkpoints (2) keeps the newest two


def test_zero2_zero3_and_a_plain_loop_agree_step_by_step(zero3, tmp_path, monkeypatch):
    from engine.curate.stage import CuratedData
    from engine.curate.tokenizer import load_student_tokenizer
    from engine.train.reference import train_reference
    from engine.train.stage import step_plan

    monkeypatch.chdir(tmp_path)  # a relative run dir, as `synthscale train --run runs/x` gives: workers run elsewhere
    z2 = run_train_stage(_cfg(_curated(Path("z2")), zero_stage=2))
    cfg = _cfg(Path("z2"))
    rows = CuratedData("z2/curate", None).to_arrow().to_pylist()
    plain = train_reference(rows, cfg.train, step_plan(cfg, len(rows)),
                            len(load_student_tokenizer(cfg.curate.student).tokenizer))
    plain_losses = [m["loss"] for m in plain]
    assert _losses(z2) == pytest.approx(plain_losses, rel=2e-3), (_losses(z2), plain_losses)
    assert _losses(zero3) == pytest.approx(plain_losses, rel=2e-3), (_losses(zero3), plain_losses)


def _when_step(metrics_path: Path, step: int, action, timeout_s: float = 600) -> threading.Thread:
    """Runs `action()` once metrics.jsonl shows `step` (polled), in a thread."""
    def watch():
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            seen = read_metrics(str(metrics_path)) if metrics_path.is_file() else []
            if seen and seen[-1]["step"] >= step:
                action()
                return
            time.sleep(0.2)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _kill_a_worker() -> None:
    """SIGKILL one Ray Train worker of this module's Ray instance (its raylet names the session's sockets)."""
    session = ray._private.worker._global_node.get_session_dir_path()
    workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
               and any(session in a for a in p.parent().cmdline())]
    assert workers, "no Ray Train worker process of this Ray instance found"
    workers[-1].send_signal(signal.SIGKILL)


def test_a_killed_worker_restarts_from_the_checkpoint_and_ends_with_the_same_loss(zero3, tmp_path):
    run = _curated(tmp_path / "killed")
    watcher = _when_step(run / "train" / "metrics.jsonl", 5, _kill_a_worker)
    student = run_train_stage(_cfg(run))
    watcher.join(timeout=5)
    metrics = student.metrics()
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert any(m["resumed_from"] in (4, 8) for m in metrics), "no restart from a checkpoint"
    assert metrics[-1]["loss"] == pytest.approx(zero3.metrics()[-1]["loss"], rel=1e-4)


def test_a_new_driver_resumes_the_run_of_a_killed_one(zero3, tmp_path):
    run = _curated(tmp_path / "driver")
    config = tmp_path / "driver.yaml"
    config.write_text(_cfg(run).to_yaml())
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--run", str(run), "--config", str(config),
                               "--address", address], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "RAY_ADDRESS": address})
    watcher = _when_step(run / "train" / "metrics.jsonl", 5, lambda: driver.send_signal(signal.SIGKILL))
    driver.wait(timeout=600)
    watcher.join(timeout=5)
    assert driver.returncode == -signal.SIGKILL
    assert not (run / "train" / "manifest.json").exists()
    deadline = time.time() + 60  # the dead driver's workers release their CPUs
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.5)
    student = run_train_stage(_cfg(run))
    metrics = student.metrics()
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert metrics[-1]["resumed_from"] in (4, 8)
    assert metrics[-1]["loss"] == pytest.approx(zero3.metrics()[-1]["loss"], rel=1e-4)


def test_the_exported_checkpoint_loads_with_transformers_and_generates(zero3):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = Path(zero3.final_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in final.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                           tokenize=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4
    trained = zero3.load()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
def test_the_eval_stage_scores_the_base_and_sft_students_named_by_their_paths(zero3, tmp_path):
    pytest.importorskip("fastapi")
    from engine.evaluate.report import read_scores
    from engine.runner import run_eval_stage

    client = {"provider": "openai", "name": "sft", "unknown_price": "zero", "max_retries": 0, "timeout_s": 120,
              "sampling": {"max_tokens": 12, "temperature": 0.0}}
    cfg = RunConfig.model_validate({
        "run_id": "ev", "run_dir": str(tmp_path / "ev"), "agent": {"max_steps": 2},
        "rollout": {"progress": False, "cpu_workers": 1, "episodes_per_cpu_worker": 1, "lease_size": 1},
        "eval": {"tasks": [str(ROOT / "examples" / "tasks" / "wine-classification")], "runs_per_task": 1,
                 "bootstrap_resamples": 20,
                 "methods": [{**m.model_dump(exclude_none=True), "client": client} for m in zero3.eval_methods()]},
    })
    assert [m.checkpoint for m in cfg.eval.methods] == [str(Path(zero3.out_dir) / "base"), zero3.final_dir]
    manifest, report = run_eval_stage(cfg)
    runs = read_scores(str(tmp_path / "ev" / "eval"))
    assert manifest.counts["runs"] == 2 and sorted(runs["method"]) == ["base-student", "sft-student"]
    assert {"baseline", "base-student", "sft-student"} <= set(report.aup.index)
