"""Family timeseries_forecasting: multi-step forecasts of statsmodels' bundled series from one forecast origin."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from engine.errors import TaskError
from engine.synth.procedural.common import (Candidate, Family, Params, heuristic_yaml, improving_chain, local_dataset,
                                            rng_for, statsmodels_data, task_config, task_id)
from engine.synth.procedural.tabular import GRADER, METRIC_SRC
from engine.tasks.folder import TaskParts

NAME = "timeseries_forecasting"
Series = tuple[np.ndarray, list[str]]


def _sm(name: str) -> pd.DataFrame:
    return statsmodels_data(name)


def _yearly(name: str, column: str) -> Callable[[], Series]:
    def load() -> Series:
        df = _sm(name)
        return df[column].to_numpy(float), [str(int(y)) for y in df["year" if "year" in df else "YEAR"]]
    return load


def _quarterly(name: str, column: str) -> Callable[[], Series]:
    def load() -> Series:
        df = _sm(name)
        return df[column].to_numpy(float), [f"{int(y)}-Q{int(q)}" for y, q in zip(df["year"], df["quarter"])]
    return load


def _co2() -> Series:
    monthly = _sm("co2")["co2"].resample("MS").mean().interpolate()
    return monthly.to_numpy(float), [d.strftime("%Y-%m") for d in monthly.index]


def _danish(column: str) -> Callable[[], Series]:
    def load() -> Series:
        df = _sm("danish_data")
        return df[column].to_numpy(float), [f"{d.year}-Q{(d.month - 1) // 3 + 1}" for d in df.index]
    return load


def _elnino() -> Series:
    df = _sm("elnino")
    months = [c for c in df.columns if c != "YEAR"]
    values = df[months].to_numpy(float).ravel()
    return values, [f"{int(y)}-{m + 1:02d}" for y in df["YEAR"] for m in range(12)]


# name -> (loader, seasonal period, what the series is)
SERIES: dict[str, tuple[Callable[[], Series], int, str]] = {
    "sunspots": (_yearly("sunspots", "SUNACTIVITY"), 11, "yearly sunspot activity 1700-2008 (statsmodels' `sunspots`), "
                 "with a roughly 11-year cycle"),
    "co2": (_co2, 12, "monthly mean atmospheric CO2 at Mauna Loa in ppm, 1958-2001 (statsmodels' `co2`, weekly "
            "readings averaged per month, gaps interpolated)"),
    "nile": (_yearly("nile", "volume"), 1, "yearly flow volume of the Nile at Aswan 1871-1970 (statsmodels' `nile`)"),
    "elnino": (_elnino, 12, "monthly sea surface temperature of the El Nino region in degrees C, 1950-2010 "
               "(statsmodels' `elnino`)"),
    "infl_dp": (_quarterly("interest_inflation", "Dp"), 4, "quarterly German inflation (change of log prices), "
                "1972-1998 (statsmodels' `interest_inflation`)"),
    "infl_r": (_quarterly("interest_inflation", "R"), 4, "the quarterly German nominal interest rate, 1972-1998 "
               "(statsmodels' `interest_inflation`)"),
}
for _col, _what in (("realgdp", "real GDP"), ("realcons", "real personal consumption"), ("cpi", "the consumer "
                    "price index"), ("unemp", "the unemployment rate (%)"), ("tbilrate", "the 3-month treasury bill "
                    "rate (%)"), ("infl", "the inflation rate (%)"), ("m1", "the M1 money stock"),
                   ("realinv", "real private investment"), ("realgovt", "real government spending"),
                   ("realdpi", "real disposable income"), ("pop", "population (millions)")):
    SERIES[f"macro_{_col}"] = (_quarterly("macrodata", _col), 4, f"quarterly US {_what}, 1959-2009 "
                               "(statsmodels' `macrodata`)")
for _col, _what in (("lrm", "log real money (M2)"), ("lry", "log real income"), ("lpy", "log price deflator"),
                   ("ibo", "bond rate"), ("ide", "bank deposit rate")):
    SERIES[f"danish_{_col}"] = (_danish(_col), 4, f"the quarterly Danish {_what}, 1974-1987 (statsmodels' "
                                "`danish_data`)")
HORIZONS = {12: (6, 12, 24), 4: (4, 8, 12), 11: (5, 10, 20), 1: (5, 10, 20)}
HORIZON_CHOICES = ("short", "medium", "long")
ORIGINS = (0, 1)  # how many horizons before the end of the series the forecast window ends
METRICS = ("mae", "rmse", "mase")

BASELINES = {
    "global_trend": ("a straight line fitted to the whole history",
                     "def forecast(history, steps):\n    \"\"\"Predict the next `steps` values after `history`.\"\"\"\n"
                     "    t = np.arange(len(history))\n    slope, intercept = np.polyfit(t, history, 1)\n"
                     "    return intercept + slope * np.arange(len(history), len(history) + steps)\n"),
    "drift": ("the average change between the first and the last value",
              "def forecast(history, steps):\n    \"\"\"Predict the next `steps` values after `history`.\"\"\"\n"
              "    slope = (history[-1] - history[0]) / (len(history) - 1)\n"
              "    return history[-1] + slope * np.arange(1, steps + 1)\n"),
    "season_mean": ("the average value at each seasonal position over the whole history",
                    "def forecast(history, steps):\n    \"\"\"Predict the next `steps` values after `history`.\"\"\"\n"
                    "    phase = np.arange(len(history)) % PERIOD\n"
                    "    profile = np.array([history[phase == k].mean() for k in range(PERIOD)])\n"
                    "    return profile[np.arange(len(history), len(history) + steps) % PERIOD]\n"),
}
_HEAD = "def forecast(history, steps):\n    \"\"\"Predict the next `steps` values after `history`.\"\"\"\n"
CANDIDATES = [
    ("the last value", _HEAD + "    return np.full(steps, history[-1])\n"),
    ("the mean of recent values", _HEAD + "    return np.full(steps, history[-max(2 * PERIOD, 8):].mean())\n"),
    ("a seasonal naive forecast",
     _HEAD + "    last = history[-PERIOD:]\n    return np.array([last[k % PERIOD] for k in range(steps)])\n"),
    ("a local linear trend plus seasonal offsets",
     _HEAD + "    window = history[-max(8 * PERIOD, 24):]\n    n = len(window)\n"
     "    def design(t):\n        season = np.eye(PERIOD)[(t - len(history)) % PERIOD]\n"
     "        return np.column_stack([t / n, season])\n"
     "    coef, *_ = np.linalg.lstsq(design(np.arange(len(history) - n, len(history))), window, rcond=None)\n"
     "    return design(np.arange(len(history), len(history) + steps)) @ coef\n"),
    ("a ridge autoregression on recent lags, applied recursively",
     "from sklearn.linear_model import Ridge\n\n\n" + _HEAD +
     "    lags = max(2 * PERIOD, 6)\n"
     "    x = np.array([history[i - lags:i] for i in range(lags, len(history))])\n"
     "    model = Ridge(alpha=1.0).fit(x, history[lags:])\n    path = list(history[-lags:])\n"
     "    for _ in range(steps):\n        path.append(float(model.predict(np.array([path[-lags:]]))[0]))\n"
     "    return np.array(path[lags:])\n"),
    ("a damped trend from the recent slope",
     _HEAD + "    recent = history[-max(2 * PERIOD, 6):]\n    slope = np.polyfit(np.arange(len(recent)), recent, 1)[0]\n"
     "    return history[-1] + slope * np.cumsum(0.8 ** np.arange(1, steps + 1))\n"),
]

BASELINE = '''"""Baseline for {tid}: forecasts the values after data/train.csv and writes submission.csv.

submission.csv holds one row per row of data/validation.csv and data/test.csv: columns id, value.
"""

import numpy as np
import pandas as pd

PERIOD = {period}  # the seasonal period of the series, in steps
{block}

train = pd.read_csv("data/train.csv")
validation = pd.read_csv("data/validation.csv")
test = pd.read_csv("data/test.csv")

rows = pd.concat([validation, test], ignore_index=True)
last_t = int(train["t"].max())
path = np.asarray(forecast(train["value"].to_numpy(dtype=float), int(rows["t"].max()) - last_t), dtype=float)
submission = pd.DataFrame({{"id": rows["id"], "value": path[rows["t"].to_numpy() - last_t - 1]}})
submission.to_csv("submission.csv", index=False)
print(f"wrote submission.csv: {{len(submission)}} rows")
'''
MASE_SRC = '''

def mase(y, p):
    return mae(y, p) / SCALE
'''


def space(rng: random.Random) -> Params:
    return {"series": rng.choice(sorted(SERIES)), "horizon": rng.choice(HORIZON_CHOICES), "origin": rng.choice(ORIGINS),
            "metric": rng.choice(METRICS), "baseline": rng.choice(sorted(BASELINES))}


def count() -> int:
    return len(SERIES) * len(HORIZON_CHOICES) * len(ORIGINS) * len(METRICS) * len(BASELINES)


def _metric_fns(scale: float) -> dict[str, Callable]:
    ns: dict = {"np": np, "SCALE": scale}
    exec(METRIC_SRC + MASE_SRC, ns)  # noqa: S102 - our own constant source, shared with the grader
    return ns


def _forecast(block: str, history: np.ndarray, steps: int, period: int) -> np.ndarray:
    ns: dict = {"np": np, "PERIOD": period}
    exec(block, ns)  # noqa: S102 - our own candidate code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(ns["forecast"](history.copy(), steps), dtype=float)


def build(params: Params) -> TaskParts:
    loader, period, what = SERIES[params["series"]]
    values, dates = loader()
    h = HORIZONS[period][HORIZON_CHOICES.index(params["horizon"])]
    cut = len(values) - 2 * h - params["origin"] * h
    history, future = values[:cut], values[cut:cut + 2 * h]
    scale = float(np.mean(np.abs(history[period:] - history[:-period]))) or 1.0
    fns = _metric_fns(scale)
    metric = params["metric"]

    def score(block: str, part: slice) -> float:
        return fns[metric](future[part], _forecast(block, history, 2 * h, period)[part])

    label, base_block = BASELINES[params["baseline"]]
    base = Candidate(label, base_block, score(base_block, slice(0, h)))
    first = _forecast(base_block, history, 2 * h, period)
    gen = np.random.default_rng(rng_for(NAME, params).getrandbits(32))
    ids = gen.permutation(2 * h)
    if fns[metric](future[h:], np.full(h, first[0])) <= score(base_block, slice(h, 2 * h)):
        raise TaskError(f"{params}: a constant forecast beats the baseline on the test window; no task")
    chain = improving_chain(base, [Candidate(n, b, score(b, slice(0, h))) for n, b in CANDIDATES], "min")
    t = np.arange(len(values))
    train = pd.DataFrame({"t": t[:cut], "date": dates[:cut], "value": history})
    held = pd.DataFrame({"id": ids, "t": t[cut:cut + 2 * h], "date": dates[cut:cut + 2 * h], "value": future})
    val, test = held.iloc[:h], held.iloc[h:]
    tid = task_id(NAME, params)
    grader = GRADER.format(tid=tid, target="value", classes=None, metrics=[metric] + [m for m in METRICS if m != metric],
                           metric_src=f"SCALE = {scale!r}  # mean absolute seasonal difference of the history\n"
                                      + METRIC_SRC + MASE_SRC, metric_list=", ".join(METRICS))
    words = {"mae": "mean absolute error", "rmse": "root mean squared error",
             "mase": "mean absolute scaled error (the mean absolute error divided by the mean absolute difference "
                     f"between values {period} step(s) apart in the training history, {scale:.4g})"}[metric]
    docs = (f"{what}. Files under data/:\n- train.csv ({cut} rows): t (step index), date, value — the history up to "
            f"the forecast origin {dates[cut - 1]}.\n- validation.csv ({h} rows): id, t, date of the {h} steps after "
            f"the origin; test.csv ({h} rows): id, t, date of the {h} steps after those. No values are given for "
            "either: both windows are forecast from the same origin.")
    description = (
        f"Forecast {what.split(' (')[0]} {2 * h} steps ahead from a single origin.\n\n{{dataset_docs}}\n\n"
        f"The workspace holds baseline.py, whose function forecast(history, steps) extrapolates {label}. "
        f"Improve the forecast to lower the {words}. You may only use the history in data/train.csv.\n\n"
        "SUBMISSION FORMAT: a file submission.csv in the workspace with columns id,value and one row for every row "
        f"of data/validation.csv AND data/test.csv. `validate` reports {metric} on the validation window (steps 1 to "
        f"{h}); the final score is {metric} on the held-out test window (steps {h + 1} to {2 * h}). Lower is better.\n")
    return TaskParts(
        config=task_config(tid, f"{params['series']} forecast, {2 * h} steps from {dates[cut - 1]} "
                                f"({metric}, {params['baseline']} baseline)", description, metric=metric,
                           direction="min", starter=["baseline.py"], requirements=["numpy", "pandas", "scikit-learn"]),
        datasets=[local_dataset(params["series"], docs)],
        workspace={"baseline.py": BASELINE.format(tid=tid, period=period, block=base_block),
                   "data/train.csv": train.to_csv(index=False),
                   "data/validation.csv": val.drop(columns=["value"]).to_csv(index=False),
                   "data/test.csv": test.drop(columns=["value"]).to_csv(index=False)},
        grader={"evaluate.py": grader, "labels_validation.csv": val[["id", "value"]].to_csv(index=False),
                "labels_test.csv": test[["id", "value"]].to_csv(index=False)},
        files={"heuristic.yaml": heuristic_yaml("baseline.py", "python baseline.py", base, chain, [
            {"file": "baseline.py", "find": 'train = pd.read_csv("data/train.csv")',
             "replace": 'train = pd.read_csv("data/history.csv")', "note": "Load the history."},
            {"file": "baseline.py", "find": "last_t = int(train[\"t\"].max())",
             "replace": "last_t = int(train[\"t\"].min())", "note": "Index the forecast from the origin."}],
            move_run="python baseline.py")},
    )


FAMILY = Family(name=NAME, domain="time-series", task_type="forecasting", space=space, build=build, count=count,
                topic="Multi-step forecasting of real economic, climate and astronomical series")
