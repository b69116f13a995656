"""Materialises a checked Hub dataset into a task folder: downloads the pinned revision, writes the CSVs.

Reads the dataset's data files at `DatasetCheck.revision` (parquet, csv, jsonl, json) from the Hub named by
`HubConfig.endpoint`; writes `workspace/data/{train,validation,test}.csv` (train with the target, the others
an id column and inputs only) and `grader/labels_{validation,test}.csv` (id + target). Rejects raise
`DatasetRejectedError` with a reason: licence, too_large, split, columns, unsupported_features, too_small,
gated, not_found, disabled, revision.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import httpx2
import pandas as pd
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from pydantic import BaseModel, ConfigDict, Field

from engine.config import HubConfig
from engine.errors import ConfigError, DatasetRejectedError, HubError
from engine.synth.records import DatasetCheck, ProposalRecord

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
HELD_OUT_FRACTION = 0.15
MIN_ROWS = 2
_SPLIT_SYNONYMS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                   "val": "validation", "dev": "validation", "test": "test", "testing": "test"}


class MaterialisedData(BaseModel):
    """What `materialise` wrote into a task folder (paths relative to the folder)."""

    model_config = ConfigDict(extra="forbid")

    hf_id: str
    revision: str
    licence: str
    config: str | None
    files: dict[str, str] = Field(description="train, validation, test, labels_validation, labels_test -> path.")
    rows: dict[str, int] = Field(description="Rows per split: train, validation, test.")
    columns: list[str] = Field(description="Input columns, in order.")
    target: str
    id_column: str
    sources: dict[str, str] = Field(description="Where each split's rows came from in the dataset.")
    size_bytes: int = Field(description="Bytes of data files downloaded.")


def check_licence(licence: str | None, allow: list[str]) -> str:
    """The licence id to record; raises a `licence` reject unless it is on the allow-list."""
    lic = (licence or "unknown").lower()
    if lic not in {a.lower() for a in allow}:
        raise DatasetRejectedError("licence", (
            f"licence {lic!r} is not in synth.hub.licence_allow {allow}; add it there if its terms allow this use"))
    return lic


def _config_and_rest(path: str) -> tuple[str, list[str]]:
    parts = path.split("/")
    if len(parts) >= 2 and parts[0] != "data":
        return parts[0], parts[1:]
    return "default", parts[1:] if parts[0] == "data" and len(parts) >= 2 else parts


def split_of(path: str) -> str:
    """The canonical split a data file holds: a folder named for a split, else the file name's first word
    (`train-00000-of-00001.parquet`, `dev.csv`), else train (the Hub's rule for files that name none)."""
    _, rest = _config_and_rest(path)
    for folder in rest[:-1]:
        if folder.lower() in _SPLIT_SYNONYMS:
            return _SPLIT_SYNONYMS[folder.lower()]
    word = re.split(r"[-._]", rest[-1])[0].lower()
    return _SPLIT_SYNONYMS.get(word, "train")


def select_files(paths: list[str], config: str | None) -> dict[str, list[str]]:
    """Data files of `config` (None or `default`: files at the top level or under data/) by canonical split.

    >>> select_files(["README.md", "data/train-0.parquet", "data/test-0.parquet", "other/train-0.parquet"], None)
    {'test': ['data/test-0.parquet'], 'train': ['data/train-0.parquet']}
    """
    want = config or "default"
    out: dict[str, list[str]] = {}
    for path in sorted(paths):
        if path.endswith(DATA_SUFFIXES) and _config_and_rest(path)[0] == want:
            out.setdefault(split_of(path), []).append(path)
    return dict(sorted(out.items()))


def _labelled(frame: pd.DataFrame, target: str) -> bool:
    values = frame[target].dropna()
    # ClassLabel splits without labels (GLUE's test sets) store -1 everywhere.
    return len(values) > 0 and not (pd.api.types.is_numeric_dtype(values) and (values == -1).all())


def split_rows(frames: dict[str, pd.DataFrame], main: str, target: str, seed: int,
               held_out_fraction: float = HELD_OUT_FRACTION) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Train, validation and test frames: the dataset's own labelled validation/test splits where it has them,
    the rest held out from the shuffled `main` split (`round(n * held_out_fraction)` rows each).

    With 100 main rows and no other splits: train 70, validation 15, test 15 (train keeps the remainder).
    """
    pool = frames[main].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    out: dict[str, pd.DataFrame] = {}
    sources: dict[str, str] = {"train": main}
    for name in ("validation", "test"):
        if name != main and name in frames and _labelled(frames[name], target):
            out[name] = frames[name].sample(frac=1.0, random_state=seed).reset_index(drop=True)
            sources[name] = name
    k = round(len(pool) * held_out_fraction)
    for name in ("validation", "test"):
        if name not in out:
            out[name], pool = pool.iloc[:k].reset_index(drop=True), pool.iloc[k:].reset_index(drop=True)
            sources[name] = f"{main} (held out)"
    out["train"] = pool
    small = {n: len(f) for n, f in out.items() if len(f) < MIN_ROWS}
    if small:
        raise DatasetRejectedError("too_small", f"splits {small} have fewer than {MIN_ROWS} rows after cleaning")
    return {n: out[n] for n in ("train", "validation", "test")}, sources


def id_column_for(columns: list[str]) -> str:
    """`id`, unless the data already has a column of that name."""
    for name in ("id", "row_id", "_id"):
        if name not in columns:
            return name
    raise DatasetRejectedError("columns", f"columns {columns} leave no free name for the row id")


def unsupported(frame: pd.DataFrame) -> list[str]:
    """Columns holding non-tabular values (image dicts, bytes, lists, arrays)."""
    bad = []
    for col in frame.columns:
        if frame[col].dtype == object:
            sample = frame[col].dropna().head(50)
            if any(isinstance(v, (dict, bytes, bytearray, list, tuple)) or hasattr(v, "shape") for v in sample):
                bad.append(col)
    return bad


def _restore_integer(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Missing labels turn an integer target into floats; once they are dropped, make it integers again."""
    col = frame[target]
    if pd.api.types.is_float_dtype(col) and len(col) and (col == col.round()).all():
        return frame.assign(**{target: col.astype("int64")})
    return frame


def read_data_file(path: Path) -> pd.DataFrame:
    """One data file into pandas (parquet, csv, jsonl, or json lines/records)."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    try:
        return pd.read_json(path, lines=True)
    except ValueError:
        return pd.read_json(path)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_task_data(splits: dict[str, pd.DataFrame], inputs: list[str], target: str, dest: Path) -> tuple[dict, str]:
    """Write the five CSVs under `dest`; ids run 0.. over validation then test. Returns (files, id column)."""
    id_col = id_column_for([*inputs, target])
    val, test = splits["validation"], splits["test"]
    ids = {"validation": range(len(val)), "test": range(len(val), len(val) + len(test))}
    files = {"train": "workspace/data/train.csv"}
    _write_csv(splits["train"][[*inputs, target]], dest / files["train"])
    for name in ("validation", "test"):
        frame = splits[name].assign(**{id_col: list(ids[name])})
        files[name] = f"workspace/data/{name}.csv"
        files[f"labels_{name}"] = f"grader/labels_{name}.csv"
        _write_csv(frame[[id_col, *inputs]], dest / files[name])
        _write_csv(frame[[id_col, target]], dest / files[f"labels_{name}"])
    return files, id_col


def _download(api: HfApi, check: DatasetCheck, cfg: HubConfig, token: str | bool, files: list[str],
              cache_dir: Path | None) -> dict[str, Path]:
    """Fetch `files` at the pinned revision; Hub refusals become rejects, transport failures HubError."""
    try:
        return {f: Path(hf_hub_download(check.hf_id, f, repo_type="dataset", revision=check.revision,
                                        endpoint=cfg.endpoint, cache_dir=cache_dir, token=token,
                                        etag_timeout=cfg.timeout_s)) for f in files}
    except Exception as e:  # noqa: BLE001 - mapped to typed errors below
        raise _hub_error(check, e) from e


def _hub_error(check: DatasetCheck, e: Exception) -> Exception:
    where = f"{check.hf_id}@{check.revision}"
    if isinstance(e, GatedRepoError):
        return DatasetRejectedError("gated", f"{where} is gated and the token in the environment has no access")
    if isinstance(e, RevisionNotFoundError):
        return DatasetRejectedError("revision", f"pinned revision {where} no longer exists; re-check the dataset")
    if isinstance(e, RepositoryNotFoundError):
        return DatasetRejectedError("not_found", f"{where} is gone or private")
    if isinstance(e, DisabledRepoError):
        return DatasetRejectedError("disabled", f"{where} is disabled")
    if isinstance(e, HfHubHTTPError) and e.response is not None and e.response.status_code == 401:
        return ConfigError(f"the Hub rejects the token in the environment while downloading {where}; "
                           "replace it or unset the variable")
    if isinstance(e, (HfHubHTTPError, httpx2.TransportError, OSError)):
        return HubError(f"downloading {where} failed: {type(e).__name__}: {e}")
    return e


def materialise(check: DatasetCheck, proposal: ProposalRecord, cfg: HubConfig, dest: Path, *, seed: int,
                cache_dir: Path | None = None) -> MaterialisedData:
    """Download the checked dataset at its pinned revision and write the task's data and held-out labels."""
    ds = proposal.dataset
    if not check.ok or check.revision is None or ds is None:
        raise DatasetRejectedError(check.reason or "not_checked", f"{check.hf_id} did not pass the dataset check")
    licence = check_licence(check.licence, cfg.licence_allow)
    token: str | bool = os.environ.get(cfg.token_env) or False
    api = HfApi(endpoint=cfg.endpoint, token=token)
    try:
        tree = {f.path: f.size for f in api.list_repo_tree(check.hf_id, repo_type="dataset", recursive=True,
                                                            revision=check.revision) if hasattr(f, "size")}
    except Exception as e:  # noqa: BLE001 - mapped to typed errors
        raise _hub_error(check, e) from e
    by_split = select_files(list(tree), check.config)
    main = _SPLIT_SYNONYMS.get(ds.split.lower(), ds.split)
    if main not in by_split:
        raise DatasetRejectedError("split", f"no data files for split {ds.split!r} of config "
                                            f"{check.config!r} at {check.revision}; found {sorted(by_split)}")
    wanted = {n: by_split[n] for n in dict.fromkeys([main, "validation", "test"]) if n in by_split}
    size = sum(tree[f] for fs in wanted.values() for f in fs)
    if size > cfg.max_dataset_mb * 1_000_000:
        raise DatasetRejectedError("too_large", f"{check.hf_id} data files are {size / 1e6:.1f} MB, over "
                                                f"synth.hub.max_dataset_mb={cfg.max_dataset_mb}")
    local = _download(api, check, cfg, token, [f for fs in wanted.values() for f in fs], cache_dir)
    inputs = [c for c in dict.fromkeys(ds.input_columns) if c != ds.target_column]
    keep = [*inputs, ds.target_column]
    frames: dict[str, pd.DataFrame] = {}
    for name, paths in wanted.items():
        frame = pd.concat([read_data_file(local[p]) for p in paths], ignore_index=True)
        missing = [c for c in keep if c not in frame.columns]
        if missing:
            raise DatasetRejectedError("columns", f"split {name!r} lacks {missing}; it has {list(frame.columns)}")
        frame = frame[keep]
        bad = unsupported(frame)
        if bad:
            raise DatasetRejectedError("unsupported_features", f"columns {bad} hold images, bytes or lists; "
                                                               "only tabular columns are supported")
        frames[name] = _restore_integer(frame.dropna(subset=[ds.target_column]).reset_index(drop=True),
                                        ds.target_column)
    splits, sources = split_rows(frames, main, ds.target_column, seed)
    files, id_col = write_task_data(splits, inputs, ds.target_column, dest)
    logger.info("materialised %s@%s into %s: %s", check.hf_id, check.revision, dest,
                {n: len(f) for n, f in splits.items()})
    return MaterialisedData(hf_id=check.hf_id, revision=check.revision, licence=licence, config=check.config,
                            files=files, rows={n: len(f) for n, f in splits.items()}, columns=inputs,
                            target=ds.target_column, id_column=id_col, sources=sources, size_bytes=size)
