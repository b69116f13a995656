"""CSV-task builder shared by the tabular and digits families: splits a frame, writes baseline, grader and moves
(the time-series family reuses its grader and metrics)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.errors import TaskError
from engine.synth.procedural.common import (Candidate, better, heuristic_yaml, improving_chain, local_dataset,
                                            task_config)
from engine.tasks.folder import TaskParts

# The metric functions, written once: embedded in every grader and executed here to score candidate moves.
METRIC_SRC = '''
def accuracy(y, p):
    return float(np.mean(np.asarray(y) == np.asarray(p)))


def macro_f1(y, p):
    y, p = np.asarray(y), np.asarray(p)
    scores = []
    for c in np.unique(y):
        tp = float(np.sum((y == c) & (p == c)))
        fp, fn = float(np.sum((y != c) & (p == c))), float(np.sum((y == c) & (p != c)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def rmse(y, p):
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float)) ** 2)))


def mae(y, p):
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(p, float))))
'''
_NS: dict = {"np": np}
exec(METRIC_SRC, _NS)  # noqa: S102 - our own constant source, shared verbatim with the graders
METRIC_FNS = {name: _NS[name] for name in ("accuracy", "macro_f1", "rmse", "mae")}
DIRECTIONS = {"accuracy": "max", "macro_f1": "max", "rmse": "min", "mae": "min"}

GRADER = '''"""Grader for {tid}: scores submission.csv against held-out targets; prints the metrics JSON.

Usage: python evaluate.py --submission_file submission.csv
Prints {{"validation": {{...}}, "test": {{...}}}} with {metric_list}; a malformed submission exits 1 with a message.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
TARGET = {target!r}
CLASSES = {classes!r}  # None for a regression target
METRICS = {metrics!r}
{metric_src}

def fail(message):
    print(f"submission rejected: {{message}}", file=sys.stderr)
    sys.exit(1)


def read_submission(path):
    try:
        submission = pd.read_csv(path)
    except Exception as e:  # any unreadable file is the submitter's problem
        fail(f"cannot read {{path}} as CSV ({{e}})")
    missing = [c for c in ("id", TARGET) if c not in submission.columns]
    if missing:
        fail(f"missing column(s) {{missing}}; expected columns id,{{TARGET}} (found {{list(submission.columns)}})")
    if submission["id"].duplicated().any():
        fail(f"duplicate ids, e.g. {{submission.loc[submission['id'].duplicated(), 'id'].iloc[0]}}")
    values = pd.to_numeric(submission[TARGET], errors="coerce")
    if values.isna().any() or not np.isfinite(values.to_numpy(float)).all():
        fail(f"column {{TARGET}} must hold finite numbers in every row")
    if CLASSES is not None and not set(values.unique()) <= set(CLASSES):
        fail(f"{{TARGET}} must be one of the classes {{CLASSES}}; found {{sorted(set(values.unique()) - set(CLASSES))[:5]}}")
    return pd.DataFrame({{"id": submission["id"], "pred": values}})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--submission_file", required=True)
    args = parser.parse_args()
    submission = read_submission(args.submission_file)
    result, known = {{}}, set()
    for split in ("validation", "test"):
        truth = pd.read_csv(HERE / f"labels_{{split}}.csv")
        known |= set(truth["id"])
        merged = truth.merge(submission, on="id", how="left")
        absent = merged.loc[merged["pred"].isna(), "id"]
        if len(absent):
            fail(f"no prediction for {{len(absent)}} {{split}} rows, e.g. id {{absent.iloc[0]}}")
        result[split] = {{m: globals()[m](merged[TARGET], merged["pred"]) for m in METRICS}}
    unknown = set(submission["id"]) - known
    if unknown:
        fail(f"{{len(unknown)}} ids are neither validation nor test rows, e.g. {{sorted(unknown)[0]}}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
'''

BASELINE = '''"""Baseline for {tid}: fits a model on data/train.csv and writes submission.csv.

submission.csv holds one row per row of data/validation.csv and data/test.csv: columns id, {target}.
"""

import pandas as pd
{block}

train = pd.read_csv("data/train.csv")
validation = pd.read_csv("data/validation.csv")
test = pd.read_csv("data/test.csv")

features = [column for column in train.columns if column != "{target}"]
model = make_model()
model.fit(train[features], train["{target}"])

rows = pd.concat([validation, test], ignore_index=True)
submission = pd.DataFrame({{"id": rows["id"], "{target}": model.predict(rows[features])}})
submission.to_csv("submission.csv", index=False)
print(f"wrote submission.csv: {{len(submission)}} rows")
'''


Model = tuple[list[str], str, str]
"""A model choice: its sklearn imports, the `make_model()` expression, and what the agent reads about it."""

_SCALED = ["from sklearn.pipeline import make_pipeline", "from sklearn.preprocessing import StandardScaler"]


def sklearn_model(cls: str, args: str, label: str, *, scaled: bool = False) -> Model:
    """A Model from a class path under `sklearn.`, its constructor arguments, and its label.

    >>> imports, expr, _ = sklearn_model("neighbors.KNeighborsRegressor", "n_neighbors=10", "10-NN", scaled=True)
    >>> imports[0]
    'from sklearn.neighbors import KNeighborsRegressor'
    >>> expr
    'make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=10))'
    """
    module, name = cls.rsplit(".", 1)
    expr = f"{name}({args})"
    if scaled:
        return [f"from sklearn.{module} import {name}", *_SCALED], f"make_pipeline(StandardScaler(), {expr})", label
    return [f"from sklearn.{module} import {name}"], expr, label


_ENSEMBLES = ("Forest", "Boosting", "ExtraTrees", "Bagging", "Stacking", "Voting")
# name -> (the constraint as the agent reads it, which candidate expressions respect it)
CONSTRAINTS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "none": ("", lambda expr: True),
    "interpretable": ("CONSTRAINT: the final model must stay interpretable: a single decision tree of depth at most 8 "
                      "or a linear model (feature scaling and selection are allowed; no ensembles, no kernels, no "
                      "nearest neighbours).",
                      lambda expr: "DecisionTree" in expr or "Logistic" in expr or "Ridge" in expr),
    "no_ensembles": ("CONSTRAINT: do not use ensembles of models (no random forests, boosting, bagging, stacking or "
                     "voting); one model, with any preprocessing, must make the predictions.",
                     lambda expr: not any(word in expr for word in _ENSEMBLES)),
}


def model_block(imports: list[str], expr: str, what: str) -> str:
    """The editable block of a baseline: its sklearn imports and `make_model`."""
    head = "\n".join(sorted(imports))
    return f'{head}\n\n\ndef make_model():\n    """The {what} to train."""\n    return {expr}\n'


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame  # id + features
    test: pd.DataFrame
    labels_validation: pd.DataFrame  # id + target
    labels_test: pd.DataFrame


def add_noise_columns(frame: pd.DataFrame, k: int, rng: np.random.Generator, target: str) -> pd.DataFrame:
    """Append `k` uninformative columns aux_1..aux_k (Gaussian with varied scales) before the target."""
    if k == 0:
        return frame
    noise = pd.DataFrame({f"aux_{i + 1}": np.round(rng.normal(0, 10 ** rng.uniform(-1, 2), len(frame)), 4)
                          for i in range(k)})
    out = pd.concat([frame.drop(columns=[target]), noise], axis=1)
    out[target] = frame[target].to_numpy()
    return out


def split_frame(frame: pd.DataFrame, target: str, train_fraction: float, rng: np.random.Generator) -> Split:
    """Shuffle rows; `train_fraction` to train, the rest halved into validation and test with shuffled ids."""
    order = rng.permutation(len(frame))
    n_train = int(round(train_fraction * len(frame)))
    n_val = (len(frame) - n_train) // 2
    shuffled = frame.iloc[order].reset_index(drop=True)
    train, held = shuffled.iloc[:n_train].reset_index(drop=True), shuffled.iloc[n_train:].reset_index(drop=True)
    held.insert(0, "id", rng.permutation(len(held)))
    val, test = held.iloc[:n_val].reset_index(drop=True), held.iloc[n_val:].reset_index(drop=True)
    return Split(train, val.drop(columns=[target]), test.drop(columns=[target]), val[["id", target]],
                 test[["id", target]])


def fit_predict(block: str, split: Split, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Fit the block's `make_model()` on train, as the baseline does; its validation and test predictions."""
    ns: dict = {}
    exec(block, ns)  # noqa: S102 - our own candidate code
    features = [c for c in split.train.columns if c != target]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ns["make_model"]()
        model.fit(split.train[features], split.train[target])
        # One predict call over validation then test rows, as the baseline makes it (batching can break ties).
        pred = model.predict(pd.concat([split.validation, split.test], ignore_index=True)[features])
    return pred[:len(split.validation)], pred[len(split.validation):]


def score_block(block: str, split: Split, target: str, metric: str) -> float:
    """The block's validation metric."""
    return METRIC_FNS[metric](split.labels_validation[target].to_numpy(), fit_predict(block, split, target)[0])


def check_constant(block: str, split: Split, target: str, metric: str) -> None:
    """TaskError unless the baseline beats, on test, the constant submission `task check` makes from it (every row
    predicted as its first row, the first validation row)."""
    val, test = fit_predict(block, split, target)
    truth = split.labels_test[target].to_numpy()
    fn = METRIC_FNS[metric]
    if not better(fn(truth, test), fn(truth, np.full(len(truth), val[0])), DIRECTIONS[metric]):
        raise TaskError(f"a constant submission scores at least as well as the baseline on test ({metric}); no task")


def mistakes(target: str) -> list[dict[str, str]]:
    return [
        {"file": "baseline.py", "find": f'model.fit(train[features], train["{target}"])',
         "replace": f"model.fit(train[features], train[{target}])", "note": "Fit on the target column."},
        {"file": "baseline.py", "find": 'train = pd.read_csv("data/train.csv")',
         "replace": 'train = pd.read_csv("data/training.csv")', "note": "Load the training rows."},
    ]


@dataclass(frozen=True)
class CsvTask:
    """Everything a CSV family decides; `build_csv_task` turns it into TaskParts."""

    tid: str
    name: str
    description: str
    dataset_name: str
    dataset_description: str
    target: str
    classes: list[int] | None
    metric: str
    split: Split
    baseline: Model
    candidates: list[Model]
    what: str = "model"
    constraint: str = "none"


def build_csv_task(t: CsvTask) -> TaskParts:
    """Score baseline and candidates on validation, keep an improving chain, and assemble the task's files."""
    direction = DIRECTIONS[t.metric]
    base_block = model_block(t.baseline[0], t.baseline[1], t.what)
    base = Candidate(t.baseline[2], base_block, score_block(base_block, t.split, t.target, t.metric))
    check_constant(base_block, t.split, t.target, t.metric)
    cands = []
    for imports, expr, label in t.candidates:
        if not CONSTRAINTS[t.constraint][1](expr):
            continue
        block = model_block(imports, expr, t.what)
        cands.append(Candidate(label, block, score_block(block, t.split, t.target, t.metric)))
    chain = improving_chain(base, cands, direction)
    metrics = [t.metric] + [m for m in METRIC_FNS if DIRECTIONS[m] == direction and m != t.metric
                            and (t.classes is None) == (m in ("rmse", "mae"))]
    grader = GRADER.format(tid=t.tid, target=t.target, classes=t.classes, metrics=metrics, metric_src=METRIC_SRC,
                           metric_list=", ".join(metrics))
    csv = {k: v.to_csv(index=False) for k, v in (("train", t.split.train), ("validation", t.split.validation),
                                                  ("test", t.split.test))}
    return TaskParts(
        config=task_config(t.tid, t.name, t.description, metric=t.metric, direction=direction, starter=["baseline.py"],
                           requirements=["pandas", "scikit-learn"]),
        datasets=[local_dataset(t.dataset_name, t.dataset_description)],
        workspace={"baseline.py": BASELINE.format(tid=t.tid, target=t.target, block=base_block),
                   "data/train.csv": csv["train"], "data/validation.csv": csv["validation"],
                   "data/test.csv": csv["test"]},
        grader={"evaluate.py": grader, "labels_validation.csv": t.split.labels_validation.to_csv(index=False),
                "labels_test.csv": t.split.labels_test.to_csv(index=False)},
        files={"heuristic.yaml": heuristic_yaml("baseline.py", "python baseline.py", base, chain,
                                                mistakes(t.target), move_run="python baseline.py")},
    )


def csv_description(task_text: str, target: str, metric: str, extra: str = "", constraint: str = "none") -> str:
    """The agent's task text for a CSV task: goal, data docs, baseline, submission format, metric and direction."""
    direction = "Higher is better" if DIRECTIONS[metric] == "max" else "Lower is better"
    words = {"accuracy": "accuracy (share of rows labelled correctly)",
             "macro_f1": "macro-averaged F1 (the mean of the per-class F1 scores)",
             "rmse": "root mean squared error", "mae": "mean absolute error"}[metric]
    return (f"{task_text}\n\n{{dataset_docs}}\n\n"
            f"The workspace holds baseline.py, a weak baseline that trains on data/train.csv and writes "
            f"submission.csv. Improve it to {'raise' if DIRECTIONS[metric] == 'max' else 'lower'} the {words}.\n"
            f"{extra}{CONSTRAINTS[constraint][0] + chr(10) if CONSTRAINTS[constraint][0] else ''}\n"
            f"SUBMISSION FORMAT: a file submission.csv in the workspace with columns id,{target} and one row for "
            f"every row of data/validation.csv AND data/test.csv. `validate` reports {metric} on the validation rows; "
            f"the final score is {metric} on the held-out test rows. {direction}.\n")
