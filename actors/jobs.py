"""Ray Job Submission for synthscale: submits `python -m engine.cli <args>` to a cluster's dashboard
(http://HEAD:8265), follows its logs, reads its status and stops it. Reads the source checkout it uploads.

The job's ``runtime_env`` carries the source checkout as ``working_dir`` (so the job finds the package on
nodes where it is not installed) and plain settings in ``env_vars``. It never carries secrets: the dashboard
shows every job's runtime_env to anyone who can open it, so API keys come from the nodes' own environment or
mounted secrets (cluster/README.md), and `submit_job` refuses env entries whose names look like secrets.

Ray 2.60 clusters started while a token exists use token authentication; the client here sends
``Authorization: Bearer <token>`` with the token Ray's own CLI would use: ``RAY_AUTH_TOKEN``, else the file
``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (``ray get-auth-token`` on the head prints it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import ConfigError

log = logging.getLogger(__name__)

ENTRYPOINT = ["python", "-m", "engine.cli"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# Paths of the checkout never uploaded (gitignore syntax, relative to the working dir).
WORKING_DIR_EXCLUDES = [
    ".venv", "venv", ".git", "runs", "benchmarks/results", "cluster/images/task/wheels", "**/__pycache__",
    "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.egg-info", "build", "dist", ".ipynb_checkpoints",
]
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def source_checkout() -> Path | None:
    """The source tree this `engine` package was imported from, or None when it is an installed wheel."""
    import engine

    root = Path(engine.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "actors").is_dir():
        return root
    return None


def check_env(env: dict[str, str]) -> None:
    """Refuse env entries whose names look like secrets (they would show in the dashboard)."""
    secret = sorted(name for name in env if _SECRET_NAME.search(name))
    if secret:
        raise ConfigError(
            f"--env {', '.join(secret)}: refusing to put what looks like a secret into the job's runtime_env, "
            "which the Ray dashboard shows to everyone; set API keys in the nodes' own environment or mount them "
            "as secrets (see cluster/README.md) and name the variable in the config (model.api_key_env)")
    bad = sorted(name for name, value in env.items() if not isinstance(value, str) or not name)
    if bad:
        raise ConfigError(f"--env {bad}: env var names must be non-empty and values strings")


def runtime_env(working_dir: Path | None, env: dict[str, str]) -> dict:
    """The job's runtime_env: the checkout as working_dir (with excludes) and the given env vars."""
    check_env(env)
    out: dict = {"env_vars": {"PYTHONUNBUFFERED": "1", **env}}
    if working_dir is not None:
        if not (Path(working_dir) / "engine").is_dir():
            raise ConfigError(f"--working-dir {working_dir}: no engine/ package in it; pass the synthscale "
                              "source checkout (the folder holding pyproject.toml)")
        out["working_dir"] = str(Path(working_dir).resolve())
        out["excludes"] = list(WORKING_DIR_EXCLUDES)
    return out


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer …`` from Ray's token sources, or {} when there is no token or auth is disabled."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except (ConnectionError, RuntimeError, ValueError, AuthenticationError) as e:
        raise ConfigError(f"--address {address}: cannot reach the Ray dashboard ({_short(e)}); pass the head's "
                          f"dashboard URL, e.g. http://HEAD:8265, and check the cluster is up{_auth_hint(e)}") from None


def _call(address: str, what: str, fn: Callable, *args):
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except (RuntimeError, ConnectionError, AuthenticationError) as e:
        raise ConfigError(f"{what} on {address} failed: {_short(e)}{_auth_hint(e)}") from None


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _auth_hint(e: Exception) -> str:
    text = str(e)
    if type(e).__name__ == "AuthenticationError" or "401" in text or "403" in text or "uthentication" in text:
        return ("; the cluster uses token authentication: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
                "token `ray get-auth-token` prints on the head")
    return ""


def submit_job(address: str, args: list[str], working_dir: Path | None = None, env: dict[str, str] | None = None,
               follow: bool = False, on_log: Callable[[str], None] | None = None) -> str:
    """Submit `python -m engine.cli ARGS` as a Ray job; returns the job (submission) id.

    ``working_dir`` defaults to this package's source checkout (None when installed from a wheel: the
    cluster's image must then hold synthscale). With ``follow`` it also streams the logs to ``on_log``
    until the job ends (see `follow_logs`; read the outcome with `job_status`).
    """
    if not args:
        raise ConfigError("no synthscale command to submit; e.g. `synthscale submit --address URL -- run --config FILE`")
    env = dict(env or {})
    wd = working_dir if working_dir is not None else source_checkout()
    if wd is None:
        log.warning("no source checkout found; the job relies on synthscale being installed on the cluster")
    renv = runtime_env(wd, env)
    entrypoint = shlex.join([*ENTRYPOINT, *args])
    client = _client(address)
    job_id = _call(address, "job submission", lambda: client.submit_job(entrypoint=entrypoint, runtime_env=renv))
    log.info("submitted job %s to %s: %s", job_id, address, entrypoint)
    if follow:
        follow_logs(address, job_id, on_log)
    return job_id


def follow_logs(address: str, job_id: str, on_log: Callable[[str], None] | None = None,
                timeout_s: float = 60.0) -> str:
    """Stream the job's logs (chunks to ``on_log``) until it ends; return its final status, e.g. 'SUCCEEDED'."""
    client = _client(address)
    sink = on_log or (lambda text: log.info("job %s: %s", job_id, text.rstrip()))

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sink(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as e:  # the socket closed early (head restarted, network): the status still tells
        log.warning("job %s: log stream ended early (%s)", job_id, _short(e))
    return wait_for_job(address, job_id, timeout_s=timeout_s)


def job_status(address: str, job_id: str) -> str:
    """The job's status: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    client = _client(address)
    return str(_call(address, f"status of job {job_id}", client.get_job_status, job_id).value)


def wait_for_job(address: str, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.5) -> str:
    """Poll until the job is in a terminal state and return it; raises ConfigError after ``timeout_s``."""
    client = _client(address)
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(_call(address, f"status of job {job_id}", client.get_job_status, job_id).value)
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise ConfigError(f"job {job_id} on {address} is still {status} after {timeout_s:.0f} s; "
                              f"check it with `ray job status {job_id} --address {address}`")
        time.sleep(poll_s)


def stop_job(address: str, job_id: str) -> bool:
    """Ask the cluster to stop the job (SIGTERM, then SIGKILL); True if it was running."""
    client = _client(address)
    stopped = bool(_call(address, f"stopping job {job_id}", client.stop_job, job_id))
    log.info("job %s on %s: stop requested (was running: %s)", job_id, address, stopped)
    return stopped
