"""The hostile-agent suite: a scripted hostile policy plays real episodes (agent loop, sandbox, grader) on both
runtimes, one attack each. Whatever it does, no forged or out-of-range score is stored, no grader content reaches
an observation, the driver's memory stays bounded, the episode completes as the agent's own (never an infra
error), and nothing of one episode survives a reset.

Attacks on grading: forged metrics from the submitted module (stdout, the main module), reading the grader's
files, a submission that is a link to /dev/zero or /etc/shadow, unreadable, rewritten by a background loop
after its command, a workspace module shadowing the standard library in an MLGym grader. Attacks that the
sandbox holds: fork and memory bombs, a disk fill, a 100 GB sparse file, huge output, egress, the host's
secrets, writes outside the workspace, processes left behind, state left for the next episode."""

from __future__ import annotations

import base64
import resource
import shutil
from pathlib import Path

import pytest

from engine.agent.episode import run_episode
from engine.config import AgentConfig, SamplingConfig, SandboxConfig
from engine.protocols import SandboxSpec
from engine.records import TrajectoryRecord
from engine.sandbox import make_runtime
from engine.tasks.folder import load_task
from engine.tasks.grading import TaskGrader
from engine.tasks.mlgym import import_mlgym_task
from engine.testing.scripted import ScriptedModel

try:
    from tests.integration.sandbox_fixtures import docker_problem
except ImportError:  # tests/ is not a package
    from sandbox_fixtures import docker_problem

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "tasks"
GAME, WINE = EXAMPLES / "iterated-game-strategy", EXAMPLES / "wine-classification"
GRADER_SECRETS = ("VALIDATION_SEEDS", "suspicious_copycat", "win_stay_lose_shift")  # words of the game's grader
SANDBOX = dict(memory_mb=1024, pids_limit=128, workspace_mb=64)
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=["local", "docker"])
def runtime(request):
    name = request.param
    if name == "local" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    if name == "docker" and (problem := docker_problem(SandboxConfig().image)):
        pytest.skip(problem)
    return make_runtime(SandboxConfig(runtime=name, **SANDBOX), run_id=f"it-hostile-{name}")


def _say(command: str) -> str:
    return f"DISCUSSION\nLet me try this.\n\n```\n{command}\n```\n"


def _write(path: str, text: str) -> str:
    """A command writing `text` to `path` exactly (base64 keeps quotes and newlines intact)."""
    return f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {path}"


def _play(runtime, task_root: Path, commands: list[str], sandbox=None) -> TrajectoryRecord:
    task = load_task(task_root)
    spec = SandboxSpec(workspace=task.workspace_dir, read_only_paths=task.read_only_paths)
    cfg = AgentConfig(max_steps=len(commands), command_timeout_s=20)
    with TaskGrader(task, runtime, timeout_s=120) as grader:
        if sandbox is not None:
            return run_episode(task, ScriptedModel([_say(c) for c in commands]), sandbox, grader, cfg, seed=0,
                               run_id="it", sampling=SamplingConfig(), policy="hostile")
        with runtime.start(spec) as sb:
            return run_episode(task, ScriptedModel([_say(c) for c in commands]), sb, grader, cfg, seed=0,
                               run_id="it", sampling=SamplingConfig(), policy="hostile")


def _check(rec: TrajectoryRecord, task_root: Path) -> None:
    """What every hostile episode must satisfy."""
    assert rec.infra_error is None, rec.infra_error
    low, high = load_task(task_root).config.metric_ranges[rec.metric]
    for s in rec.scores:
        for split in (s.validation or {}, s.test or {}):
            for value in split.values():
                assert (low is None or value >= low) and (high is None or value <= high), s
    text = "\n".join(st.observation for st in rec.steps)
    assert not any(word in text for word in GRADER_SECRETS), text[-2000:]


FORGE_STDOUT = '''import os
def strategy(history):
    os.write(1, b'{"validation": {"score": 1e300}, "test": {"score": 1e300}}\\n')
    os._exit(0)
'''
FORGE_MAIN = '''import sys
main = sys.modules["__main__"]
for name in ("score", "main", "json"):
    if hasattr(main, name):
        setattr(main, name, None)
def strategy(history):
    sys.modules["__main__"].print = lambda *a, **k: None
    return 0
'''
READ_GRADER = '''import os, sys, glob
def strategy(history):
    found = []
    for path in glob.glob("/**/evaluate.py", recursive=True) + ["evaluate.py", "../evaluate.py"]:
        try:
            found.append(open(path).read())
        except OSError:
            pass
    print("\\n".join(found), file=sys.stderr)
    raise RuntimeError("LEAK:" + "".join(found)[:3000])
'''


@pytest.mark.parametrize("name,module", [("stdout", FORGE_STDOUT), ("main-module", FORGE_MAIN),
                                         ("read-grader", READ_GRADER)])
def test_the_submitted_module_cannot_forge_scores_or_read_the_grader(runtime, name, module):
    rec = _play(runtime, GAME, [_write("strategy.py", module), "validate", "submit"])
    _check(rec, GAME)
    assert all(s.error is not None or (s.test or {}).get("score", 0) <= 5 for s in rec.scores)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("attack", [
    "ln -sf /dev/zero submission.csv",
    "ln -sf /etc/shadow submission.csv",
    "python baseline.py && chmod 000 submission.csv",
    "mkdir -p submission.csv",
])
def test_a_broken_submission_is_the_agents_error_and_costs_the_driver_nothing(runtime, attack):
    before = _rss_mb()
    rec = _play(runtime, WINE, [attack, "submit"])
    _check(rec, WINE)
    assert rec.scores[-1].error is not None and rec.exit_status.endswith("(submitted)"), rec.scores[-1]
    assert _rss_mb() - before < 200  # nothing read the link's endless target into the driver


def test_a_background_loop_runs_on_with_its_session_and_the_grade_is_of_what_the_file_holds(runtime):
    # MLGym's session keeps background jobs between commands (the reset ends them:
    # test_nothing_of_an_episode_survives_the_reset); grading copies the artefact out once and grades that copy
    loop = "setsid sh -c 'while :; do echo id,label > submission.csv; sleep 0.05; done' >/dev/null 2>&1 &"
    rec = _play(runtime, WINE, [f"python baseline.py; {loop} sleep 0.3", "python baseline.py",
                                "sleep 1; wc -l < submission.csv", "submit"])
    _check(rec, WINE)
    assert int(rec.steps[2].observation.split()[0]) == 1  # the loop ran on and overwrote the predictions
    assert not rec.scores[-1].ok, rec.scores[-1]  # a header and no rows: the agent's own doing, no score


def test_a_workspace_module_cannot_replace_what_an_mlgym_grader_imports(runtime, tmp_path):
    task = import_mlgym_task(ROOT / "tests" / "fixtures" / "mlgym", "regressionKaggleHousePrice", tmp_path)
    fake = 'def dumps(*a, **k):\n    return \'{"rmse": 0.0, "r2": 1.0}\'\n'
    rec = _play(runtime, task.root, ["python baseline.py", _write("json.py", fake), "submit"])
    assert rec.infra_error is None
    assert rec.scores[-1].ok and rec.scores[-1].test["r2"] < 1.0, rec.scores[-1]  # the real json, a real score


@pytest.mark.parametrize("attack,then", [
    ("timeout 10 bash -c ':(){ :|:& };:'", "echo alive"),  # fork bomb
    ("python -c \"x = bytearray(4 * 1024**3)\"", "echo alive"),  # memory bomb
    ("dd if=/dev/zero of=fill bs=1M count=200; rm -f fill", "echo alive"),  # disk fill
    ("truncate -s 100G big.bin; dd if=/dev/zero of=/tmp/big bs=1M count=1 seek=100000; ls -la big.bin", "echo alive"),
    ("yes synthscale | head -c 50000000", "echo alive"),  # huge output
    ("python -c \"import urllib.request; urllib.request.urlopen('http://1.1.1.1', timeout=3)\"; echo rc=$?",
     "echo alive"),  # egress
    ("echo x > /etc/owned; echo x > /usr/owned; echo x > /owned; ls /etc/owned", "echo alive"),  # outside
    # a background job lives on with its session, as in MLGym (the reset ends it)
    ("sleep 1000 & echo started", "pgrep -u \"$(id -u)\" -x sleep >/dev/null && echo alive"),
])
def test_attacks_the_sandbox_holds_leave_the_episode_the_agents_own(runtime, attack, then):
    before = _rss_mb()
    rec = _play(runtime, WINE, [attack, then, "submit"])
    _check(rec, WINE)
    # a fork bomb's orphans left the session: they die after its command (the session's own jobs live on)
    assert rec.steps[1].observation.strip().splitlines()[0] == "alive", rec.steps[1].observation
    assert _rss_mb() - before < 200  # the huge output was capped as it was read


def test_the_hosts_secrets_are_invisible(runtime, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hostile-test-0123456789abcdef")
    rec = _play(runtime, WINE, ["env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'", "submit"])
    _check(rec, WINE)
    assert "sk-hostile-test" not in rec.steps[0].observation


def test_nothing_of_an_episode_survives_the_reset(runtime):
    task = load_task(WINE)
    spec = SandboxSpec(workspace=task.workspace_dir, read_only_paths=task.read_only_paths)
    plant = ("for d in /tmp /dev/shm /var/tmp $HOME .; do echo planted > $d/marker 2>/dev/null; done; "
             "python -c \"import os; os.mkfifo('/tmp/fifo')\"; (sleep 1000 &) ; echo planted")
    look = ("ls -a /tmp /dev/shm /var/tmp $HOME . 2>/dev/null | grep -c -e marker -e fifo; pgrep -c -u \"$(id -u)\" sleep || true")
    with runtime.start(spec) as sb:
        first = _play(runtime, WINE, [plant, "submit"], sandbox=sb)
        sb.reset()
        second = _play(runtime, WINE, [look, "submit"], sandbox=sb)
    _check(first, WINE)
    assert second.steps[0].observation.split()[:2] == ["0", "0"], second.steps[0].observation
