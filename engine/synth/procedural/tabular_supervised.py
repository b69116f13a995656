"""Families tabular_classification and tabular_regression: one CSV family on bundled tables, parametrised by kind."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from engine.synth.procedural.common import Family, Params, grid_count, grid_space, rng_for, statsmodels_data, task_id
from engine.synth.procedural.tabular import (CONSTRAINTS, CsvTask, Model, add_noise_columns, build_csv_task,
                                             csv_description, sklearn_model, split_frame)
from engine.tasks.folder import TaskParts

Loader = Callable[[], pd.DataFrame]
MAX_LISTED_COLUMNS = 40  # the data docs name at most this many feature columns


@dataclass(frozen=True)
class TabularKind:
    """What one tabular family decides; everything else (splits, noise columns, grader, moves) is shared."""

    name: str  # the family name that configs use (SynthConfig.families)
    task_type: str  # "classification" or "regression"; classification tasks list and check their classes
    target: str  # the target column
    noun: str  # what the target is called in the data docs ("label", "target")
    target_doc: str  # how train.csv's docs introduce the target column
    goal: str  # the task text's opening; format fields dataset, target, target_text, pct
    datasets: dict[str, tuple[Loader, str, str]]  # name -> (loader, what the rows are, what the target means)
    metrics: tuple[str, ...]
    train_fractions: tuple[float, ...]
    noise_columns: tuple[int, ...]
    baselines: dict[str, Model]
    candidates: list[Model]
    what: str  # the model's noun in make_model's docstring
    topic: str

    def grid(self) -> dict[str, list | tuple]:
        # The axes' order fixes the draws: grid_space samples them in this order.
        return {"dataset": sorted(self.datasets), "metric": self.metrics, "train_fraction": self.train_fractions,
                "noise_columns": self.noise_columns, "baseline": sorted(self.baselines),
                "constraint": sorted(CONSTRAINTS)}


def space(kind: TabularKind, rng: random.Random) -> Params:
    return grid_space(rng, kind.grid())


def count(kind: TabularKind) -> int:
    return grid_count(kind.grid())


def build(kind: TabularKind, params: Params) -> TaskParts:
    loader, rows_text, target_text = kind.datasets[params["dataset"]]
    target, pct = kind.target, int(params["train_fraction"] * 100)
    gen = np.random.default_rng(rng_for(kind.name, params).getrandbits(32))
    frame = add_noise_columns(loader(), params["noise_columns"], gen, target)
    split = split_frame(frame, target, params["train_fraction"], gen)
    classes = sorted(int(c) for c in frame[target].unique()) if kind.task_type == "classification" else None
    features = [c for c in frame.columns if c != target]
    listed = ", ".join(features[:MAX_LISTED_COLUMNS]) + (" …" if len(features) > MAX_LISTED_COLUMNS else "")
    noise = (f" The last {params['noise_columns']} columns aux_* are unrelated to the {kind.noun}."
             if params["noise_columns"] else "")
    docs = (f"{rows_text}. Files under data/:\n"
            f"- train.csv ({len(split.train)} rows): {len(features)} numeric columns {listed}, and "
            f"{kind.target_doc} ({target_text}).{noise}\n"
            f"- validation.csv ({len(split.validation)} rows) and test.csv ({len(split.test)} rows): a unique "
            f"integer id and the same feature columns, no {kind.noun}.")
    base = kind.baselines[params["baseline"]]
    text = (kind.goal.format(dataset=params["dataset"], target=target, target_text=target_text, pct=pct)
            + (" Some columns carry no signal." if params["noise_columns"] else ""))
    extra = f"The baseline uses {base[2]}." + (f" Labels are the integers {classes}." if classes else "") + "\n"
    return build_csv_task(CsvTask(
        tid=task_id(kind.name, params),
        name=(f"{params['dataset']} {kind.task_type} ({params['metric']}, {pct}% train, {params['noise_columns']} aux "
              f"columns, {params['baseline']} baseline, {params['constraint']} constraint)"),
        description=csv_description(text, target, params["metric"], extra, params["constraint"]),
        dataset_name=params["dataset"], dataset_description=docs, target=target, classes=classes,
        metric=params["metric"], split=split, baseline=base, candidates=kind.candidates, what=kind.what,
        constraint=params["constraint"]))


def family(kind: TabularKind) -> Family:
    return Family(name=kind.name, domain="tabular", task_type=kind.task_type, space=partial(space, kind),
                  build=partial(build, kind), count=partial(count, kind), topic=kind.topic)


# Classification: integer labels derived from bundled tables.
LABEL = "label"


def _sklearn(loader: str) -> Loader:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        frame = bunch.frame.rename(columns={"target": LABEL})
        frame.columns = [c.replace(" ", "_").replace("/", "_").replace("(", "").replace(")", "") for c in frame.columns]
        return frame

    return load


def _labelled(name: str, make: Callable[[pd.DataFrame], pd.DataFrame]) -> Loader:
    return lambda: make(statsmodels_data(name))


def _affairs_any(df: pd.DataFrame) -> pd.DataFrame:
    df[LABEL] = (df.pop("affairs") > 0).astype(int)
    return df.sample(n=1500, random_state=0).reset_index(drop=True)


def _anes_vote(df: pd.DataFrame) -> pd.DataFrame:
    df[LABEL] = df.pop("vote").astype(int)
    return df.drop(columns=["logpopul"])


def _star_above_median(df: pd.DataFrame) -> pd.DataFrame:
    share = df["NABOVE"] / (df["NABOVE"] + df["NBELOW"])
    df = df.drop(columns=["NABOVE", "NBELOW"])
    df[LABEL] = (share > share.median()).astype(int)
    return df


def _randhie_visits(df: pd.DataFrame) -> pd.DataFrame:
    df[LABEL] = (df.pop("mdvis") > 2).astype(int)
    return df.sample(n=1500, random_state=0).reset_index(drop=True)


CLASSIFICATION = TabularKind(
    name="tabular_classification", task_type="classification", target=LABEL, noun="label",
    target_doc=f"the target `{LABEL}`", what="classifier",
    goal=("Classify rows of the {dataset} table: predict `{target}` ({target_text}) from the other columns. "
          "Only {pct}% of the rows are labelled for training."),
    datasets={
        "iris": (_sklearn("load_iris"), "150 iris flowers (scikit-learn's bundled copy of Fisher's iris data), "
                 "four sepal and petal measurements in cm", "the species: 0 setosa, 1 versicolor, 2 virginica"),
        "wine": (_sklearn("load_wine"), "178 wines from one Italian region (scikit-learn's copy of the UCI wine "
                 "data), 13 chemical measurements on very different scales", "the cultivar: 0, 1 or 2"),
        "breast_cancer": (_sklearn("load_breast_cancer"), "569 breast-mass biopsies (scikit-learn's copy of the "
                          "Wisconsin diagnostic data), 30 cell-nucleus measurements", "0 malignant, 1 benign"),
        "affairs": (_labelled("fair", _affairs_any), "1500 married women from a 1974 magazine survey (statsmodels' "
                    "`fair` data): marriage rating, age, years married, children, religiousness, education, "
                    "occupations", "1 if she reported any extramarital affair, else 0"),
        "anes96": (_labelled("anes96", _anes_vote), "944 respondents of the 1996 American National Election Study "
                   "(statsmodels' `anes96`): party id, left-right self- and candidate placements, TV news, age, "
                   "education, income, population", "the vote: 1 Dole, 0 Clinton"),
        "star98": (_labelled("star98", _star_above_median), "303 California school districts (statsmodels' "
                   "`star98`): demographics, teacher experience, spending, class sizes and interactions",
                   "1 if the district's share of students above the national math median is above the middle "
                   "district's, else 0"),
        "randhie": (_labelled("randhie", _randhie_visits), "1500 people of the RAND health insurance experiment "
                    "(statsmodels' `randhie`): coinsurance, deductible, income, health and disease indicators",
                    "1 if the person made more than two doctor visits in the year, else 0"),
    },
    metrics=("accuracy", "macro_f1"), train_fractions=(0.4, 0.55, 0.7), noise_columns=(0, 8, 30),
    baselines={
        "stump": sklearn_model("tree.DecisionTreeClassifier", "max_depth=1, random_state=0", "a depth-1 decision tree"),
        "nearest_centroid": sklearn_model("neighbors.NearestCentroid", "", "an unscaled nearest-centroid classifier"),
        "knn1_unscaled": sklearn_model("neighbors.KNeighborsClassifier", "n_neighbors=1",
                                       "an unscaled 1-nearest-neighbour classifier"),
    },
    candidates=[
        sklearn_model("tree.DecisionTreeClassifier", "max_depth=4, random_state=0", "a depth-4 decision tree"),
        sklearn_model("neighbors.KNeighborsClassifier", "n_neighbors=15", "standardized 15-nearest neighbours",
                      scaled=True),
        sklearn_model("linear_model.LogisticRegression", "C=0.3, max_iter=2000",
                      "a standardized, regularized logistic regression", scaled=True),
        sklearn_model("ensemble.RandomForestClassifier", "n_estimators=150, min_samples_leaf=2, random_state=0",
                      "a random forest"),
        sklearn_model("ensemble.HistGradientBoostingClassifier", "max_iter=150, learning_rate=0.05, random_state=0",
                      "gradient-boosted trees"),
        sklearn_model("ensemble.ExtraTreesClassifier", "n_estimators=200, min_samples_leaf=2, random_state=0",
                      "extremely randomized trees"),
    ],
    topic="Classification on small real-world tables with weak baselines and uninformative columns")


# Regression: a numeric column of a bundled table becomes the target.
TARGET = "target"


def _as_target(frame: pd.DataFrame, column: str, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = frame.drop(columns=list(drop))
    target = frame.pop(column).astype(float)
    frame[TARGET] = target
    return frame


def _numeric(name: str, column: str, drop: tuple[str, ...] = ()) -> Loader:
    def load() -> pd.DataFrame:
        return _as_target(statsmodels_data(name), column, drop)

    return load


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame


def _grunfeld() -> pd.DataFrame:
    df = statsmodels_data("grunfeld")
    df["firm"] = df["firm"].astype("category").cat.codes
    return _as_target(df, "invest")


def _star_share() -> pd.DataFrame:
    df = statsmodels_data("star98")
    df["share_above"] = 100 * df["NABOVE"] / (df["NABOVE"] + df["NBELOW"])
    return _as_target(df, "share_above", drop=("NABOVE", "NBELOW"))


def _affairs_time() -> pd.DataFrame:
    return _as_target(statsmodels_data("fair"), "affairs").sample(n=1500, random_state=0).reset_index(drop=True)


_MACRO = "203 quarters of US macroeconomic data 1959-2009 (statsmodels' `macrodata`)"
REGRESSION = TabularKind(
    name="tabular_regression", task_type="regression", target=TARGET, noun="target", target_doc=f"`{TARGET}`",
    what="regressor",
    goal=("Regression on the {dataset} table: predict `{target}` ({target_text}) from the other columns, with "
          "{pct}% of the rows available for training."),
    datasets={
        "diabetes": (_diabetes, "442 diabetes patients (scikit-learn's bundled, unscaled Efron et al. data): age, "
                     "sex, bmi, blood pressure and six serum measurements", "disease progression one year later"),
        "macro_realinv": (_numeric("macrodata", "realinv"), _MACRO,
                          "real private investment (billions of chained 2005 dollars)"),
        "macro_realcons": (_numeric("macrodata", "realcons"), _MACRO,
                           "real personal consumption (billions of chained 2005 dollars)"),
        "macro_unemp": (_numeric("macrodata", "unemp"), _MACRO, "the unemployment rate (%)"),
        "macro_tbilrate": (_numeric("macrodata", "tbilrate"), _MACRO, "the 3-month treasury bill rate (%)"),
        "grunfeld": (_grunfeld, "220 firm-years of the Grunfeld investment panel (statsmodels' `grunfeld`): firm "
                     "value, capital stock, firm code and year", "gross investment"),
        "engel": (_numeric("engel", "foodexp"), "235 Belgian working-class households (statsmodels' `engel`): "
                  "household income", "annual food expenditure"),
        "affairs": (_affairs_time, "1500 married women from a 1974 magazine survey (statsmodels' `fair`)",
                    "time spent in extramarital affairs (a skewed, mostly-zero measure)"),
        "star98": (_star_share, "303 California school districts (statsmodels' `star98`): demographics, teacher "
                   "experience, spending, class sizes and interactions",
                   "the percentage of students above the national math median"),
        "cancer": (_numeric("cancer", "cancer"), "301 US counties (statsmodels' `cancer`): population",
                   "the number of breast-cancer deaths"),
    },
    metrics=("rmse", "mae"), train_fractions=(0.45, 0.6, 0.75), noise_columns=(0, 6, 20),
    baselines={
        "stump": sklearn_model("tree.DecisionTreeRegressor", "max_depth=1, random_state=0",
                               "a depth-1 regression tree"),
        "knn1_unscaled": sklearn_model("neighbors.KNeighborsRegressor", "n_neighbors=1",
                                       "an unscaled 1-nearest-neighbour regressor"),
        "deep_tree": sklearn_model("tree.DecisionTreeRegressor", "random_state=0", "an unpruned regression tree"),
    },
    candidates=[
        sklearn_model("tree.DecisionTreeRegressor", "max_depth=4, random_state=0", "a depth-4 regression tree"),
        sklearn_model("neighbors.KNeighborsRegressor", "n_neighbors=10", "standardized 10-nearest neighbours",
                      scaled=True),
        sklearn_model("linear_model.RidgeCV", "alphas=[0.01, 0.1, 1.0, 10.0, 100.0]", "a standardized ridge regression",
                      scaled=True),
        sklearn_model("ensemble.RandomForestRegressor", "n_estimators=150, min_samples_leaf=2, random_state=0",
                      "a random forest"),
        sklearn_model("ensemble.GradientBoostingRegressor",
                      "n_estimators=150, learning_rate=0.05, max_depth=2, random_state=0", "boosted shallow trees"),
        sklearn_model("ensemble.ExtraTreesRegressor", "n_estimators=200, min_samples_leaf=2, random_state=0",
                      "extremely randomized trees"),
    ],
    topic="Regression on small real-world tables (economics, health, education) with weak baselines")

CLASSIFICATION_FAMILY = family(CLASSIFICATION)
REGRESSION_FAMILY = family(REGRESSION)
