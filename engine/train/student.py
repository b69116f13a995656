"""The student model: the offline tiny Qwen3-architecture model built from a config with random weights (no
download), so that the SFT path runs on a CPU machine, or a Hub model / local checkpoint for real runs."""

from __future__ import annotations

from typing import Any

from engine.errors import ConfigError
from engine.train.config import TINY, StudentModelConfig


def tiny_qwen3_config(vocab_size: int, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                      kv_heads: int = 2, max_positions: int = 32768, intermediate_size: int | None = None) -> Any:
    """A `Qwen3Config` small enough for CPU tests and benchmarks (its vocabulary must cover the tokenizer's)."""
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab_size, hidden_size=hidden_size,
                       intermediate_size=intermediate_size or 2 * hidden_size, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden_size // heads,
                       max_position_embeddings=max_positions, tie_word_embeddings=True)


def tiny_qwen3(vocab_size: int, seed: int = 0, **sizes: int) -> Any:
    """A randomly initialised tiny Qwen3ForCausalLM (deterministic in `seed`)."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    return Qwen3ForCausalLM(tiny_qwen3_config(vocab_size, **sizes))


def attention_implementation(cfg: StudentModelConfig, on_gpu: bool) -> str:
    """The attention kernel: flash_attention_2 on GPU where installed (varlen through position_ids), else sdpa (with
    the explicit block-diagonal mask the training loop passes)."""
    if cfg.attention != "auto":
        return cfg.attention
    if on_gpu:
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def load_student(cfg: StudentModelConfig, vocab_size: int, *, on_gpu: bool) -> Any:
    """The model to fine-tune, in its training dtype, on CPU (DeepSpeed places it)."""
    import torch

    dtype = {"auto": torch.bfloat16 if on_gpu else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16}[cfg.dtype]
    attn = attention_implementation(cfg, on_gpu)
    if cfg.model == TINY:
        t = cfg.tiny
        model = tiny_qwen3(vocab_size, t.seed, hidden_size=t.hidden_size, layers=t.layers, heads=t.heads,
                           kv_heads=t.kv_heads, intermediate_size=t.intermediate_size)
        model.config._attn_implementation = attn
        return model.to(dtype)
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        if cfg.random_init:
            config = AutoConfig.from_pretrained(cfg.model, revision=cfg.revision)
            torch.manual_seed(cfg.tiny.seed)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
        else:
            model = AutoModelForCausalLM.from_pretrained(cfg.model, revision=cfg.revision, dtype=dtype,
                                                         attn_implementation=attn)
    except OSError as e:
        raise ConfigError(f"train.student.model {cfg.model!r}: cannot load it ({e}); name a Hub model id reachable "
                          f"from every worker, a local checkpoint folder on every node, or `{TINY}`") from None
    if model.get_input_embeddings().num_embeddings < vocab_size:
        raise ConfigError(f"train.student.model {cfg.model!r} has {model.get_input_embeddings().num_embeddings} "
                          f"embeddings, fewer than the student tokenizer's {vocab_size} tokens; use the tokenizer of "
                          "this model in curate.student")
    return model
