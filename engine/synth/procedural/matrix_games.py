"""Family matrix_games: iterated 2x2 and 3x3 games with sampled payoffs and opponent pools (never MLGym's games)."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
from typing import Any

from engine.errors import TaskError
from engine.synth.procedural.common import (Candidate, Family, Params, better, heuristic_yaml, improving_chain,
                                            python_grader, task_config, task_id)
from engine.tasks.folder import TaskParts

NAME = "matrix_games"
KINDS = ("dilemma", "stag_hunt", "chicken", "coordination", "cyclic3")
OPPONENTS_2 = ("always_0", "always_1", "random_half", "mostly_0", "copycat", "suspicious_copycat", "grudger",
               "pavlov", "alternator", "majority", "myopic", "fictitious", "noisy_copycat")
OPPONENTS_3 = ("always_0", "always_1", "always_2", "cycler", "copycat", "beat_last", "biased", "fictitious",
               "random_third", "sticky")
ROUNDS = ((20, 60), (50, 100), (100, 200))
# What the description may say about a pool: how many opponents of each broad kind it holds (not which ones).
STYLES = {"always_0": "fixed", "always_1": "fixed", "always_2": "fixed", "alternator": "pattern", "cycler": "pattern",
          "random_half": "random", "random_third": "random", "mostly_0": "random", "biased": "random",
          "sticky": "random", "copycat": "reciprocating", "suspicious_copycat": "reciprocating",
          "noisy_copycat": "reciprocating", "pavlov": "reciprocating", "grudger": "grudge-holding",
          "majority": "adaptive", "myopic": "adaptive", "fictitious": "adaptive", "beat_last": "adaptive"}
STYLE_TEXT = {"fixed": "always play{} one action", "pattern": "follow{} a fixed sequence",
              "random": "act{} at random, possibly with a bias", "reciprocating": "react{} to your last move",
              "grudge-holding": "never forgive{} a single deviation", "adaptive": "learn{} from your past moves"}
TREMBLES = (0.0, 0.05)


def payoffs(kind: str, v: tuple[int, ...]) -> tuple[list[list[int]], list[list[int]]]:
    """(mine[a][b], theirs[b][a]): my payoff when I play a and they play b; theirs when they play b and I play a."""
    if kind in ("dilemma", "stag_hunt", "chicken"):
        r, s, t, p = v  # reward (0,0), sucker (0 vs 1), temptation (1 vs 0), punishment (1,1)
        mine = [[r, s], [t, p]]
        return mine, mine
    if kind == "coordination":
        a, b, c = v
        return [[a, c], [c, b]], [[b, c], [c, a]]
    w, d, lose = v
    mine = [[d if x == y else (w if (x - y) % 3 == 1 else lose) for y in range(3)] for x in range(3)]
    return mine, mine


def _valid(kind: str, v: tuple[int, ...]) -> bool:
    if kind == "dilemma":
        r, s, t, p = v
        return t > r > p > s and 2 * r > t + s
    if kind == "stag_hunt":
        r, s, t, p = v
        return r > t > p > s
    if kind == "chicken":
        r, s, t, p = v
        return t > r > s > p
    if kind == "coordination":
        a, b, c = v
        return a > b > c
    w, d, lose = v
    return w > d > lose


MLGYM_ROW_PAYOFFS = ([[3, 0], [5, 1]], [[2, 0], [0, 1]])  # MLGym's prisoner's dilemma and battle of the sexes


def is_mlgym_game(kind: str, v: tuple[int, ...]) -> bool:
    """True when my payoff matrix is MLGym's prisoner's dilemma or battle of the sexes, up to relabelling actions."""
    mine = payoffs(kind, v)[0]
    for ref in MLGYM_ROW_PAYOFFS:
        if len(ref) != len(mine):
            continue
        for rows in itertools.permutations(range(2)):
            for cols in itertools.permutations(range(2)):
                if all(mine[rows[i]][cols[j]] == ref[i][j] for i in range(2) for j in range(2)):
                    return True
    return False


@functools.cache
def payoff_choices(kind: str) -> list[tuple[int, ...]]:
    size = 4 if kind in ("dilemma", "stag_hunt", "chicken") else 3
    return [v for v in itertools.product(range(10), repeat=size) if _valid(kind, v) and not is_mlgym_game(kind, v)]


def space(rng: random.Random) -> Params:
    kind = rng.choice(KINDS)
    pool = OPPONENTS_3 if kind == "cyclic3" else OPPONENTS_2
    return {"kind": kind, "payoffs": list(rng.choice(payoff_choices(kind))),
            "opponents": sorted(rng.sample(pool, rng.randint(5, 7))), "rounds": list(rng.choice(ROUNDS)),
            "tremble": rng.choice(TREMBLES)}


def count() -> int:
    total = 0
    for kind in KINDS:
        pool = len(OPPONENTS_3 if kind == "cyclic3" else OPPONENTS_2)
        pools = sum(math.comb(pool, k) for k in (5, 6, 7))
        total += len(payoff_choices(kind)) * pools * len(ROUNDS) * len(TREMBLES)
    return total


SIM_SRC = '''
def best_reply(payoff, their_action):
    return max(range(N), key=lambda a: (payoff[a][their_action], -a))


# Opponents see their own history: (their_action, submitted_strategy_action) pairs.
def always_0(h, rng): return 0
def always_1(h, rng): return 1
def always_2(h, rng): return 2
def random_half(h, rng): return rng.randrange(2)
def random_third(h, rng): return rng.randrange(3)
def mostly_0(h, rng): return 0 if rng.random() < 0.8 else 1
def biased(h, rng): return 1 if rng.random() < 0.6 else rng.randrange(3)
def copycat(h, rng): return h[-1][1] if h else 0
def suspicious_copycat(h, rng): return h[-1][1] if h else 1
def noisy_copycat(h, rng): return (1 - h[-1][1] if rng.random() < 0.1 else h[-1][1]) if h else 0
def grudger(h, rng): return 1 if any(other == 1 for _, other in h) else 0
def alternator(h, rng): return len(h) % 2
def cycler(h, rng): return len(h) % 3
def sticky(h, rng): return h[-1][0] if h and rng.random() < 0.8 else rng.randrange(3)
def beat_last(h, rng): return (h[-1][1] + 1) % 3 if h else 0


def pavlov(h, rng):
    if not h:
        return 0
    mine, other = h[-1]
    good = THEIRS[mine][other] >= sorted(THEIRS[x][y] for x in range(N) for y in range(N))[N * N // 2]
    return mine if good else 1 - mine


def majority(h, rng):
    return 0 if 2 * sum(other == 0 for _, other in h) >= len(h) else 1


def myopic(h, rng):
    return best_reply(THEIRS, h[-1][1]) if h else 0


def fictitious(h, rng):
    if not h:
        return 0
    counts = [sum(other == a for _, other in h) for a in range(N)]
    return max(range(N), key=lambda b: (sum(THEIRS[b][a] * counts[a] for a in range(N)), -b))


def play_match(strategy, opponent, index, seed):
    rng = random.Random(seed * 1000 + index)
    random.seed(seed * 1000 + index)
    history, total = [], 0
    for round_no in range(rng.randint(*ROUNDS)):
        mine = strategy(list(history))
        if isinstance(mine, bool) or not isinstance(mine, int) or not 0 <= mine < N:
            raise ValueError(f"strategy returned {mine!r} in round {round_no}; return an int from 0 to {N - 1}")
        theirs = opponent([(b, a) for a, b in history], rng)
        if TREMBLE and rng.random() < TREMBLE:
            theirs = rng.randrange(N)
        total += MINE[mine][theirs]
        history.append((mine, theirs))
    return total, len(history)


def score(strategy, seeds):
    total = rounds = 0
    for seed in seeds:
        for index, name in enumerate(OPPONENTS):
            payoff, n = play_match(strategy, globals()[name], index, seed)
            total, rounds = total + payoff, rounds + n
    return total / rounds
'''

VALIDATION_SEEDS, TEST_SEEDS = range(8), range(100, 116)

STRATEGY = '''"""Your strategy for the iterated game. Edit `strategy`; keep its name and signature."""

import random

# PAYOFF[my_action][their_action] is my payoff for one round; THEIR_PAYOFF[their_action][my_action] is theirs.
PAYOFF = {mine!r}
THEIR_PAYOFF = {theirs!r}
N_ACTIONS = {n}


{block}'''

_HEAD = ('def strategy(history):\n    """Return my next action (0 to N_ACTIONS - 1); history holds one (my_action, '
         'their_action)\n    pair per round played so far in this match, oldest first (empty in round 1)."""\n')
_BR = "max(range(N_ACTIONS), key=lambda a: PAYOFF[a][{x}])"
TRIVIAL = [(f"always playing {a}", f"    return {a}\n") for a in range(3)] + [
    ("playing uniformly at random", "    return random.randrange(N_ACTIONS)\n")]
CANDIDATES = [
    ("copying their last action", "    return history[-1][1] if history else 0\n"),
    ("the best reply to their last action", f"    return {_BR.format(x='history[-1][1]')} if history else 0\n"),
    ("the best reply to their action frequencies",
     "    if not history:\n        return 0\n    counts = [sum(t == b for _, t in history) for b in range(N_ACTIONS)]\n"
     "    return max(range(N_ACTIONS), key=lambda a: sum(PAYOFF[a][b] * counts[b] for b in range(N_ACTIONS)))\n"),
    ("predicting their reply to my last action from past rounds, then replying best",
     "    if len(history) < 2:\n        return history[-1][1] if history else 0\n"
     "    follow = [0] * N_ACTIONS\n    for (mine, _), (_, theirs) in zip(history[:-1], history[1:]):\n"
     "        if mine == history[-1][0]:\n            follow[theirs] += 1\n"
     "    if not any(follow):\n        follow[history[-1][1]] = 1\n"
     "    return max(range(N_ACTIONS), key=lambda a: sum(PAYOFF[a][b] * follow[b] for b in range(N_ACTIONS)))\n"),
    ("reciprocating the jointly best action and replying best to anyone who never plays it",
     "    joint = max(range(N_ACTIONS), key=lambda a: PAYOFF[a][a] + THEIR_PAYOFF[a][a])\n"
     "    if not history or history[-1][1] == joint:\n        return joint\n"
     "    recent = [t for _, t in history[-6:]]\n"
     "    if joint not in recent and len(history) >= 6:\n"
     "        return max(range(N_ACTIONS), key=lambda a: sum(PAYOFF[a][b] for b in recent))\n"
     "    return history[-1][1]\n"),
]


def _constants(params: Params, mine: list[list[int]], theirs: list[list[int]]) -> dict[str, Any]:
    """The grader's game constants, which SIM_SRC reads (the in-process scorer uses the same ones)."""
    return {"N": len(mine), "MINE": mine, "THEIRS": theirs, "OPPONENTS": params["opponents"],
            "ROUNDS": tuple(params["rounds"]), "TREMBLE": params["tremble"], "VALIDATION_SEEDS": VALIDATION_SEEDS,
            "TEST_SEEDS": TEST_SEEDS}


def _scorer(constants: dict[str, Any]):
    ns = {"random": random, **constants}
    exec(SIM_SRC, ns)  # noqa: S102 - our own constant source, shared verbatim with the grader

    def score(block: str, seeds: range) -> float:
        mod: dict = {}
        source = STRATEGY.format(mine=ns["MINE"], theirs=ns["THEIRS"], n=ns["N"], block=block)
        exec(source, mod)  # noqa: S102 - our own candidate code
        return ns["score"](mod["strategy"], seeds)

    return score


def _describe(kind: str, mine: list[list[int]], theirs: list[list[int]]) -> str:
    n = len(mine)
    rows = "\n".join(f"- you {a}, they {b}: you get {mine[a][b]}, they get {theirs[b][a]}"
                     for a in range(n) for b in range(n))
    story = {"dilemma": "a social dilemma: action 0 cooperates, action 1 defects",
             "stag_hunt": "an assurance game: mutual 0 pays most, but 1 is the safe action",
             "chicken": "an anti-coordination game: each side wants the other to yield (play 0)",
             "coordination": "a coordination game where you prefer meeting on 0 and your partner on 1",
             "cyclic3": "a three-action cyclic game: 1 beats 0, 2 beats 1, 0 beats 2"}[kind]
    return f"The game is {story}. Payoffs per round:\n{rows}"


def _pool_text(opponents: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in opponents:
        counts[STYLES[name]] = counts.get(STYLES[name], 0) + 1
    parts = [f"{n} {style} ({'they' if n > 1 else 'it'} {STYLE_TEXT[style].format('' if n > 1 else 's')})"
             for style, n in sorted(counts.items())]
    return ", ".join(parts)


def build(params: Params) -> TaskParts:
    kind, v = params["kind"], tuple(params["payoffs"])
    if is_mlgym_game(kind, v) or not _valid(kind, v):
        raise TaskError(f"matrix game {kind} {v}: not a valid catalogue game (MLGym's payoffs are excluded)")
    mine, theirs = payoffs(kind, v)
    n = len(mine)
    constants = _constants(params, mine, theirs)
    score = _scorer(constants)
    val, test = VALIDATION_SEEDS, TEST_SEEDS
    trivial = sorted(((score(_HEAD + b, test), label, _HEAD + b) for label, b in TRIVIAL if f"return {n}" not in b),
                     key=lambda x: x[0])
    sample, base_t = trivial[0], next((t for t in trivial[1:] if better(t[0], trivial[0][0], "max")), None)
    if base_t is None:
        raise TaskError(f"{params}: every trivial strategy scores the same; no task")
    base = Candidate(base_t[1], base_t[2], score(base_t[2], val))
    chain = improving_chain(base, [Candidate(label, _HEAD + b, score(_HEAD + b, val)) for label, b in CANDIDATES],
                            "max")
    tid = task_id(NAME, params)
    description = (
        f"Write a strategy for an iterated two-player game with {n} actions (0 to {n - 1}).\n\n"
        f"{_describe(kind, mine, theirs)}\n"
        f"A match lasts between {params['rounds'][0]} and {params['rounds'][1]} rounds (your strategy is not told how "
        f"many). Your strategy plays one match against each of {len(params['opponents'])} hidden opponents: "
        f"{_pool_text(params['opponents'])}"
        + (f"; each opponent's action is replaced by a random one with probability {params['tremble']}"
           if params["tremble"] else "") + ".\n\n"
        f"The workspace holds strategy.py, whose function `strategy(history)` receives the match so far as a list of "
        f"(your_action, their_action) pairs and returns your next action; PAYOFF and THEIR_PAYOFF hold the table above. "
        f"The baseline is {base.label}; sample_submission/strategy.py ({sample[1]}) shows the format. The strategy may "
        "use the `random` module (seeded per match); anything it prints is ignored.\n\n"
        "SUBMISSION FORMAT: the edited strategy.py, keeping the function name and signature. `validate` reports the "
        "mean payoff per round over matches with validation seeds; the final score is the mean payoff per round over "
        f"matches with held-out seeds. Higher is better (the score lies between 0 and {max(map(max, mine))}).\n")
    grader = python_grader(task_id=tid, summary="plays strategy.py against a hidden opponent pool",
                           score_doc="The score is the mean payoff per round over every match of the validation "
                                     "seeds and of the held-out seeds. Payoffs are non-negative, so the score is never "
                                     "negative.",
                           module_file="strategy.py", function="strategy", signature="strategy(history)",
                           action="playing the strategy", constants=constants, setup=SIM_SRC, stdlib=["random"])
    smoke = ('python -c "from strategy import strategy; a = strategy([]); b = strategy([(0, 1)] * 30); '
             'print(a, b)"')
    mistakes = [{"file": "strategy.py", "find": "import random", "replace": "import randoms",
                 "note": "Import the random helpers."},
                {"file": "strategy.py", "find": f"N_ACTIONS = {n}", "replace": f"N_ACTIONS = {n + 1}",
                 "note": "Count the actions."}]
    fmt = {"mine": mine, "theirs": theirs, "n": n}
    pool = hashlib.sha256("+".join(params["opponents"]).encode()).hexdigest()[:4]
    name = (f"iterated {kind} game {'-'.join(map(str, v))} vs {len(params['opponents'])} hidden opponents (pool {pool}) "
            f"({params['rounds'][0]}-{params['rounds'][1]} rounds, tremble {params['tremble']})")
    return TaskParts(
        config=task_config(tid, name, description, metric="score", metric_range=(0.0, float(max(map(max, mine)))),
                           direction="max", starter=["strategy.py"], entrypoint="PythonSubmissionTasks",
                           submission="strategy.py", datasets=False, sample_submission="sample_submission/strategy.py"),
        workspace={"strategy.py": STRATEGY.format(block=base.block, **fmt),
                   "sample_submission/strategy.py": STRATEGY.format(block=sample[2], **fmt)},
        grader={"evaluate.py": grader},
        files={"heuristic.yaml": heuristic_yaml("strategy.py", smoke, base, chain, mistakes)},
    )


FAMILY = Family(name=NAME, domain="game-theory", task_type="game", space=space, build=build, count=count,
                topic="Strategies for iterated matrix games against pools of reactive and random opponents")
