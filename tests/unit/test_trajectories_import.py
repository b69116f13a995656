"""Unit tests for the trajectory import: MLGym and mini-swe-agent files mapped field by field onto TrajectoryRecords,
the round trip through our own MLGym export, rejects, dedup and the shards written."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path, PurePath

import pytest

from engine.curate.filters import success_reason
from engine.errors import ArtifactError, ConfigError
from engine.records import HistoryConfig, ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.importers import (
    ImportOptions,
    TaskFacts,
    import_episode_id,
    import_trajectories,
    mini_record,
    mlgym_record,
    read_trajectory_file,
)
from engine.trajectories.importers import batch as batch_module
from engine.trajectories.importers import common as common_module
from engine.trajectories.importers import miniswe as miniswe_module
from engine.trajectories.importers import mlgym as mlgym_module
from engine.trajectories.importers.mlgym import parse_state, path_facts
from engine.trajectories.mlgym_export import export_mlgym
from engine.trajectories.store import TrajectoryWriter, read_trajectories, shard_paths

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traj"
LAYOUT = "tinyModel__{task}__default__t-0.00__p-0.95__c-4.00__install-0__parallel_agents_run_{run}"
BOS = FIXTURES / "mlgym" / LAYOUT.format(task="battleOfSexes", run=0) / "battleOfSexes.traj"
HOUSE = FIXTURES / "mlgym" / LAYOUT.format(task="regressionKaggleHousePrice", run=1) / "regressionKaggleHousePrice.traj"
CIFAR = FIXTURES / "mlgym" / LAYOUT.format(task="imageClassificationCifar10", run=0) / "imageClassificationCifar10.traj"
BLOTTO = FIXTURES / "mlgym" / LAYOUT.format(task="blotto", run=1) / "blotto.traj"
MINI = FIXTURES / "mini-swe-agent" / "demo__calc-1" / "demo__calc-1.traj.json"
WS = "/home/agent/workspace"
OPTS = ImportOptions(run_id="imp")


def _read(path: Path, opts: ImportOptions = OPTS) -> TrajectoryRecord:
    return read_trajectory_file(path, opts)


@pytest.mark.parametrize("module", [common_module, mlgym_module, miniswe_module, batch_module],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


# ---------------------------------------------------------------- MLGym


def test_submitted_mlgym_run_maps_field_by_field():
    rec = _read(BOS)
    assert rec.episode_id == import_episode_id(BOS.read_bytes())
    assert (rec.run_id, rec.task_id, rec.task_hash, rec.seed) == ("imp", "battleOfSexes", "", 0)
    assert (rec.model, rec.policy) == ("tinyModel", "imported:mlgym")
    assert rec.sampling == {"temperature": 0.0, "top_p": 0.95}
    assert rec.history == HistoryConfig(keep_last_observations=5)
    assert (rec.metric, rec.direction, rec.baseline) == ("Score", "max", {"Score": 1.0226699113845825})
    assert (rec.exit_status, rec.submission) == ("submitted", f"{WS}/target.py")
    assert (rec.tokens_sent, rec.tokens_received, rec.api_calls, rec.cost_usd) == (12551, 531, 4, 0.038)
    assert (rec.wall_time_s, rec.started_at, rec.infra_error) == (0.0, 0.0, None)
    # history: system, task, then assistant turns and observations; agent/thought/action are dropped
    assert [m["role"] for m in rec.messages] == ["system", "user"] + ["assistant", "user"] * 3 + ["assistant"]
    assert all(set(m) == {"role", "content"} for m in rec.messages)
    assert rec.messages[2]["content"] == "DISCUSSION\nSee what the workspace holds.\n\n```\nls\n```"
    assert rec.messages[3]["content"].startswith("evaluate.py*\nstrategy.py\ntarget.py\n(Current Step: 1,")
    assert rec.steps[0] == StepRecord(
        step=0, response="DISCUSSION\nSee what the workspace holds.\n\n```\nls\n```",
        thought="DISCUSSION\nSee what the workspace holds.\n\n", action="ls\n",
        observation="evaluate.py*\nstrategy.py\ntarget.py", open_file=None, working_dir=WS, execution_time_s=0.31)
    assert [s.action for s in rec.steps] == ["ls\n", 'open "strategy.py"\n', "validate\n", "submit\n"]
    # MLGym's state is taken before the action; ours after: step i gets step i+1's, the last its own
    assert [s.open_file for s in rec.steps] == [None, f"{WS}/strategy.py", f"{WS}/strategy.py", f"{WS}/strategy.py"]
    assert rec.scores == [
        ScoreRecord(step=2, kind="validate", validation={"Score": 1.1484}, test={"Score": 1.1484}, metric="Score",
                    direction="max", grading="mlgym", artefact=f"{WS}/target.py"),
        ScoreRecord(step=3, kind="submit", validation={"Score": 1.2636}, test={"Score": 1.2636}, metric="Score",
                    direction="max", grading="mlgym", artefact=f"{WS}/target.py"),
    ]
    assert rec.succeeded and success_reason(rec, beat_baseline=True) is None


def test_autosubmission_scores_the_last_step_and_a_failed_validate_leaves_no_score():
    rec = _read(HOUSE)
    assert (rec.seed, rec.exit_status, rec.metric, rec.direction) == (1, "autosubmission (max_steps)", "r2", "max")
    assert rec.scores == [ScoreRecord(step=2, kind="autosubmit", validation={"rmse": 29210.5, "r2": 0.8841},
                                      test={"rmse": 29210.5, "r2": 0.8841}, metric="r2", direction="max",
                                      grading="mlgym", artefact=f"{WS}/submission.csv")]
    assert rec.baseline == {"rmse": 30340.11, "r2": 0.8799}
    assert rec.succeeded and success_reason(rec, beat_baseline=True) is None  # 0.8841 > 0.8799


def test_a_run_that_never_scored_gets_its_failed_final_scoring():
    rec = _read(CIFAR)
    assert rec.submission is None and rec.exit_status == "evaluation_format_error (submit)"
    assert rec.scores == [ScoreRecord(step=1, kind="submit", metric="accuracy", direction="max", grading="mlgym",
                                      error="evaluation_format_error (submit)")]
    assert not rec.succeeded and success_reason(rec) == "no_successful_score"
    assert rec.baseline == {"accuracy": 0.4971}


def test_mlgym_file_in_the_current_writers_key_order_with_a_format_exit_and_negative_scores():
    # blotto.traj: steps keyed state, response, thought, action, execution_time, observation (MLGym's writer today)
    rec = _read(BLOTTO)
    assert (rec.model, rec.seed, rec.task_id, rec.metric, rec.direction) == ("tinyModel", 1, "blotto", "Score", "max")
    assert (rec.exit_status, rec.submission) == ("autosubmission (exit_format)", f"{WS}/target.py")
    assert rec.baseline == {"Score": -0.24797001481056213} and rec.cost_usd == 0.0421
    assert [s.action for s in rec.steps] == ['open "strategy.py"\n', "validate\n", "exit_format"]
    assert [s.thought.split("\n")[0] for s in rec.steps] == ["DISCUSSION", "DISCUSSION", "Exit due to format error"]
    assert [s.open_file for s in rec.steps] == [f"{WS}/strategy.py"] * 3  # the state after each action
    assert rec.steps[2].observation == "Exited (exit_format)"
    assert [(s.kind, s.step, s.test) for s in rec.scores] == [("validate", 1, {"Score": -0.0835}),
                                                              ("autosubmit", 2, {"Score": 0.0123})]
    assert [m["role"] for m in rec.messages] == ["system", "user"] + ["assistant", "user"] * 2 + ["assistant"]
    assert rec.succeeded and success_reason(rec, beat_baseline=True) is None  # 0.0123 > −0.248


@pytest.mark.parametrize("state, expected", [
    ('{"open_file": "n/a", "working_dir": "/w"}', (None, "/w")),
    ('{"open_file": "/w/a.py", "working_dir": "/w", "memory_records_num": "4"}', ("/w/a.py", "/w")),
    ({"open_file": "/w/b.py", "working_dir": "/w"}, ("/w/b.py", "/w")),  # SWE-agent keeps an object
    ("", (None, "")),
    ("not json", (None, "")),
    (None, (None, "")),
])
def test_state_is_a_json_string_or_an_object(state, expected):
    assert parse_state(state) == expected


def test_path_facts_of_our_own_export_layout():
    assert path_facts(PurePath("Qwen-Qwen3-8B__iris__run_3/iris.traj")) == {
        "task_id": "iris", "model": "Qwen-Qwen3-8B", "run": 3, "sampling": {}}


def _copy_as(src: Path, dest_dir: Path, task: str) -> Path:
    folder = dest_dir / LAYOUT.format(task=task, run=0)
    folder.mkdir(parents=True)
    dest = folder / f"{task}.traj"
    shutil.copy(src, dest)
    return dest


def test_unknown_metric_scores_count_for_the_success_filter_but_not_beat_baseline(tmp_path):
    rec = _read(_copy_as(BOS, tmp_path, "myGame"))  # no results.json, no known task
    assert (rec.task_id, rec.metric, rec.direction, rec.baseline) == ("myGame", "", "max", {})
    assert [(s.metric, s.direction, s.ok) for s in rec.scores] == [("Score", "max", True)] * 2
    assert success_reason(rec) is None
    assert success_reason(rec, beat_baseline=True) == "no_baseline"


def test_options_and_task_facts_fill_what_the_file_lacks(tmp_path):
    path = _copy_as(BOS, tmp_path, "myGame")
    facts = TaskFacts(metric="Score", direction="max", task_hash="h123", baseline={"Score": 1.0})
    rec = _read(path, ImportOptions(run_id="r", tasks={"myGame": facts}, source="mlgym-bench-v0"))
    assert (rec.metric, rec.task_hash, rec.baseline, rec.policy) == ("Score", "h123", {"Score": 1.0},
                                                                     "imported:mlgym-bench-v0")
    rec = _read(path, ImportOptions(run_id="r", task_id="game2", model="m2", metric="Score", direction="min"))
    assert (rec.task_id, rec.model, rec.metric, rec.direction) == ("game2", "m2", "Score", "min")
    assert {(s.metric, s.direction) for s in rec.scores} == {("Score", "min")}


def test_metric_without_direction_is_refused():
    with pytest.raises(ConfigError, match="--metric and --direction go together"):
        ImportOptions(run_id="r", metric="Score")


def test_a_demonstration_before_the_task_joins_the_task_message():
    doc = json.loads(BOS.read_text())
    doc["history"].insert(1, {"role": "user", "content": "DEMO", "agent": "primary_0", "is_demo": True})
    rec = mlgym_record(doc, BOS, "e1", OPTS)
    assert rec.messages[1]["content"].startswith("DEMO\n\nPlay the row player")
    assert len(rec.messages) == 9 and rec.episode_id == "e1"


def test_swe_agent_replay_config_names_the_model():
    doc = json.loads(BOS.read_text())
    doc["replay_config"] = json.dumps({"agent": {"model": {"name": "gpt-4o", "temperature": 0.0, "top_p": 1.0}}})
    rec = mlgym_record(doc, PurePath("x/battleOfSexes.traj"), "e1", OPTS)
    assert (rec.model, rec.sampling, rec.policy) == ("gpt-4o", {"temperature": 0.0, "top_p": 1.0}, "imported:swe-agent")


# ---------------------------------------------------------------- mini-swe-agent


def test_mini_swe_agent_tool_call_run_maps_field_by_field():
    rec = _read(MINI)
    fix = "sed -i 's/a - b/a + b/' calc.py && echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git diff"
    assert (rec.task_id, rec.model, rec.policy, rec.seed) == ("demo__calc-1", "openai/gpt-5-mini",
                                                              "imported:mini-swe-agent", 0)
    assert rec.sampling == {"temperature": 0.0}
    assert rec.exit_status == "Submitted" and rec.submission.startswith("diff --git a/calc.py")
    assert (rec.tokens_sent, rec.tokens_received, rec.api_calls, rec.cost_usd) == (2870, 112, 3, 0.0042)
    assert (rec.started_at, rec.wall_time_s) == (1700000001.0, 4.5)
    assert rec.scores == [] and rec.metric == "" and not rec.succeeded
    assert rec.history.keep_last_observations == 2
    system = "You fix bugs with bash. Finish with: echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
    output = "<returncode>0</returncode>\n<output>\ndef add(a, b):\n    return a - b\n</output>"
    assert rec.messages == [
        {"role": "system", "content": system},
        {"role": "user", "content": "add(2, 2) returns 0 in calc.py; fix it."},
        {"role": "assistant", "content": "Look at the file first.\n\n```\ncat calc.py\n```"},
        {"role": "user", "content": output},
        {"role": "assistant", "content": f"Fix the sign and submit the diff.\n\n```\n{fix}\n```"},
    ]
    assert rec.steps == [
        StepRecord(step=0, response="Look at the file first.\n\n```\ncat calc.py\n```",
                   thought="Look at the file first.",
                   action="cat calc.py", observation="def add(a, b):\n    return a - b\n", working_dir="/testbed",
                   prompt_tokens=900, completion_tokens=40, cost_usd=0.0012),
        StepRecord(step=1, response=f"Fix the sign and submit the diff.\n\n```\n{fix}\n```",
                   thought="Fix the sign and submit the diff.", action=fix, observation="", working_dir="/testbed",
                   prompt_tokens=1010, completion_tokens=60, cost_usd=0.002, format_errors=["The sign is wrong."]),
    ]


def test_mini_swe_agent_v1_text_and_a_bare_message_list():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
                {"role": "assistant", "content": "THOUGHT: list.\n\n```bash\nls -la\n```"},
                {"role": "user", "content": "<returncode>0</returncode>\n<output>\na.py\n</output>"}]
    v1 = {"info": {"exit_status": "LimitsExceeded", "submission": "", "mini_version": "1.9.0",
                   "model_stats": {"instance_cost": 0.5, "api_calls": 1},
                   "config": {"model": {"model_name": "claude", "model_kwargs": {"top_p": 0.9, "stop": ["x"]}}}},
          "messages": messages, "trajectory_format": "mini-swe-agent-1"}
    rec = mini_record(v1, PurePath("out/run.traj.json"), "e1", OPTS)
    assert (rec.task_id, rec.model, rec.sampling, rec.exit_status, rec.submission) == (
        "run", "claude", {"top_p": 0.9}, "LimitsExceeded", None)
    assert (rec.steps[0].thought, rec.steps[0].action) == ("THOUGHT: list.", "ls -la")
    assert rec.steps[0].observation == messages[3]["content"] and rec.messages == messages
    bare = mini_record(messages, PurePath("old.traj.json"), "e2", OPTS)
    assert (bare.task_id, bare.model, bare.exit_status, len(bare.steps)) == ("old", "unknown", "", 1)


# ---------------------------------------------------------------- round trip through our export


def _own_record(episode_id: str, seed: int, model: str = "Qwen/Qwen3-8B") -> TrajectoryRecord:
    steps = [
        StepRecord(step=0, response="Look.\n```\nopen \"train.py\"\n```", thought="Look.", action='open "train.py"',
                   observation="[File: train.py (3 lines total)]", open_file="train.py", working_dir="/ws",
                   execution_time_s=0.25, reasoning="Read it first.", model_latency_s=1.5, prompt_tokens=300,
                   completion_tokens=20, cost_usd=0.001, format_errors=["no block"]),
        StepRecord(step=1, response="Check.\n```\nvalidate\n```", thought="Check.", action="validate",
                   observation="Your submission was evaluated.", open_file=None, working_dir="/ws",
                   execution_time_s=4.5),
        StepRecord(step=2, response="Done.\n```\nsubmit\n```", thought="Done.", action="submit", observation="",
                   open_file=None, working_dir="/ws/sub", execution_time_s=0.1 + 0.2),
    ]
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Task"}]
    for s in steps:
        messages += [{"role": "assistant", "content": s.response}, {"role": "user", "content": s.observation + "\n(f)"}]
    messages[2]["reasoning_content"] = "Read it first."
    scores = [ScoreRecord(step=1, kind="validate", validation={"acc": 0.9}, test={"acc": 0.85}, metric="acc",
                          direction="max", artefact="submission.csv"),
              ScoreRecord(step=2, kind="submit", metric="acc", direction="max", error="grader crashed"),
              ScoreRecord(step=2, kind="autosubmit", test={"acc": 0.8}, metric="acc", direction="max", grading="mlgym")]
    return TrajectoryRecord(
        run_id="r1", task_id="iris", task_hash="th", episode_id=episode_id, seed=seed, model=model, policy="openai",
        sampling={"temperature": 1.0, "top_p": None, "max_tokens": 4096}, messages=messages, steps=steps,
        scores=scores, baseline={"acc": 0.6}, metric="acc", direction="max", exit_status="submitted",
        submission="submission.csv", tokens_sent=1000, tokens_received=50, api_calls=3, cost_usd=0.0125,
        wall_time_s=10.5, started_at=1234.5, history=HistoryConfig(keep_last_observations=3, max_observation_chars=999))


def test_export_then_import_gives_back_the_same_record(tmp_path):
    originals = [_own_record("ep-a", 0), _own_record("ep-b", 1), _own_record("ep-c", 0, model="other/m")]
    failed = _own_record("ep-infra", 2).model_copy(update={"infra_error": "node lost"})
    export_mlgym([*originals, failed], tmp_path / "export")
    report = import_trajectories(tmp_path / "export", tmp_path / "run", ImportOptions(run_id="run"))
    assert (report.files, report.imported, report.rejects) == (3, 3, [])  # infra failures are not exported
    back = {r.episode_id: r for r in read_trajectories(str(tmp_path / "run"))}
    for original in originals:
        imported = back[original.episode_id]
        for name in TrajectoryRecord.model_fields:  # messages (with reasoning), steps, scores, history settings, …
            assert getattr(imported, name) == getattr(original, name), name
    # the run that made them holds them already: they keep their ids, so nothing is stored twice
    TrajectoryWriter(tmp_path / "origin").write(originals)
    again = import_trajectories(tmp_path / "export", tmp_path / "origin", ImportOptions(run_id="origin"))
    assert (again.imported, again.already_stored) == (0, 3)


# ---------------------------------------------------------------- the batch: rejects, dedup, shards


def test_bad_files_are_counted_rejects_and_good_ones_still_import(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES, src)
    (src / "notjson.traj").write_text("{not json")
    (src / "latin1.traj").write_bytes('{"trajectory": [], "history": [], "info": {"x": "caf\xe9"}}'.encode("latin-1"))
    (src / "nohistory.traj").write_text(json.dumps({"trajectory": [], "info": {}}))
    (src / "numbers.traj.json").write_text("[1, 2]")
    (src / "badstep.traj").write_text(json.dumps({"trajectory": [{"action": 3}], "history": [], "info": {}}))
    report = import_trajectories(src, tmp_path / "run", OPTS)
    assert (report.files, report.imported) == (10, 5)
    reasons = {Path(r.path).name: (r.reason, r.detail) for r in report.rejects}
    assert reasons["notjson.traj"] == ("not_json", "line 1 column 2: Expecting property name enclosed in double quotes")
    assert reasons["latin1.traj"][0] == "not_utf8"
    assert reasons["nohistory.traj"] == (
        "not_a_trajectory",
        "lacks 'history' (an MLGym/SWE-agent .traj has both) and 'messages' (mini-swe-agent); its keys: "
        "['info', 'trajectory']")
    assert reasons["numbers.traj.json"][0] == "not_a_trajectory"
    assert reasons["badstep.traj"] == ("malformed", "trajectory[0].action is int 3, expected a string")
    assert report.rejects_by_reason == {"malformed": 1, "not_a_trajectory": 2, "not_json": 1, "not_utf8": 1}


def test_reimport_stores_nothing_twice_and_keeps_what_was_stored(tmp_path):
    run = tmp_path / "run"
    first = import_trajectories(FIXTURES, run, OPTS)
    before = read_trajectories(str(run))
    shards = shard_paths(str(run))
    again = import_trajectories(FIXTURES, run, OPTS)
    assert (first.imported, len(first.shards), again.imported, again.already_stored, again.shards) == (5, 1, 0, 5, [])
    assert shard_paths(str(run)) == shards and read_trajectories(str(run)) == before


def test_two_copies_of_one_file_are_one_episode_and_batches_are_shards(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES, src)
    shutil.copytree(MINI.parent, src / "again")
    report = import_trajectories(src, tmp_path / "run", OPTS, batch_size=2)
    assert (report.files, report.imported, report.duplicates, len(report.shards)) == (6, 5, 1, 3)
    assert len(read_trajectories(str(tmp_path / "run"))) == 5


def test_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="no .traj or .traj.json files in it or below"):
        import_trajectories(tmp_path, tmp_path / "run", OPTS)
    with pytest.raises(ArtifactError, match="no such file or directory"):
        import_trajectories(tmp_path / "missing", tmp_path / "run", OPTS)
