"""Leak probes: read a task folder (workspace/, grader/, task.yaml) and return RejectRecords for every leak found.

Reasons (one record per reason, stage ``guard``):
- ``labels_in_workspace``: a workspace file holds the held-out labels (a column that, joined by id, or row by row,
  equals or relabels ``grader/labels_*.csv``), a workspace file is a byte copy of a grader file, or most held-out
  rows are also in train.csv with their labels.
- ``target_copy``: a feature column of train.csv determines the target: equal to it, a one-to-one relabelling
  (categorical targets), or an affine / perfectly correlated / strictly monotone copy (numeric targets).
- ``baseline_at_ceiling`` and ``constant_at_ceiling``: the baseline, or a constant submission, already reaches
  the best value the metric can take (``ceiling_check``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from engine.synth.guards.contamination import normalise_value
from engine.synth.guards.text import squash
from engine.synth.records import RejectRecord
from engine.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

MIN_ROWS = 20  # below this, a perfect relation between a column and the target can be chance
CATEGORICAL_MAX = 50  # targets with at most this many distinct values are probed as categories
CORR_MIN = 0.999
HELD_OUT_IN_TRAIN_SHARE = 0.5
MAX_TABLE_BYTES = 256 << 20
TABLE_SUFFIXES = {".csv", ".tsv", ".parquet", ".jsonl"}

# (lowest, highest) value of each metric, by squashed name; the ceiling is the bound in the metric's direction.
METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    **{m: (0.0, 1.0) for m in ("accuracy", "acc", "balancedaccuracy", "f1", "f1score", "precision", "recall", "auc",
                               "rocauc", "auroc", "prauc", "averageprecision", "map", "iou", "miou", "dice", "jaccard",
                               "top1accuracy", "top5accuracy", "exactmatch", "em", "hitrate", "ndcg")},
    **{m: (-1.0, 1.0) for m in ("mcc", "matthewscorrcoef", "pearson", "spearman", "kendalltau", "cohenkappa", "kappa")},
    **{m: (-math.inf, 1.0) for m in ("r2", "r2score", "rsquared", "explainedvariance")},
    **{m: (0.0, math.inf) for m in ("rmse", "mse", "mae", "medae", "mape", "smape", "logloss", "crossentropy", "loss",
                                    "nll", "perplexity", "errorrate", "error", "wer", "cer", "rmsle", "msle", "brier",
                                    "brierscore", "hamming", "hammingloss")},
}
_AFFIXES = ("validation", "valid", "val", "test", "eval", "mean", "macro", "micro", "weighted", "average", "avg",
            "samples", "binary")


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """(lowest, highest) value of a known metric, or None. Split and averaging words around it are ignored.

    >>> metric_bounds("validation_accuracy"), metric_bounds("RMSE"), metric_bounds("Reward Mean")
    ((0.0, 1.0), (0.0, inf), None)
    """
    name = squash(metric)
    while name not in METRIC_BOUNDS:
        prefix = next((p for p in _AFFIXES if name.startswith(p) and len(name) > len(p)), None)
        suffix = next((p for p in _AFFIXES if name.endswith(p) and len(name) > len(p)), None)
        if prefix is None and suffix is None:
            return None
        name = name[len(prefix):] if prefix else name[: -len(suffix)]  # type: ignore[arg-type]
    return METRIC_BOUNDS[name]


def ceiling_check(metric: str, direction: str, value: float | None, *, tol: float = 1e-9) -> bool:
    """True when `value` already reaches the best value `metric` can take in `direction` (max: its highest
    bound, min: its lowest); False for unknown metrics, unbounded directions and missing values.

    >>> ceiling_check("accuracy", "max", 1.0), ceiling_check("accuracy", "max", 0.99), ceiling_check("rmse", "min", 0.0)
    (True, False, True)
    """
    bounds = metric_bounds(metric)
    if bounds is None or value is None or not math.isfinite(value):
        return False
    best = bounds[1] if direction == "max" else bounds[0]
    if not math.isfinite(best):
        return False
    return value >= best - tol if direction == "max" else value <= best + tol


def determines(feature: pd.Series, target: pd.Series, *, min_rows: int = MIN_ROWS) -> str | None:
    """How `feature` gives `target` away on aligned rows, or None: ``equal``, ``relabelled`` (a one-to-one map
    covering every row, categorical targets), ``affine``, ``correlated`` (|r| ≥ 0.999) or ``monotone`` (numeric
    targets). Rows whose target is missing are left out; the feature must be present on all the others.
    """
    keep = target.notna().to_numpy()
    f = feature[keep].reset_index(drop=True)
    t = target[keep].reset_index(drop=True)
    if len(t) < min_rows or f.isna().any():
        return None
    fs, ts = f.map(normalise_value), t.map(normalise_value)
    n_classes = ts.nunique()
    if n_classes < 2:
        return None
    if (fs == ts).all():
        return "equal"
    if n_classes <= CATEGORICAL_MAX and n_classes <= len(t) // 2:
        pairs = pd.DataFrame({"f": fs, "t": ts})
        one_to_one = pairs.groupby("f")["t"].nunique().max() == 1 and pairs.groupby("t")["f"].nunique().max() == 1
        return "relabelled" if one_to_one else None
    fx, tx = pd.to_numeric(f, errors="coerce"), pd.to_numeric(t, errors="coerce")
    if fx.isna().any() or tx.isna().any() or fx.nunique() < 2:
        return None
    slope, intercept = np.polyfit(fx.to_numpy(float), tx.to_numpy(float), 1)
    x, y = fx.to_numpy(float), tx.to_numpy(float)
    if np.allclose(slope * x + intercept, y, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(y).max()))):
        return "affine"
    if abs(fx.corr(tx)) >= CORR_MIN:
        return "correlated"
    if abs(fx.rank().corr(tx.rank())) >= 1 - 1e-12:
        return "monotone"
    return None


# ---------------------------------------------------------------- reading the folder


def _read_table(path: Path) -> pd.DataFrame | None:
    try:
        if path.stat().st_size > MAX_TABLE_BYTES:
            log.warning("%s: over %d bytes, not probed for leaks", path, MAX_TABLE_BYTES)
            return None
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=True)
    except Exception as e:  # noqa: BLE001 - an unreadable file is not a table; other probes still see its bytes
        log.debug("%s: not read as a table (%s)", path, e)
        return None


def _id_column(df: pd.DataFrame) -> str:
    return "id" if "id" in df.columns else str(df.columns[0])


def _labels(spec: TaskSpec) -> dict[str, pd.DataFrame]:
    """split → labels table (id column first) from grader/labels_<split>.csv."""
    out = {}
    for path in sorted(spec.grader_dir.glob("labels_*.csv")) if spec.grader_dir.is_dir() else []:
        df = _read_table(path)
        if df is not None and len(df.columns) >= 2:
            out[path.stem[len("labels_"):]] = df
    return out


def _split_file(spec: TaskSpec, split: str) -> Path:
    for ds in spec.datasets:
        if split in ds.splits:
            return spec.workspace_dir / "data" / ds.splits[split]
    return spec.workspace_dir / "data" / f"{split}.csv"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the probes


def _grader_copies(spec: TaskSpec) -> list[str]:
    if not spec.grader_dir.is_dir():
        return []
    grader = {_digest(p): p for p in sorted(spec.grader_dir.rglob("*")) if p.is_file() and p.stat().st_size > 0}
    found = []
    for p in sorted(spec.workspace_dir.rglob("*")):
        if p.is_file() and p.stat().st_size > 0 and _digest(p) in grader:
            found.append(f"workspace/{p.relative_to(spec.workspace_dir)} is a copy of "
                         f"grader/{grader[_digest(p)].relative_to(spec.grader_dir)}")
    return found


def _labels_in_tables(spec: TaskSpec, labels: Mapping[str, pd.DataFrame]) -> list[str]:
    found = []
    for path in sorted(p for p in spec.workspace_dir.rglob("*") if p.is_file() and p.suffix in TABLE_SUFFIXES):
        table = _read_table(path)
        if table is None or table.empty:
            continue
        rel = f"workspace/{path.relative_to(spec.workspace_dir)}"
        for split, lab in labels.items():
            found += [f"{rel} column {c!r} {how} labels_{split}.csv column {t!r}"
                      for c, t, how in _label_columns(table, lab)]
    return found


def _label_columns(table: pd.DataFrame, lab: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(workspace column, label column, how) for columns that hold the labels, joined by id or row by row."""
    lab_id = _id_column(lab)
    targets = [c for c in lab.columns if c != lab_id]
    if lab_id in table.columns:
        left = lab.assign(_key=lab[lab_id].map(normalise_value))
        right = table.assign(_key=table[lab_id].map(normalise_value)).drop_duplicates("_key")
        joined = left.merge(right, on="_key", suffixes=("", "__ws"))
        if len(joined) < max(1, len(lab) // 2):
            return []
        pairs = [(joined[f"{c}__ws" if c in lab.columns else c], joined[t], c, t)
                 for c in table.columns if c != lab_id for t in targets]
    elif len(table) == len(lab):
        pairs = [(table[c].reset_index(drop=True), lab[t].reset_index(drop=True), c, t)
                 for c in table.columns for t in targets]
    else:
        return []
    out = []
    for feature, target, c, t in pairs:
        how = determines(feature, target, min_rows=min(MIN_ROWS, len(lab)))
        if how is not None:
            out.append((c, t, "holds" if how == "equal" else f"holds ({how})"))
    return out


def _held_out_in_train(spec: TaskSpec, labels: Mapping[str, pd.DataFrame], train: pd.DataFrame | None) -> list[str]:
    if train is None or train.empty:
        return []
    found = []
    for split in labels:
        path = _split_file(spec, split)
        held = _read_table(path) if path.is_file() else None
        if held is None or len(held) < MIN_ROWS:
            continue
        cols = [c for c in held.columns if c != "id" and c in train.columns]
        if not cols:
            continue
        train_rows = {tuple(map(normalise_value, r)) for r in train[cols].itertuples(index=False)}
        if len(train_rows) < 0.9 * len(train):  # rows repeat within train itself: a match says little
            continue
        hits = sum(tuple(map(normalise_value, r)) in train_rows for r in held[cols].itertuples(index=False))
        if hits / len(held) >= HELD_OUT_IN_TRAIN_SHARE:
            found.append(f"{hits} of {len(held)} rows of {path.relative_to(spec.root)} are also in train "
                         "with their labels")
    return found


def _target_copies(train: pd.DataFrame | None, targets: list[str], train_name: str) -> list[str]:
    if train is None:
        return []
    found = []
    for t in (t for t in targets if t in train.columns):
        for c in train.columns:
            how = None if c in (t, "id") else determines(train[c], train[t])
            if how is not None:
                found.append(f"{train_name} column {c!r} is {'a copy' if how == 'equal' else how} of target {t!r}")
    return found


def score_rejects(item_id: str, metric: str, direction: str, *, baseline: Mapping[str, Mapping[str, float]],
                  constant: Mapping[str, float] | None = None) -> list[RejectRecord]:
    """``baseline_at_ceiling`` when any split of the baseline (split → metrics) is at the metric's ceiling;
    ``constant_at_ceiling`` when the constant submission's metrics are."""
    out = []
    at = [s for s, m in baseline.items() if ceiling_check(metric, direction, m.get(metric))]
    if at:
        out.append(RejectRecord(stage="guard", item_id=item_id, reason="baseline_at_ceiling",
                                detail=f"the baseline's {metric} is at its ceiling on {', '.join(at)}"))
    if constant is not None and ceiling_check(metric, direction, constant.get(metric)):
        out.append(RejectRecord(stage="guard", item_id=item_id, reason="constant_at_ceiling",
                                detail=f"a constant submission scores {metric}={constant.get(metric)}, the ceiling"))
    return out


def probe_leaks(spec: TaskSpec, *, constant_scores: Mapping[str, float] | None = None,
                baseline_scores: Mapping[str, Mapping[str, float]] | None = None,
                target: str | None = None) -> list[RejectRecord]:
    """Every leak in a task folder, one RejectRecord per reason (details joined); empty when the task is clean.

    `constant_scores` are a constant submission's metrics (``Verification.constant_test``); `baseline_scores`
    (split → metrics, e.g. the measured ``{"validation": ..., "test": ...}``) default to task.yaml's
    ``baseline_scores`` and ``baseline_test_scores``; `target` names the target column of train.csv when the
    grader has no ``labels_*.csv`` to read it from.
    """
    labels = _labels(spec)
    train_path = _split_file(spec, "train")
    train = _read_table(train_path) if train_path.is_file() else None
    targets = [target] if target else sorted(
        {c for lab in labels.values() for c in lab.columns if c != _id_column(lab)})
    findings = {
        "labels_in_workspace": _grader_copies(spec) + _labels_in_tables(spec, labels)
        + _held_out_in_train(spec, labels, train),
        "target_copy": _target_copies(train, targets, str(train_path.relative_to(spec.root))),
    }
    out = [RejectRecord(stage="guard", item_id=spec.id, reason=reason, detail="; ".join(found)[:2000])
           for reason, found in findings.items() if found]
    if baseline_scores is None:
        baseline_scores = {s: m for s, m in (("validation", spec.baseline), ("test", spec.baseline_test)) if m}
    out += score_rejects(spec.id, spec.config.metric, spec.config.direction, baseline=baseline_scores,
                         constant=constant_scores)
    for r in out:
        log.info("task %s: %s (%s)", spec.id, r.reason, r.detail[:200])
    return out
