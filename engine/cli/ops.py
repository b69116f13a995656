"""Cluster operations of the `synthscale` CLI: `submit` (Ray Job Submission), `status RUN`, `cancel` (a run's
cancel marker, or a Ray job) and `reap` (sandboxes a dead run left behind).

Reads run dirs (status, cancel) and the Docker daemon / local temp dir (reap); talks to a Ray head's
dashboard over HTTP (submit, cancel --job) through `engine.runner`, which imports the Ray layer lazily.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from engine.cli.common import fail, resolve_config
from engine.errors import ConfigError, EngineError, SandboxError


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def submit(
    args: list[str] = typer.Argument(..., help="The synthscale command and its arguments, after `--`."),
    address: str = typer.Option(..., "--address", help="The head's dashboard URL, e.g. http://HEAD:8265."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Stream the job's logs until it ends."),
    working_dir: Optional[Path] = typer.Option(
        None, "--working-dir", help="Source checkout uploaded as the job's working dir (default: this one)."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE for the job (repeatable; never secrets)."),
) -> None:
    """Run any synthscale command on a Ray cluster as a job: prints the job id, follows its logs, and
    exits 0 when it SUCCEEDED (1 when it FAILED or was STOPPED)."""
    from engine.runner import follow_job, submit_job

    try:
        job_id = submit_job(address, list(args), working_dir, _parse_env(env))
    except EngineError as e:
        fail(e)
    typer.echo(f"job {job_id} submitted to {address}")
    if not follow:
        typer.echo(f"follow it with: ray job logs --follow {job_id} --address {address}")
        return
    try:
        status = follow_job(address, job_id, on_log=lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    except EngineError as e:
        fail(e)
    typer.echo(f"job {job_id}: {status}")
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


def status(run: str = typer.Argument(..., help="Run directory (a path or s3://…).")) -> None:
    """Progress of a run's rollouts: per task, failures by kind, cost so far, complete or cancelled."""
    from engine.rollout.status import render_status, rollout_status

    try:
        typer.echo(render_status(rollout_status(run)))
    except EngineError as e:
        fail(e)


def cancel(
    run: Optional[str] = typer.Argument(None, help="Run directory whose rollout scheduler should stop."),
    reason: str = typer.Option("", "--reason", help="Why (kept in the cancel marker)."),
    job: Optional[str] = typer.Option(None, "--job", help="Stop this Ray job instead (with --address)."),
    address: Optional[str] = typer.Option(None, "--address", help="The head's dashboard URL (with --job)."),
) -> None:
    """Cancel a run (the scheduler stops handing out episodes, stores those in flight, and ends
    resumable) or, with --job, stop a Ray job."""
    if (run is None) == (job is None):
        fail(ConfigError("pass either a run directory (`synthscale cancel RUN`) or "
                          "`--job JOB_ID --address URL`, not both or neither"))
    if job is not None:
        if address is None:
            fail(ConfigError(f"--job {job}: also pass --address http://HEAD:8265"))
        from engine.runner import stop_job

        try:
            running = stop_job(address, job)
        except EngineError as e:
            fail(e)
        typer.echo(f"job {job}: stop requested" if running else f"job {job}: was not running")
        return
    from engine.rollout.control import request_cancel

    try:
        path = request_cancel(run, reason)
    except EngineError as e:
        fail(e)
    typer.echo(f"cancel requested: {path}; the scheduler stops after the episodes in flight")


def reap(
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Only this run's sandboxes (docker: default all runs)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="docker or local (default: the config's)."),
    config: Optional[Path] = typer.Option(None, "--config", help="RunConfig YAML (sandbox settings, run_id)."),
) -> None:
    """Remove the task containers (docker) or sandbox folders (local) that a dead run left behind."""
    try:
        removed, what = _reap(run_id, runtime, config)
    except EngineError as e:
        fail(e)
    typer.echo(f"reaped {removed} {what}")


def _reap(run_id: str | None, runtime: str | None, config: Path | None) -> tuple[int, str]:
    cfg = resolve_config(config)
    kind = runtime or cfg.sandbox.runtime
    if kind not in ("docker", "local"):
        raise ConfigError(f"--runtime {kind!r}: use docker or local")
    run_id = run_id or (cfg.run_id if config else None)
    if kind == "docker":
        from engine.sandbox.docker import reap as docker_reap

        return docker_reap(_docker_client(), run_id), f"containers of {'run ' + run_id if run_id else 'all runs'}"
    if run_id is None:
        raise ConfigError("--runtime local: pass --run-id (or --config naming run_id); local sandboxes are "
                          "found by run id")
    from engine.sandbox import make_runtime

    return make_runtime(cfg.sandbox.model_copy(update={"runtime": "local"}), run_id).reap_leftovers(), \
        f"local sandboxes of run {run_id}"


def _docker_client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as e:  # the SDK raises several types for an absent daemon
        raise SandboxError(f"cannot reach the Docker daemon ({e}); start dockerd or set DOCKER_HOST") from None
    return client


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.command("submit", context_settings={"allow_interspersed_args": False})(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
    app.command("reap")(reap)
