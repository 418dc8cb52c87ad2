"""JSON: one array of objects, encoded column by column with Arrow compute kernels.

Each column becomes a text array of JSON values (`json_piece`) and one element-wise join per
slice of rows interleaves them with the constant key text (`,"name":`); see `text.py`. A per-row
encoder (`to_pylist` + orjson) measured 10–50 s per million rows; this path runs close to DuckDB.

The JSON-family value rules (shared by NDJSON, and by nested values in CSV):
- NULL → `null`; key order = column order; strings escaped per RFC 8259 (`\\"`, `\\\\`, `\\n`,
  `\\r`, `\\t`, other control characters as `\\u00XX`), everything else kept as UTF-8;
- integers and decimals → numbers with their exact digits in positional notation (`12.50`,
  `0.0000000001`, never `1E-10`, never through a float); with the option `decimals_as_strings:
  true`, decimals are JSON strings (`"12.50"`) for readers that go through floats (jq, pandas and
  DuckDB's JSON reader all round a 26-digit decimal);
- floats → shortest round-trip text, `.0` added to integral values so readers keep them floats;
  NaN and ±infinity, which JSON cannot express, → `null`;
- dates `"2024-01-31"`; times `"12:00:00.250000"`; timestamps ISO 8601 with the unit's fixed
  fraction digits, zoned ones as UTC with `Z` (`"2024-01-31T12:00:00.250000Z"`), naive ones
  without a zone; durations ISO 8601 (`"PT90.500000S"`);
- binary → base64 text; lists → arrays; structs → objects; maps → objects (key text as name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from .base import FormatSpec, Writer
from .text import (
    Chunk,
    Escaper,
    Piece,
    as_string,
    base64_text,
    concat,
    decimal_text,
    dictionary_text,
    duration_text,
    escape,
    finish,
    folded,
    iso_timestamp_text,
    joined_lists,
    list_parts,
    python_text,
    render_scalar,
    run_sliced,
    text_data,
)

NULL = "null"
_CONTROL = re.compile(r"[\x00-\x1f]")
_INTEGRAL = r"^-?[0-9]+$"


def json_string(value: str) -> str:
    """A Python string as JSON string text (keys, and the rare per-value fallback)."""
    return json.dumps(value, ensure_ascii=False)


def _escape_control(value: str) -> str:
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


_ESCAPER = Escaper(
    replacements=(("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")),
    rare=r"[\x00-\x1f]",
    rare_bytes=bytes(b for b in range(32) if b not in b"\n\r\t"),
    fix_rare=_escape_control,
)


def escape_json(array: pa.Array) -> pa.Array:
    """String values as the inside of JSON strings (no quotes), NULLs kept."""
    return escape(array, _ESCAPER)


def float_text(array: pa.Array) -> pa.Array:
    """Shortest round-trip text of floats, `.0` on integral values, NaN and ±inf NULL."""
    if pat.is_float16(array.type):
        array = array.cast(pa.float32())
    text = array.cast(pa.string())
    finite = pc.is_finite(array)
    if not pc.all(finite).as_py():
        text = pc.if_else(finite, text, pa.scalar(None, pa.string()))
    # Only whole numbers can render without `.`/`e` ("3", but also "1e+16"): find them
    # numerically, then decide on their text.
    whole = pc.fill_null(pc.and_(finite, pc.equal(pc.floor(array), array)), False)
    if pc.any(whole).as_py():
        candidates = text.filter(whole)
        bare = pc.match_substring_regex(candidates, _INTEGRAL)
        candidates = pc.if_else(bare, concat([candidates, ".0"]), candidates)
        text = pc.replace_with_mask(text, whole, candidates)
    return text


def json_piece(array: pa.Array, quoted_decimals: bool = False) -> Piece:
    """The JSON text of every value of `array` as a `Piece` (a NULL text stands for `null`);
    `quoted_decimals` writes decimals as JSON strings."""
    kind = array.type
    if pat.is_dictionary(kind):
        return finish("", dictionary_text(array, lambda values: json_text(values, quoted_decimals)), "")
    if pat.is_null(kind):
        return Piece("", array.cast(pa.string()), "")
    if pat.is_decimal(kind):
        return finish('"', decimal_text(array), '"') if quoted_decimals else finish("", decimal_text(array), "")
    if pat.is_boolean(kind) or pat.is_integer(kind):
        return finish("", array.cast(pa.string()), "")
    if pat.is_floating(kind):
        return finish("", float_text(array), "")
    if pat.is_string(kind) or pat.is_large_string(kind) or pat.is_string_view(kind):
        return finish('"', escape_json(array), '"')
    if is_binary_like(kind):
        return finish('"', base64_text(array), '"')
    if pat.is_date(kind) or pat.is_time(kind):
        return finish('"', array.cast(pa.string()), '"')
    if pat.is_timestamp(kind):
        text, zoned = iso_timestamp_text(array)
        return finish('"', text, 'Z"' if zoned else '"')
    if pat.is_duration(kind):
        return finish('"', duration_text(array), '"')
    if pat.is_map(kind):
        return finish("{", _map_entries(array, quoted_decimals), "}")
    if is_list_like(kind):
        _, values, _ = list_parts(array)
        return finish("[", joined_lists(array, json_text(values, quoted_decimals), ","), "]")
    if pat.is_struct(kind):
        return finish("", _struct_text(array, quoted_decimals), "")
    if isinstance(kind, pa.ExtensionType) and kind.extension_name != "arrow.uuid":
        return json_piece(array.storage, quoted_decimals)
    # Named fallback: intervals, UUIDs, unions: rare, rendered per value in Python.
    return finish('"', escape_json(python_text(array, render_scalar)), '"')


def json_text(array: pa.Array, quoted_decimals: bool = False) -> pa.Array:
    """The complete JSON text of every value, with no NULLs (they read `null`)."""
    return as_string(folded(json_piece(array, quoted_decimals), NULL))


def is_binary_like(kind: pa.DataType) -> bool:
    return bool(
        pat.is_binary(kind) or pat.is_large_binary(kind) or pat.is_fixed_size_binary(kind) or pat.is_binary_view(kind)
    )


def is_list_like(kind: pa.DataType) -> bool:
    return bool(
        pat.is_list(kind)
        or pat.is_large_list(kind)
        or pat.is_fixed_size_list(kind)
        or pat.is_list_view(kind)
        or pat.is_large_list_view(kind)
    )


def _struct_text(array: pa.StructArray, quoted_decimals: bool) -> pa.Array:
    if array.type.num_fields == 0:
        text = pc.fill_null(pa.nulls(len(array), pa.string()), "{}")
    else:
        parts: list[str | pa.Array] = ["{"]
        for i, field in enumerate(array.type):
            piece = json_piece(array.field(i), quoted_decimals)
            parts += [("," if i else "") + json_string(field.name) + ":" + piece.before, piece.text, piece.after]
        text = concat([*parts, "}"], null_text=NULL)
    if array.null_count:
        text = pc.if_else(array.is_valid(), text, pa.scalar(None, pa.string()))
    return text


def _map_entries(array: pa.MapArray, quoted_decimals: bool) -> pa.Array:
    _, entries, _ = list_parts(array)
    key_piece = json_piece(entries.field(0))
    keys = folded(key_piece, NULL)
    if key_piece.before != '"':
        keys = concat(['"', keys, '"'])
    return joined_lists(array, concat([keys, ":", json_text(entries.field(1), quoted_decimals)]), ",")


def json_rows(
    batch: pa.RecordBatch, keys: list[str], before: str, after: str, quoted_decimals: bool = False
) -> pa.Array:
    """One text per row: `before` + the JSON object + `after`, keys in column order."""
    if batch.num_columns == 0:
        return pc.fill_null(pa.nulls(batch.num_rows, pa.string()), before + "{}" + after)
    parts: list[str | pa.Array] = [before + "{"]
    for i, (key, column) in enumerate(zip(keys, batch.columns, strict=True)):
        piece = json_piece(column, quoted_decimals)
        parts += [("," if i else "") + key + ":" + piece.before, piece.text, piece.after]
    return concat([*parts, "}" + after], null_text=NULL)


class JsonWriter(Writer):
    """`[` + objects separated by `,\\n` + `]`: one object per line, so the file stays readable
    and the rows of one batch are a single join. An empty result is `[]`."""

    spec = FormatSpec(
        name="json",
        extension="json",
        media_type="application/json",
        text=True,
        options=frozenset({"decimals_as_strings"}),
    )
    row_before = ",\n"
    row_after = ""

    @classmethod
    def option_problems(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().option_problems(options)
        if not isinstance(options.get("decimals_as_strings", False), bool):
            problems.append(("decimals_as_strings", f"must be true or false, got `{options['decimals_as_strings']}`"))
        return problems

    def __init__(self, schema: pa.Schema, options: Mapping[str, Any] | None = None):
        super().__init__(schema, options)
        self._keys = [json_string(name) for name in schema.names]
        self._rows = 0
        self._quoted_decimals = bool(self.options.get("decimals_as_strings", False))

    def _encode(self, batch: pa.RecordBatch) -> Chunk:
        return text_data(json_rows(batch, self._keys, self.row_before, self.row_after, self._quoted_decimals))

    def begin(self) -> bytes:
        return b"["

    def write(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        first = self._rows == 0
        self._rows += batch.num_rows
        return run_sliced(batch, self._encode, skip=1 if first else 0)  # no comma before the first object

    def end(self) -> bytes:
        return b"\n]\n" if self._rows else b"]\n"
