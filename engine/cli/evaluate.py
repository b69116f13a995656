"""Evaluation commands of the `synthscale` CLI: `eval` runs the evaluation stage; `aup` reads a score table CSV and
a directions JSON and prints AUP; `eval-report` reads EVAL_DIR/scores.parquet and writes the report beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from engine.artifacts import run_path
from engine.cli.common import confirm_start_over, fail, overrides, resolve_config
from engine.config import RunConfig
from engine.errors import ConfigError, EngineError


def _read_directions(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such directions file; give a JSON object like {{\"task\": \"max\"}}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); give an object like {{\"task\": \"max\"}}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"{path}: expected a JSON object mapping each task to \"max\" or \"min\"")
    return data


def _read_scores(path: Path):
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"{path}: no such score table; give a CSV with a method column first, "
                          "then one column per task")
    try:
        return pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable CSV ({e})") from None


BEST_SUBMISSION_HELP = ("A run's Best Submission score: mlgym (its last successful scoring, validate or submit, "
                        "as MLGym reads results.json; the default) or strict (its submission's own score only).")


def _submission_rule(value: Optional[str]) -> Optional[str]:
    from engine.evaluate.scores import check_rule

    return None if value is None else check_rule(value)


def _format(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def aup_command(
    scores: Path = typer.Argument(..., help="CSV: one row per method (first column: its name, baseline included), "
                                            "one column per task; an empty cell is a missing score."),
    directions: Path = typer.Option(..., "--directions", help="JSON object: task → \"max\" or \"min\"."),
    baseline: str = typer.Option(..., "--baseline", help="Name of the baseline row."),
    tau_max: Optional[float] = typer.Option(None, "--tau-max", help="End of the log10 τ axis (to share one axis "
                                                                     "between tables); default: the table's own."),
) -> None:
    """Print MLGym's AUP of every method in SCORES.csv (relative to that set of methods)."""
    from engine.evaluate.aup import compute_aup

    try:
        result = compute_aup(_read_scores(scores), _read_directions(directions), baseline, tau_max)
    except EngineError as e:
        fail(e)
    methods = result.attrs["methods"]
    typer.echo(f"AUP over {len(methods)} methods: {', '.join(methods)} (τ axis 0 to {result.attrs['tau_max']:g})")
    width = max(len(m) for m in methods)
    typer.echo(f"{'method':<{width}}  AUP")
    for m, v in result.items():
        typer.echo(f"{m:<{width}}  {_format(float(v))}")
    if result.attrs["excluded_tasks"]:
        typer.echo(f"left out (no feasible method): {', '.join(result.attrs['excluded_tasks'])}")


def eval_report_command(
    eval_dir: str = typer.Argument(..., help="An eval directory holding scores.parquet (a path or s3://…)."),
    baseline: str = typer.Option("baseline", "--baseline", help="Name given to the baseline row."),
    resamples: int = typer.Option(1000, "--resamples", min=0, help="Bootstrap resamples (0: no intervals)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    best_submission: str = typer.Option("mlgym", "--best-submission", help=BEST_SUBMISSION_HELP),
) -> None:
    """Rebuild aup.csv, the per-task tables, profile.png and report.html from EVAL_DIR/scores.parquet."""
    from engine.evaluate.report import build_report, read_scores

    try:
        rule = _submission_rule(best_submission)
        report = build_report(read_scores(eval_dir), eval_dir, baseline=baseline, n_resamples=resamples, seed=seed,
                              submission=rule)
    except EngineError as e:
        fail(e)
    typer.echo(f"{report.title}\n{report.aup[['best_attempt', 'best_submission']].to_string(float_format='%.4f')}")
    for r in report.relative:
        typer.echo(r.describe())
    typer.echo(f"report: {report.paths['html']}")


def eval_command(
    config: Path = typer.Option(..., help="RunConfig YAML with an `eval` section (methods, tasks, runs_per_task)."),
    run: Optional[str] = typer.Option(None, "--run", help="Run directory (path or s3://…); overrides run_dir."),
    address: Optional[str] = typer.Option(None, help="Ray cluster (auto, ray://HEAD:10001); omitted: a local one."),
    in_process: bool = typer.Option(False, "--in-process", help="No Ray: rollout workers and model servers on "
                                                                 "this machine."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Runs per task (eval.runs_per_task)."),
    best_submission: Optional[str] = typer.Option(
        None, "--best-submission", help=BEST_SUBMISSION_HELP + " Overrides eval.best_submission."),
    checkpoint: Optional[list[str]] = typer.Option(
        None, "--checkpoint", help="NAME=PATH: add a method served from a Hugging Face checkpoint (repeatable)."),
    students: Optional[str] = typer.Option(
        None, "--students", help="A run dir whose `synthscale train` finished: add its base student and SFT student "
                                 "(methods base-student and sft-student)."),
    start_over: bool = typer.Option(False, "--start-over", help="Delete what an earlier config wrote in RUN/eval."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before --start-over deletes."),
) -> None:
    """Run every method R times per task, then write RUN/eval/ (scores, AUP with intervals, profiles, report)."""
    from engine.runner import run_eval_stage

    try:
        cfg = resolve_config(config, overrides(run=run))
        if runs is not None:
            cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"runs_per_task": runs})})
        if (rule := _submission_rule(best_submission)) is not None:
            cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"best_submission": rule})})
        added = [_checkpoint_method(c) for c in checkpoint or []] + (_student_methods(students) if students else [])
        if added:
            cfg = RunConfig.model_validate({**cfg.model_dump(), "eval": {
                **cfg.eval.model_dump(), "methods": [*cfg.eval.model_dump()["methods"],
                                                      *[m.model_dump() for m in added]]}})
        if start_over:
            confirm_start_over(cfg.run_dir, ["eval"], yes)
        manifest, report = run_eval_stage(cfg, address=address, in_process=in_process, start_over=start_over)
    except EngineError as e:
        fail(e)
    typer.echo(f"eval {cfg.run_id}: {manifest.counts['runs']} runs of {manifest.counts['methods']} methods on "
               f"{manifest.counts['tasks']} tasks → {run_path(cfg.run_dir, 'eval', 'report.html')}")
    typer.echo(report.aup.to_string())
    for change in report.relative:
        typer.echo(change.describe())


def _checkpoint_method(spec: str):
    from engine.config import EvalMethod

    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--checkpoint {spec!r}: give NAME=PATH (a method name, then a Hugging Face checkpoint "
                          "folder or Hub id), e.g. --checkpoint sft=runs/r1/train/final")
    return EvalMethod(name=name, checkpoint=path)


def _student_methods(run_dir: str) -> list:
    from engine.train.stage import completed

    student = completed(RunConfig(run_dir=run_dir))
    if student is None:
        raise ConfigError(f"--students {run_dir}: {run_path(run_dir, 'train')}/ has no manifest (training not run or "
                          "not finished); run `synthscale train --run …` first")
    return student.eval_methods()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main CLI."""
    app.command("aup")(aup_command)
    app.command("eval")(eval_command)
    app.command("eval-report")(eval_report_command)
