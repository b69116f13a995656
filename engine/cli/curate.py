"""`synthscale curate`: stored trajectories → packed token shards and chat-messages shards for SFT (`RUN/curate/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.artifacts import run_path
from engine.cli.common import confirm_start_over, fail, interrupted, overrides, resolve_config
from engine.errors import EngineError


def curate(
    run: str = typer.Option(..., "--run", help="Run directory (path or s3://…); output goes to RUN/curate/."),
    config: Optional[Path] = typer.Option(None, help="RunConfig YAML (its `curate` section)."),
    inputs: Optional[list[str]] = typer.Option(
        None, "--input", help="Rollout run dir to curate (repeatable; default: curate.inputs, else RUN itself)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster (auto, ray://HEAD:10001); omitted: a local one."),
    in_process: bool = typer.Option(False, "--in-process", help="No Ray: curate in this process."),
    start_over: bool = typer.Option(False, "--start-over", help="Delete what other inputs or settings wrote."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before --start-over deletes."),
) -> None:
    """Filter, tokenize (the student's chat template, loss on assistant tokens only), pack and write the SFT data."""
    from engine.runner import run_curate_stage

    try:
        cfg = resolve_config(config, overrides(run=run))
        if inputs:
            cfg = cfg.model_copy(update={"curate": cfg.curate.model_copy(update={"inputs": list(inputs)})})
        if start_over:
            confirm_start_over(cfg.run_dir, ["curate"], yes)
        data = run_curate_stage(cfg, address=address, in_process=in_process, start_over=start_over)
    except EngineError as e:
        fail(e)
    except KeyboardInterrupt:
        interrupted(f"{run_path(run, 'curate')}/ has no manifest, so it counts as incomplete (nothing reads it); the "
                    "trajectories it reads are untouched. Run the same command again to curate them")
    c, s = data.manifest.counts, data.stats
    typer.echo(f"curate {cfg.run_id}: {c['records_kept']} of {c['records']} trajectories → {c['samples']} samples, "
               f"{c['tokens']:,} tokens ({c['supervised_tokens']:,} supervised) in {c['rows']} rows of "
               f"{s.get('budget', 0):,} ({100 * s.get('packing_efficiency', 0):.1f}% full), {c['shards']} shards "
               f"→ {run_path(cfg.run_dir, 'curate')}/")
    if data.manifest.rejects:
        typer.echo("dropped: " + ", ".join(f"{k} {v}" for k, v in data.manifest.rejects.items()))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.command()(curate)
