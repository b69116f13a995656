"""The scripted teacher's task code really runs: its baseline writes a submission the grader scores, and its
moves raise the score (subprocesses with the engine's Python; slow for a unit test, so it lives here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "unit"))
sys.path.insert(0, str(HERE.parent / "fixtures" / "teacher"))

import replies  # noqa: E402
from test_synth_codegen import _parts, _run, data_root, summary  # noqa: E402,F401  (fixtures)

from engine.synth.codegen import GeneratedCode, apply_move  # noqa: E402
from engine.tasks.folder import save_task  # noqa: E402


def test_fixture_code_runs_and_grades_on_the_tiny_dataset(tmp_path, data_root, summary):
    """The working baseline/evaluate pair follows the contract; the moves, applied in order, raise validation accuracy
    (each one does: 0.85 → 0.9 → 0.983, checked when the fixture was written; only the ends are run here)."""
    spec = save_task(_parts(data_root, summary, GeneratedCode.model_validate(replies.codegen_dict())), tmp_path / "t")
    ws, grader, submission = spec.workspace_dir, spec.grader_dir, str(spec.workspace_dir / "submission.csv")
    improved = replies.BASELINE_PY
    for move in replies.MOVES:
        improved = apply_move(improved, move["find"], move["replace"])
    accuracies = []
    for code in (replies.BASELINE_PY, improved):
        (ws / "baseline.py").write_text(code)
        built = _run(["baseline.py"], ws)
        assert built.returncode == 0, built.stderr
        graded = _run(["evaluate.py", "--submission_file", submission], grader)
        assert graded.returncode == 0, graded.stderr
        scores = json.loads(graded.stdout)
        assert graded.stdout.count("\n") == 1 and list(scores) == ["validation", "test"]
        assert list(scores["test"]) == ["accuracy"]
        accuracies.append(scores["validation"]["accuracy"])
    assert accuracies == [0.85, 0.9833333333333333]

    (ws / "submission.csv").write_text("id,rain\n0,1\n")
    short = _run(["evaluate.py", "--submission_file", submission], grader)
    assert short.returncode == 1 and short.stdout == ""
    assert "invalid submission: no prediction for 59 validation rows" in short.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "data").symlink_to(ws / "data")
    (broken / "baseline.py").write_text(replies.BASELINE_PY_IMPORT_TYPO)
    failed = _run(["baseline.py"], broken)
    assert failed.returncode == 1 and "ImportError: cannot import name 'DecisionTreeClasifier'" in failed.stderr
