"""Grader for iterated-game-strategy: plays strategy.py against hidden opponents; prints the metrics JSON.

Usage: python evaluate.py   (strategy.py in the working directory)
Prints {"validation": {"score": ...}, "test": {"score": ...}}, or exits 1 with a message when the submission fails.
The score is the mean payoff per round over every match of the validation seeds and of the held-out test seeds.
Payoffs are 0..5, so the score is never negative.
"""

import contextlib
import importlib.util
import io
import json
import numbers
import random
import sys
from pathlib import Path

STAG, HARE = 0, 1
# (my action, their action) -> my payoff: a stag hunt with a bonus for hunting hare beside a stag hunter.
PAYOFF = {(STAG, STAG): 5, (STAG, HARE): 0, (HARE, STAG): 3, (HARE, HARE): 2}
VALIDATION_SEEDS = range(10)
TEST_SEEDS = range(100, 120)
MIN_ROUNDS, MAX_ROUNDS = 60, 120


# Opponents see their own history: (their_action, submitted_strategy_action) pairs.
def always_hare(history, rng):
    return HARE


def mostly_hare(history, rng):
    return STAG if rng.random() < 0.1 else HARE


def random_30(history, rng):
    return STAG if rng.random() < 0.3 else HARE


def suspicious_copycat(history, rng):
    return history[-1][1] if history else HARE


def cautious(history, rng):
    if len(history) < 2:
        return HARE
    return STAG if history[-1][1] == STAG and history[-2][1] == STAG else HARE


def copycat(history, rng):
    return history[-1][1] if history else STAG


def grudger(history, rng):
    return HARE if any(other == HARE for _, other in history) else STAG


def win_stay_lose_shift(history, rng):
    if not history:
        return STAG
    mine, other = history[-1]
    return mine if PAYOFF[(mine, other)] >= 3 else 1 - mine


def noisy_copycat(history, rng):
    action = history[-1][1] if history else STAG
    return 1 - action if rng.random() < 0.1 else action


def majority(history, rng):
    if not history:
        return STAG
    return STAG if 2 * sum(other == STAG for _, other in history) >= len(history) else HARE


def moody(history, rng):
    if not history:
        return STAG if rng.random() < 0.5 else HARE
    return 1 - history[-1][0] if rng.random() < 0.15 else history[-1][0]


OPPONENTS = [always_hare, mostly_hare, random_30, suspicious_copycat, cautious, copycat, grudger,
             win_stay_lose_shift, noisy_copycat, majority, moody]  # fmt: skip


def play_match(strategy, opponent, index: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed * 1000 + index)
    random.seed(seed * 1000 + index)  # a strategy that uses `random` is reproducible too
    history, total = [], 0
    for round_no in range(rng.randint(MIN_ROUNDS, MAX_ROUNDS)):
        try:
            mine = strategy(list(history))
        except Exception as e:  # the submission's own error
            fail(f"strategy raised {type(e).__name__}: {e} in round {round_no} against opponent #{index}")
        if isinstance(mine, bool) or not isinstance(mine, numbers.Integral) or mine not in (STAG, HARE):
            fail(f"strategy returned {mine!r}; return 0 (stag) or 1 (hare)")
        theirs = opponent([(b, a) for a, b in history], rng)
        total += PAYOFF[(int(mine), theirs)]
        history.append((int(mine), theirs))
    return total, len(history)


def score(strategy, seeds) -> float:
    total = rounds = 0
    for seed in seeds:
        for index, opponent in enumerate(OPPONENTS):
            payoff, n = play_match(strategy, opponent, index, seed)
            total, rounds = total + payoff, rounds + n
    return total / rounds


# The harness below is rendered from prompts/graders/python_submission.j2 for every Python-submission grader;
# change it there.
def fail(message):
    print(f"submission rejected: {message}", file=sys.__stderr__)
    sys.exit(1)


def load_strategy():
    path = Path.cwd() / "strategy.py"
    if not path.is_file():
        fail("strategy.py not found")
    spec = importlib.util.spec_from_file_location("submitted_strategy", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the submission's own error, reported to the agent
        fail(f"importing strategy.py raised {type(e).__name__}: {e}")
    if not callable(getattr(module, "strategy", None)):
        fail("strategy.py defines no function strategy(history)")
    return module.strategy


def main():
    # Whatever the submission prints is dropped: the grader's output must be the metrics JSON alone.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        strategy = load_strategy()
        try:
            result = {"validation": {"score": score(strategy, VALIDATION_SEEDS)},
                      "test": {"score": score(strategy, TEST_SEEDS)}}
        except Exception as e:  # the submission's own error, reported to the agent
            fail(f"playing the strategy raised {type(e).__name__}: {e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
