"""Family tabular_regression: regression tasks on scikit-learn's and statsmodels' bundled tables (no downloads)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pandas as pd

from engine.synth.procedural.common import Family, Params, grid_count, grid_space, rng_for, statsmodels_data, task_id
from engine.synth.procedural.tabular import (CONSTRAINTS, SCALED, CsvTask, add_noise_columns, build_csv_task,
                                             csv_description, split_frame)
from engine.tasks.folder import TaskParts

NAME = "tabular_regression"
TARGET = "target"


def _sm(name: str) -> pd.DataFrame:
    return statsmodels_data(name)


def _with_target(frame: pd.DataFrame, column: str, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = frame.drop(columns=list(drop))
    target = frame.pop(column).astype(float)
    frame[TARGET] = target
    return frame


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame


def _macro(column: str) -> Callable[[], pd.DataFrame]:
    return lambda: _with_target(_sm("macrodata"), column)


def _grunfeld() -> pd.DataFrame:
    df = _sm("grunfeld")
    df["firm"] = df["firm"].astype("category").cat.codes
    return _with_target(df, "invest")


def _star98() -> pd.DataFrame:
    df = _sm("star98")
    df["share_above"] = 100 * df["NABOVE"] / (df["NABOVE"] + df["NBELOW"])
    return _with_target(df, "share_above", drop=("NABOVE", "NBELOW"))


# name -> (loader, what the rows are, what the target is)
DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, str]] = {
    "diabetes": (_diabetes, "442 diabetes patients (scikit-learn's bundled, unscaled Efron et al. data): age, sex, "
                 "bmi, blood pressure and six serum measurements", "disease progression one year later"),
    "macro_realinv": (_macro("realinv"), "203 quarters of US macroeconomic data 1959-2009 (statsmodels' "
                      "`macrodata`)", "real private investment (billions of chained 2005 dollars)"),
    "macro_realcons": (_macro("realcons"), "203 quarters of US macroeconomic data 1959-2009 (statsmodels' "
                       "`macrodata`)", "real personal consumption (billions of chained 2005 dollars)"),
    "macro_unemp": (_macro("unemp"), "203 quarters of US macroeconomic data 1959-2009 (statsmodels' "
                    "`macrodata`)", "the unemployment rate (%)"),
    "macro_tbilrate": (_macro("tbilrate"), "203 quarters of US macroeconomic data 1959-2009 (statsmodels' "
                       "`macrodata`)", "the 3-month treasury bill rate (%)"),
    "grunfeld": (_grunfeld, "220 firm-years of the Grunfeld investment panel (statsmodels' `grunfeld`): firm value, "
                 "capital stock, firm code and year", "gross investment"),
    "engel": (lambda: _with_target(_sm("engel"), "foodexp"), "235 Belgian working-class households (statsmodels' "
              "`engel`): household income", "annual food expenditure"),
    "affairs": (lambda: _with_target(_sm("fair"), "affairs").sample(n=1500, random_state=0).reset_index(drop=True),
                "1500 married women from a 1974 magazine survey (statsmodels' `fair`)",
                "time spent in extramarital affairs (a skewed, mostly-zero measure)"),
    "star98": (_star98, "303 California school districts (statsmodels' `star98`): demographics, teacher "
               "experience, spending, class sizes and interactions",
               "the percentage of students above the national math median"),
    "cancer": (lambda: _with_target(_sm("cancer"), "cancer"), "301 US counties (statsmodels' `cancer`): population",
               "the number of breast-cancer deaths"),
}
METRICS = ("rmse", "mae")
TRAIN_FRACTIONS = (0.45, 0.6, 0.75)
NOISE_COLUMNS = (0, 6, 20)
BASELINES = {
    "stump": (["from sklearn.tree import DecisionTreeRegressor"], "DecisionTreeRegressor(max_depth=1, random_state=0)",
              "a depth-1 regression tree"),
    "knn1_unscaled": (["from sklearn.neighbors import KNeighborsRegressor"], "KNeighborsRegressor(n_neighbors=1)",
                      "an unscaled 1-nearest-neighbour regressor"),
    "deep_tree": (["from sklearn.tree import DecisionTreeRegressor"], "DecisionTreeRegressor(random_state=0)",
                  "an unpruned regression tree"),
}
CANDIDATES = [
    (["from sklearn.tree import DecisionTreeRegressor"], "DecisionTreeRegressor(max_depth=4, random_state=0)",
     "a depth-4 regression tree"),
    (SCALED + ["from sklearn.neighbors import KNeighborsRegressor"],
     "make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=10))", "standardized 10-nearest neighbours"),
    (SCALED + ["from sklearn.linear_model import RidgeCV"],
     "make_pipeline(StandardScaler(), RidgeCV(alphas=[0.01, 0.1, 1.0, 10.0, 100.0]))",
     "a standardized ridge regression"),
    (["from sklearn.ensemble import RandomForestRegressor"],
     "RandomForestRegressor(n_estimators=150, min_samples_leaf=2, random_state=0)", "a random forest"),
    (["from sklearn.ensemble import GradientBoostingRegressor"],
     "GradientBoostingRegressor(n_estimators=150, learning_rate=0.05, max_depth=2, random_state=0)",
     "boosted shallow trees"),
    (["from sklearn.ensemble import ExtraTreesRegressor"],
     "ExtraTreesRegressor(n_estimators=200, min_samples_leaf=2, random_state=0)", "extremely randomized trees"),
]
GRID = {"dataset": sorted(DATASETS), "metric": METRICS, "train_fraction": TRAIN_FRACTIONS,
        "noise_columns": NOISE_COLUMNS, "baseline": sorted(BASELINES), "constraint": sorted(CONSTRAINTS)}


def space(rng: random.Random) -> Params:
    return grid_space(rng, GRID)


def count() -> int:
    return grid_count(GRID)


def build(params: Params) -> TaskParts:
    loader, rows_text, target_text = DATASETS[params["dataset"]]
    gen = np.random.default_rng(rng_for(NAME, params).getrandbits(32))
    frame = add_noise_columns(loader(), params["noise_columns"], gen, TARGET)
    split = split_frame(frame, TARGET, params["train_fraction"], gen)
    features = [c for c in frame.columns if c != TARGET]
    noise = (f" The last {params['noise_columns']} columns aux_* are unrelated to the target." if params["noise_columns"]
             else "")
    docs = (f"{rows_text}. Files under data/:\n"
            f"- train.csv ({len(split.train)} rows): {len(features)} numeric columns {', '.join(features)}, and "
            f"`{TARGET}` ({target_text}).{noise}\n"
            f"- validation.csv ({len(split.validation)} rows) and test.csv ({len(split.test)} rows): a unique "
            f"integer id and the same feature columns, no target.")
    base = BASELINES[params["baseline"]]
    text = (f"Regression on the {params['dataset']} table: predict `{TARGET}` ({target_text}) from the other "
            f"columns, with {int(params['train_fraction'] * 100)}% of the rows available for training."
            + (" Some columns carry no signal." if params["noise_columns"] else ""))
    return build_csv_task(CsvTask(
        tid=task_id(NAME, params), name=(f"{params['dataset']} regression ({params['metric']}, "
                                         f"{int(params['train_fraction'] * 100)}% train, "
              f"{params['noise_columns']} aux columns, {params['baseline']} baseline, {params['constraint']} constraint)"),
        description=csv_description(text, TARGET, params["metric"], f"The baseline uses {base[2]}.\n",
                                    params["constraint"]),
        dataset_name=params["dataset"], dataset_description=docs, target=TARGET, classes=None,
        metric=params["metric"], split=split, baseline=base, candidates=CANDIDATES, what="regressor",
        constraint=params["constraint"]))


FAMILY = Family(name=NAME, domain="tabular", task_type="regression", space=space, build=build, count=count,
                topic="Regression on small real-world tables (economics, health, education) with weak baselines")
