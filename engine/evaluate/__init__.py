"""Evaluation: reads per-run scores, writes MLGym's AUP, bootstrap statistics and the report in RUN/eval/.

- ``aup``: ``compute_aup`` (MLGym's definition), ``performance_profiles``, ``compute_aup_pair``;
- ``scores``: runs DataFrame → Best Attempt / Best Submission tables, ``runs_from_trajectories``;
- ``stats``: ``bootstrap_aup``, ``relative_change``, ``win_loss``, ``win_matrix``, ``exit_status_breakdown``;
- ``report``: ``write_scores`` / ``read_scores`` (scores.parquet), ``build_report`` → ``EvalReport``.
"""

from engine.evaluate.aup import AUPPair, AUPResult, compute_aup, compute_aup_pair, performance_profiles
from engine.evaluate.report import EvalReport, build_report, read_scores, write_scores
from engine.evaluate.scores import (best_attempt, best_submission, directions_of, run_values,
                                    runs_from_trajectories)
from engine.evaluate.stats import (BootstrapAUP, RelativeChange, bootstrap_aup, exit_status_breakdown,
                                   relative_change, win_loss, win_matrix)

__all__ = [
    "AUPPair", "AUPResult", "BootstrapAUP", "EvalReport", "RelativeChange", "best_attempt", "best_submission",
    "bootstrap_aup", "build_report", "compute_aup", "compute_aup_pair", "directions_of", "exit_status_breakdown",
    "performance_profiles", "read_scores", "relative_change", "run_values", "runs_from_trajectories",
    "win_loss", "win_matrix", "write_scores",
]
