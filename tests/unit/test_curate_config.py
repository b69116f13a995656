"""CurateConfig: defaults, and the pairings it refuses (each with a message that says what to change)."""

from __future__ import annotations

import doctest

import pytest
from pydantic import ValidationError

from engine.curate import config as config_module
from engine.curate.config import CurateConfig, FilterConfig, StudentTokenizerConfig
from engine.errors import ConfigError


def test_defaults():
    cfg = CurateConfig()
    assert cfg.model_dump() == {
        "student": {"tokenizer": "offline:qwen3", "revision": None, "end_of_turn": "<|im_end|>"},
        "sample_unit": "step", "reasoning": "keep",
        "filters": {"require_success": True, "beat_baseline": False, "max_per_task": None,
                    "max_tokens_drop": 49152, "max_tokens_truncate": 32768, "dedup": True},
        "pack_tokens": 32768, "inputs": [], "rows_per_shard": 256, "concurrency": None, "cpus_per_actor": 0.5,
    }


def test_round_trips_through_json():
    cfg = CurateConfig(sample_unit="episode", reasoning="drop", filters={"max_per_task": 3, "max_tokens_truncate": None},
                       pack_tokens=65536)
    assert CurateConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_unknown_field_is_rejected():
    with pytest.raises(ValidationError, match="extra_forbidden"):
        CurateConfig(sample_units="step")
    with pytest.raises(ValidationError, match="literal_error"):
        CurateConfig(sample_unit="turn")


def test_beat_baseline_needs_success():
    with pytest.raises(ConfigError, match="beat_baseline compares a score, so it needs require_success: true"):
        FilterConfig(require_success=False, beat_baseline=True)


def test_truncation_must_be_below_the_drop_limit():
    with pytest.raises(ConfigError, match=r"max_tokens_truncate \(4096\) must be below max_tokens_drop \(4096\)"):
        FilterConfig(max_tokens_drop=4096, max_tokens_truncate=4096)
    assert FilterConfig(max_tokens_drop=None, max_tokens_truncate=8).max_tokens_truncate == 8


def test_length_limits_must_fit_the_pack_budget():
    with pytest.raises(ConfigError, match=r"max_tokens_truncate \(32768\) exceeds curate.pack_tokens \(16384\)"):
        CurateConfig(pack_tokens=16384)
    with pytest.raises(ConfigError, match=r"max_tokens_drop \(49152\) exceeds curate.pack_tokens \(32768\)"):
        CurateConfig(filters={"max_tokens_truncate": None})
    assert CurateConfig(filters={"max_tokens_truncate": None, "max_tokens_drop": None}).pack_tokens == 32768


def test_revision_applies_to_hub_ids_only():
    assert StudentTokenizerConfig(tokenizer="Qwen/Qwen3-4B", revision="main").revision == "main"
    for local in ["offline:qwen3", "/models/qwen3", "./tok", "~/tok"]:
        with pytest.raises(ConfigError, match="revision applies to Hub model ids only"):
            StudentTokenizerConfig(tokenizer=local, revision="main")


def test_docstring_examples():
    result = doctest.testmod(config_module)
    assert result.failed == 0 and result.attempted > 0
