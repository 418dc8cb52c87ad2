"""CSV: RFC 4180, assembled with Arrow string kernels like the JSON writer (`text.py`).

Strings are always quoted (`"a"`, quotes doubled), so NULL (an empty, unquoted field, or
`null_value`) and the empty string (`""`) stay distinct; numbers, dates and booleans are never
quoted. Every column that needs Filecast's rendering becomes text (`csv_column`); pyarrow's CSV
writer (`quoting_style="needed"`: string columns quoted, quotes doubled, the rest bare) then adds
the quotes, delimiters and line ends in C++. Where it would write other bytes (decimals with a
scale above 6 it renders as `1E-10`; a one-column NULL) one element-wise join per slice of rows
does it instead; both give the same bytes, which the tests check type by type. Values are
converted column at a time:
- timestamps → ISO 8601 like JSON (`2024-01-31T12:00:00.250000Z`, zoned ones in UTC), quoted;
- binary → base64, quoted; lists, structs and maps → their JSON text, quoted;
- durations → ISO 8601 (`PT90.500000S`);
- floats keep pyarrow's shortest round-trip text; NaN → `nan`, ±infinity → `inf`/`-inf`
  (what Python, pandas and DuckDB read back); decimals keep their exact digits, positional
  (`0.0000000001`, never `1E-10`).
- A file with a single column writes a NULL as `""` when `null_value` is empty: an empty line
  would be dropped by pandas, pyarrow and DuckDB, losing the row. There a NULL and the empty
  string read back alike (pandas and DuckDB read both as NULL, pyarrow and Python's csv as the
  empty string); set `null_value` (e.g. `\\N`) to keep them apart.
When the delimiter is a character an unquoted value can contain (a letter, digit, `.`, `-`, `+`,
`:`), every column is written as quoted text so the file still parses.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.types as pat

from .base import FormatSpec, Writer
from .json import is_binary_like, is_list_like, json_text
from .text import (
    Chunk,
    Escaper,
    as_string,
    base64_text,
    concat,
    decimal_text,
    duration_text,
    escape,
    finish,
    iso_timestamp_text,
    python_text,
    render_scalar,
    run_sliced,
    text_data,
)

LINE_ENDINGS = {"\n": "\n", "\r\n": "\r\n", "lf": "\n", "crlf": "\r\n"}
BOM = "\ufeff".encode()
# pyarrow's CSV writer encodes a source batch (16,384 rows from DuckDB) whole rather than as two
# slices on two threads: measured on 2 cores, slicing cost 0.12-0.2 CPU-s more per million rows
# (per-slice set-up, thread hand-offs) and was no faster, slower under load, since the MD5, the
# source and the upload (or the server, on the same machine) use the other core.
ARROW_SLICE_ROWS = 32_768


def _unsafe_delimiter(delimiter: str) -> bool:
    """Whether the delimiter can occur inside an unquoted number, date, time or boolean."""
    return delimiter.isalnum() or delimiter in ".-+:"


_QUOTES = Escaper(replacements=(('"', '""'),), rare="", rare_bytes=b"", fix_rare=str)


def csv_column(array: pa.Array, *, all_text: bool = False) -> pa.Array:
    """`array` as the text or the numbers a CSV field shows, by Filecast's rules (NULLs kept):
    string-typed results are quoted by `CsvWriter`, the others written bare."""
    kind = array.type
    if pat.is_dictionary(kind):
        array, kind = array.dictionary_decode(), kind.value_type
    if pat.is_string(kind) or pat.is_large_string(kind) or pat.is_string_view(kind):
        return as_string(array)
    if pat.is_timestamp(kind):
        text, zoned = iso_timestamp_text(array)
        return concat([text, "Z"]) if zoned else text
    if is_binary_like(kind):
        return base64_text(array)
    if is_list_like(kind) or pat.is_struct(kind) or pat.is_map(kind):
        return pc.if_else(array.is_valid(), json_text(array), pa.scalar(None, pa.string()))
    if pat.is_duration(kind):
        return duration_text(array)
    if pat.is_float16(kind):
        array = array.cast(pa.float32())
    if pat.is_decimal(kind):
        return decimal_text(array) if all_text else _bare(decimal_text(array))
    if pat.is_null(kind) or all_text:
        return array.cast(pa.string())
    if pat.is_boolean(kind) or pat.is_integer(kind) or pat.is_floating(kind):
        return array
    if pat.is_date(kind) or pat.is_time(kind):
        return array
    if isinstance(kind, pa.ExtensionType) and kind.extension_name != "arrow.uuid":
        return csv_column(array.storage, all_text=all_text)
    return python_text(array, render_scalar)  # named fallback: intervals, UUIDs, unions


def _bare(text: pa.Array) -> pa.Array:
    """Text written without quotes (a number's): marked by the `large_string` layout."""
    return text.cast(pa.large_string())


def field_text(array: pa.Array, all_text: bool) -> tuple[str, pa.Array, str]:
    """(before, text, after) of a column's CSV fields: strings quoted with quotes doubled."""
    column = csv_column(array, all_text=all_text)
    if pat.is_string(column.type):
        return '"', escape(column, _QUOTES), '"'
    return "", column.cast(pa.string()), ""


class CsvWriter(Writer):
    spec = FormatSpec(
        name="csv",
        extension="csv",
        media_type="text/csv; charset=utf-8",
        text=True,
        options=frozenset({"delimiter", "header", "null_value", "line_ending", "bom"}),
    )

    @classmethod
    def option_problems(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().option_problems(options)
        delimiter = options.get("delimiter", ",")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            problems.append(("delimiter", f"must be a single character, got `{delimiter}`"))
        elif not delimiter.isascii():
            problems.append(("delimiter", f"must be an ASCII character (tab included), got `{delimiter}`"))
        elif delimiter in '"\r\n':
            problems.append(("delimiter", f"cannot be `{delimiter!r}`: it is part of CSV quoting or line ends"))
        for flag in ("header", "bom"):
            if flag in options and not isinstance(options[flag], bool):
                problems.append((flag, f"must be true or false, got `{options[flag]}`"))
        if options.get("line_ending", "\n") not in LINE_ENDINGS:
            problems.append(("line_ending", "must be `lf` (\\n) or `crlf` (\\r\\n)"))
        null_value = options.get("null_value", "")
        if not isinstance(null_value, str) or any(c in null_value for c in '"\r\n'):
            problems.append(("null_value", "must be a string without quotes or line breaks"))
        elif isinstance(delimiter, str) and delimiter and delimiter in null_value:
            problems.append(("null_value", f"`{null_value}` contains the delimiter `{delimiter}`"))
        return problems

    def __init__(self, schema: pa.Schema, options: Mapping[str, Any] | None = None):
        super().__init__(schema, options)
        delimiter = self.options.get("delimiter", ",")
        self._all_text = _unsafe_delimiter(delimiter)
        self._delimiter = delimiter
        self._eol = LINE_ENDINGS[self.options.get("line_ending", "\n")]
        null_value = self.options.get("null_value", "")
        # A one-column row of NULL would be an empty line, which readers skip: write `""`.
        self._null = '""' if not null_value and len(schema) == 1 else null_value
        self._write_options = pacsv.WriteOptions(
            include_header=False,
            delimiter=delimiter,
            null_string=self.options.get("null_value", ""),
            eol=LINE_ENDINGS[self.options.get("line_ending", "\n")],
            quoting_style="needed",
            batch_size=ARROW_SLICE_ROWS,  # rows per internal step: larger than the default 1,024 is 8 % less CPU
        )

    def begin(self) -> bytes:
        prefix = BOM if self.options.get("bom", False) else b""
        if not self.options.get("header", True):
            return prefix
        sink = io.BytesIO()
        header_options = pacsv.WriteOptions(
            include_header=True,
            delimiter=self._write_options.delimiter,
            eol=self._write_options.eol,
        )
        names_only = pa.schema([(name, pa.null()) for name in self.schema.names])
        pacsv.write_csv(names_only.empty_table(), sink, header_options)
        return prefix + sink.getvalue()

    def _arrow_columns(self, batch: pa.RecordBatch) -> list[pa.Array] | None:
        """The batch's columns as pyarrow's CSV writer must see them to write Filecast's bytes, or
        None when one of them needs Filecast's own row join. With `quoting_style="needed"` that
        writer quotes every string-typed column (quotes doubled) and writes every other type bare
        through the same cast to text, so the columns `csv_column` makes text are passed as text,
        the numbers, dates and booleans as they are. A bare text column (`_bare`: decimals with a
        scale above 6) would come out quoted, and a one-column file writes a NULL as `""`: those
        take the join."""
        if self._null != self._write_options.null_string or not batch.num_columns:
            return None
        arrays = []
        for array in batch.columns:
            kind = array.type
            if pat.is_decimal(kind) and 0 <= kind.scale <= 6 and not self._all_text:
                arrays.append(array)  # cast by the writer to the same positional text
                continue
            text = csv_column(array, all_text=self._all_text)
            if pat.is_large_string(text.type):
                return None
            arrays.append(text)
        return arrays

    def _encode_arrow(self, batch: pa.RecordBatch) -> Chunk:
        arrays = self._arrow_columns(batch)
        if arrays is None:
            return self._encode(batch)
        sink = pa.BufferOutputStream()
        names = [str(i) for i in range(len(arrays))]
        pacsv.write_csv(pa.RecordBatch.from_arrays(arrays, names=names), sink, self._write_options)
        return sink.getvalue()

    def _encode(self, batch: pa.RecordBatch) -> Chunk:
        if batch.num_columns == 0:
            return self._eol.encode() * batch.num_rows
        parts: list[str | pa.Array] = []
        for i, column in enumerate(batch.columns):
            piece = finish(*field_text(column, self._all_text))
            parts += [(self._delimiter if i else "") + piece.before, piece.text, piece.after]
        parts.append(self._eol)
        return text_data(concat(parts, null_text=self._null))

    def write(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        return run_sliced(batch, self._encode_arrow, min_rows=ARROW_SLICE_ROWS)
