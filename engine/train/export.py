"""A training checkpoint → a Hugging Face checkpoint (`RUN/train/final/`): the ZeRO shards consolidated into one
state dict (DeepSpeed's `zero_to_fp32`), loaded into the model rebuilt from its saved config, written as safetensors
in the training dtype, with the student tokenizer and a generation config, so that `transformers` loads it and
`vllm serve` / `transformers serve` serve it."""

from __future__ import annotations

import os
from typing import Any

from engine.errors import ArtifactError
from engine.train.loop import CHECKPOINT_TAG, MODEL_CONFIG_DIR


def export_checkpoint(checkpoint_dir: str, out_dir: str, tokenizer: Any, *, dtype: str = "auto") -> str:
    """Writes `out_dir` from a local checkpoint directory; returns it. `dtype`: the config's torch_dtype (auto)."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config_dir = os.path.join(checkpoint_dir, MODEL_CONFIG_DIR)
    if not os.path.isdir(os.path.join(checkpoint_dir, CHECKPOINT_TAG)) or not os.path.isdir(config_dir):
        raise ArtifactError(f"{checkpoint_dir}: not a synthscale training checkpoint (no {CHECKPOINT_TAG}/ or "
                            f"{MODEL_CONFIG_DIR}/ in it); export a checkpoint_* folder of RUN/train/")
    config = AutoConfig.from_pretrained(config_dir)
    state = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=CHECKPOINT_TAG)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ArtifactError(f"{checkpoint_dir}: the consolidated weights do not fit the model's config (missing "
                            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}); re-run "
                            "training from a clean RUN/train/")
    if tied:
        model.tie_weights()
    target = {"auto": getattr(config, "dtype", None) or torch.float32,
              "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    if isinstance(target, str):
        target = getattr(torch, target)
    model = model.to(target)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=0.6,
                     top_p=0.95).save_pretrained(out_dir)
    return out_dir
