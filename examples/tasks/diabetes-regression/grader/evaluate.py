"""Grader for diabetes-regression: scores a submission against held-out targets; prints the metrics JSON.

Usage: python evaluate.py --submission_file submission.csv
Prints {"validation": {"rmse": ..., "mae": ...}, "test": {"rmse": ..., "mae": ...}} (lower is better, never
negative); a malformed submission exits 1 with a message.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def fail(message: str) -> None:
    print(f"submission rejected: {message}", file=sys.stderr)
    sys.exit(1)


def read_submission(path: str) -> pd.DataFrame:
    try:
        submission = pd.read_csv(path)
    except Exception as e:  # any unreadable file is the submitter's problem, reported as such
        fail(f"cannot read {path} as CSV ({e})")
    missing = [c for c in ("id", "target") if c not in submission.columns]
    if missing:
        fail(f"missing column(s) {missing}; expected columns id,target (found {list(submission.columns)})")
    if submission["id"].duplicated().any():
        fail(f"duplicate ids, e.g. {submission.loc[submission['id'].duplicated(), 'id'].iloc[0]}")
    target = pd.to_numeric(submission["target"], errors="coerce")
    if target.isna().any() or not target.map(math.isfinite).all():
        fail("every target must be a finite number")
    return pd.DataFrame({"id": submission["id"], "target": target})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submission_file", required=True)
    args = parser.parse_args()
    submission = read_submission(args.submission_file)
    result, known = {}, set()
    for split in ("validation", "test"):
        truth = pd.read_csv(HERE / f"labels_{split}.csv")
        known |= set(truth["id"])
        merged = truth.merge(submission, on="id", how="left", suffixes=("_true", "_pred"))
        absent = merged.loc[merged["target_pred"].isna(), "id"]
        if len(absent):
            fail(f"no prediction for {len(absent)} {split} rows, e.g. id {absent.iloc[0]}")
        error = merged["target_pred"] - merged["target_true"]
        result[split] = {"rmse": float(math.sqrt((error**2).mean())), "mae": float(error.abs().mean())}
    unknown = set(submission["id"]) - known
    if unknown:
        fail(f"{len(unknown)} ids are neither validation nor test rows, e.g. {sorted(unknown)[0]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
