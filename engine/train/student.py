"""The offline student: a tiny Qwen3-architecture model built from a config with random weights (no download), so that
the SFT path runs on a CPU machine; real runs name a Hub model or a local checkpoint."""

from __future__ import annotations

from typing import Any


def tiny_qwen3_config(vocab_size: int, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                      kv_heads: int = 2, max_positions: int = 32768) -> Any:
    """A `Qwen3Config` small enough for CPU tests and benchmarks (its vocabulary must cover the tokenizer's)."""
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       head_dim=hidden_size // heads, max_position_embeddings=max_positions, tie_word_embeddings=True)


def tiny_qwen3(vocab_size: int, seed: int = 0, **sizes: int) -> Any:
    """A randomly initialised tiny Qwen3ForCausalLM (deterministic in `seed`)."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    return Qwen3ForCausalLM(tiny_qwen3_config(vocab_size, **sizes))
