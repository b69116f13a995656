"""Family digits_classification: 8x8 handwritten digits (scikit-learn's bundled `load_digits`) as pixel columns."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from engine.synth.procedural.common import Family, Params, grid_count, grid_space, rng_for, task_id
from engine.synth.procedural.tabular import (CONSTRAINTS, CsvTask, build_csv_task, csv_description, sklearn_model,
                                             split_frame)
from engine.tasks.folder import TaskParts

NAME = "digits_classification"
TARGET = "label"
CLASS_SETS = {
    "all": list(range(10)), "low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9], "even": [0, 2, 4, 6, 8],
    "odd": [1, 3, 5, 7, 9], "round": [0, 3, 6, 8, 9], "confusable": [3, 5, 8, 9], "strokes": [1, 4, 7],
}
TRAIN_SIZES = (60, 150, 400)
NOISE_LEVELS = (0.0, 2.0, 4.0)
METRICS = ("accuracy", "macro_f1")
BASELINES = {
    "tree": sklearn_model("tree.DecisionTreeClassifier", "max_depth=3, random_state=0", "a depth-3 decision tree"),
    "nearest_centroid": sklearn_model("neighbors.NearestCentroid", "shrink_threshold=6.0",
                                      "a heavily shrunk nearest-centroid classifier"),
}
CANDIDATES = [
    sklearn_model("tree.DecisionTreeClassifier", "max_depth=8, random_state=0", "a depth-8 decision tree"),
    sklearn_model("neighbors.KNeighborsClassifier", "n_neighbors=3", "3-nearest neighbours on the pixels"),
    sklearn_model("linear_model.LogisticRegression", "C=0.1, max_iter=3000", "a regularized logistic regression",
                  scaled=True),
    sklearn_model("svm.SVC", "C=10.0, gamma=0.001", "an RBF support-vector machine"),
    sklearn_model("ensemble.RandomForestClassifier", "n_estimators=200, random_state=0", "a random forest"),
]
GRID = {"classes": sorted(CLASS_SETS), "train_size": TRAIN_SIZES, "noise": NOISE_LEVELS, "metric": METRICS,
        "baseline": sorted(BASELINES), "constraint": sorted(CONSTRAINTS)}


def space(rng: random.Random) -> Params:
    return grid_space(rng, GRID)


def count() -> int:
    return grid_count(GRID)


def _frame(classes: list[int], noise: float, gen: np.random.Generator) -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, classes)
    pixels = digits.data[keep]
    if noise:
        pixels = np.clip(np.round(pixels + gen.normal(0, noise, pixels.shape)), 0, 16)
    frame = pd.DataFrame(pixels.astype(int), columns=[f"p{r}{c}" for r in range(8) for c in range(8)])
    frame[TARGET] = digits.target[keep]
    return frame


def build(params: Params) -> TaskParts:
    classes = CLASS_SETS[params["classes"]]
    gen = np.random.default_rng(rng_for(NAME, params).getrandbits(32))
    frame = _frame(classes, params["noise"], gen)
    split = split_frame(frame, TARGET, params["train_size"] / len(frame), gen)
    noise = (f" Every pixel carries added Gaussian noise (standard deviation {params['noise']:g} intensity levels, "
             "rounded and clipped to 0..16)." if params["noise"] else "")
    docs = (f"{len(frame)} 8x8 grey-scale images of the handwritten digits {classes} (scikit-learn's bundled copy "
            f"of the UCI optical digits test set). Files under data/:\n"
            f"- train.csv ({len(split.train)} rows): 64 pixel columns p00..p77 (row, column; intensity 0..16) and "
            f"`{TARGET}` (the digit).{noise}\n"
            f"- validation.csv ({len(split.validation)} rows) and test.csv ({len(split.test)} rows): a unique integer "
            "id and the 64 pixel columns, no label.")
    base = BASELINES[params["baseline"]]
    text = (f"Recognise handwritten digits among {classes} from 8x8 images given as 64 pixel columns, with only "
            f"{len(split.train)} labelled training images." + (" The images are noisy." if params["noise"] else ""))
    return build_csv_task(CsvTask(
        tid=task_id(NAME, params), name=(f"digits {params['classes']} ({params['metric']}, {params['train_size']} train, "
                                             f"noise {params['noise']:g}, "
              f"{params['baseline']} baseline, {params['constraint']} constraint)"),
        description=csv_description(text, TARGET, params["metric"], f"The baseline uses {base[2]}.\n",
                                    params["constraint"]),
        dataset_name="digits", dataset_description=docs, target=TARGET, classes=classes, metric=params["metric"],
        split=split, baseline=base, candidates=CANDIDATES, what="classifier", constraint=params["constraint"]))


FAMILY = Family(name=NAME, domain="vision", task_type="image-classification", space=space, build=build, count=count,
                topic="Small-image classification of handwritten digits with few labels and pixel noise")
