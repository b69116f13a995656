"""Synthetic curated data (`RUN/curate/` with packed shards and a manifest) for the SFT tests and benchmarks: samples
of a prompt and a supervised answer that is a fixed function of the prompt, so that a model can learn it, packed
as the curation stage packs them."""

from __future__ import annotations

import random

from engine.artifacts import run_path, write_manifest
from engine.config import config_digest
from engine.curate.pack import pack_samples
from engine.curate.shards import PACKED_SCHEMA, packed_table, write_shard
from engine.curate.tokenize import TokenizedSample
from engine.records import Manifest


def synthetic_samples(n: int, *, seed: int = 0, min_len: int = 24, max_len: int = 96,
                      token_range: tuple[int, int] = (1000, 1500)) -> list[TokenizedSample]:
    """`n` samples: a random prompt (loss 0), then its tokens again, each + 1 (loss 1)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        half = rng.randint(min_len, max_len) // 2
        prompt = [rng.randrange(*token_range) for _ in range(half)]
        answer = [t + 1 for t in prompt]
        out.append(TokenizedSample(sample_id=f"s{i:05d}", episode_id=f"e{i:05d}", task_id=f"t{i % 3}", step=None,
                                   input_ids=prompt + answer, loss_mask=[0] * half + [1] * half))
    return out


def write_curated(run_dir: str, samples: list[TokenizedSample], *, pack_tokens: int, rows_per_shard: int = 4,
                  run_id: str = "synthetic") -> Manifest:
    """Packs `samples` into rows of `pack_tokens`, writes them as `RUN/curate/shards/part-NNNNN.parquet` and the
    stage's manifest (config hash: `synthetic-` and a digest of the samples)."""
    packing = pack_samples(samples, pack_tokens)
    rows = packing.rows
    for k in range(0, len(rows), rows_per_shard):
        write_shard(packed_table(rows[k:k + rows_per_shard]),
                    run_path(run_dir, "curate", "shards", f"part-{k // rows_per_shard:05d}.parquet"), PACKED_SCHEMA)
    tokens = sum(len(r.input_ids) for r in rows)
    digest = config_digest([[s.input_ids, s.loss_mask] for s in samples])
    manifest = Manifest(stage="curate", run_id=run_id, config_hash=f"synthetic-{digest}",
                        counts={"samples": len(samples), "rows": len(rows), "tokens": tokens,
                                "supervised_tokens": sum(sum(r.loss_mask) for r in rows),
                                "shards": -(-len(rows) // rows_per_shard)})
    write_manifest(run_path(run_dir, "curate"), manifest)
    return manifest
