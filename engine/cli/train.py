"""`synthscale train`: SFT of the student on `RUN/curate/` with Ray Train + DeepSpeed → `RUN/train/final/`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.artifacts import run_path
from engine.cli.common import confirm_start_over, fail, interrupted, overrides, resolve_config
from engine.errors import EngineError


def train(
    run: str = typer.Option(..., "--run", help="Run directory (path or s3://…) holding RUN/curate/; output: RUN/train/."),
    config: Optional[Path] = typer.Option(None, help="RunConfig YAML (its `train` and `curate.student` sections)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster (auto, ray://HEAD:10001); omitted: a local one."),
    start_over: bool = typer.Option(False, "--start-over", help="Delete what other inputs or settings wrote."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before --start-over deletes."),
) -> None:
    """Fine-tune the student (DeepSpeed ZeRO on Ray Train workers); resumes from the last checkpoint when re-run."""
    from engine.runner import run_train_stage

    try:
        cfg = resolve_config(config, overrides(run=run))
        if start_over:
            confirm_start_over(cfg.run_dir, ["train"], yes)
        student = run_train_stage(cfg, address=address, start_over=start_over)
    except EngineError as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(f"the checkpoints in {run_path(run, 'train')}/ are kept; run the same command again to resume "
                    "from the last one")
    c, metrics = student.manifest.counts, student.metrics()
    last = metrics[-1] if metrics else {}
    typer.echo(f"train {cfg.run_id}: {c.get('steps', 0)} steps on {c.get('workers', 0)} worker(s), "
               f"{c.get('supervised_tokens', 0):,} supervised tokens, final loss {last.get('loss', float('nan')):.4f} "
               f"→ {student.final_dir}/")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.command()(train)
