"""The SFT pieces a single process can check exactly: the config's refusals, the DeepSpeed config generated from it,
the step plan, the schedule, the loss through `logits_to_keep` (equal to the loss over all logits), the metrics log
across a resume, MFU's FLOPs, and the stage's refusals before any cluster work."""

from __future__ import annotations

import doctest
import json

import pytest
import torch

import engine.train.deepspeed_config
import engine.train.metrics
import engine.train.schedule
from engine.config import RunConfig
from engine.errors import ArtifactError, ConfigError
from engine.testing.curated import synthetic_samples, write_curated
from engine.train.config import TrainConfig
from engine.train.deepspeed_config import deepspeed_config
from engine.train.loop import row_inputs
from engine.train.loss import supervised_token_loss, token_loss_sum
from engine.train.metrics import MetricsLog, read_metrics
from engine.train.schedule import StepPlan, lr_factor
from engine.train.stage import step_plan
from engine.train.student import tiny_qwen3


@pytest.mark.parametrize("module", [engine.train.deepspeed_config, engine.train.metrics, engine.train.schedule])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_offload_and_bf16_are_refused_without_a_gpu():
    with pytest.raises(ConfigError, match="train.offload"):
        TrainConfig(offload=True)
    with pytest.raises(ConfigError, match="train.student.dtype bfloat16"):
        TrainConfig.model_validate({"student": {"dtype": "bfloat16"}})
    with pytest.raises(ConfigError, match="heads"):
        TrainConfig.model_validate({"student": {"tiny": {"hidden_size": 30, "heads": 4}}})


def test_deepspeed_config_follows_ours():
    cpu = deepspeed_config(TrainConfig(zero_stage=3, gradient_accumulation=3, max_grad_norm=0.5), world_size=4,
                           bf16=False)
    assert cpu["train_batch_size"] == 12 and cpu["gradient_accumulation_steps"] == 3
    assert cpu["train_micro_batch_size_per_gpu"] == 1 and cpu["gradient_clipping"] == 0.5
    assert cpu["zero_optimization"]["stage"] == 3 and "offload_optimizer" not in cpu["zero_optimization"]
    assert cpu["optimizer"]["params"]["torch_adam"] is True and cpu["bf16"]["enabled"] is False
    gpu = deepspeed_config(TrainConfig(use_gpu=True, offload=True, zero_stage=3), world_size=8, bf16=True)
    assert gpu["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert gpu["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "torch_adam" not in gpu["optimizer"]["params"] and gpu["bf16"]["enabled"] is True
    two = deepspeed_config(TrainConfig(use_gpu=True, offload=True, zero_stage=2), world_size=8, bf16=True)
    assert "offload_param" not in two["zero_optimization"]


def test_the_step_plan_leaves_out_what_does_not_fill_a_step():
    plan = StepPlan(rows=23, world_size=2, accumulation=3, epochs=2)
    assert (plan.rows_per_rank, plan.steps_per_epoch, plan.total_steps) == (11, 3, 6)
    assert plan.rows_left_out_per_epoch == 23 - 18


def test_the_schedule_warms_up_then_decays_to_its_floor():
    f = [lr_factor(s, total=100, warmup=10, min_ratio=0.1) for s in range(101)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[100] == pytest.approx(0.1)


def test_too_few_rows_for_one_step_is_a_clear_error():
    cfg = RunConfig.model_validate({"train": {"workers": 4, "gradient_accumulation": 4}})
    with pytest.raises(ConfigError, match=r"10 packed rows cannot make one optimizer step of 4 workers × 4 rows"):
        step_plan(cfg, 10)


def test_training_before_curation_names_the_command_to_run(tmp_path):
    from engine.train.stage import curated_shards

    with pytest.raises(ArtifactError, match="run `synthscale curate"):
        curated_shards(RunConfig(run_dir=str(tmp_path / "r")))


def test_the_loss_at_kept_positions_equals_the_loss_over_all_logits():
    model = tiny_qwen3(600).eval()
    samples = synthetic_samples(5, seed=3, token_range=(10, 590))
    ids = [t for s in samples for t in s.input_ids]
    mask = [m for s in samples for m in s.loss_mask]
    lens = [len(s.input_ids) for s in samples]
    row = {"input_ids": ids, "loss_mask": mask, "position_ids": [p for n in lens for p in range(n)],
           "seq_lens": lens}
    batch = row_inputs(row, torch.device("cpu"), on_gpu=False)
    with torch.no_grad():
        kept = token_loss_sum(model(**batch["inputs"]).logits, batch["targets"])
        full_inputs = {k: v for k, v in batch["inputs"].items() if k != "logits_to_keep"}
        full, n = supervised_token_loss(model(**full_inputs).logits, torch.tensor([ids]), torch.tensor([mask]))
    assert n == batch["targets"].numel() == sum(sum(s.loss_mask) for s in samples)
    assert kept.item() == pytest.approx(full.item(), rel=1e-5)


def test_a_row_with_nothing_supervised_still_gives_a_differentiable_zero():
    model = tiny_qwen3(64)
    row = {"input_ids": [1, 2, 3], "loss_mask": [0, 0, 0], "position_ids": [0, 1, 2], "seq_lens": [3]}
    batch = row_inputs(row, torch.device("cpu"), on_gpu=False)
    loss = token_loss_sum(model(**batch["inputs"]).logits, batch["targets"])
    loss.backward()
    assert loss.item() == 0.0


def test_the_metrics_log_keeps_the_steps_before_a_resume_and_replaces_the_rest(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    first = MetricsLog(path, 0, flush_s=0)
    for step in range(1, 6):
        first.write({"step": step, "loss": 1.0 / step})
    resumed = MetricsLog(path, 3, flush_s=3600)  # the checkpoint was at step 3: steps 4 and 5 are played again
    resumed.write({"step": 4, "loss": 0.2})  # the first write flushes
    assert [(m["step"], m["loss"]) for m in read_metrics(path)][2:] == [(3, 1 / 3), (4, 0.2)]
    resumed.write({"step": 5, "loss": 0.1})
    assert len(read_metrics(path)) == 4  # within flush_s: not written yet
    resumed.flush()
    assert [(m["step"], m["loss"]) for m in read_metrics(path)][3:] == [(4, 0.2), (5, 0.1)]
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_synthetic_curated_data_is_what_the_stage_reads(tmp_path):
    from engine.train.stage import curated_shards

    run = tmp_path / "r"
    manifest = write_curated(str(run), synthetic_samples(20), pack_tokens=128, rows_per_shard=2)
    got, paths = curated_shards(RunConfig(run_dir=str(run)))
    assert got == manifest and len(paths) == manifest.counts["shards"] >= 2


def test_the_progress_bar_follows_the_metrics_file(tmp_path):
    from engine.train.progress import TrainProgress

    path = str(tmp_path / "metrics.jsonl")
    with TrainProgress(path, 10, every_s=3600) as progress:
        progress.update()  # no file yet
        assert progress.bar.n == 0
        log = MetricsLog(path, 0, flush_s=0)
        log.write({"step": 3, "loss": 2.5, "lr": 1e-4, "supervised_tokens_per_s": 100.0})
        progress.update()
        assert progress.bar.n == 3 and "2.5000" in str(progress.bar.postfix)


def test_a_named_architecture_builds_with_random_weights_and_a_short_vocabulary_is_refused(tmp_path):
    from engine.train.config import StudentModelConfig
    from engine.train.student import load_student, tiny_qwen3_config

    tiny_qwen3_config(320).save_pretrained(tmp_path)
    model = load_student(StudentModelConfig(model=str(tmp_path), random_init=True), 300, on_gpu=False)
    assert model.get_input_embeddings().num_embeddings == 320 and model.config.model_type == "qwen3"
    with pytest.raises(ConfigError, match="fewer than the student tokenizer's 400 tokens"):
        load_student(StudentModelConfig(model=str(tmp_path), random_init=True), 400, on_gpu=False)
    with pytest.raises(ConfigError, match="cannot load it"):
        load_student(StudentModelConfig(model=str(tmp_path / "missing")), 300, on_gpu=False)


def test_wandb_offline_and_mlflow_receive_every_step(tmp_path, monkeypatch):
    """Runs where W&B and MLflow are installed (they are not dependencies: `pip install wandb mlflow-skinny`)."""
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    from engine.train.metrics import Trackers

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    trackers = Trackers(["wandb", "mlflow"], "unit", {"learning_rate": 1e-3})
    for step in (1, 2, 3):
        trackers.log({"step": step, "loss": 1.0 / step, "checkpoint": True})
    trackers.close()
    run = mlflow.search_runs(experiment_names=["synthscale"]).iloc[0]
    history = mlflow.tracking.MlflowClient().get_metric_history(run["run_id"], "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


def test_a_tracker_that_is_not_installed_is_named(monkeypatch):
    import sys

    from engine.train.metrics import Trackers

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match="train.report_to names 'wandb', which is not installed"):
        Trackers(["wandb"], "x", {})
