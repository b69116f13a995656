"""Full episodes: the heuristic policy beats every example task's baseline in both runtimes, also when served
over a loopback OpenAI-compatible server; bad model output and hostile commands neither crash the host
process nor lose the trajectory."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from engine.agent.episode import run_episode
from engine.agent.heuristic import HeuristicModel
from engine.config import AgentConfig, ModelConfig, RunConfig, SamplingConfig, SandboxConfig
from engine.models.openai_client import OpenAIChatModel
from engine.testing.scripted import ScriptedModel
from engine.models.server import ChatCompletionsServer
from engine.protocols import SandboxSpec
from engine.records import TrajectoryRecord
from engine.runner import run_rollout_stage
from engine.sandbox import make_runtime
from engine.tasks.folder import find_tasks, load_task
from engine.tasks.grading import TaskGrader
from engine.trajectories.store import read_trajectories

try:
    from tests.integration.sandbox_fixtures import docker_problem
except ImportError:  # tests/ is not a package
    from sandbox_fixtures import docker_problem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"
TASKS = [load_task(p) for p in find_tasks(EXAMPLES)]
SANDBOX = dict(memory_mb=2048, pids_limit=128, workspace_mb=64)


def _runtime(name: str):
    if name == "local" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    if name == "docker":
        problem = docker_problem(SandboxConfig().image)
        if problem:
            pytest.skip(problem)
    return make_runtime(SandboxConfig(runtime=name, **SANDBOX), run_id=f"it-episodes-{name}")


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "max" else a < b


def _check_beats_baseline(rec: TrajectoryRecord) -> None:
    task = next(t for t in TASKS if t.id == rec.task_id)
    assert rec.infra_error is None, rec.infra_error
    assert rec.exit_status == "submitted", rec.exit_status
    final = rec.scores[-1]
    assert final.kind == "submit" and final.ok, final
    m, d = task.config.metric, task.config.direction
    assert _better(final.validation[m], task.baseline[m], d), (final.validation, task.baseline)
    assert _better(final.test[m], task.baseline_test[m], d), (final.test, task.baseline_test)
    # the first validate scored the untouched baseline: grading is real and reproducible
    first = next(s for s in rec.scores if s.kind == "validate" and s.ok)
    assert first.validation[m] == pytest.approx(task.baseline[m], rel=1e-6)


@pytest.mark.parametrize("runtime_name", ["local", "docker"])
def test_heuristic_beats_every_example_baseline(runtime_name: str, tmp_path: Path) -> None:
    _runtime(runtime_name)
    cfg = RunConfig.model_validate({
        "run_id": "it", "run_dir": str(tmp_path), "sandbox": {"runtime": runtime_name, **SANDBOX},
        "episodes": {"tasks": [str(EXAMPLES)], "episodes_per_task": 1}, "rollout": {"progress": False}})
    manifest = run_rollout_stage(cfg, in_process=True)
    assert manifest is not None and manifest.counts["episodes"] == len(TASKS)
    records = read_trajectories(str(tmp_path))
    assert sorted(r.task_id for r in records) == sorted(t.id for t in TASKS)
    for rec in records:
        _check_beats_baseline(rec)


def test_served_heuristic_drives_the_production_client(tmp_path: Path) -> None:
    """The policy behind a real chat-completions server, called by OpenAIChatModel, plays the same episode."""
    runtime = _runtime("local")
    task = next(t for t in TASKS if t.id == "wine-classification")
    direct = HeuristicModel(TASKS)
    sampling = SamplingConfig(temperature=1.0)
    results = {}
    with ChatCompletionsServer(direct) as server:
        client = OpenAIChatModel(ModelConfig(provider="openai", name=direct.name, base_url=server.base_url,
                                             sampling=sampling, cache_dir=tmp_path / "cache"))
        for label, model in (("direct", direct), ("http", client)):
            with runtime.start(SandboxSpec(workspace=task.workspace_dir)) as sb, \
                    TaskGrader(task, runtime, timeout_s=300) as grader:
                results[label] = run_episode(task, model, sb, grader, AgentConfig(), seed=3, run_id="it",
                                             sampling=sampling, policy="heuristic")
    _check_beats_baseline(results["http"])
    assert [s.action for s in results["http"].steps] == [s.action for s in results["direct"].steps]
    assert results["http"].api_calls == len(results["http"].steps)
    assert any((tmp_path / "cache").rglob("*.json")), "the client's response cache holds the replies"


def _say(command: str) -> str:
    return f"DISCUSSION\nTrying something.\n\n```\n{command}\n```\n"


@pytest.fixture(scope="module")
def guarded_task(tmp_path_factory) -> Path:
    """The wine task with its training data marked read-only."""
    root = tmp_path_factory.mktemp("guarded") / "wine"
    shutil.copytree(EXAMPLES / "wine-classification", root)
    cfg = yaml.safe_load((root / "task.yaml").read_text())
    cfg["read_only_paths"] = ["data/train.csv"]
    (root / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def _scripted_episode(task_root: Path, replies: list[str], **agent) -> TrajectoryRecord:
    runtime = _runtime("local")
    task = load_task(task_root)
    cfg = AgentConfig(**{"max_steps": len(replies), **agent})
    spec = SandboxSpec(workspace=task.workspace_dir, read_only_paths=task.read_only_paths)
    with runtime.start(spec) as sb, TaskGrader(task, runtime, timeout_s=120) as grader:
        return run_episode(task, ScriptedModel(replies), sb, grader, cfg, seed=0, run_id="it",
                           sampling=SamplingConfig(), policy="scripted")


def test_three_format_errors_end_the_episode_and_keep_the_responses(guarded_task: Path) -> None:
    bad = ["no command here", "two\n```\nls\n```\n```\npwd\n```\n", "```\n```"]
    rec = _scripted_episode(guarded_task, bad)
    assert rec.exit_status == "submission_not_found (exit_format)"
    assert [m["role"] for m in rec.messages] == ["system", "user"]  # re-asked turns stay out of the history
    assert rec.steps[-1].format_errors == bad
    assert rec.scores[-1].kind == "autosubmit" and rec.scores[-1].error.startswith("submission_not_found")


def test_a_format_error_is_reasked_then_the_episode_goes_on(guarded_task: Path) -> None:
    rec = _scripted_episode(guarded_task, ["oops, no block", _say("echo hi"), _say("submit")], max_steps=3)
    assert rec.steps[0].format_errors == ["oops, no block"]
    assert rec.steps[0].observation.strip() == "hi"
    assert rec.exit_status == "submission_not_found (submitted)"


def test_hostile_and_broken_commands_are_contained_and_recorded(guarded_task: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    replies = [
        _say("vim baseline.py"),                                           # 0 refused editor
        _say("sleep 60"),                                                  # 1 hangs: interrupted
        _say("head -c 10000000 /dev/zero | tr '\\0' 'x'"),                 # 2 10 MB of output
        _say("printf 'abc\\377\\376def\\n'"),                              # 3 non-UTF-8
        _say(":(){ :|:& };:"),                                             # 4 fork bomb
        _say("python -c \"x = bytearray(8 * 1024**3)\""),                  # 5 unbounded allocation
        _say("dd if=/dev/zero of=big.bin bs=1M count=200"),                # 6 fills the disk
        _say(f"python -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)\""),  # 7
        _say("env; echo SECRET=$SYNTHSCALE_EPISODE_SECRET"),               # 8 environment
        _say("echo pwned > /etc/pwned; echo pwned > /usr/pwned"),         # 9 outside the workspace
        _say('open "data/train.csv"'),                                    # 10
        _say("edit 1:1\nhacked\nend_of_edit"),                             # 11 read-only file
        _say("rm -f data/train.csv; ls data"),                             # 12 read-only file
        _say("rm -f big.bin; echo 'id,label' > submission.csv; echo 'garbage' >> submission.csv"),  # 13
        _say("validate"),                                                  # 14 grader crashes: no score
        _say("python baseline.py"),                                        # 15
        _say("submit"),                                                    # 16
    ]
    os.environ["SYNTHSCALE_EPISODE_SECRET"] = "sk-should-never-leak"
    try:
        rec = _scripted_episode(guarded_task, replies, command_timeout_s=5, max_observation_chars=5000)
    finally:
        del os.environ["SYNTHSCALE_EPISODE_SECRET"]
        listener.close()
    # vim is blocked as MLGym blocks it: re-asked, no step spent (the reply is kept as the next step's format error)
    assert rec.infra_error is None and len(rec.steps) == len(replies) - 1
    assert rec.steps[0].format_errors == [replies[0]]
    obs = [None] + [s.observation for s in rec.steps]  # obs[i]: what reply i got
    assert "5" in obs[1] and ("interrupt" in obs[1].lower() or "timed out" in obs[1].lower())
    assert len(obs[2]) <= 5000 and "truncated" in obs[2]
    assert "abc\ufffd\ufffddef" in obs[3]
    assert "sk-should-never-leak" not in obs[8] and "SECRET=\n" in obs[8] + "\n"
    assert not Path("/etc/pwned").exists() and not Path("/usr/pwned").exists()
    assert "Killed" in obs[5] or "MemoryError" in obs[5]
    assert "No space left on device" in obs[6]
    assert "Traceback" in obs[7] and "Error" in obs[7]
    assert "Read-only file system" in obs[9]
    assert "read-only" in obs[11] and "hacked" not in obs[11].split("Error")[0]
    assert "Operation not permitted" in obs[12]
    assert "train.csv" in obs[12].split("\n", 1)[1]
    assert rec.scores[0].kind == "validate" and rec.scores[0].error is not None
    assert rec.exit_status == "submitted" and rec.scores[-1].ok
    assert "sk-should-never-leak" not in rec.model_dump_json()


def test_imported_mlgym_task_is_graded_mlgym_way_and_marked_so(tmp_path: Path) -> None:
    from engine.tasks.mlgym import import_mlgym_task

    mlgym = Path(__file__).resolve().parents[1] / "fixtures" / "mlgym"
    spec = import_mlgym_task(mlgym, "regressionKaggleHousePrice", tmp_path)
    rec = _scripted_episode(spec.root, [_say("validate"), _say("python baseline.py"), _say("validate"), _say("submit")])
    assert rec.scores[0].error.startswith("submission_not_found")  # nothing written yet
    assert rec.exit_status == "submitted"
    assert all(s.grading == "mlgym" for s in rec.scores)
    last = rec.scores[-1]
    assert last.ok and last.validation == last.test and "r2" in last.test


def test_step_context_and_cost_limits_autosubmit(guarded_task: Path, tmp_path: Path) -> None:
    rec = _scripted_episode(guarded_task, [_say("python baseline.py"), _say("ls")], max_steps=2)
    assert rec.exit_status == "autosubmission (max_steps)" and rec.scores[-1].ok
    assert rec.scores[-1].kind == "autosubmit"

    rec = _scripted_episode(guarded_task, [_say("ls")], max_context_tokens=300)
    assert rec.exit_status == "submission_not_found (exit_context)" and rec.steps == []

    # cost: a priced model behind a loopback server, called by the production client
    from engine.config import Price

    runtime = _runtime("local")
    task = load_task(guarded_task)
    with ChatCompletionsServer(ScriptedModel([_say("python baseline.py")] * 5)) as server:
        client = OpenAIChatModel(ModelConfig(provider="openai", name="scripted", base_url=server.base_url,
                                             prices={"scripted": Price(input_per_mtok=1e5, output_per_mtok=1e5)}))
        with runtime.start(SandboxSpec(workspace=task.workspace_dir)) as sb, \
                TaskGrader(task, runtime, timeout_s=120) as grader:
            rec = run_episode(task, client, sb, grader, AgentConfig(cost_limit_usd=0.5), seed=0, run_id="it",
                              sampling=SamplingConfig(), policy="scripted")
    assert rec.exit_status == "autosubmission (exit_cost)"
    assert len(rec.steps) == 1 and rec.cost_usd >= 0.5 and rec.scores[-1].ok
