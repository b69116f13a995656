"""Reads and writes the synthesis stage's record tables (topics, proposals, rejects) as Parquet, atomically."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from types import UnionType
from typing import TypeVar, Union, get_args, get_origin

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from engine.errors import ArtifactError

R = TypeVar("R", bound=BaseModel)


def write_records(path: Path, records: list[BaseModel], model: type[BaseModel]) -> None:
    """One row per record; nested values (lists, dicts, records) are stored as JSON text columns."""
    names = list(model.model_fields)
    rows = [r.model_dump(mode="json") for r in records]
    columns = {}
    for name in names:
        values = [row[name] for row in rows]
        if any(isinstance(v, (dict, list)) for v in values):
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
        else:
            columns[name] = pa.array(values) if values else pa.array([], pa.string())
    table = pa.table(columns) if names else pa.table({})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_records(path: Path, model: type[R]) -> list[R]:
    if not path.is_file():
        return []
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # a torn or foreign file: say which and how to recover
        raise ArtifactError(f"{path}: unreadable ({e}); delete it or rerun `synthscale synth --start-over`") from None
    out = []
    for row in rows:
        for name, field in model.model_fields.items():
            value = row.get(name)
            if isinstance(value, str) and value[:1] in "[{" and _is_nested(field.annotation):
                row[name] = json.loads(value)
        out.append(model.model_validate(row))
    return out


def _is_nested(annotation: object) -> bool:
    """Whether a field holds lists, dicts or records (stored as JSON text), looking through `X | None`."""
    origin = get_origin(annotation)
    if origin in (list, dict):
        return True
    if origin in (Union, UnionType):
        return any(_is_nested(a) for a in get_args(annotation) if a is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
