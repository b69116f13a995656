"""Curation filters: success and baseline by direction, per-task cap, length, truncation at turn ends, duplicates."""

from __future__ import annotations

import doctest

from engine.curate import filters as filters_module
from engine.curate import kept as kept_module
from engine.curate.config import FilterConfig
from engine.curate.filters import (
    cap_per_task,
    drop_duplicates,
    drop_long,
    filter_records,
    sample_hash,
    success_reason,
    truncate,
    truncate_sample,
)
from engine.curate.tokenize import TokenizedSample
from engine.records import TrajectoryRecord

TURNS = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
         {"role": "assistant", "content": "A"}, {"role": "user", "content": "o"}]


def score(validation: float | None, test: float | None = 0.0, error: str | None = None, direction="max") -> dict:
    return {"step": 1, "kind": "submit", "metric": "m", "direction": direction, "error": error,
            "validation": None if validation is None else {"m": validation}, "test": None if test is None else {"m": test}}


def record(eid="e", task="t", scores=(), direction="max", baseline=None, **kw) -> TrajectoryRecord:
    return TrajectoryRecord(run_id="r", task_id=task, task_hash="h", episode_id=eid, seed=0, model="x", policy="p",
                            metric="m", direction=direction, baseline={"m": 0.5} if baseline is None else baseline,
                            scores=list(scores), messages=TURNS, **kw)


def sample(sid="e", ids=(1, 2, 3), mask=(0, 1, 1), spans=((1, 3),), step=None) -> TokenizedSample:
    return TokenizedSample(sid, sid.split("/")[0], "t", step, list(ids), list(mask), list(spans))


def test_success_needs_a_scoring_that_produced_a_score():
    assert success_reason(record(scores=[score(0.9)])) is None
    assert success_reason(record(scores=[])) == "no_successful_score"
    assert success_reason(record(scores=[score(None, None, error="submission_not_found")])) == "no_successful_score"
    assert success_reason(record(scores=[score(0.9, test=None)])) == "no_successful_score"  # no test metrics: not ok


def test_beat_baseline_is_strict_and_follows_the_direction():
    best_of = [score(0.4), score(0.7), score(None, None, error="grader crashed")]
    assert success_reason(record(scores=best_of), beat_baseline=True) is None  # best 0.7 > 0.5
    assert success_reason(record(scores=[score(0.5)]), beat_baseline=True) == "not_better_than_baseline"
    lower = [score(0.6, direction="min"), score(0.4, direction="min")]
    assert success_reason(record(scores=lower, direction="min"), beat_baseline=True) is None  # best 0.4 < 0.5
    assert success_reason(record(scores=lower[:1], direction="min"), beat_baseline=True) == "not_better_than_baseline"
    assert success_reason(record(scores=best_of, baseline={}), beat_baseline=True) == "no_baseline"


def test_cap_per_task_keeps_the_first_by_episode_id():
    recs = [record("d", "t1"), record("b", "t1"), record("c", "t2"), record("a", "t1")]
    kept = cap_per_task(recs, 2)
    assert [r.episode_id for r in kept.items] == ["b", "c", "a"]  # input order; d is t1's third by id
    assert kept.rejects == {"over_task_cap": 1}
    assert cap_per_task(recs, None).items == recs


def test_filter_records_counts_every_reason_in_order():
    recs = [record("a", scores=[score(0.9)], infra_error="SandboxError: lost"),
            record("b", scores=[score(0.9)]), record("c", scores=[score(0.3)]), record("d"),
            record("e", scores=[score(0.8)]), record("f", scores=[score(0.95)])]
    kept = filter_records(recs, FilterConfig(beat_baseline=True, max_per_task=2))
    assert [r.episode_id for r in kept.items] == ["b", "e"]
    assert kept.rejects == {"infra_error": 1, "not_better_than_baseline": 1, "no_successful_score": 1,
                            "over_task_cap": 1}
    everything = filter_records(recs, FilterConfig(require_success=False))
    assert [r.episode_id for r in everything.items] == ["b", "c", "d", "e", "f"]
    assert everything.rejects == {"infra_error": 1}


def test_drop_long():
    kept = drop_long([sample("a", ids=[1] * 4, mask=[1] * 4, spans=[(0, 4)]), sample("b")], 3)
    assert [s.sample_id for s in kept.items] == ["b"]
    assert kept.rejects == {"over_max_tokens": 1}
    assert len(drop_long([sample("a")], None).items) == 1


def test_truncation_cuts_after_the_last_turn_that_fits():
    s = sample(ids=range(10, 22), mask=[0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1], spans=[(2, 4), (6, 9), (10, 12)])
    assert truncate_sample(s, 12) is s
    cut = truncate_sample(s, 11)
    assert cut.input_ids == list(range(10, 19))
    assert (cut.loss_mask, cut.turn_spans) == ([0, 0, 1, 1, 0, 0, 1, 1, 1], [(2, 4), (6, 9)])
    assert truncate_sample(s, 8).input_ids == [10, 11, 12, 13]
    assert truncate_sample(s, 3) is None
    step = sample("e/3", ids=range(6), mask=[0, 0, 0, 1, 1, 1], spans=[(3, 6)], step=3)
    kept = truncate([s, step], 5)
    assert [(k.sample_id, k.input_ids) for k in kept.items] == [("e", [10, 11, 12, 13])]
    assert kept.rejects == {"no_turn_fits": 1}  # a step sample's one turn is its last message


def test_duplicates_keep_the_first_by_episode_and_step():
    a = sample("b/1", step=1)
    b = sample("a/2", step=2)
    c = sample("a/10", step=10)
    other = sample("z", mask=(0, 0, 1))  # same tokens, another mask: not a duplicate
    kept = drop_duplicates([c, a, b, other])
    assert [s.sample_id for s in kept.items] == ["a/2", "z"]
    assert kept.rejects == {"duplicate": 2}
    assert sample_hash(a) == sample_hash(b) != sample_hash(other)


def test_docstring_examples():
    result = doctest.testmod(filters_module)
    assert result.failed == 0 and result.attempted > 0


def test_kept_docstring_examples():
    result = doctest.testmod(kept_module)
    assert result.failed == 0 and result.attempted > 0
