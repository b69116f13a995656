"""The grader ↔ submission channel with plain processes (the sandboxes add isolation around the same code): calls
and answers cross with their types; the metrics come from the grader alone, whatever the submission prints or
writes to its descriptors; a submission that raises, dies, hangs or answers garbage is the submission's error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.tasks.channel import Relay, server_source, stand_in_source

GRADER = '''
import json, sys
from strategy import strategy, SubmissionError
total = 0
try:
    for n in range(5):
        move = strategy([(0, 1)] * n, weights=(1.5, 2))
        if move not in (0, 1):  # a grader checks every move it is given
            raise SubmissionError(f"strategy returned {move!r}, not 0 or 1")
        total += move
except SubmissionError as e:
    print(f"submission rejected: {e}", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"validation": {"score": total}, "test": {"score": total}}))
'''


def _run(tmp_path: Path, submission: str, grader: str = GRADER, call_timeout_s: float = 5.0):
    g, a = tmp_path / "grader", tmp_path / "agent"
    g.mkdir(exist_ok=True)
    a.mkdir(exist_ok=True)
    (g / "strategy.py").write_text(stand_in_source("strategy.py", ["strategy"]))
    (g / "evaluate.py").write_text(grader)
    (a / "strategy.py").write_text(textwrap.dedent(submission))
    (a / "server.py").write_text(server_source())
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    grader_p = subprocess.Popen([sys.executable, "evaluate.py"], cwd=g, stderr=subprocess.STDOUT, **pipes)
    agent_p = subprocess.Popen([sys.executable, "server.py", "strategy.py", "strategy"], cwd=a,
                               stderr=subprocess.DEVNULL, **pipes)
    return Relay(grader_p, agent_p, call_timeout_s=call_timeout_s).run(timeout_s=30)


def test_calls_cross_with_their_types_and_the_metrics_come_from_the_grader(tmp_path):
    res = _run(tmp_path, '''
        def strategy(history, weights):
            assert isinstance(history, list) and all(isinstance(h, tuple) for h in history), history
            assert weights == (1.5, 2)
            print("thinking hard")  # goes nowhere near the grader
            return 1 if len(history) % 2 else 0
    ''')
    assert res.exit_code == 0 and res.calls == 5 and res.submission_error is None
    assert json.loads(res.output.strip()) == {"validation": {"score": 2}, "test": {"score": 2}}


@pytest.mark.parametrize("attack", [
    # write the metrics line straight to the process's stdout, then vanish
    'import os\ndef strategy(h, weights):\n    os.write(1, b\'{"validation": {"score": 1e300}, "test": {"score": 1e300}}\\n\')\n'
    '    os._exit(0)\n',
    # rewrite the caller's scoring through the main module
    'import sys\ndef strategy(h, weights):\n    sys.modules["__main__"].total = 10**9\n    return 0\n',
    # answer on every open descriptor (the channel's among them) with a forged result
    'import os\ndef strategy(h, weights):\n    for fd in range(3, 20):\n        try:\n'
    '            os.write(fd, b\'{"result": 1e300}\\n\')\n        except OSError:\n            pass\n    return 1\n',
])
def test_forged_scores_never_reach_the_metrics(tmp_path, attack):
    res = _run(tmp_path, attack)
    if res.exit_code == 0:
        metrics = json.loads(res.output.strip().splitlines()[-1])
        assert 0 <= metrics["test"]["score"] <= 5
    else:
        assert "submission rejected" in res.output  # the grader refused what the submission answered


def test_a_submission_that_raises_hangs_or_breaks_is_its_own_error(tmp_path):
    res = _run(tmp_path, "def strategy(h, weights):\n    raise ValueError('no idea')\n")
    assert res.exit_code == 1 and "ValueError: no idea" in res.submission_error
    res = _run(tmp_path, "import time\ndef strategy(h, weights):\n    time.sleep(60)\n", call_timeout_s=1)
    assert res.exit_code == 1 and "did not answer within 1 s" in res.submission_error
    res = _run(tmp_path, "raise SystemExit('bye')\n")
    assert res.exit_code == 1 and res.submission_error.startswith("importing strategy.py raised")
    res = _run(tmp_path, "def other():\n    pass\n")
    assert res.exit_code == 1 and "defines no function strategy" in res.submission_error
