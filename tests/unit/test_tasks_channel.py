"""The grader ↔ submission channel with plain processes over FIFOs (in a sandbox the same code runs under two uids):
calls and answers cross with their types; the metrics come from the grader alone, whatever the submission
prints or writes; a submission that raises, dies, hangs or answers garbage is the submission's own error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.tasks.channel import server_source, stand_in_source

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


def _run(tmp_path: Path, submission: str, call_timeout_s: float = 5.0, grader: str = GRADER) -> tuple[int, str]:
    g, a, ch = tmp_path / "grader", tmp_path / "agent", tmp_path / "channel"
    for d in (g, a, ch):
        d.mkdir(exist_ok=True)
    for fifo in ("calls", "answers"):
        if not (ch / fifo).exists():
            os.mkfifo(ch / fifo)
    (g / "strategy.py").write_text(stand_in_source("strategy.py", ["strategy"], str(ch), call_timeout_s=call_timeout_s))
    (g / "evaluate.py").write_text(grader)
    (a / "strategy.py").write_text(textwrap.dedent(submission))
    (a / "server.py").write_text(server_source())
    agent = subprocess.Popen(f"exec {sys.executable} server.py strategy.py strategy < {ch}/calls > {ch}/answers",
                             shell=True, cwd=a, stderr=subprocess.DEVNULL)
    grader = subprocess.run([sys.executable, "evaluate.py"], cwd=g, capture_output=True, text=True, timeout=60)
    fd = os.open(ch / "calls", os.O_RDWR)  # the grading's end: a server still waiting to open its calls gets EOF
    os.close(fd)
    agent.kill()
    agent.wait()
    return grader.returncode, grader.stdout + grader.stderr


def test_calls_cross_with_their_types_and_the_metrics_come_from_the_grader(tmp_path):
    code, out = _run(tmp_path, '''
        def strategy(history, weights):
            assert isinstance(history, list) and all(isinstance(h, tuple) for h in history), history
            assert weights == (1.5, 2)
            print("thinking hard")  # goes nowhere near the grader
            return 1 if len(history) % 2 else 0
    ''')
    assert code == 0 and json.loads(out.strip()) == {"validation": {"score": 2}, "test": {"score": 2}}


SEEDING_GRADER = '''
import json, random
from strategy import strategy
moves = []
for match in range(3):
    random.seed(1000 + match)  # seeds the submission's random too, as if it ran in this process
    moves += [strategy() for _ in range(4)]
print(json.dumps({"validation": {"score": moves}, "test": {"score": random.random()}}))
'''


def test_seeding_random_in_the_grader_seeds_the_submission_as_in_one_process(tmp_path):
    import random

    code, out = _run(tmp_path, '''
        import random
        def strategy():
            return random.randrange(1000)
    ''', grader=SEEDING_GRADER)
    expected = []
    for match in range(3):  # one process: the grader's seed is the strategy's
        random.seed(1000 + match)
        expected += [random.randrange(1000) for _ in range(4)]
    assert code == 0, out
    metrics = json.loads(out.strip())
    assert metrics["validation"]["score"] == expected
    random.seed(1002)
    assert metrics["test"]["score"] == random.random()  # the grader's own stream is untouched by the calls


@pytest.mark.parametrize("attack", [
    # write the metrics line to the process's stdout, then vanish
    'import os\ndef strategy(h, weights):\n    os.write(1, b\'{"validation": {"score": 1e300}, "test": {"score": 1e300}}\\n\')\n'
    '    os._exit(0)\n',
    # rewrite the caller's scoring through the main module
    'import sys\ndef strategy(h, weights):\n    sys.modules["__main__"].total = 10**9\n    return 0\n',
    # answer on every open descriptor (the channel's among them) with a forged result
    'import os\ndef strategy(h, weights):\n    for fd in range(3, 20):\n        try:\n'
    '            os.write(fd, b\'{"result": 1e300}\\n\')\n        except OSError:\n            pass\n    return 1\n',
])
def test_forged_scores_never_reach_the_metrics(tmp_path, attack):
    code, out = _run(tmp_path, attack, call_timeout_s=2)
    if code == 0:
        metrics = json.loads(out.strip().splitlines()[-1])
        assert 0 <= metrics["test"]["score"] <= 5
    else:
        assert "submission rejected" in out and "1e300" not in out.split("rejected", 1)[0]


def test_a_submission_that_raises_hangs_or_breaks_is_its_own_error(tmp_path):
    code, out = _run(tmp_path, "def strategy(h, weights):\n    raise ValueError('no idea')\n")
    assert code == 1 and "ValueError: no idea" in out
    code, out = _run(tmp_path, "import time\ndef strategy(h, weights):\n    time.sleep(60)\n", call_timeout_s=1)
    assert code == 1 and "did not answer within 1 s" in out
    code, out = _run(tmp_path, "raise SystemExit('bye')\n")
    assert code == 1 and "importing strategy.py raised" in out
    code, out = _run(tmp_path, "def other():\n    pass\n")
    assert code == 1 and "defines no function strategy" in out
