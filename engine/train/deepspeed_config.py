"""The DeepSpeed config, generated from `TrainConfig` (never written by hand): ZeRO stage 2 or 3, bf16 on GPU,
gradient accumulation, clipping, optional CPU offload, and an Adam that runs where the model is (PyTorch's on CPU,
where DeepSpeed's fused and CPU Adams would need a native build; DeepSpeed's fused Adam on GPU)."""

from __future__ import annotations

from engine.train.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, *, world_size: int, bf16: bool) -> dict:
    """The dict handed to `deepspeed.initialize` (the schedule is ours: a LambdaLR passed alongside).

    >>> c = deepspeed_config(TrainConfig(gradient_accumulation=4, zero_stage=2), world_size=2, bf16=False)
    >>> c["train_batch_size"], c["zero_optimization"]["stage"], c["optimizer"]["params"]["torch_adam"]
    (8, 2, True)
    """
    zero: dict = {"stage": cfg.zero_stage, "contiguous_gradients": True, "overlap_comm": cfg.use_gpu,
                  "reduce_bucket_size": 5e8 if cfg.use_gpu else 5e7}
    if cfg.zero_stage == 3:
        zero.update(stage3_prefetch_bucket_size=5e8 if cfg.use_gpu else 5e7, stage3_param_persistence_threshold=1e5,
                    stage3_gather_16bit_weights_on_model_save=False)  # the export consolidates from the shards
    if cfg.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if cfg.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    adam = {"lr": cfg.learning_rate, "betas": list(cfg.adam_betas), "eps": cfg.adam_eps,
            "weight_decay": cfg.weight_decay}
    if not cfg.use_gpu:
        adam["torch_adam"] = True  # no native op to build on CPU
    return {
        "train_micro_batch_size_per_gpu": 1,  # one packed row: its samples are the batch
        "gradient_accumulation_steps": cfg.gradient_accumulation,
        "train_batch_size": cfg.gradient_accumulation * world_size,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": adam},
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
