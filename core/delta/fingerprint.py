"""Stable, vectorised row fingerprints for delta runs.

A delta run compares each source row with what was delivered before, so it needs fingerprints
that never change across library upgrades: a 128-bit **key fingerprint** over the primary-key
columns and a 64-bit **content fingerprint** over the mapped (exported) columns. Both are MD5
(RFC 1321) digests of a canonical byte encoding defined below; DuckDB computes the digests over
an Arrow column of those bytes (MD5 is a standard, frozen algorithm, unlike DuckDB `hash()` or
Polars row hashes). Golden values in `tests/unit/test_fingerprint.py` pin the result.

Canonical encoding (format version 1)
-------------------------------------
A row is the concatenation of its values' encodings, in the order the columns are *named* (the
`key_columns` / `value_columns` lists), whatever the batch's physical column order. No names and
no separators: every encoding is self-delimiting (a tag byte, then a payload whose length the tag
or a length prefix fixes), so the concatenation is injective and `("ab", "c") != ("a", "bc")`.
All integers in payloads are little-endian.

    type                                         tag   payload
    NULL of any type (and the `null` type)       0x00  nothing
    bool                                         0x01  1 byte: 0x00 false, 0x01 true
    int8…int64, uint8…uint32, uint64 < 2**63     0x02  8-byte two's complement int64
    uint64 ≥ 2**63                               0x03  8-byte uint64
    float16/32/64                                0x04  8-byte IEEE-754 binary64 (widened exactly);
                                                       -0.0 → +0.0; every NaN → 0x7FF8000000000000
    decimal32/64/128/256                         0x05  4-byte int32 scale + 16-byte two's complement
                                                       unscaled value (precision is ignored)
    decimal256 value outside the int128 range    0x11  4-byte int32 scale + 32-byte unscaled value
    date32, date64                               0x06  8-byte int64 days since 1970-01-01
                                                       (date64: floor of ms / 86,400,000)
    time32, time64                               0x07  8-byte int64 nanoseconds since midnight
    timestamp without time zone                  0x08  8-byte int64 seconds since the epoch (floor)
                                                       + 4-byte uint32 nanoseconds
    timestamp with a time zone                   0x09  the same, of the UTC instant (zone not encoded)
    duration                                     0x0A  the same: int64 seconds (floor) + uint32 ns
    string, large_string, string_view            0x0B  4-byte uint32 byte length + UTF-8 bytes
    binary, large_binary, fixed_size_binary,     0x0C  4-byte uint32 length + bytes
      binary_view
    list, large_list, fixed_size_list, views     0x0D  4-byte uint32 count + each element's encoding
    struct                                       0x0E  each field's encoding, in field order
                                                       (field names are not encoded)
    map                                          0x0F  4-byte uint32 entry count + per entry: the
                                                       key's encoding, then the value's
    interval (month_day_nano)                    0x10  int32 months + int32 days + int64 ns

Dictionary-encoded columns encode as their value type, extension types as their storage type,
run-end-encoded columns as their decoded values. Unions, and single values of 4 GiB or more,
are rejected (`FormatError`). Integer
widths and float widths share a tag on purpose: widening a column's type in the warehouse does
not make every row look changed; a unit change of a timestamp (ms → us) does not either.

key fingerprint = MD5(encoding of the key columns), 16 bytes, kept as two big-endian uint64
(`key_hi` = digest bytes 0..7, `key_lo` = bytes 8..15), so numeric order is the digest's byte
order. content fingerprint = digest bytes 0..7 of MD5(encoding of the value columns), big-endian.
A row whose key has a NULL in any key column is flagged in `null_key`; its key fingerprint is
still computed but must not enter the state (see `core.delta.diff`).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeAlias

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FormatError

ENCODING_VERSION = 1
_LB = pa.large_binary()
# Built from buffers: `pa.scalar` would import pandas (when installed) at import time.
_EMPTY = pa.Array.from_buffers(_LB, 1, [None, pa.py_buffer(np.zeros(2, np.int64)), pa.py_buffer(b"")])[0]
_NAN_BITS = np.uint64(0x7FF8000000000000)
_TS_SPLIT = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_TIME_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Fingerprints:
    """Per-row fingerprints of one batch: 16-byte keys as (hi, lo) uint64 and 8-byte contents."""

    key_hi: np.ndarray  # uint64, digest bytes 0..7 big-endian
    key_lo: np.ndarray  # uint64, digest bytes 8..15 big-endian
    content: np.ndarray  # uint64; zeros when no value columns were asked for
    null_key: np.ndarray  # bool: some key column is NULL

    def __len__(self) -> int:
        return len(self.key_hi)

    def key_array(self) -> pa.FixedSizeBinaryArray:
        """The key fingerprints as 16-byte Arrow values (digest bytes), e.g. for a payload column."""
        return key_array(self.key_hi, self.key_lo)


def key_array(hi: np.ndarray, lo: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Pack (hi, lo) key fingerprints into a `fixed_size_binary(16)` array of digest bytes."""
    packed = np.empty((len(hi), 2), dtype=">u8")
    packed[:, 0], packed[:, 1] = hi, lo
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(hi), [None, pa.py_buffer(packed)])


def split_key_array(keys: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `key_array`: 16-byte digests back to (hi, lo) uint64 arrays."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    raw = np.frombuffer(keys.buffers()[1], dtype=">u8", count=2 * (len(keys) + keys.offset))
    pairs = raw.reshape(-1, 2)[keys.offset :]
    return pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)


def fingerprint_batch(
    batch: pa.RecordBatch | pa.Table,
    key_columns: Sequence[str],
    value_columns: Sequence[str] | None,
    *,
    threads: int | None = None,
) -> Fingerprints:
    """Key and content fingerprints of every row of `batch` (no per-row Python).

    `value_columns=None` skips the content hash (INSERT needs keys only); contents are then 0.
    The batch is hashed in slices of at most `SLICE_ROWS` rows, which bounds the working memory
    whatever the batch size, on up to `threads` threads (default: 2, or 1 on a single core); the
    result does not depend on how a batch is cut.
    """
    if not key_columns:
        raise ValueError("fingerprints need at least one key column")
    rows = batch.num_rows
    slices = [batch.slice(start, SLICE_ROWS) for start in range(0, rows, SLICE_ROWS)] or [batch]
    workers = max(1, min(threads or min(2, os.cpu_count() or 1), len(slices)))
    if workers == 1:
        done = [_fingerprint(part, key_columns, value_columns) for part in slices]
    else:
        done = list(_executor(workers).map(lambda part: _fingerprint(part, key_columns, value_columns), slices))
    if len(done) == 1:
        return done[0]
    return Fingerprints(*(np.concatenate([getattr(f, name) for f in done]) for name in _FIELDS))


def fingerprint_ahead(
    batches: Iterable[pa.RecordBatch],
    key_columns: Sequence[str],
    value_columns: Sequence[str] | None,
    *,
    depth: int = 4,
    threads: int | None = None,
) -> Iterator[tuple[pa.RecordBatch, Future[Fingerprints]]]:
    """Each batch with its fingerprints being computed, up to `depth` batches ahead of the consumer.

    A source yields small batches (one hashing slice each), so hashing batch by batch keeps one
    core busy and leaves the other idle while the consumer diffs and writes: here up to `threads`
    pool threads (default 2, or 1 on a single core) hash the next batches meanwhile. Values are
    those of `fingerprint_batch` (each batch hashed alone); an error surfaces from its future.
    Closing the iterator early cancels the hashing not started yet.
    """
    workers = max(1, threads or min(2, os.cpu_count() or 1))
    pool = _executor(workers)
    ahead: deque[tuple[pa.RecordBatch, Future[Fingerprints]]] = deque()
    source = iter(batches)
    try:
        while True:
            while len(ahead) < max(1, depth):
                batch = next(source, None)
                if batch is None:
                    break
                ahead.append((batch, pool.submit(fingerprint_batch, batch, key_columns, value_columns, threads=1)))
            if not ahead:
                return
            yield ahead.popleft()
    finally:
        for _, future in ahead:
            future.cancel()


def _fingerprint(
    batch: pa.RecordBatch | pa.Table, key_columns: Sequence[str], value_columns: Sequence[str] | None
) -> Fingerprints:
    keys = encode_rows(batch, key_columns)
    values = encode_rows(batch, value_columns) if value_columns is not None else None
    hi, lo, content = _md5(keys, values)
    null_key = np.zeros(batch.num_rows, dtype=bool)
    for name in key_columns:
        column = _column(batch, name)
        if column.null_count:
            null_key |= np.asarray(column.is_null())
    return Fingerprints(hi, lo, content, null_key)


SLICE_ROWS = 16_384  # ~3 MB of encodings per slice: bounds the working memory per thread
_FIELDS = ("key_hi", "key_lo", "content", "null_key")
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fingerprint")
        return _pools[workers]


def encode_rows(batch: pa.RecordBatch | pa.Table, columns: Sequence[str]) -> pa.Array:
    """The canonical encoding of each row over `columns`, in that order, as `large_binary`."""
    pieces: list[Piece] = []
    for name in columns:
        pieces += _encode(_column(batch, name), name)
    return _join(pieces, batch.num_rows)


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise ValueError(f"no column `{name}` in the batch; columns are: {', '.join(batch.schema.names)}")
    column = batch.column(index)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


# A piece is one part of every row's encoding: an (n, width) uint8 matrix when every row has the
# same width, else a large_binary array without NULLs. Adjacent matrices are glued together before
# the row-wise concatenation, whose cost grows with the number of pieces.
Piece: TypeAlias = np.ndarray | pa.Array


def _join(pieces: list[Piece], length: int) -> pa.Array:
    arrays: list[pa.Array] = []
    matrices: list[np.ndarray] = []
    for piece in [*pieces, None]:
        if isinstance(piece, np.ndarray):
            matrices.append(piece)
            continue
        if matrices:
            arrays.append(_matrix_array(matrices[0] if len(matrices) == 1 else np.hstack(matrices)))
            matrices = []
        if piece is not None:
            arrays.append(piece)
    if not arrays:
        return _matrix_array(np.zeros((length, 0), np.uint8))
    if len(arrays) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*arrays, _EMPTY)


def _matrix_array(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64) if width else np.zeros(n + 1, np.int64)
    return pa.Array.from_buffers(_LB, n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix))])


# --- per-type encoders ---


def _encode(arr: pa.Array, name: str) -> list[Piece]:
    t = arr.type
    if pa.types.is_dictionary(t):
        return _encode(arr.dictionary_decode(), name)
    if isinstance(t, pa.ExtensionType):
        return _encode(arr.storage, name)
    if pa.types.is_run_end_encoded(t):
        return _encode(pc.run_end_decode(arr), name)
    if pa.types.is_null(t):
        return [np.zeros((len(arr), 1), np.uint8)]
    valid = None if arr.null_count == 0 else np.asarray(arr.is_valid())
    if pa.types.is_boolean(t):
        return [_fixed(0x01, "u1", np.asarray(pc.cast(arr, pa.uint8()).fill_null(0)), valid)]
    if pa.types.is_integer(t):
        return [_integers(arr, valid)]
    if pa.types.is_floating(t):
        return [_floats(arr, valid)]
    if pa.types.is_decimal(t):
        return [_decimals(arr, valid)]
    if pa.types.is_date32(t):
        return [_fixed(0x06, "<i8", _buffer(arr, "<i4"), valid)]
    if pa.types.is_date64(t):
        return [_fixed(0x06, "<i8", _buffer(arr, "<i8") // _DAY_MS, valid)]
    if pa.types.is_time(t):
        width = "<i4" if pa.types.is_time32(t) else "<i8"
        return [_fixed(0x07, "<i8", _buffer(arr, width).astype(np.int64) * _TIME_NS[t.unit], valid)]
    if pa.types.is_timestamp(t):
        return [_instants(0x09 if t.tz else 0x08, arr, t.unit, valid)]
    if pa.types.is_duration(t):
        return [_instants(0x0A, arr, t.unit, valid)]
    if pa.types.is_interval(t):  # month_day_nano: int32 months, int32 days, int64 ns, as stored
        return [_fixed(0x10, "u1", _buffer(arr, "u1", 16).reshape(-1, 16), valid, shape=(16,))]
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _variable(0x0B, arr.cast(pa.large_string()).view(_LB), valid, name)
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    ):
        return _variable(0x0C, arr.cast(_LB), valid, name)
    if pa.types.is_map(t):
        entries = _join(_encode(arr.keys, name) + _encode(arr.items, name), len(arr.keys))
        return _nested(0x0F, arr, entries, valid, name)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        arr = arr.cast(pa.large_list(t.value_field))
        return _nested(0x0D, arr, _join(_encode(arr.values, name), len(arr.values)), valid, name)
    if pa.types.is_struct(t):
        return _struct(arr, name, valid)
    raise FormatError(
        f"column `{name}` has type `{t}`, which delta runs cannot fingerprint; "
        "cast it to a supported type in the model's SQL"
    )


def _buffer(arr: pa.Array, dtype: str, width: int = 1) -> np.ndarray:
    """The values buffer of a fixed-width array, as numpy, honouring the array's offset."""
    buffer = arr.buffers()[1]
    if buffer is None:  # an all-NULL array may carry no values buffer
        return np.zeros(len(arr) * width, dtype=dtype)
    count = (len(arr) + arr.offset) * width
    return np.frombuffer(buffer, dtype=dtype, count=count)[arr.offset * width :]


def _records(records: np.ndarray, valid: np.ndarray | None) -> Piece:
    """Fixed-width records whose first field is the tag; NULL rows shrink to the single byte 0x00."""
    n, width = len(records), records.dtype.itemsize
    raw = records.view(np.uint8).reshape(n, width)
    if valid is None:
        return raw
    raw[~valid, 0] = 0x00
    keep = np.ones((n, width), dtype=bool)
    keep[~valid, 1:] = False
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.where(valid, width, 1), out=offsets[1:])
    return pa.Array.from_buffers(_LB, n, [None, pa.py_buffer(offsets), pa.py_buffer(raw[keep])])


def _fixed(
    tag: int | np.ndarray,
    dtype: str,
    values: np.ndarray,
    valid: np.ndarray | None,
    shape: tuple[int, ...] = (),
) -> Piece:
    records = np.empty(len(values), np.dtype([("t", "u1"), ("v", dtype, shape)]))
    records["t"] = tag
    records["v"] = values
    return _records(records, valid)


def _integers(arr: pa.Array, valid: np.ndarray | None) -> Piece:
    values = _buffer(arr, np.dtype(arr.type.to_pandas_dtype()).str)
    if values.dtype == np.uint64:
        big = values >= np.uint64(1 << 63)
        return _fixed(np.where(big, 0x03, 0x02).astype(np.uint8), "<u8", values, valid)
    return _fixed(0x02, "<i8", values, valid)


def _floats(arr: pa.Array, valid: np.ndarray | None) -> Piece:
    width = {16: "<f2", 32: "<f4", 64: "<f8"}[arr.type.bit_width]
    values = _buffer(arr, width).astype(np.float64) + 0.0  # + 0.0 turns -0.0 into +0.0
    bits = values.view(np.uint64)
    bits[np.isnan(values)] = _NAN_BITS
    return _fixed(0x04, "<u8", bits, valid)


def _decimals(arr: pa.Array, valid: np.ndarray | None) -> Piece:
    width = arr.type.bit_width // 8
    raw = _buffer(arr, "u1", width).reshape(-1, width)
    negative = raw[:, width - 1] >= 0x80
    narrow = _decimal_records(0x05, arr.type.scale, raw[:, :16], negative, 16)
    if width == 32:  # decimal256: values that fit in int128 encode like decimal128 ones
        sign = np.where(negative, 0xFF, 0x00).astype(np.uint8)
        fits = (raw[:, 16:] == sign[:, None]).all(axis=1) & ((raw[:, 15] >= 0x80) == negative)
        if not fits.all():
            wide = _decimal_records(0x11, arr.type.scale, raw, negative, 32)
            return pc.if_else(pa.array(fits), _as_array(_records(narrow, valid)), _as_array(_records(wide, valid)))
    return _records(narrow, valid)


def _decimal_records(tag: int, scale: int, raw: np.ndarray, negative: np.ndarray, size: int) -> np.ndarray:
    value = np.zeros((len(raw), size), dtype=np.uint8)
    width = min(raw.shape[1], size)
    value[:, :width] = raw[:, :width]
    value[negative, width:] = 0xFF  # sign extension
    records = np.empty(len(raw), np.dtype([("t", "u1"), ("scale", "<i4"), ("v", "u1", (size,))]))
    records["t"], records["scale"], records["v"] = tag, scale, value
    return records


def _instants(tag: int, arr: pa.Array, unit: str, valid: np.ndarray | None) -> Piece:
    per_second = _TS_SPLIT[unit]
    seconds, rest = np.divmod(_buffer(arr, "<i8"), per_second)
    records = np.empty(len(arr), np.dtype([("t", "u1"), ("s", "<i8"), ("ns", "<u4")]))
    records["t"], records["s"], records["ns"] = tag, seconds, rest * (1_000_000_000 // per_second)
    return _records(records, valid)


def _as_array(piece: Piece) -> pa.Array:
    return _matrix_array(piece) if isinstance(piece, np.ndarray) else piece


def _length_header(tag: int, counts: pa.Array | np.ndarray, valid: np.ndarray | None, name: str) -> Piece:
    values = counts if isinstance(counts, np.ndarray) else np.asarray(counts.fill_null(0))
    if len(values) and int(values.max()) >= 1 << 32:
        raise FormatError(f"column `{name}` holds a value of 4 GiB or more, which delta runs cannot fingerprint")
    return _fixed(tag, "<u4", values, valid)


def _variable(tag: int, arr: pa.Array, valid: np.ndarray | None, name: str) -> list[Piece]:
    header = _length_header(tag, pc.binary_length(arr), valid, name)
    return [header, arr if valid is None else arr.fill_null(_EMPTY)]


def _nested(tag: int, arr: pa.Array, elements: pa.Array, valid: np.ndarray | None, name: str) -> list[Piece]:
    """List-like rows: a count header, then the slice of the elements' encodings each row spans."""
    offsets = np.asarray(arr.offsets).astype(np.int64)
    element_offsets = np.frombuffer(elements.buffers()[1], np.int64, count=len(elements) + 1 + elements.offset)
    element_offsets = element_offsets[elements.offset :]
    bodies = pa.Array.from_buffers(_LB, len(arr), [None, pa.py_buffer(element_offsets[offsets]), elements.buffers()[2]])
    header = _length_header(tag, np.diff(offsets), valid, name)
    return [header, bodies if valid is None else pc.if_else(pa.array(valid), bodies, _EMPTY)]


def _struct(arr: pa.StructArray, name: str, valid: np.ndarray | None) -> list[Piece]:
    header = _records(np.full(len(arr), 0x0E, np.dtype([("t", "u1")])), valid)
    fields: list[Piece] = []
    for index, child in enumerate(arr.flatten()):
        fields += _encode(child, f"{name}.{arr.type.field(index).name}")
    if valid is None:
        return [header, *fields]
    return [header, pc.if_else(pa.array(valid), _join(fields, len(arr)), _EMPTY)]


# --- hashing ---

_local = threading.local()
_database: duckdb.DuckDBPyConnection | None = None
_database_lock = threading.Lock()
_MASK = "18446744073709551615::UHUGEINT"


def _connection() -> duckdb.DuckDBPyConnection:
    """A cursor per thread on one private in-memory DuckDB (a database costs ~30 MB; cursors share it)."""
    global _database
    con = getattr(_local, "con", None)
    if con is None:
        with _database_lock:
            if _database is None:
                # One worker thread (parallelism comes from slicing batches) and an eager allocator
                # flush, so hashing does not keep DuckDB's arenas full of freed memory.
                _database = duckdb.connect(config={"threads": 1, "allocator_flush_threshold": "8MB"})
                _check_md5_number(_database)
                atexit.register(_database.close)
            con = _local.con = _database.cursor()
    return con


def _check_md5_number(con: duckdb.DuckDBPyConnection) -> None:
    """`md5_number` is the digest read little-endian; refuse to run if a DuckDB release changed that."""
    probe = b"filecast\x00fingerprint"
    got = con.execute("select md5_number(?::BLOB)::VARCHAR", [probe]).fetchall()[0]
    expected = int.from_bytes(hashlib.md5(probe).digest(), "little")
    if got is None or int(got[0]) != expected:
        raise RuntimeError("DuckDB md5_number no longer matches MD5; fingerprints would change")


def _md5(keys: pa.Array, values: pa.Array | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(keys)
    if n == 0:
        empty = np.zeros(0, np.uint64)
        return empty, empty.copy(), empty.copy()
    columns = {"k": keys} if values is None else {"k": keys, "v": values}
    select = [f"(md5_number(k) & {_MASK})::UBIGINT AS k0", "(md5_number(k) >> 64)::UBIGINT AS k1"]
    if values is not None:
        select.append(f"(md5_number(v) & {_MASK})::UBIGINT AS v0")
    con = _connection()
    con.register("filecast_rows", pa.table(columns))
    try:
        result = con.sql(f"SELECT {', '.join(select)} FROM filecast_rows").to_arrow_table()
    finally:
        con.unregister("filecast_rows")
    # md5_number's low 64 bits are digest bytes 0..7 read little-endian: byte-swap to big-endian.
    hi = np.asarray(result.column("k0").combine_chunks()).byteswap()
    lo = np.asarray(result.column("k1").combine_chunks()).byteswap()
    content = (
        np.asarray(result.column("v0").combine_chunks()).byteswap() if values is not None else np.zeros(n, np.uint64)
    )
    return hi, lo, content
