"""What every `synthscale` command shares: the one config resolver (a RunConfig YAML plus flags), the one error exit
(its text redacted: no credential reaches the terminal), the Ctrl-C exit of the stage commands (what is kept, how to
go on, exit 130), and the confirmation that `--start-over` asks before it deletes a stage's outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, NoReturn

import typer
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.artifacts import describe_contents, run_id_of, run_path
from engine.config import RunConfig, load_config
from engine.errors import ConfigError, EngineError
from engine.redact import redact

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a command stopped by Ctrl-C."""


def fail(e: Exception) -> NoReturn:
    """Print the error (what failed, the bad value, what to do; credentials redacted) and exit 2."""
    typer.secho(f"error: {redact(str(e))}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_ERROR)


def interrupted(kept: str) -> NoReturn:
    """After Ctrl-C: say what is kept and how to go on, and exit 130, without a traceback."""
    typer.secho(f"interrupted: {kept}", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(EXIT_INTERRUPTED)


def rollouts_kept(run_dir: str | None, *, in_process: bool) -> str:
    """What a rollout stage stopped by Ctrl-C kept (its trajectory store) and how to resume, for `interrupted`.

    Every episode is stored atomically the moment it ends, so the store holds whole episodes only; the one in
    flight is lost and played again by the resume."""
    from engine.trajectories.store import stored_episode_ids

    if run_dir is None:
        return "nothing was started; run the same command again"
    where = run_path(run_dir, "rollouts", "trajectories")
    try:
        stored = stored_episode_ids(run_dir, include_infra_errors=True)
        clean = stored_episode_ids(run_dir)
        kept = (f"{len(stored)} episodes are stored in {where}/ ({len(stored) - len(clean)} of them infra failures)"
                if stored else f"no episode was stored in {where}/ yet")
    except EngineError as e:
        kept = f"the episodes stored so far are in {where}/ (they could not be counted: {redact(str(e))})"
    stopped = ("the sandboxes are closed" if in_process else
               "the workers are stopped (sandboxes they left are reaped when the stage next starts)")
    return (f"{kept}; {stopped}. Run the same command again to resume: stored episodes are not played again; "
            f"`synthscale status {run_dir}` shows where it stands")


class Overrides(BaseModel):
    """Command-line flags that override a RunConfig (None: keep the config's value)."""

    model_config = ConfigDict(extra="forbid")
    run: str | None = None
    tasks: list[Path] | None = None
    policy: Literal["heuristic", "openai"] | None = None
    model: str | None = None
    base_url: str | None = None
    runtime: Literal["local", "docker"] | None = None
    n: int | None = None
    max_steps: int | None = None
    seed: int | None = None


def overrides(**flags) -> Overrides:
    """Flags as Overrides; a bad value is a ConfigError naming the flag (`--policy: Input should be …`)."""
    try:
        return Overrides(**flags)
    except ValidationError as e:
        raise ConfigError("; ".join(f"--{'-'.join(str(p) for p in err['loc']).replace('_', '-')}: {err['msg']}"
                                    for err in e.errors())) from None


def resolve_config(config: Path | None, flags: Overrides | None = None) -> RunConfig:
    """The run's config: the YAML file (or the defaults), then the flags over it, checked as a whole."""
    cfg = load_config(config) if config is not None else RunConfig()
    if flags is None:
        return cfg
    o = flags
    data = cfg.model_dump()
    if o.run is not None:
        data["run_dir"], data["run_id"] = o.run, run_id_of(o.run)
    if o.tasks:
        data["episodes"]["tasks"] = [str(t) for t in o.tasks]
    for key, value in (("episodes_per_task", o.n), ("seed", o.seed)):
        if value is not None:
            data["episodes"][key] = value
    if o.max_steps is not None:
        data["agent"]["max_steps"] = o.max_steps
    if o.runtime is not None:
        data["sandbox"]["runtime"] = o.runtime
    if o.policy == "heuristic" and (o.model or o.base_url):
        raise ConfigError("--model/--base-url apply to --policy openai; drop them or pass --policy openai")
    if o.policy is not None:
        data["model"]["provider"] = o.policy
        if o.policy == "heuristic":
            data["model"]["name"], data["model"]["base_url"] = "heuristic", None
    if o.model is not None:
        data["model"]["name"] = o.model
    if o.base_url is not None:
        data["model"]["base_url"] = o.base_url
    try:
        return RunConfig.model_validate(data)
    except ConfigError:
        raise
    except ValidationError as e:
        raise ConfigError(f"invalid settings: {e}") from None


def confirm_start_over(run_dir: str, stages: list[str], yes: bool) -> None:
    """Before `--start-over` deletes what stages wrote: say what that is, and ask (or require `--yes` when no
    one can answer). Nothing to delete: nothing to ask."""
    found = [(s, what) for s in stages if (what := describe_contents(run_path(run_dir, s))) is not None]
    if not found:
        return
    lines = "\n".join(f"  {run_path(run_dir, s)}: {what}" for s, what in found)
    typer.echo(f"--start-over deletes:\n{lines}", err=True)
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError("--start-over would delete the outputs listed above; pass --yes to confirm, or use a "
                          "new run dir to keep them")
    if not typer.confirm("Delete them?", default=False, err=True):
        raise typer.Exit(1)


def run_guarded(fn, *args, **kwargs):
    """Call `fn`, turning an EngineError into the error exit."""
    try:
        return fn(*args, **kwargs)
    except EngineError as e:
        fail(e)
