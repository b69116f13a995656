"""The curation stage end to end on real rollouts (the offline heuristic policy in bubblewrap sandboxes) and the real
Qwen3 tokenizer: Ray Data writes exactly the rows the in-process executor writes; a re-run reuses the output;
other settings are refused with the setting named; several runs curate together; an unreadable shard is set
aside (kept) and the rest curated; empty inputs get a clear error; and the shards load with `datasets`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.config import RunConfig
from engine.curate.shards import MESSAGES_SCHEMA, PACKED_SCHEMA, read_shard
from engine.curate.tokenizer import offline_tokenizer_dir
from engine.errors import ArtifactError
from engine.runner import run_curate_stage, run_rollout_stage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"
RAY_RESOURCES = {"num_cpus": 2}

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
    pytest.mark.skipif(not (offline_tokenizer_dir() / "tokenizer.json").is_file(),
                       reason="offline qwen3 tokenizer absent: run `make tokenizer`"),
]


def _cfg(run: Path, **curate) -> RunConfig:
    return RunConfig.model_validate({
        "run_id": run.name, "run_dir": str(run),
        "episodes": {"tasks": [str(EXAMPLES / "wine-classification"), str(EXAMPLES / "diabetes-regression")],
                     "episodes_per_task": 2},
        "agent": {"max_steps": 12}, "rollout": {"progress": False},
        "curate": {"pack_tokens": 16384, "rows_per_shard": 2,
                   "filters": {"max_tokens_drop": 16384, "max_tokens_truncate": 8192}, **curate},
    })


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    """A run dir whose rollouts/ holds 4 heuristic episodes (2 tasks × 2)."""
    run = tmp_path_factory.mktemp("cur") / "src"
    assert run_rollout_stage(_cfg(run), in_process=True) is not None
    return run


def _copy(rollouts: Path, dest: Path) -> Path:
    shutil.copytree(rollouts / "rollouts", dest / "rollouts")
    return dest


def _files(run: Path, sub: str) -> list[Path]:
    return sorted((run / "curate" / sub).glob("part-*.parquet"))


def test_ray_data_writes_exactly_what_the_in_process_executor_writes(rollouts, tmp_path, local_ray):
    local = run_curate_stage(_cfg(_copy(rollouts, tmp_path / "a")), in_process=True)
    on_ray = run_curate_stage(_cfg(_copy(rollouts, tmp_path / "b")))
    assert local.manifest.counts == on_ray.manifest.counts and local.manifest.rejects == on_ray.manifest.rejects
    assert local.manifest.counts["shards"] >= 2 and local.manifest.counts["records_kept"] == 4
    a, b = _files(tmp_path / "a", "shards"), _files(tmp_path / "b", "shards")
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a + _files(tmp_path / "a", "messages"), b + _files(tmp_path / "b", "messages")):
        assert pq.read_table(x).equals(pq.read_table(y)), x.name
    rows = local.to_arrow()
    assert rows.schema.equals(PACKED_SCHEMA, check_metadata=False)
    for ids, mask, pos, lens in zip(*(rows.column(c).to_pylist() for c in ("input_ids", "loss_mask", "position_ids",
                                                                           "seq_lens"))):
        assert len(ids) == len(mask) == len(pos) == sum(lens) <= 16384
        starts = [i for i, p in enumerate(pos) if p == 0]
        assert [b - a for a, b in zip(starts, [*starts[1:], len(pos)])] == lens  # positions restart per sample
    assert local.messages().num_rows == local.manifest.counts["samples"]
    stats = local.stats
    assert stats["tokenizer"]["content_hash"] and 0 < stats["packing_efficiency"] <= 1


def test_a_rerun_reuses_the_output_and_other_settings_are_refused(rollouts, tmp_path):
    run = _copy(rollouts, tmp_path / "r")
    first = run_curate_stage(_cfg(run), in_process=True)
    before = {p: p.stat().st_mtime_ns for p in _files(run, "shards")}
    again = run_curate_stage(_cfg(run), in_process=True)
    assert again.manifest == first.manifest and {p: p.stat().st_mtime_ns for p in _files(run, "shards")} == before
    with pytest.raises(ArtifactError, match="curate.sample_unit"):
        run_curate_stage(_cfg(run, sample_unit="episode", reasoning="drop"), in_process=True)
    other = run_curate_stage(_cfg(run, sample_unit="episode", reasoning="drop"), in_process=True, start_over=True)
    assert other.manifest.counts["samples"] <= 4  # one sample per episode


def test_several_runs_curate_together_deduplicated_by_episode(rollouts, tmp_path):
    run = _copy(rollouts, tmp_path / "both")
    cfg = _cfg(run, sample_unit="episode", reasoning="drop", inputs=[str(rollouts), str(run)])
    data = run_curate_stage(cfg, in_process=True)
    assert data.manifest.counts["records"] == 4  # the same 4 episodes in both runs count once


def test_bad_shards_and_empty_inputs_are_clear_errors(rollouts, tmp_path):
    with pytest.raises(ArtifactError, match="no trajectory shards"):
        run_curate_stage(_cfg(tmp_path / "empty"), in_process=True)
    run = _copy(rollouts, tmp_path / "bad")
    victim = sorted((run / "rollouts" / "trajectories").glob("part-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    data = run_curate_stage(_cfg(run), in_process=True)  # the shard is set aside (kept, named), the rest curated
    assert data.manifest.counts["records"] == 3
    assert len((run / "rollouts" / "trajectories" / "corrupt" / victim.name).read_bytes()) == 100
    assert not victim.exists()


def test_the_shards_load_with_datasets(rollouts, tmp_path):
    datasets = pytest.importorskip("datasets")
    run = _copy(rollouts, tmp_path / "ds")
    data = run_curate_stage(_cfg(run), in_process=True)
    packed = datasets.load_dataset("parquet", data_files=[str(p) for p in _files(run, "shards")], split="train")
    chats = datasets.load_dataset("parquet", data_files=[str(p) for p in _files(run, "messages")], split="train")
    assert len(packed) == data.manifest.counts["rows"] and len(chats) == data.manifest.counts["samples"]
    assert {m["role"] for m in chats[0]["messages"]} <= {"system", "user", "assistant"}
    for p in _files(run, "messages"):
        read_shard(p, MESSAGES_SCHEMA)
