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


STAGES = ("synth", "rollouts", "eval")


def _hashes(cfg: RunConfig) -> dict[str, str]:
    return {s: cfg.stage_hash(s) for s in STAGES}


def _changed(base: RunConfig, edit) -> set[str]:
    """The stages whose resume key changes when `edit` is applied to a copy of `base`."""
    other = RunConfig.model_validate(base.model_dump())
    edit(other)
    before, after = _hashes(base), _hashes(other)
    return {s for s in STAGES if before[s] != after[s]}


def test_stage_hashes_ignore_paths_ids_and_operations() -> None:
    a = RunConfig(run_id="a", run_dir="runs/a")
    b = RunConfig(run_id="b", run_dir="s3://bucket/b")
    assert _hashes(a) == _hashes(b)
    assert _changed(a, lambda c: setattr(c.model, "base_url", None) or setattr(c.model, "timeout_s", 5.0)) == set()
    assert _changed(a, lambda c: setattr(c.rollout, "lease_size", 1)) == set()
    assert _changed(a, lambda c: setattr(c.rollout, "budget_usd", 3.0)) == set()
    assert _changed(a, lambda c: setattr(c.synth, "concurrency", 9)) == set()
    assert _changed(a, lambda c: setattr(c.episodes, "episodes_per_task", 512)) == set()  # a target: resume adds


def test_each_stage_hashes_only_what_changes_its_own_outputs() -> None:
    base = RunConfig()
    assert _changed(base, lambda c: setattr(c.synth, "max_iterations", 2)) == {"synth"}
    assert _changed(base, lambda c: setattr(c.synth, "n_tasks", 3)) == {"synth"}
    assert _changed(base, lambda c: setattr(c.agent, "max_steps", 10)) == {"rollouts", "eval"}
    assert _changed(base, lambda c: setattr(c.rollout, "episode_timeout_s", 60.0)) == {"rollouts", "eval"}
    assert _changed(base, lambda c: setattr(c.episodes, "seed", 7)) == {"rollouts"}
    assert _changed(base, lambda c: setattr(c.model, "name", "gpt-5")) == {"rollouts"}
    assert _changed(base, lambda c: setattr(c.eval, "baseline", "base")) == {"eval"}
    assert _changed(base, lambda c: setattr(c.sandbox, "memory_mb", 2048)) == set(STAGES)
    teacher = RunConfig.model_validate({"synth": {"source": "teacher"}, "model": {"provider": "openai"}})
    assert _changed(teacher, lambda c: setattr(c.model, "name", "gpt-5")) == {"synth", "rollouts"}


def test_unknown_stage_has_no_hash() -> None:
    with pytest.raises(ConfigError, match="no resume key"):
        RunConfig().stage_hash("nope")


def test_heuristic_price_is_an_explicit_zero() -> None:
    prices = ModelConfig().prices
    assert prices["synthscale-heuristic"].input_per_mtok == 0.0
    assert "unknown-model" not in prices


def test_a_config_that_is_not_utf8_names_the_file_and_the_byte(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("agent:\n  max_steps: 3\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == (f"{p}: not UTF-8 text (byte 27: b'\\xe9', invalid continuation byte); "
                            "save the file as UTF-8")


def test_a_config_that_is_a_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read it \(Is a directory\)"):
        load_config(tmp_path)


@pytest.mark.parametrize("yaml_text, field", [
    ("agent:\n  command_timeout_s: .inf\n", "agent.command_timeout_s"),
    ("rollout:\n  budget_usd: .nan\n", "rollout.budget_usd"),
    ("model:\n  prices:\n    m: {input_per_mtok: -.inf, output_per_mtok: 1}\n", "model.prices.m.input_per_mtok"),
    ("curate:\n  cpus_per_actor: .inf\n", "curate.cpus_per_actor"),  # a section whose model is defined elsewhere
    ("eval:\n  methods:\n    - {name: a, model: {provider: heuristic}}\n    - {name: b, serve: {checkpoint: c, "
     "startup_timeout_s: .inf}}\n", "eval.methods.1.serve.startup_timeout_s"),
])
def test_non_finite_floats_are_refused_with_the_field_named(tmp_path: Path, yaml_text: str, field: str) -> None:
    p = tmp_path / "run.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: field '{field}': ")
    assert "is not a finite number; give a finite value" in str(e.value)


def test_non_finite_floats_are_refused_in_code_too() -> None:
    from pydantic import ValidationError

    from engine.config import AgentConfig

    with pytest.raises(ValidationError, match="command_timeout_s\n  Input should be a finite number"):
        AgentConfig(command_timeout_s=float("inf"))
    cfg = RunConfig()
    with pytest.raises(ValidationError, match="finite number"):
        cfg.rollout.episode_timeout_s = float("nan")
    assert RunConfig().rollout.episode_timeout_s == 4 * 3600.0


def test_a_checkpoint_method_needs_nothing_but_its_path():
    from engine.config import EvalMethod

    method = EvalMethod(name="sft", checkpoint="runs/r/train/final")
    on_cpu, on_gpu = method.serve_config(0), method.serve_config(8)
    assert on_cpu.model == on_gpu.model == "runs/r/train/final"
    assert (on_cpu.gpus_per_server, on_gpu.gpus_per_server) == (0.0, 1.0) and on_cpu.backend == "auto"
    with pytest.raises(ConfigError, match=r"eval.methods\[sft\]: set exactly one of `model`"):
        EvalMethod(name="sft", checkpoint="x", model={"provider": "heuristic"})
    with pytest.raises(ConfigError, match="nothing to serve"):
        EvalMethod(name="h", model={"provider": "heuristic"}).serve_config(0)
