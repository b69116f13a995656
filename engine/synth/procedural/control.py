"""Family control: hand-written policies for gymnasium's classic-control environments (never MountainCarContinuous)."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from engine.errors import TaskError
from engine.synth.procedural.common import (Candidate, Family, Params, better, check_mlgym_free, heuristic_yaml,
                                            improving_chain, python_grader, task_config, task_id)
from engine.tasks.folder import TaskParts

NAME = "control"
PENDULUM_MAX_COST = 16.2736044  # pi^2 + 0.1 * 8^2 + 0.001 * 2^2: the largest cost of one Pendulum step

# env -> (max-step choices, observation text, action text, per-dimension noise unit, score text)
ENVS: dict[str, dict] = {
    "CartPole-v1": dict(
        steps=(200, 500), unit=[0.05, 0.05, 0.005, 0.05],
        physics={"gravity": ((9.8, 3.7, 24.8), "gravity {} m/s^2"),
                 "length": ((0.5, 0.25, 1.0), "pole half-length {} m"),
                 "force_mag": ((10.0, 6.0), "push force {} N")},
        obs="[cart position, cart velocity, pole angle (radians, 0 is upright), pole angular velocity]",
        act="0 (push the cart left) or 1 (push it right)",
        score="the mean episode return: +1 per step the pole stays up, so between 0 and the step limit",
        baseline=("a coin flip", "return random.randrange(2)"), sample=("always push right", "return 1"),
        candidates=[("a push toward the side the pole leans", "return 1 if observation[2] > 0 else 0"),
                    ("a push against the pole's angular velocity", "return 1 if observation[3] > 0 else 0"),
                    ("a push on pole angle plus angular velocity",
                     "return 1 if observation[2] + 0.5 * observation[3] > 0 else 0"),
                    ("a linear controller on all four observations",
                     "return 1 if 0.05 * observation[0] + 0.3 * observation[1] + 8 * observation[2]"
                     " + 1.5 * observation[3] > 0 else 0")]),
    "Acrobot-v1": dict(
        steps=(300, 500), unit=[0.02, 0.02, 0.02, 0.02, 0.1, 0.1],
        physics={"LINK_MASS_1": ((1.0, 1.5), "upper link mass {} kg"),
                 "LINK_MASS_2": ((1.0, 0.6, 1.4), "lower link mass {} kg")},
        obs="[cos(theta1), sin(theta1), cos(theta2), sin(theta2), angular velocity 1, angular velocity 2]",
        act="0 (torque -1 on the middle joint), 1 (no torque) or 2 (torque +1)",
        score="the step limit plus the mean episode return (the return is -1 per step until the free end swings "
              "above the bar), i.e. the mean number of steps left when the goal is reached, between 0 and the limit",
        baseline=("torque following link 1's velocity", "return 2 if observation[4] + 0.3 * observation[5] > 0 else 0"),
        sample=("no torque", "return 1"),
        candidates=[("torque following both velocities equally", "return 2 if observation[4] + observation[5] > 0 else 0"),
                    ("torque following mostly link 2's velocity", "return 2 if 0.2 * observation[4] + observation[5] > 0 else 0"),
                    ("torque following link 2's velocity", "return 2 if observation[5] > 0 else 0")]),
    "MountainCar-v0": dict(
        steps=(200, 300), unit=[0.01, 0.0005],
        physics={"force": ((0.001, 0.0012, 0.0009), "engine force {}"),
                 "gravity": ((0.0025, 0.0022, 0.0028), "gravity factor {}")},
        obs="[position (-1.2 to 0.6; the goal is at 0.5), velocity (-0.07 to 0.07)]",
        act="0 (accelerate left), 1 (do nothing) or 2 (accelerate right)",
        score="the step limit plus the mean episode return (the return is -1 per step until the car reaches the "
              "flag), i.e. the mean number of steps left when the car arrives, between 0 and the limit",
        baseline=("pushing with the velocity half of the time, at random otherwise",
                  "if random.random() < 0.5:\n        return 2 if observation[1] >= 0 else 0\n    return random.randrange(3)"),
        sample=("always accelerate right", "return 2"),
        candidates=[("pushing with the velocity, leftward first from rest",
                     "return 2 if observation[1] > 0 or (observation[1] == 0 and observation[0] > -0.45) else 0"),
                    ("pushing with the velocity unless clearly moving left", "return 2 if observation[1] > -0.001 else 0"),
                    ("always pushing with the velocity", "return 2 if observation[1] >= 0 else 0")]),
    "Pendulum-v1": dict(
        steps=(200, 300), unit=[0.01, 0.01, 0.05],
        physics={"g": ((10.0, 3.7, 1.62, 24.8), "gravity {} m/s^2"), "m": ((1.0, 1.3), "mass {} kg"),
                 "l": ((1.0, 0.8), "length {} m")},
        obs="[cos(angle), sin(angle), angular velocity] with angle 0 upright",
        act="a torque between -2 and 2 (a float; values outside are clipped)",
        score=f"{PENDULUM_MAX_COST} plus the mean per-step reward (the reward is minus a cost of angle, speed and "
              f"torque, at most {PENDULUM_MAX_COST} per step), between 0 and {PENDULUM_MAX_COST}",
        baseline=("no torque", "return 0.0"), sample=("damping the motion", "return max(-2.0, min(2.0, -observation[2]))"),
        candidates=[("a PD controller toward upright",
                     "angle = math.atan2(observation[1], observation[0])\n    "
                     "return max(-2.0, min(2.0, -10 * angle - 2 * observation[2]))"),
                    ("energy pumping, then a PD controller near the top",
                     "angle = math.atan2(observation[1], observation[0])\n    if observation[0] > 0.9:\n        "
                     "return max(-2.0, min(2.0, -12 * angle - 2.5 * observation[2]))\n    "
                     "energy = observation[2] ** 2 / 6 + 10 / 3 * observation[0]\n    "
                     "return 2.0 if observation[2] * (10 / 3 - energy) >= 0 else -2.0")]),
}
EPISODES = (5, 10, 20)
NOISE_LEVELS = (0, 1, 2)

SIM_SRC = '''
def run_episode(act, seed):
    env = gym.make(ENV_ID, max_episode_steps=MAX_STEPS, disable_env_checker=True)
    for name, value in PHYSICS.items():
        setattr(env.unwrapped, name, value)
    if ENV_ID == "CartPole-v1":  # quantities CartPole derives from the ones above
        env.unwrapped.polemass_length = env.unwrapped.masspole * env.unwrapped.length
        env.unwrapped.total_mass = env.unwrapped.masspole + env.unwrapped.masscart
    observation, _ = env.reset(seed=seed)
    random.seed(seed)
    np.random.seed(seed)
    noise = np.random.default_rng(seed + 7919)
    total = 0.0
    for step in range(MAX_STEPS):
        seen = np.asarray(observation, dtype=float)
        if NOISE_LEVEL:
            seen = seen + noise.normal(0.0, NOISE_LEVEL, seen.shape) * np.asarray(NOISE_UNIT)
        action = to_action(act(seen), step)
        observation, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    env.close()
    return total


def to_action(value, step):
    if ENV_ID == "Pendulum-v1":
        value = np.asarray(value, dtype=float).ravel()
        if value.size != 1 or not np.isfinite(value[0]):
            raise ValueError(f"act returned {value!r} at step {step}; return one finite torque")
        return np.array([min(2.0, max(-2.0, float(value[0])))], dtype=np.float32)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < N_ACTIONS:
        raise ValueError(f"act returned {value!r} at step {step}; return an int from 0 to {N_ACTIONS - 1}")
    return int(value)


def score(act, seeds):
    returns = [run_episode(act, seed) for seed in seeds]
    mean = sum(returns) / len(returns)
    if ENV_ID == "CartPole-v1":
        return mean
    if ENV_ID == "Pendulum-v1":
        return max(0.0, PENDULUM_MAX_COST + mean / MAX_STEPS)
    return max(0.0, MAX_STEPS + mean)
'''

POLICY = '''"""Your policy for {env}. Edit `act`; keep its name and signature."""

import math
import random

import numpy as np

{block}'''


def _block(body: str) -> str:
    return (f'def act(observation):\n    """Return the action for one observation (a numpy array)."""\n'
            f"    {body}\n")


def space(rng: random.Random) -> Params:
    env = rng.choice(sorted(ENVS))
    physics = {name: rng.choice(choices) for name, (choices, _) in ENVS[env]["physics"].items()}
    return {"env": env, "physics": physics, "max_steps": rng.choice(ENVS[env]["steps"]),
            "episodes": rng.choice(EPISODES), "noise_level": rng.choice(NOISE_LEVELS)}


def count() -> int:
    total = 0
    for info in ENVS.values():
        variants = math.prod(len(choices) for choices, _ in info["physics"].values())
        total += variants * len(info["steps"]) * len(EPISODES) * len(NOISE_LEVELS)
    return total


def _constants(params: Params) -> dict[str, Any]:
    """The grader's task constants, which SIM_SRC reads (the in-process scorer uses the same ones)."""
    episodes, first = params["episodes"], 1000
    return {"ENV_ID": params["env"], "MAX_STEPS": params["max_steps"],
            "N_ACTIONS": {"CartPole-v1": 2, "Pendulum-v1": 0}.get(params["env"], 3),
            "NOISE_LEVEL": params["noise_level"], "NOISE_UNIT": ENVS[params["env"]]["unit"],
            "PHYSICS": params["physics"], "PENDULUM_MAX_COST": PENDULUM_MAX_COST,
            "VALIDATION_SEEDS": list(range(first, first + episodes)),
            "TEST_SEEDS": list(range(first + 500, first + 500 + episodes))}


def _scorer(params: Params, constants: dict[str, Any]):
    import gymnasium as gym

    ns = {"gym": gym, "np": np, "random": random, **constants}
    exec(SIM_SRC, ns)  # noqa: S102 - our own constant source, shared verbatim with the grader

    def score(block: str, seeds: list[int]) -> float:
        pol: dict = {}
        exec(POLICY.format(env=params["env"], block=block), pol)  # noqa: S102 - our own candidate code
        return ns["score"](pol["act"], seeds)

    return score


def build(params: Params) -> TaskParts:
    env = params["env"]
    check_mlgym_free(env)
    if env not in ENVS:
        raise TaskError(f"control env {env!r} is not in the catalogue; use one of {sorted(ENVS)}")
    info = ENVS[env]
    constants = _constants(params)
    val_seeds, test_seeds = constants["VALIDATION_SEEDS"], constants["TEST_SEEDS"]
    score = _scorer(params, constants)
    base_block, sample_block = _block(info["baseline"][1]), _block(info["sample"][1])
    base = Candidate(info["baseline"][0], base_block, score(base_block, val_seeds))
    if not better(score(base_block, test_seeds), score(sample_block, test_seeds), "max"):
        raise TaskError(f"{params}: the sample policy does not score below the baseline; no task")
    chain = improving_chain(base, [Candidate(n, _block(b), score(_block(b), val_seeds)) for n, b in info["candidates"]],
                            "max")
    tid = task_id(NAME, params)
    physics = ", ".join(text.format(params["physics"][name]) for name, (_, text) in info["physics"].items())
    sigmas = [params["noise_level"] * u for u in info["unit"]]
    noise = (f" Each observation carries Gaussian noise (standard deviations {sigmas})."
             if params["noise_level"] else "")
    description = (
        f"Write a control policy for gymnasium's {env} environment (classic control), episodes capped at "
        f"{params['max_steps']} steps. Physics of this variant: {physics}.\n\n"
        f"The workspace holds policy.py, whose function act(observation) receives the observation {info['obs']} as a "
        f"numpy array and must return {info['act']}.{noise} The baseline policy is {info['baseline'][0]}; "
        f"sample_submission/policy.py ({info['sample'][0]}) shows the format. The policy may use math, random and "
        "numpy (the grader seeds `random` per episode); anything it prints is ignored. gymnasium is installed, so "
        "you can simulate the environment yourself.\n\n"
        f"SUBMISSION FORMAT: the edited policy.py, keeping the function name and signature. The score is "
        f"{info['score']}. `validate` reports it over {params['episodes']} episodes with validation seeds; the final "
        f"score is over {params['episodes']} episodes with held-out seeds. Higher is better.\n")
    grader = python_grader(task_id=tid, summary=f"runs policy.py in {env} with validation and held-out seeds",
                           score_doc=f"The score is {info['score']}.", module_file="policy.py", function="act",
                           signature="act(observation)", action="running the policy", constants=constants,
                           setup=SIM_SRC, stdlib=["random"],
                           third_party=["import gymnasium as gym", "import numpy as np"])
    smoke = 'python -c "import numpy as np; from policy import act; print(act(np.zeros(%d)))"' % len(info["unit"])
    mistakes = [{"file": "policy.py", "find": "import math", "replace": "import maths",
                 "note": "Import the math helpers."},
                {"file": "policy.py", "find": '    """Return the action for one observation (a numpy array)."""',
                 "replace": ('    """Return the action for one observation (a numpy array)."""\n'
                             "    observation = list(observation)[1:]"),
                 "note": "Skip the first observation entry."}]
    return TaskParts(
        config=task_config(tid, (f"{env} policy ({physics}; {params['max_steps']} steps, {params['episodes']} episodes, "
                           f"noise level {params['noise_level']})"), description, metric="score",
                           metric_range=(0.0, float(max(params["max_steps"], PENDULUM_MAX_COST))),
                           direction="max", starter=["policy.py"], entrypoint="PythonSubmissionTasks",
                           submission="policy.py", datasets=False, requirements=["gymnasium", "numpy"],
                           sample_submission="sample_submission/policy.py"),
        workspace={"policy.py": POLICY.format(env=env, block=base_block),
                   "sample_submission/policy.py": POLICY.format(env=env, block=sample_block)},
        grader={"evaluate.py": grader},
        files={"heuristic.yaml": heuristic_yaml("policy.py", smoke, base, chain, mistakes)},
    )


FAMILY = Family(name=NAME, domain="rl", task_type="control", space=space, build=build, count=count,
                topic="Hand-written feedback controllers for classic-control reinforcement-learning environments")
