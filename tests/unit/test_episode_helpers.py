"""Episode ids, exit statuses and the constant submission used by `task check`."""

from engine.agent.episode import _status, episode_id, estimate_tokens
from engine.records import ScoreRecord
from engine.tasks.check import constant_csv


def test_episode_id_is_deterministic_and_separates_models_and_seeds() -> None:
    a = episode_id("h1", "gpt-5", "mlgym-agent", 0)
    assert a == episode_id("h1", "gpt-5", "mlgym-agent", 0)
    assert len({a, episode_id("h1", "gpt-5", "mlgym-agent", 1), episode_id("h1", "qwen", "mlgym-agent", 0),
                episode_id("h2", "gpt-5", "mlgym-agent", 0)}) == 4


def _score(error: str | None) -> ScoreRecord:
    return ScoreRecord(step=1, kind="submit", test=None if error else {"a": 1.0}, metric="a", direction="max",
                       error=error)


def test_exit_statuses_follow_mlgym() -> None:
    assert _status(_score(None), "submitted") == "submitted"
    assert _status(_score(None), "autosubmission (max_steps)", "max_steps") == "autosubmission (max_steps)"
    assert _status(_score("submission_not_found: no x"), "submitted") == "submission_not_found (submitted)"
    assert _status(_score("evaluation_format_error: bad"), "x", "max_steps") == "evaluation_format_error (max_steps)"


def test_estimate_tokens() -> None:
    assert estimate_tokens([{"role": "user", "content": "x" * 400}]) == 104


def test_constant_csv_keeps_ids_and_repeats_the_first_prediction() -> None:
    out = constant_csv(b"id,label,score\n0,a,0.5\n1,b,0.7\n2,c,0.1\n").decode().splitlines()
    assert out == ["id,label,score", "0,a,0.5", "1,a,0.5", "2,a,0.5"]
