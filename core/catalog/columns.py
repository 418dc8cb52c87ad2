"""Checks of the catalog against a model's real columns and types, all in one place.

Checks that need a source's schema (the static ones live in `catalog.py` and `segments.py`):

- `column_problems(catalog, activation, columns)`: mapped columns and the primary key exist.
- `mapping_problems(mapping, columns, where)` / `key_problems(model, columns)`: each half alone.
- `segment_problems(catalog, segment_id, schema)` / `schema_problems(tree, schema)`: a segment's
  columns exist and its values fit their column's type; `bind_where(tree, schema)` also turns
  each value into the column's Python type (`"2024-01-31"` becomes a `date` for a date column,
  `"12.30"` a `Decimal` for a decimal one), so the database compares like with like.
- `format_problems(activation, schema)`: what the format can't hold of the mapped columns.

Every check returns `Problem`s, path and message apart; `require(problems)` raises the first as a
`SchemaMismatch`, which carries it, so no caller parses a path back out of a message. The engine
runs these before it reads a row, `validate --probe` runs them against every model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from ..errors import CatalogInvalid, Problem, SchemaMismatch
from ..read.segments import LIST_OPS, TEXT_OPS
from ..write.formats import writer_for
from .model import Activation, Catalog, MappedColumn, Model


def unknown_column(name: str, columns: Sequence[str]) -> str:
    """The one message for a column the model does not have, listing the ones it has."""
    return f'unknown column "{name}"; columns are: {", ".join(columns)}'


def require(problems: Sequence[Problem]) -> None:
    """Stops a run at the first problem: raises it as a `SchemaMismatch` (message `path: message`)."""
    if problems:
        raise SchemaMismatch(problems[0])


# --- mapping and primary key ----------------------------------------------------------------------


def mapping_problems(mapping: Sequence[MappedColumn], columns: Sequence[str], where: str) -> list[Problem]:
    """Mapped columns (`from`) the source lacks; paths are `{where}[index].from`."""
    return [
        Problem(f"{where}[{index}].from", unknown_column(column.source, columns))
        for index, column in enumerate(mapping)
        if column.source not in columns
    ]


def key_problems(model: Model, columns: Sequence[str]) -> list[Problem]:
    """Primary key columns the model's query does not return."""
    return [
        Problem(f"models.{model.id}.primary_key", unknown_column(key, columns))
        for key in model.primary_key
        if key not in columns
    ]


def column_problems(catalog: Catalog, activation: Activation, columns: Sequence[str]) -> list[Problem]:
    """An activation's mapping sources, then its model's primary key, against the real columns."""
    mapped = mapping_problems(activation.mapping or (), columns, f"activations.{activation.id}.mapping")
    return mapped + key_problems(catalog.model_of(activation), columns)


def format_problems(activation: Activation, schema: pa.Schema) -> list[Problem]:
    """What the format can't hold of the mapped columns (XML name collisions, Parquet intervals)."""
    problems = writer_for(activation.format).prepare_schema(schema, activation.format_options)
    path = f"activations.{activation.id}.{activation.format}"
    return [Problem(path, "; ".join(problems))] if problems else []


# --- a segment's columns and value types ----------------------------------------------------------


class _BadValue(ValueError):
    def __init__(self, reason: str, hint: str = ""):
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_KINDS = (  # how a segment compares a column's values, by Arrow type; anything else is "other"
    (pa.types.is_boolean, "bool"),
    (pa.types.is_integer, "integer"),
    (pa.types.is_floating, "float"),
    (pa.types.is_decimal, "decimal"),
    (pa.types.is_string, "text"),
    (pa.types.is_large_string, "text"),
    (pa.types.is_string_view, "text"),
    (pa.types.is_date, "date"),
    (pa.types.is_timestamp, "timestamp"),
    (pa.types.is_time, "time"),
)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    return next((kind for test, kind in _KINDS if test(t)), "other")


def _number(value: Any, kind: str) -> int | float | Decimal:
    if isinstance(value, bool):
        raise _BadValue("is not a number")
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            raise _BadValue("is not a number") from None
        if not parsed.is_finite():
            raise _BadValue("is not a finite number")
        if kind == "decimal":
            return parsed
        if kind == "integer" and parsed == parsed.to_integral_value():
            return int(parsed)
        return float(parsed)
    if isinstance(value, float) and not math.isfinite(value):
        raise _BadValue("is not a finite number")
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "float":
        return float(value)
    return value  # type: ignore[no-any-return]  # int, or a float compared with an integer column


def _timestamp(value: Any, t: pa.TimestampType) -> dt.datetime:
    if not isinstance(value, str):
        raise _BadValue('is not a date and time in quotes (ISO 8601, e.g. "2024-01-31T12:00:00Z")')
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise _BadValue('is not a date and time (ISO 8601, e.g. "2024-01-31T12:00:00Z")') from None
    parsed = parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    # A column without a time zone holds UTC wall times (Filecast runs sessions in UTC).
    return parsed if t.tz is not None else parsed.replace(tzinfo=None)


def _coerce(value: Any, t: pa.DataType) -> Any:
    """The value as the Python type matching column type `t`; `_BadValue` says why not."""
    kind = _kind(t)
    if kind in ("integer", "float", "decimal"):
        return _number(value, kind)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _BadValue("is not true or false")
        return value
    if kind == "text":
        if not isinstance(value, str):
            raise _BadValue("is not text", f'; write it in quotes: "{value}"')
        return value
    if kind == "date":
        try:
            if not isinstance(value, str):
                raise ValueError
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise _BadValue("is not a date (YYYY-MM-DD)") from None
    if kind == "timestamp":
        assert isinstance(t, pa.TimestampType)
        return _timestamp(value, t)
    if kind == "time":
        try:
            if not isinstance(value, str):
                raise ValueError
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            raise _BadValue("is not a time of day (HH:MM:SS)") from None
    raise _BadValue("cannot be compared")  # unreachable: `other` columns are rejected before


def _bind(node: Mapping[str, Any], schema: pa.Schema, path: str, problems: list[Problem]) -> dict[str, Any]:
    for key in ("all", "any"):
        if key in node:
            return {key: [_bind(item, schema, f"{path}.{key}[{i}]", problems) for i, item in enumerate(node[key])]}
    column, op = node["column"], node["op"]
    if column not in schema.names:
        problems.append(Problem(f"{path}.column", unknown_column(column, schema.names)))
        return dict(node)
    t = schema.field(column).type
    kind = _kind(t)
    described = f"{column} ({t})"
    if op in ("is_null", "not_null"):
        return dict(node)
    if op in ("is_true", "is_false"):
        if kind != "bool":
            problems.append(Problem(f"{path}.op", f"`{op}` needs a true/false column; {described} is not"))
        return dict(node)
    if kind == "other":
        problems.append(Problem(f"{path}.op", f"column {described} can only be tested with is_null or not_null"))
        return dict(node)
    if op in TEXT_OPS and kind != "text":
        problems.append(Problem(f"{path}.op", f"`{op}` needs a text column; {described} is not"))
        return dict(node)
    value: Any = node.get("value")
    many = op in LIST_OPS or op == "between"
    items: list[Any] = value if many else [value]
    bound = []
    for index, item in enumerate(items):
        try:
            bound.append(_coerce(item, t))
        except _BadValue as exc:
            where = f"{path}.value[{index}]" if many else f"{path}.value"
            problems.append(Problem(where, f"{_show(item)} {exc.reason} for column {described}{exc.hint}"))
            bound.append(item)
    return {"column": column, "op": op, "value": bound if many else bound[0]}


def schema_problems(node: Mapping[str, Any], schema: pa.Schema, path: str = "") -> list[Problem]:
    """Columns a `where` tree names that the model lacks, and values that do not fit their column's
    type; paths start with `path`."""
    problems: list[Problem] = []
    _bind(node, schema, path, problems)
    return problems


def bind_where(node: Mapping[str, Any], schema: pa.Schema, where_path: str = "the segment's where") -> dict[str, Any]:
    """The tree with every value converted to its column's type; raises `CatalogInvalid` listing
    every problem (paths start with `where_path`, e.g. `segments.adults.where`)."""
    problems: list[Problem] = []
    bound = _bind(node, schema, where_path, problems)
    if problems:
        raise CatalogInvalid(problems)
    return bound


def segment_problems(catalog: Catalog, segment_id: str, schema: pa.Schema) -> list[Problem]:
    """A segment's columns and values that do not fit the model's real schema (paths
    `segments.{id}.where…`). For the engine (before reading) and `validate --probe`."""
    return schema_problems(catalog.segments[segment_id].where, schema, f"segments.{segment_id}.where")
