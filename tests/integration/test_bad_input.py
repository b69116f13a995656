"""Bad input never gives a traceback, secrets never leak, status tells the truth: the CLI end to end with a key that
a loopback server echoes, files that are not UTF-8 or hold infinities, a corrupted trajectory shard, a read-only
run directory, Ctrl-C in the middle of an episode, an agent that makes its own submission unreadable, and a task
given up for infra failures."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from engine.cli import app
from engine.config import ModelConfig
from engine.errors import ModelError
from engine.models import OpenAIChatModel
from engine.models.server import ChatCompletionsServer
from engine.protocols import SamplingParams
from engine.testing.scripted import ScriptedModel
from engine.trajectories.store import read_trajectories

ROOT = Path(__file__).resolve().parents[2]
WINE = ROOT / "examples" / "tasks" / "wine-classification"
SECRET = "k3y-Plain-7c1d9e0b4a2f-no-known-shape"  # redacted only because the client knows it is the key
ENV = "SYNTHSCALE_BAD_INPUT_ENDPOINT"  # a name that does not say it holds a secret
PRICED_ZERO = "synthscale-heuristic"  # a model name with an explicit zero price

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _say(command: str) -> str:
    return f"DISCUSSION\nNext.\n\n```\n{command}\n```\n"


# -- 1. secrets in error text ------------------------------------------------------------------------------------------

def _echo_authorization(status: int):
    """A server error whose body echoes the request's Authorization header, and the key bare."""

    def handler(request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        body = {"error": {"message": f"rejected; you sent Authorization: {auth} (key {auth.split()[-1]})",
                          "headers": dict(request.headers)}}
        return Response(json.dumps(body), status=status, content_type="application/json")

    return handler


@pytest.fixture
def echo_server():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.mark.parametrize("status", [500, 400])
def test_a_key_echoed_by_the_endpoint_is_in_no_error_and_no_log(echo_server, monkeypatch, caplog, status):
    monkeypatch.setenv(ENV, SECRET)
    echo_server.expect_request("/v1/chat/completions").respond_with_handler(_echo_authorization(status))
    model = OpenAIChatModel(ModelConfig(provider="openai", name="gpt-5", base_url=echo_server.url_for("/v1"),
                                        api_key_env=ENV, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.01))
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as info:
        model.complete([{"role": "user", "content": "hi"}], SamplingParams())
    assert echo_server.log and echo_server.log[0][0].headers["Authorization"] == f"Bearer {SECRET}"  # it was sent
    assert f"HTTP {status}: rejected; you sent Authorization: [REDACTED] (key [REDACTED])" in str(info.value)
    chain, e = [], info.value
    while e is not None:  # nothing chained may carry the server's body either
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert chain == [info.value]
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in caplog.text


@needs_bwrap
def test_a_key_echoed_by_the_endpoint_is_not_stored_and_status_names_the_task_given_up(echo_server, monkeypatch,
                                                                                       caplog, tmp_path):
    """The endpoint fails every call: each episode is an infra failure, the task is given up, and neither the
    stored infra_error, the log, the CLI's output nor `status` shows the key."""
    monkeypatch.setenv(ENV, SECRET)
    echo_server.expect_request("/v1/chat/completions").respond_with_handler(_echo_authorization(500))
    run = tmp_path / "leak"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": str(run), "run_id": "leak",
        "model": {"provider": "openai", "name": "gpt-5", "base_url": echo_server.url_for("/v1"), "api_key_env": ENV,
                  "max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.01},
        "episodes": {"tasks": [str(WINE)], "episodes_per_task": 1},
        "rollout": {"max_infra_retries": 1, "max_infra_failures_per_task": 0, "progress": False}}))
    with caplog.at_level(logging.DEBUG):
        code, out = _run("rollout", "--in-process", "--config", config)
    assert code == 4, out  # a task given up
    assert "1 tasks failed for infrastructure reasons (wine-classification)" in out
    [rec] = read_trajectories(str(run))
    assert rec.infra_error.startswith("ModelError: model 'gpt-5' at http://127.0.0.1:")
    assert "HTTP 500: rejected; you sent Authorization: [REDACTED] (key [REDACTED])" in rec.infra_error
    shards = list((run / "rollouts").rglob("*"))
    assert shards and not any(SECRET.encode() in p.read_bytes() for p in shards if p.is_file())
    code, status = _run("status", run)
    assert code == 0, status
    lines = status.splitlines()
    assert lines[0] == f"run leak ({run}): complete, 1 task given up"
    assert lines[-2:] == ["given up after too many infra failures (rollout.max_infra_failures_per_task; a re-run "
                          "tries them again):", "  wine-classification: 1 infra failures; stored: ModelError: 1"]
    assert SECRET not in out + status + caplog.text


# -- 2a, 2d. files that are not UTF-8, or hold infinities --------------------------------------------------------------

def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path):
    bad = tmp_path / "cp1252.yaml"
    bad.write_bytes(b"run_id: caf\xe9\n")
    code, out = _run("config", bad)
    assert code == 2 and "Traceback" not in out
    assert out == (f"error: {bad}: not UTF-8 text (byte 11: b'\\xe9', invalid continuation byte); save the file "
                   "as UTF-8\n")


def test_infinite_values_in_a_config_or_a_task_file_are_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("agent:\n  command_timeout_s: .inf\n")
    code, out = _run("config", config)
    assert code == 2
    assert out == (f"error: {config}: field 'agent.command_timeout_s': inf is not a finite number; give a finite "
                   "value\n")

    task = tmp_path / "wine"
    shutil.copytree(WINE, task)
    spec = yaml.safe_load((task / "task.yaml").read_text())
    spec["baseline_scores"] = [{"accuracy": float("inf")}]
    (task / "task.yaml").write_text(yaml.safe_dump(spec))
    code, out = _run("task", "check", task)
    assert code == 2 and "Traceback" not in out
    assert f"{task}/task.yaml: field 'baseline_scores.0.accuracy': Input should be a finite number (got inf)" in out


# -- 2b. a corrupted trajectory shard ----------------------------------------------------------------------------------

@needs_bwrap
def test_a_corrupt_shard_is_set_aside_shown_and_its_episode_played_again(tmp_path, caplog):
    out = tmp_path / "run"
    code, text = _run("episode", "--task", WINE, "-n", "2", "--out", out)
    assert code == 0, text
    before = {r.episode_id: r for r in read_trajectories(str(out))}
    shards = sorted((out / "rollouts" / "trajectories").glob("part-ep-*.parquet"))
    victim, kept = shards[0], shards[1].name.removeprefix("part-ep-").removesuffix(".parquet")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # a node died mid-copy, say
    moved = out / "rollouts" / "trajectories" / "corrupt" / victim.name

    with caplog.at_level(logging.WARNING):
        code, text = _run("traj", "show", out)
    assert code == 0 and kept in text and "Traceback" not in text
    assert f"{victim}: not a readable trajectory shard" in caplog.text and f"moved to {moved}" in caplog.text
    assert moved.is_file() and not victim.exists()

    code, text = _run("status", out)
    assert code == 0, text
    assert text.splitlines()[-2:] == [
        "unreadable shards set aside (1; their episodes are missing until `synthscale episode` or `synthscale "
        "rollout` plays them again):", f"  {moved}"]
    assert "1/2" in text.splitlines()[2]

    code, text = _run("episode", "--task", WINE, "-n", "2", "--out", out)  # resume: plays only the lost episode
    assert code == 0, text
    after = {r.episode_id: r for r in read_trajectories(str(out))}
    assert after.keys() == before.keys()
    assert after[kept] == before[kept]  # not played again
    assert victim.is_file() and moved.is_file()


# -- 2c. a read-only run directory -------------------------------------------------------------------------------------

@needs_bwrap
def test_a_read_only_run_dir_is_refused_at_the_stage_start(tmp_path):
    runs = tmp_path / "ro"
    runs.mkdir()
    command = [sys.executable, "-m", "engine.cli", "episode", "--task", str(WINE), "--out", str(runs / "r")]
    if os.geteuid() != 0:
        runs.chmod(0o555)
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        reason = "Permission denied"
    else:  # root writes through file modes: a read-only bind mount in a mount namespace of its own
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                 str(runs), *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
        if "mount:" in result.stderr or "unshare:" in result.stderr:
            pytest.skip(f"no read-only bind mount here: {result.stderr.strip()}")
        reason = "Read-only file system"
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(
        f"error: {runs}/r/rollouts: the stage cannot write here ({reason}); make the run directory writable "
        "(chmod u+w, or mount it read-write) or pass another run directory")


# -- 2e. Ctrl-C in the middle of an episode ----------------------------------------------------------------------------

def _leftovers(run_id: str) -> list[str]:
    """Sandbox folders, mounts and cgroups of run `run_id` still on this machine."""
    prefix = f"synthscale-{run_id}-"
    found = glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*"))
    with open("/proc/self/mounts") as f:
        found += [line.split()[1] for line in f if prefix in line]
    found += glob.glob(f"/sys/fs/cgroup/*/synthscale/{prefix}*") + glob.glob(f"/sys/fs/cgroup/synthscale/{prefix}*")
    return found


@needs_bwrap
def test_ctrl_c_mid_episode_closes_the_sandboxes_says_how_to_resume_and_exits_130(tmp_path):
    run_id = f"ctrlc-{uuid.uuid4().hex[:8]}"
    out = tmp_path / run_id
    command = [sys.executable, "-m", "engine.cli", "episode", "--task", str(WINE), "-n", "1", "--out", str(out),
               "--policy", "openai", "--model", PRICED_ZERO]
    with ChatCompletionsServer(ScriptedModel([_say("touch started && sleep 300")], name=PRICED_ZERO)) as server:
        proc = subprocess.Popen([*command, "--base-url", server.base_url], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 120
            marker = os.path.join(tempfile.gettempdir(), f"synthscale-{run_id}-*", "**", "started")
            while not glob.glob(marker, recursive=True):  # the agent's command runs in its sandbox
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.1)
            assert _leftovers(run_id)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: no episode was stored in {out}/rollouts/trajectories/ yet; the sandboxes are closed. Run the "
        f"same command again to resume: stored episodes are not played again; `synthscale status {out}` shows "
        "where it stands")
    assert _leftovers(run_id) == []
    assert read_trajectories(str(out)) == []  # the interrupted episode is not stored as anything

    with ChatCompletionsServer(ScriptedModel([_say("python baseline.py"), _say("submit")], name=PRICED_ZERO)) as server:
        code, text = _run(*command[3:], "--base-url", server.base_url)  # resumed: the episode is played
    assert code == 0 and "1 episodes (1 with a score)" in text, text


# -- 3. an agent that makes its own submission unreadable --------------------------------------------------------------

@needs_bwrap
@pytest.mark.parametrize("hostile, error", [
    ("chmod 000 submission.csv", "submission_not_found: submission.csv is not readable (check its permissions)"),
    ("rm submission.csv && mkdir submission.csv", "submission_not_found: no submission.csv in the workspace"),
    ("rm submission.csv && ln -s /etc/shadow submission.csv", "submission_not_found: "),  # the wording is grading.py's
    ("rm submission.csv && ln -s ../nowhere submission.csv",
     "submission_not_found: no submission.csv in the workspace"),
])
def test_an_unreadable_submission_is_the_agents_failure_never_infra(tmp_path, hostile, error):
    out = tmp_path / "hostile"
    config = tmp_path / "fail-fast.yaml"  # were it an infra error, one try would show it, not a retry cascade
    config.write_text(yaml.safe_dump({"model": {"max_retries": 0}, "rollout": {
        "max_infra_retries": 0, "max_infra_failures_per_task": 0, "progress": False}}))
    replies = [_say("python baseline.py"), _say(hostile), _say("submit")]
    with ChatCompletionsServer(ScriptedModel(replies, name=PRICED_ZERO)) as server:
        code, text = _run("episode", "--task", WINE, "-n", "1", "--out", out, "--policy", "openai",
                          "--model", PRICED_ZERO, "--base-url", server.base_url, "--config", config)
    assert code == 0, text
    [rec] = read_trajectories(str(out))
    assert rec.infra_error is None, rec.infra_error
    assert "1 episodes (0 with a score)" in text
    assert rec.exit_status == "submission_not_found (submitted)"
    assert rec.scores[-1].kind == "submit" and rec.scores[-1].error.startswith(error)
