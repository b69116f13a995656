"""Run control: reads and writes the cancel request ``<run>/rollouts/cancel.json`` that the rollout scheduler honours.

``synthscale cancel RUN`` writes it; the scheduler polls ``cancel_requested`` between leases, stops handing
out work, lets episodes in flight finish and be stored, and ends without a manifest (the run resumes later).
The marker lives beside the trajectories, so it works for any run dir, local or ``s3://…``.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time

from engine.artifacts import exists, join, read_json, resolve, write_json
from engine.errors import ArtifactError

log = logging.getLogger(__name__)

CANCEL_NAME = "cancel.json"
ROLLOUTS_DIR = "rollouts"


def _cancel_path(run_dir: str | os.PathLike):
    fs, base = resolve(run_dir)
    return fs, join(base, ROLLOUTS_DIR, CANCEL_NAME)


def request_cancel(run_dir: str | os.PathLike, reason: str = "") -> str:
    """Ask the run's scheduler to stop; returns the marker's path. Writing it twice keeps the latest reason.

    >>> request_cancel("runs/r1", "budget review")   # doctest: +SKIP
    '/abs/runs/r1/rollouts/cancel.json'
    """
    fs, path = _cancel_path(run_dir)
    marker = {"reason": reason, "requested_at": time.time(), "by": _who()}
    write_json(fs, path, marker)
    log.info("run dir %s: cancel requested (%s)", os.fspath(run_dir), reason or "no reason given")
    return path


def cancel_requested(run_dir: str | os.PathLike) -> str | None:
    """The reason of a pending cancel request ("" when none was given), or None when there is none."""
    fs, path = _cancel_path(run_dir)
    if not exists(fs, path):
        return None
    data = read_json(fs, path)
    if not isinstance(data, dict) or not isinstance(data.get("reason", ""), str):
        raise ArtifactError(f"{path}: not a cancel request (expected a JSON object with a 'reason' string); "
                            "delete it, or rewrite it with `synthscale cancel RUN`")
    return data.get("reason", "")


def clear_cancel(run_dir: str | os.PathLike) -> bool:
    """Remove the cancel request (the scheduler does this when a run starts again); True if there was one."""
    fs, path = _cancel_path(run_dir)
    if not exists(fs, path):
        return False
    fs.delete_file(path)
    log.info("run dir %s: cancel request cleared", os.fspath(run_dir))
    return True


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
