"""Text is valid UTF-8 before anything is published (DESIGN.md §6).

Sources can hand over strings that are not UTF-8: SQLite stores whatever bytes it is given
(`X'61FF62'` cast to text), a driver can pass a lone surrogate through. Written as they are, they
make files that lxml, json and DuckDB refuse while the run reports success. Every string-holding
column of every mapped batch is checked with Arrow's full validation (`validate(full=True)`,
vectorised UTF-8 checks over the data buffer); a clean batch costs that one pass.

By default an invalid value fails the run, naming the column and, when the model has a primary
key, the row's key. With `on_invalid_text: replace` on the activation, invalid sequences in plain
string columns become U+FFFD (the named per-value fallback, run only on a column found invalid)
and the count is an `invalid_text` warning on the run record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.types as pat

from ..error_codes import ErrorCode
from ..errors import FormatError


def _holds_text(kind: pa.DataType) -> bool:
    if pat.is_string(kind) or pat.is_large_string(kind) or pat.is_string_view(kind):
        return True
    if pat.is_dictionary(kind):
        return _holds_text(kind.value_type)
    if isinstance(kind, pa.BaseExtensionType):
        return _holds_text(kind.storage_type)
    return any(_holds_text(kind.field(i).type) for i in range(kind.num_fields))


def _valid(array: pa.Array) -> bool:
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def first_invalid(array: pa.Array) -> int:
    """The first row of `array` whose value is not valid UTF-8 (bisection over validated slices)."""
    low, high = 0, len(array)
    while high - low > 1:
        middle = (low + high) // 2
        if _valid(array.slice(low, middle - low)):
            low = middle
        else:
            high = middle
    return low


def _plain_string(kind: pa.DataType) -> bool:
    return bool(pat.is_string(kind) or pat.is_large_string(kind))


def replace_invalid(array: pa.Array) -> tuple[pa.Array, int]:
    """`array` with invalid UTF-8 replaced by U+FFFD, and how many values changed."""
    raw = array.view(pa.binary() if pat.is_string(array.type) else pa.large_binary())
    values: list[str | None] = []
    changed = 0
    for value in raw.to_pylist():
        if value is None:
            values.append(None)
            continue
        try:
            values.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(value.decode("utf-8", "replace"))
            changed += 1
    return pa.array(values, array.type), changed


class TextGuard:
    """Checks (or repairs) the text of every batch a run publishes."""

    def __init__(
        self, activation_id: str, *, replace: bool, key_columns: Sequence[str], warn: Callable[[str, str], None]
    ):
        self.activation_id = activation_id
        self.replace = replace
        self.key_columns = list(key_columns)
        self.warn = warn
        self.replaced: dict[str, int] = {}

    def check(self, mapped: pa.RecordBatch, source: pa.RecordBatch) -> pa.RecordBatch:
        """`mapped`, verified; `source` (the unmapped batch) gives the row's key for a message."""
        columns = list(mapped.columns)
        changed = False
        for index, (field, column) in enumerate(zip(mapped.schema, columns, strict=True)):
            if not _holds_text(field.type) or _valid(column):
                continue
            if self.replace and _plain_string(field.type):
                columns[index], count = replace_invalid(column)
                self.replaced[field.name] = self.replaced.get(field.name, 0) + count
                changed = True
                continue
            self._fail(field, column, source)
        return pa.RecordBatch.from_arrays(columns, schema=mapped.schema) if changed else mapped

    def _fail(self, field: pa.Field, column: pa.Array, source: pa.RecordBatch) -> None:
        row = first_invalid(column)
        keys = [name for name in self.key_columns if name in source.schema.names]
        where = ""
        if keys:
            values = ", ".join(f"{name}={source.column(name)[row].as_py()!r}" for name in keys)
            where = f" at the row with key {values}"
        fix = (
            "set `on_invalid_text: replace` on the activation to write U+FFFD instead, or fix the data"
            if _plain_string(field.type)
            else "cast or clean the value in the model's SQL"
        )
        raise FormatError(
            f"column `{field.name}` holds text that is not valid UTF-8{where}; nothing was published; {fix}",
            code=ErrorCode.INVALID_TEXT,
        )

    def report(self) -> None:
        """The `invalid_text` warning for the values replaced, once per run."""
        if self.replaced:
            counts = ", ".join(f"`{name}` {count}" for name, count in sorted(self.replaced.items()))
            total = sum(self.replaced.values())
            self.warn(
                "invalid_text",
                f"{total} values held text that is not valid UTF-8 and were written with "
                f"U+FFFD (on_invalid_text: replace): {counts}",
            )
