"""Grader for wine-classification: scores a submission against held-out labels; prints the metrics JSON.

Usage: python evaluate.py --submission_file submission.csv
Prints {"validation": {"accuracy": ...}, "test": {"accuracy": ...}}; a malformed submission exits 1 with a message.
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
CLASSES = {0, 1, 2}


def fail(message: str) -> None:
    print(f"submission rejected: {message}", file=sys.stderr)
    sys.exit(1)


def read_submission(path: str) -> pd.DataFrame:
    try:
        submission = pd.read_csv(path)
    except Exception as e:  # any unreadable file is the submitter's problem, reported as such
        fail(f"cannot read {path} as CSV ({e})")
    missing = [c for c in ("id", "label") if c not in submission.columns]
    if missing:
        fail(f"missing column(s) {missing}; expected columns id,label (found {list(submission.columns)})")
    if submission["id"].duplicated().any():
        fail(f"duplicate ids, e.g. {submission.loc[submission['id'].duplicated(), 'id'].iloc[0]}")
    labels = pd.to_numeric(submission["label"], errors="coerce")
    if labels.isna().any() or not set(labels.unique()) <= CLASSES:
        fail(f"labels must be the class ids {sorted(CLASSES)}; found {sorted(map(str, submission['label'].unique()))[:5]}")
    return pd.DataFrame({"id": submission["id"], "label": labels.astype(int)})


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
        absent = merged.loc[merged["label_pred"].isna(), "id"]
        if len(absent):
            fail(f"no prediction for {len(absent)} {split} rows, e.g. id {absent.iloc[0]}")
        result[split] = {"accuracy": float((merged["label_true"] == merged["label_pred"]).mean())}
    unknown = set(submission["id"]) - known
    if unknown:
        fail(f"{len(unknown)} ids are neither validation nor test rows, e.g. {sorted(unknown)[0]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
