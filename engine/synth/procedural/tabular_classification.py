"""Family tabular_classification: classification tasks on scikit-learn's and statsmodels' bundled tables."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pandas as pd

from engine.synth.procedural.common import Family, Params, grid_count, grid_space, rng_for, statsmodels_data, task_id
from engine.synth.procedural.tabular import (CONSTRAINTS, SCALED, CsvTask, add_noise_columns, build_csv_task,
                                             csv_description, split_frame)
from engine.tasks.folder import TaskParts

NAME = "tabular_classification"
TARGET = "label"


def _sklearn(loader: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        frame = bunch.frame.rename(columns={"target": TARGET})
        frame.columns = [c.replace(" ", "_").replace("/", "_").replace("(", "").replace(")", "") for c in frame.columns]
        return frame

    return load


def _statsmodels(name: str, make: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        return make(statsmodels_data(name))

    return load


def _affairs(df: pd.DataFrame) -> pd.DataFrame:
    df[TARGET] = (df.pop("affairs") > 0).astype(int)
    return df.sample(n=1500, random_state=0).reset_index(drop=True)


def _anes(df: pd.DataFrame) -> pd.DataFrame:
    df[TARGET] = df.pop("vote").astype(int)
    return df.drop(columns=["logpopul"])


def _star(df: pd.DataFrame) -> pd.DataFrame:
    share = df["NABOVE"] / (df["NABOVE"] + df["NBELOW"])
    df = df.drop(columns=["NABOVE", "NBELOW"])
    df[TARGET] = (share > share.median()).astype(int)
    return df


def _randhie(df: pd.DataFrame) -> pd.DataFrame:
    df[TARGET] = (df.pop("mdvis") > 2).astype(int)
    return df.sample(n=1500, random_state=0).reset_index(drop=True)


# name -> (loader, what the rows are, what the label means)
DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, str]] = {
    "iris": (_sklearn("load_iris"), "150 iris flowers (scikit-learn's bundled copy of Fisher's iris data), "
             "four sepal and petal measurements in cm", "the species: 0 setosa, 1 versicolor, 2 virginica"),
    "wine": (_sklearn("load_wine"), "178 wines from one Italian region (scikit-learn's copy of the UCI wine data), "
             "13 chemical measurements on very different scales", "the cultivar: 0, 1 or 2"),
    "breast_cancer": (_sklearn("load_breast_cancer"), "569 breast-mass biopsies (scikit-learn's copy of the "
                      "Wisconsin diagnostic data), 30 cell-nucleus measurements", "0 malignant, 1 benign"),
    "affairs": (_statsmodels("fair", _affairs), "1500 married women from a 1974 magazine survey (statsmodels' "
                "`fair` data): marriage rating, age, years married, children, religiousness, education, "
                "occupations", "1 if she reported any extramarital affair, else 0"),
    "anes96": (_statsmodels("anes96", _anes), "944 respondents of the 1996 American National Election Study "
               "(statsmodels' `anes96`): party id, left-right self- and candidate placements, TV news, age, "
               "education, income, population", "the vote: 1 Dole, 0 Clinton"),
    "star98": (_statsmodels("star98", _star), "303 California school districts (statsmodels' `star98`): "
               "demographics, teacher experience, spending, class sizes and interactions",
               "1 if the district's share of students above the national math median is above the middle "
               "district's, else 0"),
    "randhie": (_statsmodels("randhie", _randhie), "1500 people of the RAND health insurance experiment "
                "(statsmodels' `randhie`): coinsurance, deductible, income, health and disease indicators",
                "1 if the person made more than two doctor visits in the year, else 0"),
}
METRICS = ("accuracy", "macro_f1")
TRAIN_FRACTIONS = (0.4, 0.55, 0.7)
NOISE_COLUMNS = (0, 8, 30)
BASELINES = {
    "stump": (["from sklearn.tree import DecisionTreeClassifier"], "DecisionTreeClassifier(max_depth=1, random_state=0)",
              "a depth-1 decision tree"),
    "nearest_centroid": (["from sklearn.neighbors import NearestCentroid"], "NearestCentroid()",
                         "an unscaled nearest-centroid classifier"),
    "knn1_unscaled": (["from sklearn.neighbors import KNeighborsClassifier"], "KNeighborsClassifier(n_neighbors=1)",
                      "an unscaled 1-nearest-neighbour classifier"),
}
CANDIDATES = [
    (["from sklearn.tree import DecisionTreeClassifier"], "DecisionTreeClassifier(max_depth=4, random_state=0)",
     "a depth-4 decision tree"),
    (SCALED + ["from sklearn.neighbors import KNeighborsClassifier"],
     "make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15))", "standardized 15-nearest neighbours"),
    (SCALED + ["from sklearn.linear_model import LogisticRegression"],
     "make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000))",
     "a standardized, regularized logistic regression"),
    (["from sklearn.ensemble import RandomForestClassifier"],
     "RandomForestClassifier(n_estimators=150, min_samples_leaf=2, random_state=0)", "a random forest"),
    (["from sklearn.ensemble import HistGradientBoostingClassifier"],
     "HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, random_state=0)", "gradient-boosted trees"),
    (["from sklearn.ensemble import ExtraTreesClassifier"],
     "ExtraTreesClassifier(n_estimators=200, min_samples_leaf=2, random_state=0)", "extremely randomized trees"),
]
GRID = {"dataset": sorted(DATASETS), "metric": METRICS, "train_fraction": TRAIN_FRACTIONS,
        "noise_columns": NOISE_COLUMNS, "baseline": sorted(BASELINES), "constraint": sorted(CONSTRAINTS)}


def space(rng: random.Random) -> Params:
    return grid_space(rng, GRID)


def count() -> int:
    return grid_count(GRID)


def build(params: Params) -> TaskParts:
    loader, rows_text, label_text = DATASETS[params["dataset"]]
    gen = np.random.default_rng(rng_for(NAME, params).getrandbits(32))
    frame = add_noise_columns(loader(), params["noise_columns"], gen, TARGET)
    split = split_frame(frame, TARGET, params["train_fraction"], gen)
    classes = sorted(int(c) for c in frame[TARGET].unique())
    features = [c for c in frame.columns if c != TARGET]
    noise = (f" The last {params['noise_columns']} columns aux_* are unrelated to the label." if params["noise_columns"]
             else "")
    docs = (f"{rows_text}. Files under data/:\n"
            f"- train.csv ({len(split.train)} rows): {len(features)} numeric columns {', '.join(features[:40])}"
            f"{' …' if len(features) > 40 else ''}, and the target `{TARGET}` ({label_text}).{noise}\n"
            f"- validation.csv ({len(split.validation)} rows) and test.csv ({len(split.test)} rows): a unique "
            f"integer id and the same feature columns, no label.")
    base = BASELINES[params["baseline"]]
    tid = task_id(NAME, params)
    text = (f"Classify rows of the {params['dataset']} table: predict `{TARGET}` ({label_text}) from the other "
            f"columns. Only {int(params['train_fraction'] * 100)}% of the rows are labelled for training."
            + (" Some columns carry no signal." if params["noise_columns"] else ""))
    extra = f"The baseline uses {base[2]}. Labels are the integers {classes}.\n"
    return build_csv_task(CsvTask(
        tid=tid, name=(f"{params['dataset']} classification ({params['metric']}, "
                       f"{int(params['train_fraction'] * 100)}% train, "
              f"{params['noise_columns']} aux columns, {params['baseline']} baseline, {params['constraint']} constraint)"),
        description=csv_description(text, TARGET, params["metric"], extra, params["constraint"]),
        dataset_name=params["dataset"],
        dataset_description=docs, target=TARGET, classes=classes, metric=params["metric"], split=split,
        baseline=base, candidates=CANDIDATES, what="classifier", constraint=params["constraint"]))


FAMILY = Family(name=NAME, domain="tabular", task_type="classification", space=space, build=build, count=count,
                topic="Classification on small real-world tables with weak baselines and uninformative columns")
