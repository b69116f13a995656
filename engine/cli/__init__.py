"""The `synthscale` command line. One module per group of commands, each adding itself to `app`:
`episodes` (episode, run, config, serve-heuristic), `synth`, `rollout`, `curate`, `train`, `evaluate` (eval, aup, eval-report),
`ops` (submit, status, cancel, reap), `tasks` (task check, task import-mlgym) and `traj` (traj show, import-traj)."""

from __future__ import annotations

import logging
import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="synthscale: train ML research agents on synthetic tasks.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


from engine.cli import curate, episodes, evaluate, ops, rollout, synth, tasks, traj, train  # noqa: E402

for _module in (episodes, synth, rollout, curate, train, evaluate, ops, tasks, traj):
    _module.register(app)


def main() -> None:  # pragma: no cover
    sys.exit(app())
