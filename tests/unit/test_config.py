"""RunConfig: YAML round trip, field-naming errors, options the chosen mode ignores are refused."""

from pathlib import Path

import pytest

from engine.config import ModelConfig, RunConfig, SandboxConfig, load_config
from engine.errors import ConfigError


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = RunConfig(run_id="r1", run_dir="runs/r1")
    cfg.agent.max_steps = 7
    p = tmp_path / "run.yaml"
    p.write_text(cfg.to_yaml())
    back = RunConfig.from_yaml(p)
    assert back == cfg
    assert back.agent.max_steps == 7


def test_unknown_field_names_file_and_field(tmp_path: Path) -> None:
    p = tmp_path / "run.yaml"
    p.write_text("agent:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value)
    assert "agent.max_stepz" in str(e.value)


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    p = tmp_path / "run.yaml"
    p.write_text("agent:\n  max_steps: many\n")
    with pytest.raises(ConfigError, match=r"field 'agent.max_steps'.*'many'"):
        load_config(p)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_options_the_mode_ignores_are_refused() -> None:
    with pytest.raises(ConfigError, match="provider is 'heuristic'"):
        ModelConfig(provider="heuristic", base_url="http://x/v1")
    with pytest.raises(ConfigError, match="local runtime only"):
        SandboxConfig(runtime="docker", allow_unsandboxed=True)
    with pytest.raises(ConfigError, match="replay_only needs model.cache_dir"):
        ModelConfig(provider="openai", name="gpt-5", replay_only=True)


def test_config_hash_ignores_paths_but_not_settings() -> None:
    a = RunConfig(run_id="a", run_dir="runs/a")
    b = RunConfig(run_id="b", run_dir="s3://bucket/b")
    assert a.config_hash() == b.config_hash()
    c = RunConfig(run_id="a", run_dir="runs/a")
    c.agent.max_steps = 10
    assert c.config_hash() != a.config_hash()


def test_heuristic_price_is_an_explicit_zero() -> None:
    prices = ModelConfig().prices
    assert prices["synthscale-heuristic"].input_per_mtok == 0.0
    assert "unknown-model" not in prices
