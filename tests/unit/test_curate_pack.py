"""Packing: first-fit decreasing, exact rows, efficiency, and (property-style) that it never splits or merges samples."""

from __future__ import annotations

import doctest
import random
import zlib

import pytest

from engine.curate import pack as pack_module
from engine.curate.pack import first_fit_decreasing, pack_samples, packed_row
from engine.curate.tokenize import TokenizedSample


def sample(sid: str, n: int, first_supervised: int = 1) -> TokenizedSample:
    ids = [zlib.crc32(f"{sid}:{i}".encode()) % 1000 for i in range(n)]
    mask = [0] * min(first_supervised, n) + [1] * max(0, n - first_supervised)
    return TokenizedSample(sid, sid, "t", None, ids, mask, [(min(first_supervised, n), n)])


def test_first_fit_decreasing_exact():
    assert first_fit_decreasing([], 8) == []
    assert first_fit_decreasing([8, 8], 8) == [[0], [1]]
    # order 7(1) 6(4) 4(0) 3(2) 2(3) 1(5): 7→bin0, 6→bin1, 4→bin2, 3→bin2, 2→bin1, 1→bin0
    assert first_fit_decreasing([4, 7, 3, 2, 6, 1], 8) == [[1, 5], [3, 4], [0, 2]]
    with pytest.raises(ValueError, match=r"lengths must be in 1..8 \(the budget\), got \[9, 0\]"):
        first_fit_decreasing([9, 3, 0], 8)


def test_rows_are_whole_samples_with_restarting_positions():
    a = TokenizedSample("a", "a", "t", None, [11, 12, 13], [0, 1, 1], [(1, 3)])
    b = TokenizedSample("b", "b", "t", None, [21, 22, 23, 24, 25], [0, 0, 1, 1, 1], [(2, 5)])
    c = TokenizedSample("c", "c", "t", None, [31, 32], [0, 1], [(1, 2)])
    p = pack_samples([a, b, c], 8)
    assert [(r.sample_ids, r.input_ids, r.loss_mask, r.position_ids, r.seq_lens) for r in p.rows] == [
        (["a", "b"], [11, 12, 13, 21, 22, 23, 24, 25], [0, 1, 1, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2, 3, 4], [3, 5]),
        (["c"], [31, 32], [0, 1], [0, 1], [2]),
    ]
    assert (p.tokens, p.efficiency, p.rejects) == (10, 10 / 16, {})


def test_over_budget_samples_are_counted_rejects():
    p = pack_samples([sample("long", 9), sample("ok", 8)], 8)
    assert [r.sample_ids for r in p.rows] == [["ok"]]
    assert p.rejects == {"over_pack_budget": 1}
    assert p.efficiency == 1.0
    assert pack_samples([], 8).efficiency == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_packing_never_splits_or_merges_samples(seed):
    rng = random.Random(seed)
    budget = rng.choice([16, 64, 100])
    samples = [sample(f"s{i}", rng.randint(1, budget), rng.randint(0, 5)) for i in range(rng.randint(0, 60))]
    p = pack_samples(samples, budget)
    by_id = {s.sample_id: s for s in samples}
    seen = []
    for row in p.rows:
        assert len(row.input_ids) == len(row.loss_mask) == len(row.position_ids) == sum(row.seq_lens) <= budget
        offset = 0
        for sid, n in zip(row.sample_ids, row.seq_lens, strict=True):
            s = by_id[sid]
            assert row.input_ids[offset:offset + n] == s.input_ids  # each segment is one whole sample
            assert row.loss_mask[offset:offset + n] == s.loss_mask
            assert row.position_ids[offset:offset + n] == list(range(n))
            offset += n
        seen.extend(row.sample_ids)
    assert sorted(seen) == sorted(by_id)  # every sample exactly once
    assert p.rejects == {}
    # first fit: no row's sample would have fitted into an earlier row
    rooms = [budget - len(r.input_ids) for r in p.rows]
    for j, row in enumerate(p.rows):
        assert all(min(row.seq_lens) > rooms[i] for i in range(j))
    assert p.efficiency == (sum(len(s.input_ids) for s in samples) / (len(p.rows) * budget) if p.rows else 0.0)


def test_packed_row_of_one_sample():
    r = packed_row([sample("x", 3, 2)])
    assert (r.loss_mask, r.position_ids, r.seq_lens, r.sample_ids) == ([0, 0, 1], [0, 1, 2], [3], ["x"])


def test_docstring_examples():
    result = doctest.testmod(pack_module)
    assert result.failed == 0 and result.attempted > 0
