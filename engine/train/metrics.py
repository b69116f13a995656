"""Training metrics: `RUN/train/metrics.jsonl` (one line per optimizer step, written by rank 0), W&B or MLflow when
configured, and the model's FLOPs per token and the GPU's peak for MFU."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.artifacts import atomic_write_bytes, exists, read_bytes, resolve
from engine.errors import ConfigError

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
"""Dense bf16 peaks by GPU name (NVIDIA's data sheets, without sparsity)."""


def peak_flops(device_name: str, override_tflops: float | None) -> float:
    """The peak FLOP/s of the named GPU (0.0 when unknown: MFU is then not reported).

    >>> peak_flops("NVIDIA H100 80GB HBM3", None), peak_flops("Some GPU", None), peak_flops("x", 100.0)
    (989000000000000.0, 0.0, 100000000000000.0)
    """
    if override_tflops:
        return override_tflops * 1e12
    for name, tflops in PEAK_BF16_TFLOPS.items():
        if name in device_name:
            return tflops * 1e12
    return 0.0


def flops_per_token(config: Any, context: int) -> float:
    """Training FLOPs per token of a decoder (forward and backward): 6 × non-embedding parameters, plus attention
    (12 × layers × hidden × `context`, with `context` the mean attended length), as in the PaLM appendix.

    >>> from types import SimpleNamespace as N
    >>> flops_per_token(N(hidden_size=8, num_hidden_layers=2, intermediate_size=16, num_attention_heads=2,
    ...                   num_key_value_heads=1, head_dim=4, vocab_size=10), context=4)
    8160.0
    """
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q = config.num_attention_heads * head_dim
    kv = config.num_key_value_heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter
    return 6.0 * (per_layer * layers + h * config.vocab_size) + 12.0 * layers * h * context


class MetricsLog:
    """`metrics.jsonl` on any filesystem: the lines kept from an earlier attempt (those before the step training
    resumes from), then this attempt's; rewritten whole and atomically every `flush_s` and on `flush()`."""

    def __init__(self, path: str, resumed_step: int, *, flush_s: float = 5.0):
        self.fs, self.path = resolve(path)
        self.lines: list[str] = []
        if exists(self.fs, self.path):
            for line in read_bytes(self.fs, self.path).decode().splitlines():
                if line.strip() and json.loads(line).get("step", 0) <= resumed_step:
                    self.lines.append(line)
        self.flush_s, self.flushed = flush_s, 0.0

    def write(self, metrics: dict, *, force: bool = False) -> None:
        self.lines.append(json.dumps({**metrics, "time": time.time()}))
        if force or time.monotonic() - self.flushed >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        atomic_write_bytes(self.fs, self.path, ("\n".join(self.lines) + "\n").encode())
        self.flushed = time.monotonic()


def read_metrics(path: str) -> list[dict]:
    """The lines of a `metrics.jsonl` ([] when there is none yet)."""
    fs, p = resolve(path)
    if not exists(fs, p):
        return []
    return [json.loads(line) for line in read_bytes(fs, p).decode().splitlines() if line.strip()]


class Trackers:
    """W&B and MLflow, when `train.report_to` names them (rank 0 only)."""

    def __init__(self, names: list[str], run_name: str, config: dict):
        self.wandb = self.mlflow = None
        try:
            if "wandb" in names:
                import wandb

                self.wandb = wandb.init(project="synthscale", name=run_name, id=run_name, resume="allow",
                                        config=config)
            if "mlflow" in names:
                import mlflow

                mlflow.set_experiment("synthscale")
                mlflow.start_run(run_name=run_name)
                mlflow.log_params({k: str(v)[:250] for k, v in config.items()})
                self.mlflow = mlflow
        except ImportError as e:
            raise ConfigError(f"train.report_to names {e.name!r}, which is not installed on the training workers; "
                              f"pip install {e.name} there, or drop it from train.report_to") from None

    def log(self, metrics: dict) -> None:
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.wandb is not None:
            self.wandb.log(numbers, step=metrics["step"])
        if self.mlflow is not None:
            self.mlflow.log_metrics(numbers, step=metrics["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()
