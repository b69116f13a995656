"""What synthesized tasks must not overlap (reads and writes nothing): MLGym-Bench's datasets, environments and games.

The aliases, descriptions and payoffs below are our own words and numbers, written from the benchmark's public
task list (see /work/shared/MLGYM.md); nothing here is copied from MLGym.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class BenchmarkEntry(BaseModel):
    """One benchmark dataset, environment or game and the names it goes by.

    `hub_ids` are compared whole and case-insensitively with a proposal's Hub id. `aliases` are compared after
    `squash` (lower case, separators removed) with every run of consecutive words of the dataset's name (owner
    prefix stripped), its config and the proposal's text, so "cifar-10-lt" matches "cifar10" but "cifar100" does
    not. `exact_aliases` are too generic for free text and only match a dataset name as a whole.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["dataset", "environment", "game"]
    tasks: tuple[str, ...] = ()
    hub_ids: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    exact_aliases: tuple[str, ...] = ()


BENCHMARK_ALIASES: dict[str, BenchmarkEntry] = {
    "cifar10": BenchmarkEntry(
        kind="dataset", tasks=("imageClassificationCifar10",),
        hub_ids=("cifar10", "uoft-cs/cifar10", "cifar-10"),
        aliases=("cifar10", "cifar-10", "CIFAR10", "cifar 10", "cifar_10"),
    ),
    "fashion_mnist": BenchmarkEntry(
        kind="dataset", tasks=("imageClassificationFMnist",),
        hub_ids=("fashion_mnist", "zalando-datasets/fashion_mnist", "fashion-mnist"),
        aliases=("fashion_mnist", "fashion-mnist", "FashionMNIST", "fmnist", "f-mnist", "zalando mnist"),
    ),
    "mnli": BenchmarkEntry(
        kind="dataset", tasks=("naturalLanguageInferenceMNLI",),
        hub_ids=("multi_nli", "nyu-mll/multi_nli", "glue/mnli", "nyu-mll/glue/mnli"),
        aliases=("mnli", "multi_nli", "multinli", "multi-nli", "multi-genre nli",
                 "multi genre natural language inference"),
    ),
    "mscoco": BenchmarkEntry(
        kind="dataset", tasks=("imageCaptioningCOCO",),
        hub_ids=("HuggingFaceM4/COCO", "detection-datasets/coco", "yerevann/coco-karpathy", "phiyodr/coco2017"),
        aliases=("coco", "ms-coco", "mscoco", "coco2014", "coco2017", "coco captions", "coco-karpathy",
                 "microsoft common objects in context"),
    ),
    "fineweb": BenchmarkEntry(
        kind="dataset", tasks=("languageModelingFineWeb",),
        hub_ids=("HuggingFaceFW/fineweb", "HuggingFaceFW/fineweb-edu", "HuggingFaceFW/fineweb-edu-score-2"),
        aliases=("fineweb", "fineweb-edu", "fineweb_edu", "fineweb10B", "fineweb-10bt", "fineweb edu"),
    ),
    "house_prices": BenchmarkEntry(
        kind="dataset", tasks=("regressionKaggleHousePrice",),
        hub_ids=("house-prices-advanced-regression-techniques",),
        aliases=("ames", "ames housing", "ames house prices", "ames iowa housing",
                 "house-prices-advanced-regression-techniques", "kaggle house prices", "kaggle house price"),
        exact_aliases=("house prices", "house price", "house_prices", "houseprices"),
    ),
    "titanic": BenchmarkEntry(
        kind="dataset", tasks=(),  # MLGym ships a Titanic task outside the 13 of MLGym-Bench
        hub_ids=("titanic",),
        aliases=("titanic", "titanic survival", "kaggle titanic"),
    ),
    "minatar_breakout": BenchmarkEntry(
        kind="environment", tasks=("rlBreakoutMinAtar",),
        hub_ids=("MinAtar/Breakout",),
        aliases=("MinAtar/Breakout", "Breakout-MinAtar", "minatar breakout", "breakout minatar"),
    ),
    "metamaze": BenchmarkEntry(
        kind="environment", tasks=("rlMetaMazeMisc",),
        aliases=("MetaMaze", "meta maze", "MetaMaze-misc", "meta-maze"),
    ),
    "mountain_car_continuous": BenchmarkEntry(
        kind="environment", tasks=("rlMountainCarContinuous",),
        aliases=("MountainCarContinuous-v0", "MountainCarContinuous", "mountain car continuous",
                 "continuous mountain car", "continuous mountaincar"),
    ),
    "prisoners_dilemma": BenchmarkEntry(
        kind="game", tasks=("prisonersDilemma",),
        aliases=("prisoner's dilemma", "prisoners dilemma", "prisoner dilemma", "prisonersDilemma"),
    ),
    "battle_of_sexes": BenchmarkEntry(
        kind="game", tasks=("battleOfSexes",),
        aliases=("battle of the sexes", "battle of sexes", "battleOfSexes", "bach or stravinsky"),
    ),
    "blotto": BenchmarkEntry(
        kind="game", tasks=("blotto",),
        aliases=("blotto", "colonel blotto"),
    ),
}

# The row player's payoff per (my action, their action), as the benchmark's games use them. A game with other
# payoffs is a different task (MLGYM.md). Blotto has no matrix: its soldiers and battlefields identify it.
MLGYM_GAME_PAYOFFS: dict[str, list[list[float]]] = {
    "prisoners_dilemma": [[3.0, 0.0], [5.0, 1.0]],  # cooperate/defect: reward 3, sucker 0, temptation 5, punishment 1
    "battle_of_sexes": [[2.0, 0.0], [0.0, 1.0]],  # both on my choice 2, both on theirs 1, apart 0
}
MLGYM_BLOTTO: dict[str, int] = {"soldiers": 120, "battlefields": 6}

# One paragraph per MLGym-Bench task goal, paraphrased in our own words; used to catch proposals that restate a
# benchmark task.
BENCHMARK_DESCRIPTIONS: dict[str, str] = {
    "regressionKaggleHousePrice": (
        "Predict the sale price of residential homes in Ames, Iowa from about eighty attributes of each property such "
        "as lot size, neighbourhood, overall quality, year built, living area, basement and garage. Train a regression "
        "model on the training houses and predict a price for every test house; the score is the R2 coefficient of "
        "determination of the predictions, and higher is better."),
    "3SATTime": (
        "Improve the heuristic that picks the next branching variable in a DPLL solver for Boolean satisfiability so "
        "that it decides a collection of 3-SAT formulas in conjunctive normal form as fast as possible while still "
        "returning correct answers; the score is the total solving time, and lower is better."),
    "imageClassificationCifar10": (
        "Classify small 32x32 colour photographs into ten object classes: airplane, automobile, bird, cat, deer, dog, "
        "frog, horse, ship and truck. Train an image classifier on the training images and write a submission file "
        "with the predicted class of every test image; the score is classification accuracy on the test set, and "
        "higher is better."),
    "imageClassificationFMnist": (
        "Classify 28x28 grayscale pictures of clothing into ten categories: t-shirt or top, trouser, pullover, dress, "
        "coat, sandal, shirt, sneaker, bag and ankle boot. Train a classifier on the training pictures and submit the "
        "predicted category of every test picture; the score is accuracy on the test set, and higher is better."),
    "imageCaptioningCOCO": (
        "Write a natural-language caption for each photograph of an everyday scene. Train an image captioning model on "
        "images paired with several human reference captions and generate one caption per test image; captions are "
        "scored with BLEU against the references, and higher is better."),
    "languageModelingFineWeb": (
        "Train a GPT-style autoregressive transformer language model on tokenized web text from a large filtered "
        "crawl corpus within a fixed training time; the saved model and its configuration are evaluated by the "
        "cross-entropy loss on held-out validation tokens, and lower is better."),
    "naturalLanguageInferenceMNLI": (
        "Given a premise sentence and a hypothesis sentence from many genres of spoken and written English, decide "
        "whether the premise entails the hypothesis, contradicts it, or is neutral. Fine-tune a pretrained text "
        "encoder on the labelled sentence pairs; the score is accuracy on the validation pairs, and higher is better."),
    "battleOfSexes": (
        "Write a strategy for a repeated two-player coordination game: both players gain only when they choose the "
        "same option, but each prefers a different one of the two options. The strategy sees the history of earlier "
        "rounds and plays against a fixed opponent; the score is the average payoff per round, and higher is better."),
    "prisonersDilemma": (
        "Write a strategy for the iterated prisoner's dilemma: each round both players cooperate or defect, mutual "
        "cooperation pays both a moderate reward, mutual defection pays both a little, and a lone defector earns the "
        "most while the exploited cooperator earns nothing. Using the history of earlier rounds, maximise the average "
        "payoff per round against the opponent."),
    "blotto": (
        "Write a strategy for the Colonel Blotto game: each player divides a fixed budget of soldiers among several "
        "battlefields, each battlefield goes to whoever sent more soldiers there, and whoever wins more battlefields "
        "wins the round. Maximise the average score against the opponent over many rounds."),
    "rlBreakoutMinAtar": (
        "Train a reinforcement learning agent to play the MinAtar version of Breakout, a miniature Atari game on a "
        "ten by ten grid where a paddle bounces a ball to break rows of bricks. Tune the policy-gradient training code "
        "and its configuration so that the trained policy reaches the highest mean episode return."),
    "rlMetaMazeMisc": (
        "Train a reinforcement learning agent that must find a goal in a small grid maze again and again while the "
        "goal moves between episodes, seeing only its surroundings and relying on memory. Improve the training "
        "algorithm and its hyperparameters to maximise the mean episode reward."),
    "rlMountainCarContinuous": (
        "Train a reinforcement learning agent with a continuous action to drive an underpowered car out of a valley "
        "to the goal at the top of the right hill, building momentum by rocking back and forth while paying a small "
        "cost for the force it applies. Maximise the mean episode return of the trained policy."),
}
