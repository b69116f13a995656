"""Derives Arrow types from the record models (pydantic models, TypedDicts): reads annotations, returns pyarrow types.

The trajectory store's row layout is derived, not written by hand, so that a field added to a record gets its
column and cannot be dropped silently on write. The mapping (``arrow_type``):

==============================  ==========================================================
annotation                      Arrow type
==============================  ==========================================================
``int`` / ``float``             ``int64`` / ``float64``
``str`` / ``bool``              ``string`` / ``bool_``
``X | None``                    the type of ``X`` (every Arrow field here is nullable)
``Literal["a", "b"]``           ``string``
``list[X]``                     ``list_(X)``
``dict[str, X]``                ``map_(string, X)``, e.g. ``dict[str, float]`` → ``map<string, double>``
a BaseModel or a TypedDict      ``struct`` of its fields in declaration order (``NotRequired[X]`` → ``X``)
==============================  ==========================================================

Anything else (a union of several types, a dict of mixed values) raises TypeError: declare that column
explicitly in ``record_schema(..., overrides=...)``, e.g. as a JSON string.

``unknown_keys`` finds the keys of a row that have no column (``scores[0].foo``), and ``plain_row`` turns a
record into nested plain values keeping every key (pydantic's ``model_dump`` drops the keys a TypedDict
does not declare, silently), so that a writer can refuse such rows instead of losing data.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel
from typing_extensions import NotRequired, Required, is_typeddict

_SCALARS: dict[Any, pa.DataType] = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
_WRAPPERS = (Annotated, NotRequired, Required)


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of one field annotation (see the module docstring for the mapping).

    >>> arrow_type(int | None), arrow_type(Literal["max", "min"])
    (DataType(int64), DataType(string))
    >>> arrow_type(list[str])
    ListType(list<item: string>)
    >>> arrow_type(dict[str, float])
    MapType(map<string, double>)
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in _WRAPPERS:
        return arrow_type(args[0])
    if origin in (Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:
            return arrow_type(present[0])
    elif origin is Literal:
        if all(isinstance(a, str) for a in args):
            return pa.string()
    elif origin is list and len(args) == 1:
        return pa.list_(arrow_type(args[0]))
    elif origin is dict and len(args) == 2 and args[0] is str:
        return pa.map_(pa.string(), arrow_type(args[1]))
    elif origin is None and annotation in _SCALARS:
        return _SCALARS[annotation]
    elif origin is None and _is_record(annotation):
        return struct_type(annotation)
    raise TypeError(f"no Arrow type for the annotation {annotation!r}; give its column explicitly "
                    "(record_schema(..., overrides={name: pa.string()}) stores it as a JSON string)")


def _is_record(annotation: Any) -> bool:
    return is_typeddict(annotation) or (isinstance(annotation, type) and issubclass(annotation, BaseModel))


def record_fields(record: type) -> dict[str, Any]:
    """Field name → annotation of a BaseModel or TypedDict, in declaration order."""
    if isinstance(record, type) and issubclass(record, BaseModel):
        return {name: info.annotation for name, info in record.model_fields.items()}
    if is_typeddict(record):
        return typing.get_type_hints(record, include_extras=True)
    raise TypeError(f"{record!r} is neither a pydantic model nor a TypedDict")


def struct_type(record: type) -> pa.StructType:
    """A struct with one field per field of ``record`` (a BaseModel or a TypedDict), in declaration order."""
    fields = []
    for name, annotation in record_fields(record).items():
        try:
            fields.append(pa.field(name, arrow_type(annotation)))
        except TypeError as e:
            raise TypeError(f"{record.__name__}.{name}: {e}") from None
    return pa.struct(fields)


def record_schema(record: type[BaseModel], overrides: Mapping[str, pa.DataType] | None = None,
                  metadata: Mapping[bytes, bytes] | None = None) -> pa.Schema:
    """One column per field of ``record``, in declaration order; ``overrides`` gives some columns explicitly.

    >>> class Row(BaseModel):
    ...     name: str
    ...     extra: dict[str, int | str] = {}
    >>> record_schema(Row, overrides={"extra": pa.string()}).types
    [DataType(string), DataType(string)]
    """
    overrides = dict(overrides or {})
    names = record_fields(record)
    stray = sorted(set(overrides) - set(names))
    if stray:
        raise ValueError(f"overrides {stray} name no field of {record.__name__}; remove them")
    fields = []
    for name, annotation in names.items():
        try:
            fields.append(pa.field(name, overrides[name] if name in overrides else arrow_type(annotation)))
        except TypeError as e:
            raise TypeError(f"{record.__name__}.{name}: {e}") from None
    return pa.schema(fields, metadata=dict(metadata) if metadata is not None else None)


def plain_row(value: Any) -> Any:
    """``value`` as nested dicts, lists and scalars: models become dicts of their fields, dicts keep every key.

    >>> class Row(BaseModel):
    ...     messages: list[dict[str, str]]
    >>> plain_row(Row(messages=[{"role": "user"}]))
    {'messages': [{'role': 'user'}]}
    """
    if isinstance(value, BaseModel):
        out = {name: plain_row(getattr(value, name)) for name in type(value).model_fields}
        out.update({k: plain_row(v) for k, v in (value.model_extra or {}).items()})
        return out
    if isinstance(value, Mapping):
        return {k: plain_row(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_row(v) for v in value]
    return value


def unknown_keys(row: Mapping[str, Any], schema: pa.Schema) -> list[str]:
    """Paths of the keys in ``row`` (and in its nested structs) that have no field in ``schema``.

    >>> schema = pa.schema([("scores", pa.list_(pa.struct([("step", pa.int64())])))])
    >>> unknown_keys({"scores": [{"step": 1, "foo": 2}], "bar": 3}, schema)
    ['scores[0].foo', 'bar']
    """
    return _unknown(row, pa.struct(list(schema)), "")


def _unknown(value: Any, type_: pa.DataType, path: str) -> list[str]:
    if value is None:
        return []
    if pa.types.is_struct(type_) and isinstance(value, Mapping):
        fields = {type_.field(i).name: type_.field(i).type for i in range(type_.num_fields)}
        found = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found += _unknown(item, fields[key], where) if key in fields else [where]
        return found
    if pa.types.is_map(type_) and isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _unknown(v, type_.item_type, f"{path}[{k!r}]")]
    if (pa.types.is_list(type_) or pa.types.is_large_list(type_)) and isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _unknown(v, type_.value_type, f"{path}[{i}]")]
    return []
