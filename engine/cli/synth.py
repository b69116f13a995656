"""`synthscale synth`: task synthesis and verification (pipeline phases 1 and 2), in this process or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from engine.cli.common import confirm_start_over, fail, overrides, resolve_config
from engine.errors import ConfigError, EngineError


def synth(config: Optional[Path] = typer.Option(None, help="RunConfig YAML (its `synth` section)."),
          run: Optional[str] = typer.Option(None, "--run", help="Run directory; tasks go to RUN/synth/tasks/."),
          source: Optional[str] = typer.Option(None, help="teacher (an LLM) or procedural (offline catalogue)."),
          n: Optional[int] = typer.Option(None, "-n", help="Tasks to draw (procedural) or topics (teacher)."),
          ray_address: Optional[str] = typer.Option(None, "--ray", help="Fan out on Ray: 'auto', 'local' or an address."),
          start_over: bool = typer.Option(False, "--start-over", help="Delete what an earlier config wrote in RUN/synth."),
          yes: bool = typer.Option(False, "--yes", help="Do not ask before --start-over deletes.")) -> None:
    """Synthesize and verify tasks (pipeline phases 1 and 2); resumable."""
    from engine.runner import run_synth_stage

    try:
        cfg = resolve_config(config, overrides(run=run))
        data = cfg.model_dump()
        if source is not None:
            data["synth"]["source"] = source
        if n is not None:
            data["synth"]["n_tasks" if (source or cfg.synth.source) == "procedural" else "n_topics"] = n
        try:
            cfg = type(cfg).model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"--source/-n: {e}") from None
        if start_over:
            confirm_start_over(cfg.run_dir, ["synth"], yes)
        manifest = run_synth_stage(cfg, start_over=start_over, ray_address=ray_address)
    except EngineError as e:
        fail(e)
    c = manifest.counts
    typer.echo(f"synth: {c.get('verified', 0)} verified of {c.get('proposals', 0)} proposals "
               f"({c.get('topics', 0)} topics); rejects {manifest.rejects}; ${manifest.cost_usd:.2f}; "
               f"{manifest.wall_time_s:.0f} s")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.command()(synth)
