"""Writes the data and held-out labels of the example tasks (examples/tasks/*/workspace/data, grader/labels_*.csv).

Deterministic (fixed seed, data bundled with scikit-learn, no download). Run from anywhere:
    python examples/make_examples.py            # rewrite the CSVs
    python examples/make_examples.py --check    # also run each baseline and grader and print their metrics
The generated files are committed, so the tasks work without running this script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_diabetes, load_wine
from sklearn.model_selection import train_test_split

SEED = 1
TASKS = Path(__file__).resolve().parent / "tasks"


def split_three(frame: pd.DataFrame, target: str, stratify: bool) -> tuple[pd.DataFrame, ...]:
    """60/20/20 train/validation/test; validation and test rows get ids 0..n-1 in that order."""
    train, rest = train_test_split(frame, test_size=0.4, random_state=SEED, stratify=frame[target] if stratify else None)
    validation, test = train_test_split(rest, test_size=0.5, random_state=SEED, stratify=rest[target] if stratify else None)
    validation = validation.reset_index(drop=True)
    test = test.reset_index(drop=True)
    validation.insert(0, "id", range(len(validation)))
    test.insert(0, "id", range(len(validation), len(validation) + len(test)))
    return train.reset_index(drop=True), validation, test


def write_tabular(task: str, frame: pd.DataFrame, target: str, stratify: bool) -> None:
    train, validation, test = split_three(frame, target, stratify)
    data = TASKS / task / "workspace" / "data"
    grader = TASKS / task / "grader"
    data.mkdir(parents=True, exist_ok=True)
    train.to_csv(data / "train.csv", index=False)
    validation.drop(columns=target).to_csv(data / "validation.csv", index=False)
    test.drop(columns=target).to_csv(data / "test.csv", index=False)
    validation[["id", target]].to_csv(grader / "labels_validation.csv", index=False)
    test[["id", target]].to_csv(grader / "labels_test.csv", index=False)


def make_wine() -> None:
    bunch = load_wine(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label", "od280/od315_of_diluted_wines": "od280_od315"})
    write_tabular("wine-classification", frame, "label", stratify=True)


def make_diabetes() -> None:
    bunch = load_diabetes(as_frame=True, scaled=False)
    write_tabular("diabetes-regression", bunch.frame, "target", stratify=False)


def check(task: Path) -> dict:
    """Run the task's baseline in a copy of its workspace, grade the result, return the grader's JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        work, grader = Path(tmp) / "workspace", Path(tmp) / "grader"
        shutil.copytree(task / "workspace", work)
        shutil.copytree(task / "grader", grader)
        if (work / "baseline.py").exists():
            subprocess.run([sys.executable, "baseline.py"], cwd=work, check=True, capture_output=True)
            cmd = [sys.executable, "evaluate.py", "--submission_file", str(work / "submission.csv")]
        else:
            shutil.copy(work / "strategy.py", grader / "strategy.py")
            cmd = [sys.executable, "evaluate.py"]
        out = subprocess.run(cmd, cwd=grader, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run each baseline and grader and print the metrics")
    args = parser.parse_args()
    make_wine()
    make_diabetes()
    if args.check:
        for task in sorted(p for p in TASKS.iterdir() if (p / "task.yaml").exists()):
            print(task.name, json.dumps(check(task)))


if __name__ == "__main__":
    main()
