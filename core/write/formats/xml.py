"""XML: `<rows><row><col>…</col></row></rows>`, assembled with Arrow string kernels.

Like JSON (see `text.py`), each column becomes an array of element text and one element-wise join
per slice of rows builds the rows; an lxml element per row measured 10–50 s per million rows.

- UTF-8 with an XML declaration; one `<row>` per line; `root` and `row` options name the two
  outer elements (valid XML names, checked by validation).
- Column names become element names: characters an XML name cannot hold become `_`
  (`last name` → `last_name`), a name that cannot start an element gets a leading `_`
  (`2nd` → `_2nd`). Two columns that end up with the same name are a validation problem.
- NULL → the element is omitted; the empty string → `<col></col>`.
- Text escapes `&`, `<`, `>`, and `\\r` (as `&#13;`, which parsers would otherwise turn into
  `\\n`). Characters XML 1.0 cannot carry at all (most C0 controls, U+FFFE, U+FFFF) become U+FFFD,
  counted as an `xml_replaced_characters` warning on the run record (`XmlWriter.warnings`).
- Values as XML Schema lexical forms: `true`/`false`, exact decimals, floats with `NaN`, `INF`,
  `-INF`; dates, times and timestamps ISO 8601 (zoned as UTC with `Z`), binary as base64.
- Structs → child elements; lists → `<item>` children (a NULL item is `<item nil="true"/>`, so
  positions survive); maps → `<entry><key>…</key><value>…</value></entry>` children.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from .base import FormatSpec, Writer
from .json import is_binary_like, is_list_like
from .text import (
    Chunk,
    Escaper,
    Piece,
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

logger = logging.getLogger(__name__)
_counting = threading.local()  # the encoding writer's replacement tally, per encoding thread

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
NULL_ITEM = '<item nil="true"/>'
_START = (
    "A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_NAME_CHAR = f"[{_START}\\-.0-9\u00b7\u0300-\u036f\u203f-\u2040]"
_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"))
_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_INVALID_RE2 = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{FFFE}\x{FFFF}]"
_INVALID_FIRST_BYTES = bytes([*range(9), 0x0B, 0x0C, *range(0x0E, 0x20), 0xEF])  # U+FFFE/F start with EF


@functools.cache
def _name_patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(a name character, a name's first character, a whole name), compiled on first use: their
    Unicode classes take about 10 ms to compile, which every run's start-up paid, XML or not."""
    return re.compile(_NAME_CHAR), re.compile(f"[{_START}]"), re.compile(f"[{_START}]{_NAME_CHAR}*")


def xml_name(name: str) -> str:
    """`name` made a valid XML element name (no namespace colon): see the module docstring."""
    name_char, name_start, _ = _name_patterns()
    cleaned = "".join(c if name_char.fullmatch(c) else "_" for c in name)
    if not cleaned or not name_start.match(cleaned):
        cleaned = "_" + cleaned
    return cleaned


def _collisions(fields: list[pa.Field], parent: str | None) -> list[str]:
    """Names that become the same element, among columns (parent None) or a struct's fields."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for field in fields:
        element = xml_name(field.name)
        if element not in seen:
            seen[element] = field.name
        elif parent is None:
            problems.append(
                f"columns `{seen[element]}` and `{field.name}` both become the XML element "
                f"`{element}`; rename one of them in the mapping"
            )
        else:
            problems.append(
                f"fields `{seen[element]}` and `{field.name}` of `{parent}` both become the XML "
                f"element `{element}`; rename one of them in the model's query"
            )
        kind = field.type
        while is_list_like(kind) or pat.is_dictionary(kind):
            kind = kind.value_type
        if pat.is_struct(kind):
            problems += _collisions(list(kind), field.name if parent is None else f"{parent}.{field.name}")
    return problems


def name_collisions(names: list[str]) -> list[str]:
    """Collisions among column names alone (a mapping's `to` names): found by `validate`,
    without the source."""
    return _collisions([pa.field(name, pa.null()) for name in names], None)


def escape_xml(array: pa.Array) -> pa.Array:
    """String values as XML character data (NULLs kept)."""
    replaced: list[int] = []

    def replace_invalid(value: str) -> str:
        replaced.append(1)
        return _INVALID_RE.sub("\ufffd", value)

    text = escape(array, Escaper(_ESCAPES, _INVALID_RE2, _INVALID_FIRST_BYTES, replace_invalid))
    if replaced:
        logger.warning("replaced characters XML 1.0 cannot hold by U+FFFD in %d values", len(replaced))
        tally = getattr(_counting, "tally", None)
        if tally is not None:
            tally.append(len(replaced))  # list.append is atomic: slices encode on several threads
    return text


def _float_text(array: pa.Array) -> pa.Array:
    if pat.is_float16(array.type):
        array = array.cast(pa.float32())
    text = array.cast(pa.string())
    if pc.all(pc.is_finite(array)).as_py():
        return text
    special = pc.if_else(pc.is_nan(array), "NaN", pc.if_else(pc.greater(array, 0), "INF", "-INF"))
    return pc.if_else(pc.is_finite(array), text, special)


def xml_content(array: pa.Array) -> pa.Array:
    """What goes between the tags of each value; NULL where the value is NULL (element omitted)."""
    kind = array.type
    if pat.is_dictionary(kind):
        return dictionary_text(array, xml_content)
    if pat.is_string(kind) or pat.is_large_string(kind) or pat.is_string_view(kind):
        return escape_xml(array)
    if pat.is_floating(kind):
        return _float_text(array)
    if pat.is_decimal(kind):
        return decimal_text(array)
    if pat.is_null(kind) or pat.is_boolean(kind) or pat.is_integer(kind):
        return array.cast(pa.string())
    if pat.is_date(kind) or pat.is_time(kind):
        return array.cast(pa.string())
    if pat.is_timestamp(kind):
        text, zoned = iso_timestamp_text(array)
        return concat([text, "Z"]) if zoned else text
    if pat.is_duration(kind):
        return duration_text(array)
    if is_binary_like(kind):
        return base64_text(array)
    if pat.is_map(kind):
        _, entries, _ = list_parts(array)
        key = folded(xml_piece(entries.field(0), "key"), "")
        value = folded(xml_piece(entries.field(1), "value"), "")
        return joined_lists(array, concat(["<entry>", key, value, "</entry>"]), "")
    if is_list_like(kind):
        _, values, _ = list_parts(array)
        return joined_lists(array, folded(xml_piece(values, "item"), NULL_ITEM), "")
    if pat.is_struct(kind):
        return _struct_content(array)
    if isinstance(kind, pa.ExtensionType) and kind.extension_name != "arrow.uuid":
        return xml_content(array.storage)
    return escape_xml(python_text(array, render_scalar))  # named fallback: rare types


def _struct_content(array: pa.StructArray) -> pa.Array:
    parts: list[str | pa.Array] = []
    for i, field in enumerate(array.type):
        piece = xml_piece(array.field(i), xml_name(field.name))
        parts += [piece.before, piece.text, piece.after]
    if not any(isinstance(part, pa.Array) for part in parts):
        text = pc.fill_null(pa.nulls(len(array), pa.string()), "")
    else:
        text = concat(parts, null_text="")
    if array.null_count:
        text = pc.if_else(array.is_valid(), text, pa.scalar(None, pa.string()))
    return text


def xml_piece(array: pa.Array, element: str) -> Piece:
    """`<element>content</element>` per value; NULL (to omit) where the value is NULL."""
    return finish(f"<{element}>", xml_content(array), f"</{element}>")


class XmlWriter(Writer):
    spec = FormatSpec(
        name="xml",
        extension="xml",
        media_type="application/xml",
        text=True,
        options=frozenset({"root", "row"}),
    )

    @classmethod
    def option_problems(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().option_problems(options)
        for key in ("root", "row"):
            value = options.get(key)
            if value is not None and (not isinstance(value, str) or not _name_patterns()[2].fullmatch(value)):
                problems.append((key, f"`{value}` is not a valid XML element name; use letters, digits, `_`, `-`, `.`"))
        return problems

    @classmethod
    def prepare_schema(cls, schema: pa.Schema, options: Mapping[str, Any]) -> list[str]:
        return _collisions(list(schema), None)

    def __init__(self, schema: pa.Schema, options: Mapping[str, Any] | None = None):
        super().__init__(schema, options)
        self._root = self.options.get("root", "rows")
        self._row = self.options.get("row", "row")
        self._elements = [xml_name(name) for name in schema.names]
        self._replaced: list[int] = []

    def warnings(self) -> list[tuple[str, str]]:
        count = sum(self._replaced)
        if not count:
            return []
        return [
            (
                "xml_replaced_characters",
                f"{count} values held characters XML 1.0 cannot carry (NUL and other "
                "control characters, U+FFFE, U+FFFF); they were written as U+FFFD",
            )
        ]

    def _encode(self, batch: pa.RecordBatch) -> Chunk:
        _counting.tally = self._replaced
        try:
            return self._encode_rows(batch)
        finally:
            _counting.tally = None

    def _encode_rows(self, batch: pa.RecordBatch) -> Chunk:
        parts: list[str | pa.Array] = [f"<{self._row}>"]
        for element, column in zip(self._elements, batch.columns, strict=True):
            piece = xml_piece(column, element)
            parts += [piece.before, piece.text, piece.after]
        parts.append(f"</{self._row}>\n")
        if batch.num_columns == 0:
            return "".join(parts).encode() * batch.num_rows
        return text_data(concat(parts, null_text=""))

    def begin(self) -> bytes:
        return f"{DECLARATION}<{self._root}>\n".encode()

    def write(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        return run_sliced(batch, self._encode)

    def end(self) -> bytes:
        return f"</{self._root}>\n".encode()
