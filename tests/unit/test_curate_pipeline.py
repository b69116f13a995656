"""The curation steps end to end in memory, with the real Qwen3 tokenizer: exact counts, rejects and rows."""

from __future__ import annotations

import doctest

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.curate import batch as batch_module
from engine.curate import pipeline as pipeline_module
from engine.curate.batch import packed_rows_table, rejects_of, samples_of_batch, write_shard_group
from engine.curate.config import CurateConfig
from engine.curate.conversation import Conversation
from engine.curate.pack import packed_row
from engine.curate.pipeline import curate
from engine.curate.plan import plan_packing
from engine.curate.shards import MESSAGES_SCHEMA, PACKED_SCHEMA, packed_table, read_shard
from engine.curate.tokenize import TokenizedSample
from engine.errors import ConfigError
from engine.records import TrajectoryRecord
from engine.trajectories.store import records_to_table

SCORE = {"step": 1, "kind": "submit", "validation": {"m": 1.0}, "test": {"m": 1.0}, "metric": "m", "direction": "max"}


def turns(n: int, observation: str = "o") -> list[dict]:
    out = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"}]
    for i in range(1, n + 1):
        out += [{"role": "assistant", "content": f"A{i}", "reasoning_content": f"R{i}"},
                {"role": "user", "content": f"{observation}{i}"}]
    return out


def record(eid: str, messages: list[dict], scores=(SCORE,), **kw) -> TrajectoryRecord:
    return TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id=eid, seed=0, model="m", policy="p",
                            messages=messages, scores=list(scores), **kw)


RECORDS = [
    record("a", turns(1)),                                  # 26 tokens
    record("b", turns(1)),                                  # the same tokens as a: duplicate
    record("c", turns(1), scores=()),                       # no score
    record("d", turns(1), infra_error="SandboxError: gone"),
    record("e", turns(1, observation="<|endoftext|>")),     # special-token text
    record("f", turns(2)),                                  # 40 tokens: cut after A2's <|im_end|>, at 32
    record("g", turns(4)),                                  # 68 tokens: dropped
]


def test_episode_unit_end_to_end(student):
    cfg = CurateConfig(sample_unit="episode", reasoning="drop", pack_tokens=64,
                       filters={"max_tokens_drop": 60, "max_tokens_truncate": 35})
    out = curate(RECORDS, student, cfg)
    assert out.rejects == {"duplicate": 1, "infra_error": 1, "no_successful_score": 1, "over_max_tokens": 1,
                           "special_token_in_text": 1}
    assert out.counts == {"records": 7, "records_kept": 5, "samples": 2, "rows": 1, "tokens": 58,
                          "supervised_tokens": 9}
    assert [(s.sample_id, len(s.input_ids), s.turn_spans) for s in out.samples] == [
        ("a", 26, [(15, 18)]), ("f", 32, [(15, 18), (29, 32)])]
    assert [m["content"] for m in out.conversations[1].messages] == ["S", "T", "A1", "o1", "A2"]  # cut like its tokens
    (row,) = out.packing.rows
    assert (row.sample_ids, row.seq_lens, out.packing.efficiency) == (["a", "f"], [26, 32], 58 / 64)
    assert student.tokenizer.convert_ids_to_tokens(row.input_ids[26 + 29:]) == ["A", "2", "<|im_end|>"]
    assert row.position_ids == list(range(26)) + list(range(32))


def test_step_unit_end_to_end_from_store_rows(student):
    rows = records_to_table([record("a", turns(2)), record("b", turns(2), scores=())]).to_pylist()
    out = curate(rows, student, CurateConfig(pack_tokens=128, filters={"max_tokens_drop": 100, "max_tokens_truncate": 64}))
    assert out.rejects == {"no_successful_score": 1}
    assert [(s.sample_id, len(s.input_ids), sum(s.loss_mask)) for s in out.samples] == [("a/0", 26, 10), ("a/1", 40, 10)]
    assert [c.messages[-1] for c in out.conversations] == [
        {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
        {"role": "assistant", "content": "A2", "reasoning_content": "R2"}]
    assert out.counts["tokens"] == 66 and out.packing.rows[0].seq_lens == [26, 40]


def test_episode_keep_is_refused_before_any_work(student):
    with pytest.raises(ConfigError, match="sample_unit 'episode' with reasoning 'keep'"):
        curate(RECORDS, student, CurateConfig(sample_unit="episode", reasoning="keep"))


def test_docstring_examples():
    result = doctest.testmod(pipeline_module)
    assert result.failed == 0 and result.attempted > 0


# --- the stage's batch functions (engine.curate.batch): the same samples and rows as the building blocks ---------

def test_packed_rows_table_is_what_pack_builds():
    lengths, rows = [3, 2, 4, 1, 5], [0, 0, 1, 3, 3]
    samples = [TokenizedSample(f"s{i}", "e", "t", i, input_ids=list(range(10 * i, 10 * i + n)),
                               loss_mask=[(i + j) % 2 for j in range(n)]) for i, n in enumerate(lengths)]
    expected = packed_table([packed_row([s for s, r in zip(samples, rows) if r == row]) for row in sorted(set(rows))])
    got = packed_rows_table(np.concatenate([s.input_ids for s in samples]),
                            np.concatenate([s.loss_mask for s in samples]), np.array(lengths),
                            [s.sample_id for s in samples], np.array(rows))
    assert got.equals(expected)


def test_sample_rows_and_written_shards_equal_the_building_blocks(student, tmp_path):
    recs = [record("a", turns(2)), record("b", turns(3, observation="x")), record("c", turns(1), scores=())]
    table = records_to_table(recs)
    table = table.append_column("path", pa.array(["p0", "p1", "p2"]))
    cfg = CurateConfig(pack_tokens=96, filters={"max_tokens_drop": 90, "max_tokens_truncate": 50})
    rows = samples_of_batch(table, student, cfg, keep={("p0", "a"), ("p1", "b")})
    samples = rows.filter(pc.equal(rows["kind"], "sample"))
    expected = curate(recs[:2], student, cfg.model_copy(update={"filters": cfg.filters.model_copy(
        update={"dedup": False})}))
    assert samples.column("sample_id").to_pylist() == [s.sample_id for s in expected.samples]
    assert samples.column("input_ids").to_pylist() == [s.input_ids for s in expected.samples]
    assert samples.column("loss_mask").to_pylist() == [s.loss_mask for s in expected.samples]
    assert samples.column("n_tokens").to_pylist() == [len(s.input_ids) for s in expected.samples]
    assert [Conversation.model_validate_json(c) for c in samples.column("conversation").to_pylist()] \
        == expected.conversations
    assert rejects_of(rows) == {"no_turn_fits": 1}  # b/2: its one turn ends past 50 tokens
    plan = plan_packing(samples.select(["sample_id", "episode_id", "step", "n_tokens", "hash"]), cfg, 1)
    assert plan.rejects == {"duplicate": 1} and plan.shards == 2
    for shard in range(plan.shards):  # the stage hands over rows as Python values: inferred types must do too
        mine = samples.filter(pc.is_in(samples["sample_id"], pa.array(
            [i for i, (s, _, _) in plan.assignment.items() if s == shard])))
        for given in (mine, pa.Table.from_pylist(mine.to_pylist())):
            write_shard_group(given, plan.assignment, str(tmp_path), shard)
            by_row: dict[int, list] = {}
            for s in expected.samples:  # b/0 repeats a/0: the plan dropped it
                if plan.assignment.get(s.sample_id, (None,))[0] == shard:
                    by_row.setdefault(plan.assignment[s.sample_id][1], []).append(s)
            packed = [packed_row(sorted(by_row[r], key=lambda s: plan.assignment[s.sample_id][2]))
                      for r in sorted(by_row)]
            assert read_shard(tmp_path / "shards" / f"part-{shard:05d}.parquet", PACKED_SCHEMA).equals(
                packed_table(packed).cast(PACKED_SCHEMA))
            messages = read_shard(tmp_path / "messages" / f"part-{shard:05d}.parquet", MESSAGES_SCHEMA)
            assert messages.column("sample_id").to_pylist() == [i for row in packed for i in row.sample_ids]


def test_batch_docstring_examples():
    result = doctest.testmod(batch_module)
    assert result.failed == 0 and result.attempted > 0
