"""Vectorised text kernels shared by the text writers (CSV, JSON, NDJSON, XML).

The text writers never loop over rows in Python: every column becomes an Arrow string array of
value text (casts, `replace_substring`, `binary_join_element_wise`), and a row is one element-wise
join of those arrays with constant literals between them. The joined rows sit in one contiguous
Arrow buffer, which becomes the writer's bytes with a single copy.

A `Piece` is a column's text plus the literal text that goes right before and after every value
(the quotes of a JSON string, `Z"` after a UTC timestamp): when a column has no NULLs, the
literals fold into the constant separators of the row join instead of costing a pass each.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

# A batch is cut into one slice per thread (Arrow kernels release the GIL, so slices encode in
# parallel), each of MIN_SLICE_ROWS to MAX_SLICE_ROWS rows: big enough that the Python calls
# per slice are noise, small enough that joined text stays far below the 2 GiB offset limit.
MIN_SLICE_ROWS = 8_192
MAX_SLICE_ROWS = 65_536
_THREADS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_local = threading.local()


_SCALE = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_YEAR_1 = {unit: -62_135_596_800 * scale for unit, scale in _SCALE.items()}  # 0001-01-01T00:00:00
_YEAR_9999 = {unit: 253_402_300_800 * scale - 1 for unit, scale in _SCALE.items()}  # end of 9999-12-31


@dataclass(frozen=True)
class Piece:
    """A column as text: `before + text[i] + after` is the text of row i. A NULL in `text`
    stands for the format's NULL (JSON `null`, an omitted XML element); literals are then empty."""

    before: str
    text: pa.Array
    after: str


def concat(parts: Sequence[str | pa.Array], *, null_text: str | None = None) -> pa.Array:
    """Element-wise concatenation of string arrays and literals (adjacent literals merged).

    A NULL in an array makes the row NULL, or, with `null_text`, reads as that text: this is how
    a row join writes JSON `null` or omits an XML element without a pass per column."""
    args: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if args and isinstance(args[-1], str):
                args[-1] += part
                continue
        args.append(part)
    if not any(isinstance(arg, pa.Array) for arg in args):
        raise ValueError("concat needs at least one array")
    if len(args) == 1:
        return args[0] if null_text is None else pc.fill_null(args[0], null_text)
    if null_text is None:
        return pc.binary_join_element_wise(*args, "")
    return pc.binary_join_element_wise(*args, "", null_handling="replace", null_replacement=null_text)


def finish(before: str, text: pa.Array, after: str) -> Piece:
    """A piece from text that may hold NULLs: with NULLs the literals cannot fold into the row's
    separators (a NULL row gets none of them), so they are joined here, NULLs kept."""
    if text.null_count == 0 or (not before and not after):
        return Piece(before, text, after)
    return Piece("", concat([before, text, after]), "")


def folded(piece: Piece, null_text: str | None = None) -> pa.Array:
    """The piece's complete text per row, literals included; NULLs become `null_text` if given."""
    if not piece.before and not piece.after:
        return piece.text if null_text is None else pc.fill_null(piece.text, null_text)
    return concat([piece.before, piece.text, piece.after], null_text=null_text)


def _span(text: pa.Array) -> tuple[int, int, pa.Buffer | None]:
    """(first byte, end byte, data buffer) of the characters of a `string` array."""
    _, offsets_buffer, data = text.buffers()
    offsets = pa.Array.from_buffers(pa.int32(), len(text) + 1, [None, offsets_buffer], offset=text.offset)
    return offsets[0].as_py(), offsets[len(text)].as_py(), data


Chunk: TypeAlias = bytes | pa.Buffer  # what an encoder returns: joined into the writer's bytes with one copy


def text_data(text: pa.Array) -> Chunk:
    """The characters of all values of a string array, back to back: a zero-copy buffer slice."""
    if len(text) == 0:
        return b""
    start, end, data = _span(as_string(text))
    if data is None or end <= start:
        return b""
    return data.slice(start, end - start)


def as_string(array: pa.Array) -> pa.Array:
    """Any string-like array as plain `string` (large and view layouts included)."""
    return array if array.type == pa.string() else array.cast(pa.string())


@dataclass(frozen=True)
class Escaper:
    """How a format escapes text: literal replacements applied in order (`&` before `&lt;`…),
    then a per-value function for rare characters (`rare`, an RE2 class) that no literal covers.
    `rare_bytes` are the bytes that can start a rare character."""

    replacements: tuple[tuple[str, str], ...]
    rare: str
    rare_bytes: bytes
    fix_rare: Callable[[str], str]

    @property
    def special(self) -> bytes:
        return bytes({old.encode()[0] for old, _ in self.replacements} | set(self.rare_bytes))


def present_bytes(text: pa.Array, special: bytes) -> set[int]:
    """Which of the `special` bytes occur in a string array's characters: one C-speed pass
    (`bytes.translate` deletes every other byte), several times faster than a regex scan."""
    start, end, data = _span(as_string(text))
    if data is None or end <= start:
        return set()
    others = bytes(b for b in range(256) if b not in special)
    return set(data[start:end].to_pybytes().translate(None, others))


def escape(text: pa.Array, escaper: Escaper) -> pa.Array:
    """Escaped string values (NULLs kept). A clean column costs one byte scan; each special
    character present costs one `replace_substring` pass over the column."""
    text = as_string(text)
    found = present_bytes(text, escaper.special)
    if not found:
        return text
    for old, new in escaper.replacements:
        if old.encode()[0] in found:
            text = pc.replace_substring(text, old, new)
    if found & set(escaper.rare_bytes):
        mask = pc.fill_null(pc.match_substring_regex(text, escaper.rare), False)
        if pc.any(mask).as_py():
            fixed = [escaper.fix_rare(v) for v in text.filter(mask).to_pylist()]
            text = pc.replace_with_mask(text, mask, pa.array(fixed, pa.string()))
    return text


def iso_timestamp_text(array: pa.Array) -> tuple[pa.Array, bool]:
    """ISO 8601 text of timestamps (`2024-01-31T12:00:00.250000`, the unit's fixed digits) and
    whether they are zoned. Zoned values are rendered in UTC: the caller appends `Z`."""
    unit, zoned = array.type.unit, array.type.tz is not None
    # Arrow stores zoned timestamps as UTC instants: dropping the zone is metadata-only and
    # avoids the zone-aware formatting path (about 20x slower).
    naive = array.cast(pa.timestamp(unit)) if zoned else array
    text = naive.cast(pa.string())
    low, high = pc.min_max(naive.cast(pa.int64())).values()
    if low.is_valid and _YEAR_1[unit] <= low.as_py() and high.as_py() <= _YEAR_9999[unit]:
        return pc.binary_replace_slice(text, 10, 11, "T"), zoned  # four-digit years: byte 10 is the space
    return pc.replace_substring(text, " ", "T", max_replacements=1), zoned


def base64_text(array: pa.Array) -> pa.Array:
    """Standard base64 (with padding) of binary values, computed by DuckDB in-process (zero-copy
    over Arrow); pyarrow has no base64 kernel."""
    import duckdb  # binary columns are rare: import only when needed

    con = getattr(_local, "duckdb", None)
    if con is None:
        con = _local.duckdb = duckdb.connect()
    if pat.is_fixed_size_binary(array.type) or pat.is_binary_view(array.type):
        array = array.cast(pa.binary())
    result = con.from_arrow(pa.table({"b": array})).project("base64(b) AS t").to_arrow_table().column(0)
    return as_string(result.combine_chunks())


def decimal_text(array: pa.Array) -> pa.Array:
    """Exact positional text of decimals with exactly the column's scale (`0.0000000001`,
    `0.0000000000`, `-0.00000050`), never Arrow's scientific form (`1E-10`, `0E-10`, `5.0E-7`).

    Arrow switches to scientific notation when a value's adjusted exponent is below -6, which
    can only happen with a scale above 6 (or a negative scale); other columns keep the plain cast.
    Otherwise the unscaled integer (the same bytes read as scale 0, always positional) is padded
    and split around the point, all in Arrow kernels."""
    kind = array.type
    scale = kind.scale
    if 0 <= scale <= 6:
        return array.cast(pa.string())
    wide = pat.is_decimal256(kind) or kind.precision > 38
    integer_type = pa.decimal256(76, 0) if wide else pa.decimal128(38, 0)
    if pat.is_decimal256(kind) != wide:
        array = array.cast(pa.decimal256(76, scale)) if wide else array
    unscaled = pa.Array.from_buffers(
        integer_type, len(array), array.buffers(), null_count=array.null_count, offset=array.offset
    ).cast(pa.string())
    if scale < 0:  # e.g. DECIMAL(5,-2): 123 means 12300
        zero = pc.equal(unscaled, "0")
        return pc.if_else(zero, unscaled, concat([unscaled, "0" * -scale]))
    negative = pc.starts_with(unscaled, "-")
    digits = pc.utf8_lpad(pc.utf8_ltrim(unscaled, "-"), width=scale + 1, padding="0")
    whole = pc.utf8_slice_codeunits(digits, 0, -scale)
    fraction = pc.utf8_slice_codeunits(digits, -scale)
    text = concat([whole, ".", fraction])
    if pc.any(negative).as_py():
        text = pc.if_else(negative, concat(["-", text]), text)
    return text


def duration_text(array: pa.Array) -> pa.Array:
    """ISO 8601 / XML Schema durations with exact digits (`PT90.500000S`, `PT0.000000001S`, a
    negative one as `-PT1.5S`), via a decimal reinterpretation of the integer counts."""
    digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[array.type.unit]
    counts = array.cast(pa.int64()).cast(pa.decimal128(38, 0))  # decimal: |int64 min| fits
    negative = pc.fill_null(pc.less(counts, pa.scalar(0, counts.type)), False)
    has_negative = pc.any(negative).as_py()
    if has_negative:
        counts = pc.abs(counts)
    scaled = pa.Array.from_buffers(
        pa.decimal128(38, digits), len(counts), counts.buffers(), null_count=counts.null_count, offset=counts.offset
    )
    text = concat(["PT", decimal_text(scaled), "S"])
    if has_negative:
        text = pc.if_else(negative, concat(["-", text]), text)
    return text


def list_parts(array: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array | None]:
    """(offsets from 0, the values they index, validity mask or None) of any list layout."""
    if pat.is_fixed_size_list(array.type) or pat.is_list_view(array.type) or pat.is_large_list_view(array.type):
        array = array.cast(pa.list_(array.type.value_field))
    offsets = array.offsets
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    values = array.values.slice(first, last - first)
    if first or offsets.offset:  # a fresh array: from_arrays refuses sliced offsets with a validity mask
        offsets = pc.subtract(offsets, pa.scalar(first, offsets.type))
    return offsets, values, (array.is_null() if array.null_count else None)


def joined_lists(array: pa.Array, items: pa.Array, separator: str) -> pa.Array:
    """Joins the per-item texts of list `array` with `separator`; NULL lists stay NULL."""
    offsets, _, validity = list_parts(array)
    cls = pa.LargeListArray if offsets.type == pa.int64() else pa.ListArray
    lists = cls.from_arrays(offsets, as_string(items), mask=validity)
    return pc.binary_join(lists, separator)


def dictionary_text(array: pa.Array, encode: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """Encodes a dictionary array's distinct values once, then gathers them by index."""
    return encode(array.dictionary).take(array.indices)


def python_text(array: pa.Array, render: Callable[[Any], str]) -> pa.Array:
    """Named per-value fallback for rare types without a vectorised rendering (intervals, UUID
    extension values, unions): Python renders each non-NULL value."""
    return pa.array([None if v is None else render(v) for v in array.to_pylist()], pa.string())


def render_scalar(value: Any) -> str:
    """Text of a rare scalar in the fallback: ISO 8601 for intervals, canonical text otherwise."""
    if isinstance(value, pa.MonthDayNano):
        months, days, nanos = value
        seconds, rest = divmod(abs(nanos), 10**9)
        return f"P{months}M{days}DT{'-' if nanos < 0 else ''}{seconds}.{rest:09d}S"
    return str(value)


def _pool_instance() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="filecast-encode")
        return _pool


def _encode_fitting(encode: Callable[[pa.RecordBatch], Chunk], batch: pa.RecordBatch) -> list[Chunk]:
    """`encode(batch)`, in halves when the joined text would pass 2 GiB (huge values)."""
    try:
        return [encode(batch)]
    except pa.ArrowCapacityError:
        if batch.num_rows <= 1:
            raise
        half = batch.num_rows // 2
        return _encode_fitting(encode, batch.slice(0, half)) + _encode_fitting(encode, batch.slice(half))


def run_sliced(
    batch: pa.RecordBatch,
    encode: Callable[[pa.RecordBatch], Chunk],
    skip: int = 0,
    *,
    min_rows: int = MIN_SLICE_ROWS,
) -> bytes:
    """The bytes of `batch` encoded in row slices, in parallel when there are several, joined in
    order with one copy; `skip` drops leading bytes (a separator the first row must not have).
    A slice has at least `min_rows` rows (an encoder whose per-slice cost is high asks for more)."""
    rows = batch.num_rows
    size = min(max(MAX_SLICE_ROWS, min_rows), max(min_rows, -(-rows // _THREADS)))
    if rows <= size:
        chunks = _encode_fitting(encode, batch)
    else:
        slices = [batch.slice(start, size) for start in range(0, rows, size)]
        if _THREADS == 1:
            results = [_encode_fitting(encode, piece) for piece in slices]
        else:
            results = list(_pool_instance().map(lambda piece: _encode_fitting(encode, piece), slices))
        chunks = [chunk for result in results for chunk in result]
    views = [memoryview(chunk) for chunk in chunks]
    if skip:
        views[0] = views[0][skip:]
    return b"".join(views)
