"""Unit tests for trajectory rendering: header fields, steps, trimming, scores, summary table."""

from __future__ import annotations

from engine.records import ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.render import best_score, render_summary, render_trajectory, score_line, trim_text


def record(episode_id: str = "ep-123", direction: str = "max", **kw) -> TrajectoryRecord:
    observation = "\n".join(f"line {i}" for i in range(100))
    steps = [
        StepRecord(step=0, response="r0", thought="Inspect the [bold]data[/bold] first.", action="ls data/",
                   observation=observation, execution_time_s=0.5, format_errors=["no command block"]),
        StepRecord(step=1, response="r1", thought="Score it.", action="validate", observation="ok"),
    ]
    scores = [
        ScoreRecord(step=1, kind="validate", validation={"rmse": 0.5}, test={"rmse": 0.75}, metric="rmse",
                    direction=direction),
        ScoreRecord(step=2, kind="submit", validation={"rmse": 0.25}, test={"rmse": 0.3}, metric="rmse",
                    direction=direction),
        ScoreRecord(step=2, kind="autosubmit", metric="rmse", direction=direction, error="submission.csv not found"),
    ]
    fields = dict(run_id="r1", task_id="housePrices", task_hash="h", episode_id=episode_id, seed=4,
                  model="gpt-5-mini", policy="agent", steps=steps, scores=scores, baseline={"rmse": 1.0},
                  metric="rmse", direction=direction, exit_status="submitted", tokens_sent=900, tokens_received=40,
                  api_calls=2, cost_usd=0.0123, wall_time_s=12.0)
    return TrajectoryRecord(**(fields | kw))


def test_trim_text_keeps_head_and_tail():
    assert trim_text("1\n2\n3\n4\n5", 2, 1, 100) == "1\n2\n… 2 lines omitted …\n5"
    assert trim_text("short", 2, 1, 100) == "short"
    assert trim_text("abcdefghij", 10, 0, 4) == "ab\n… 6 chars omitted …\nij"


def test_score_line():
    scores = record().scores
    assert score_line(scores[0]) == "validate @ step 1: validation rmse=0.5 | test rmse=0.75"
    assert score_line(scores[2]) == "autosubmit @ step 2: error: submission.csv not found"


def test_best_score_follows_direction():
    assert best_score(record(direction="min"), "visible") == 0.25
    assert best_score(record(direction="min"), "test") == 0.3
    assert best_score(record(direction="max"), "visible") == 0.5
    assert best_score(record(scores=[]), "visible") is None


def test_render_trajectory_shows_header_steps_and_scores():
    text = render_trajectory(record(direction="min"), width=100)
    for expected in ["task: housePrices", "model: gpt-5-mini", "episode: ep-123", "exit status: submitted",
                     "best validation: 0.25", "best test: 0.3", "baseline: rmse=1", "cost: $0.0123",
                     "step 0", "step 1", "(re-asked 1× after format errors)",
                     "thought: Inspect the [bold]data[/bold] first.", "│ ls data/", "line 0", "line 99",
                     "… 70 lines omitted …", "score: validate @ step 1: validation rmse=0.5 | test rmse=0.75",
                     "scores after the last step", "score: submit @ step 2: validation rmse=0.25 | test rmse=0.3"]:
        assert expected in text, expected
    assert "line 50" not in text
    assert "\x1b[" not in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_render_infra_error_and_color():
    text = render_trajectory(record(infra_error="node lost"), color=True)
    assert "infra error: node lost" in text
    assert "\x1b[" in text


def test_render_summary_lists_episodes():
    text = render_summary([record("ep-1", direction="min"), record("ep-2", exit_status="", infra_error="oom")],
                          width=140)
    assert "2 episodes" in text
    lines = [line for line in text.splitlines() if "ep-1" in line or "ep-2" in line]
    assert len(lines) == 2
    assert all(word in lines[0] for word in ["housePrices", "gpt-5-mini", "submitted", "0.25", "2", "0.0123"])
    assert "infra error: oom" in lines[1]
    assert "2 with a successful scoring; total cost $0.0246" in text
