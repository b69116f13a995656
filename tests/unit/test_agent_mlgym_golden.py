"""Golden tests: what the agent sees matches MLGym's texts, hand-written in tests/fixtures/mlgym/observations/ from
MLGym's published .traj files and tools. Also: MLGym's prose is read from an MLGym-layout agent YAML."""

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_agent_environment import RecordingScorer, _sandbox

from engine.agent.environment import AgentEnvironment
from engine.agent.episode import MLGymScoreText, _ask, _observation_message, _Totals, initial_messages
from engine.agent.history import build_prompt
from engine.agent.observation import EMPTY_OUTPUT, timeout_notice
from engine.config import AgentConfig, SamplingConfig
from engine.prompting import load_mlgym_prompts
from engine.protocols import Completion, ShellResult
from engine.records import ScoreRecord, TrajectoryRecord
from engine.tasks.spec import TaskConfig

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mlgym" / "observations"


def golden(name: str, **subst: str) -> str:
    text = (FIXTURES / name).read_text()
    for k, v in subst.items():
        text = text.replace(k, v)
    return text


def _env(ws: Path, **cfg: object) -> AgentEnvironment:
    return AgentEnvironment(_sandbox(ws), AgentConfig(**{"command_timeout_s": 5.0, **cfg}), training_timeout_s=60.0,
                            read_only_paths=[], scorer=RecordingScorer())


def test_open_shows_a_1000_line_window(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_text("".join(f"x{i} = {i}\n" for i in range(1, 1201)))
    env = _env(tmp_path.resolve())
    lines = env.execute("open big.py", 0).observation.splitlines()
    assert lines[0] == f"[File: {tmp_path.resolve()}/big.py (1200 lines total)]"
    assert lines[1] == "1:x1 = 1" and lines[1000] == "1000:x1000 = 1000"
    assert lines[1001:] == ["(200 more lines below)"]
    assert env.execute("open big.py 600", 1).observation.splitlines()[1:3] == ["(200 more lines above)",
                                                                               "201:x201 = 201"]


def test_search_dir_takes_a_regex_and_skips_hidden_paths(tmp_path: Path) -> None:
    ws = tmp_path.resolve()
    (ws / "src").mkdir()
    (ws / "src" / "model.py").write_text("lr = 0.1\nepochs = 3\nlr_decay = 0.5\n")
    (ws / ".cache").mkdir()
    (ws / ".cache" / "old.py").write_text("lr = 9\n")
    env = _env(ws)
    assert env.execute('search_dir "lr.*="', 0).observation == golden("search_dir.txt", WORKDIR=str(ws))


def _record(**kw: object) -> ScoreRecord:
    return ScoreRecord(step=3, kind="validate", metric="r2", direction="max", **kw)


def test_validate_and_submit_observations() -> None:
    scorer = SimpleNamespace(task=SimpleNamespace(baseline={"r2": 0.8}), records=[])
    scorer.record = lambda kind, step: _record(validation={"r2": 0.9}, artefact="submission.csv")
    text = MLGymScoreText(scorer, "/home/agent/workspace")
    assert text.score("validate", 3) == golden("validate.txt")
    assert text.score("submit", 4) == golden("submit.txt")
    scorer.record = lambda kind, step: _record(error="submission_not_found: no submission.csv in the workspace")
    assert text.score("validate", 5).startswith("Submission artefact not found. You have to produce")


def test_empty_output_and_footer(tmp_path: Path) -> None:
    env = _env(tmp_path.resolve())
    obs = env.execute("true", 0).observation
    assert obs == EMPTY_OUTPUT
    assert _observation_message(obs, env, 1, 49, None) == golden("empty_output.txt", WORKDIR=str(tmp_path.resolve()))


def test_timeout_notice_follows_the_output(tmp_path: Path) -> None:
    env = _env(tmp_path.resolve(), command_timeout_s=25.0)
    env._shell = SimpleNamespace(alive=True, close=lambda: None, run=lambda c, t, on_call=None: ShellResult(
        exit_code=137, output="epoch 1\n", timed_out=True, cwd=env.workdir))
    assert env.execute("sleep 99", 0).observation == "epoch 1" + golden("timeout.txt")
    assert golden("timeout.txt") == timeout_notice(25, restarted=False)


class _Model:
    name = "fake"

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.prompts = list(replies), []

    def complete(self, messages, params) -> Completion:
        self.prompts.append(copy.deepcopy(messages))
        return Completion(text=self.replies.pop(0))


def _rec() -> TrajectoryRecord:
    return TrajectoryRecord(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="fake", policy="p")


def test_format_error_and_blocked_command_are_reasked_without_a_step() -> None:
    model = _Model(["no block", "DISCUSSION\nedit\n```\nvim a.py\n```", "DISCUSSION\nlook\n```\nls\n```"])
    completion, parsed, reasks = _ask(model, [], _rec(), 0, AgentConfig(), SamplingConfig(), _Totals())
    assert parsed.action == "ls" and len(reasks) == 2
    assert model.prompts[1][-1]["content"] == golden("format_error.txt")
    assert model.prompts[2][-1]["content"] == golden("blocked.txt")
    assert model.prompts[2][-2]["content"].endswith("vim a.py\n```")


def test_step_zero_task_message_and_elision() -> None:
    task = SimpleNamespace(config=TaskConfig(id="t", name="T", description="Do it.", metric="m"), datasets=[],
                           baseline={}, read_only_paths=[])
    messages = initial_messages(task, AgentConfig())
    assert messages[1]["content"].endswith("\n" + golden("step0_footer.txt"))
    history = messages + [m for i in range(6) for m in ({"role": "assistant", "content": f"A{i}"},
                                                         {"role": "user", "content": "o\n" * 2 + golden("step0_footer.txt")})]
    assert build_prompt(history, 5)[3]["content"] == golden("elision.txt")


def _mlgym_checkout(root: Path) -> Path:
    (root / "configs" / "agents").mkdir(parents=True)
    (root / "tools").mkdir()
    (root / "tools" / "nav.sh").write_text(
        "# @yaml\n# signature: goto <line_number>\n# docstring: moves the window ({WINDOW} lines)\n"
        "# arguments:\n#   line_number:\n#     type: integer\n#     description: where\n#     required: true\n"
        "goto() {\n  :\n}\n_helper() {\n  :\n}\n")
    cfg = root / "configs" / "agents" / "mine.yaml"
    cfg.write_text(
        "system_template: |-\n  Window {WINDOW}, limit {training_timeout}.\n  {command_docs}\n  END\n"
        "task_template: |-\n  TASK: {description}\n  (Current Step: {current_step}, Remaining Steps: {remaining_steps})\n"
        "  (Open file: {open_file})\n  (Current directory: {working_dir})\n  bash-$\n"
        "next_step_template: |-\n  {observation}\n  (Step {current_step})\n"
        "next_step_no_output_template: |-\n  Nothing.\n  (Step {current_step})\n"
        "tools:\n  env_variables:\n    WINDOW: 100\n    OVERLAP: 2\n  command_files:\n  - tools/nav.sh\n")
    return cfg


def test_prompts_are_read_from_an_mlgym_agent_config(tmp_path: Path) -> None:
    cfg_path = _mlgym_checkout(tmp_path)
    cfg = AgentConfig(mlgym_config=cfg_path, max_steps=7)
    task = SimpleNamespace(config=TaskConfig(id="t", name="T", description="Do it.", metric="m",
                                             training_timeout=1800), datasets=[], baseline={}, read_only_paths=[])
    system, first = initial_messages(task, cfg, "/w")
    assert system["content"] == (
        "Window 1000, limit 1800.\ngoto:\n  docstring: moves the window (1000 lines)\n  signature: goto <line_number>\n"
        "  arguments:\n    - line_number (integer) [required]: where\n\n\nEND")
    assert first["content"] == ("TASK: Do it.\n(Current Step: 0, Remaining Steps: 7)\n(Open file: n/a)\n"
                                "(Current directory: /w)\nbash-$")
    prompts = load_mlgym_prompts(cfg_path)
    env = SimpleNamespace(open_file=None, cwd="/w")
    assert _observation_message("out", env, 2, 5, prompts) == "out\n(Step 2)"
    assert _observation_message(EMPTY_OUTPUT, env, 2, 5, prompts) == "Nothing.\n(Step 2)"


def test_a_missing_mlgym_config_is_a_config_error(tmp_path: Path) -> None:
    from engine.errors import ConfigError
    with pytest.raises(ConfigError, match="cannot read MLGym agent config"):
        load_mlgym_prompts(tmp_path / "nope.yaml")
