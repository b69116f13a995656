"""Benchmark for a GPU machine: SFT throughput and MFU of the Qwen3-4B architecture (random weights: GPU machines here
cannot download), bf16, packed 8K-token rows, DeepSpeed ZeRO-3, through the real path (`run_train_stage`: Ray Train,
one worker per GPU). Prints tokens/s per GPU and MFU (`engine.train.metrics`: 6 × parameters + attention, over the
GPU's dense bf16 peak), the median over the steps after `--warmup`; writes benchmarks/results/sft_gpu.json.

Run on a machine with GPUs: `.venv/bin/python benchmarks/sft_gpu.py [--gpus 1] [--steps 20]` (installs nothing:
torch with CUDA, and flash-attn for varlen attention, must be there; without flash-attn, SDPA gets the packed rows'
boundaries from `position_ids`). `--tiny` runs the same script on CPU with a tiny model, to check it end to end.
Goal: ≥ 40% MFU on an H100-class GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QWEN3_4B = {  # Qwen/Qwen3-4B config.json (architecture only)
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
    "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 151936, "max_position_embeddings": 40960, "rope_theta": 1000000, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False, "torch_dtype": "bfloat16",
    "bos_token_id": 151643, "eos_token_id": 151645,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pack-tokens", type=int, default=8192)
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny model")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sft_gpu.json"))
    args = ap.parse_args()

    import ray

    from engine.config import RunConfig
    from engine.runner import run_train_stage
    from engine.testing.curated import synthetic_samples, write_curated

    work = Path(tempfile.mkdtemp(prefix="sftgpu-"))
    run = work / "run"
    n_rows = args.steps * args.gpus + 4
    samples = synthetic_samples(n_rows * 6, min_len=512, max_len=2600, token_range=(1000, 100000))
    write_curated(str(run), samples, pack_tokens=args.pack_tokens, rows_per_shard=8)
    if args.tiny:
        student = {"model": "tiny"}
        train = {"use_gpu": False, "cpus_per_worker": 1}
    else:
        model_dir = work / "qwen3-4b"
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps(QWEN3_4B))
        student = {"model": str(model_dir), "random_init": True, "dtype": "bfloat16"}
        train = {"use_gpu": True, "gpus_per_worker": 1, "cpus_per_worker": 4}
    cfg = RunConfig.model_validate({"run_id": "sftgpu", "run_dir": str(run), "train": {
        "workers": args.gpus, "zero_stage": 3, "epochs": 1, "max_steps": args.steps, "learning_rate": 1e-5,
        "checkpoint_every": 10**6, "gradient_checkpointing": args.gradient_checkpointing, "student": student,
        **train}})
    ray.init(address="local", include_dashboard=False, log_to_driver=False, _temp_dir=f"/tmp/ry{os.getpid() % 10**6}")
    trained = run_train_stage(cfg)
    metrics = trained.metrics()[args.warmup:] or trained.metrics()
    ray.shutdown()
    per_gpu = statistics.median(m["tokens_per_s_per_worker"] for m in metrics)
    mfu = statistics.median(m.get("mfu", 0.0) for m in metrics)
    result = {"config": vars(args), "steps": len(trained.metrics()), "tokens_per_s_per_gpu": per_gpu, "mfu": mfu,
              "step_seconds": statistics.median(m["step_seconds"] for m in metrics),
              "device": _device_name(), "metrics": trained.metrics()}
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"sft_gpu: {'tiny (CPU check)' if args.tiny else 'Qwen3-4B arch'}, {args.gpus} GPU(s), "
          f"{args.pack_tokens}-token rows, ZeRO-3 bf16 on {result['device']}: {per_gpu:.0f} tokens/s/GPU, "
          f"MFU {100 * mfu:.1f}%")


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
