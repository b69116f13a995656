"""The `train` section of a run's config: the student model, the cluster shape of the SFT job, the optimisation and
DeepSpeed settings, checkpointing and reporting."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import ConfigError

TINY = "tiny"
"""`train.student.model`: a tiny Qwen3-architecture model with random weights, built from a config (no download)."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(_Config):
    """Sizes of the offline tiny student (its vocabulary is the student tokenizer's)."""

    hidden_size: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    intermediate_size: int | None = Field(None, ge=8, description="Default: 2 × hidden_size.")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TinyModelConfig:
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ConfigError(f"train.student.tiny: hidden_size {self.hidden_size} must divide by heads {self.heads} "
                              f"and heads by kv_heads {self.kv_heads}; change them")
        return self


class StudentModelConfig(_Config):
    """Which model is fine-tuned. Its tokenizer is `curate.student` (the one the shards were tokenized with)."""

    model: str = Field(TINY, description="`tiny` (offline, random weights), a Hub model id (`Qwen/Qwen3-4B`) or a "
                                         "local folder with a Hugging Face checkpoint.")
    revision: str | None = None
    random_init: bool = Field(False, description="Build the named model's architecture from its config with random "
                                                 "weights instead of loading its weights (benchmarks).")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU.")
    attention: Literal["auto", "flash_attention_2", "sdpa", "eager"] = Field(
        "auto", description="auto: flash_attention_2 on GPU where installed (varlen over position_ids), else sdpa "
                            "with a block-diagonal mask built from each row's seq_lens.")


class TrainConfig(_Config):
    """SFT of the student on `RUN/curate/` with Ray Train and DeepSpeed."""

    student: StudentModelConfig = Field(default_factory=StudentModelConfig)
    # cluster shape (operational: never part of the stage's resume key, except workers, which fixes the ZeRO layout)
    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks).")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0)
    resources_per_worker: dict[str, float] = Field(default_factory=dict)
    # optimisation
    epochs: int = Field(2, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    gradient_accumulation: int = Field(1, ge=1, description="Packed rows per rank per optimizer step.")
    learning_rate: float = Field(1e-5, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The cosine schedule ends at this × learning_rate.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, ge=0, description="0: no clipping.")
    seed: int = 0
    shuffle_rows: bool = Field(True, description="Shuffle each rank's rows per epoch (seeded by seed and epoch).")
    # DeepSpeed
    zero_stage: Literal[2, 3] = 3
    offload: bool = Field(False, description="ZeRO-Offload: optimizer state (and on stage 3 the parameters) in CPU "
                                             "memory. GPU only.")
    gradient_checkpointing: bool = False
    # checkpoints and reporting (operational)
    checkpoint_every: int = Field(100, ge=1, description="Optimizer steps between checkpoints (and one at the end).")
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=-1, description="Restarts from the last checkpoint after a worker dies (-1: "
                                                    "no limit).")
    report_to: list[Literal["wandb", "mlflow"]] = Field(default_factory=list)
    progress: bool = Field(True, description="A progress bar on the driver (steps, loss, lr, tokens/s).")
    peak_tflops: float | None = Field(None, gt=0, description="The GPU's dense bf16 peak for MFU; default from its "
                                                              "name (H100/H200 989, A100 312).")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.offload and not self.use_gpu:
            raise ConfigError("train.offload moves optimizer state from GPU to CPU memory; with train.use_gpu false "
                              "there is nothing to offload: drop train.offload or set train.use_gpu")
        if self.student.dtype == "bfloat16" and not self.use_gpu:
            raise ConfigError("train.student.dtype bfloat16 needs train.use_gpu (DeepSpeed's CPU path trains in "
                              "float32); use auto or float32")
        return self


TRAIN_OPERATIONAL = {"use_gpu": True, "cpus_per_worker": True, "gpus_per_worker": True, "resources_per_worker": True,
                     "checkpoint_every": True, "keep_checkpoints": True, "max_failures": True, "report_to": True,
                     "peak_tflops": True, "progress": True}
"""Settings that never change what training computes (the stage's resume key leaves them out)."""
