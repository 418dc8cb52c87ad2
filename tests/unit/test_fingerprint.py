"""Golden values and the encoding spec of `core.delta.fingerprint`.

`spec_encode` below is an independent, value-by-value rendering of the spec in the module
docstring: the vectorised encoder must produce exactly its bytes, and the pinned digests must
never change (a change means every delta state in production would look fully updated).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import math
import struct
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from core.delta.fingerprint import (
    Fingerprints,
    encode_rows,
    fingerprint_ahead,
    fingerprint_batch,
    key_array,
    split_key_array,
)
from core.errors import FormatError

UTC = dt.UTC


def le(value: int, size: int, signed: bool = True) -> bytes:
    return value.to_bytes(size, "little", signed=signed)


def spec_encode(scalar: pa.Scalar) -> bytes:
    """One value's canonical bytes, written from the spec table, one scalar at a time."""
    t = scalar.type
    if pa.types.is_dictionary(t):
        return spec_encode(scalar.value) if scalar.is_valid else b"\x00"
    if not scalar.is_valid:
        return b"\x00"
    if pa.types.is_boolean(t):
        return b"\x01" + bytes([scalar.as_py()])
    if pa.types.is_integer(t):
        value = scalar.as_py()
        return b"\x03" + le(value, 8, False) if value >= 1 << 63 else b"\x02" + le(value, 8)
    if pa.types.is_floating(t):
        value = float(scalar.as_py())
        bits = struct.pack("<d", value + 0.0) if not math.isnan(value) else le(0x7FF8000000000000, 8, False)
        return b"\x04" + bits
    if pa.types.is_decimal(t):
        sign, digits, exponent = scalar.as_py().as_tuple()
        unscaled = (-1) ** sign * int("".join(map(str, digits))) * 10 ** (int(exponent) + t.scale)
        if -(1 << 127) <= unscaled < 1 << 127:
            return b"\x05" + le(t.scale, 4) + le(unscaled, 16)
        return b"\x11" + le(t.scale, 4) + le(unscaled, 32)
    if pa.types.is_date(t):
        return b"\x06" + le((scalar.as_py() - dt.date(1970, 1, 1)).days, 8)
    if pa.types.is_time(t):
        per_ns = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[t.unit]
        return b"\x07" + le(scalar.value * per_ns, 8)
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[t.unit]
        seconds, rest = divmod(scalar.value, per_second)
        tag = b"\x0a" if pa.types.is_duration(t) else (b"\x09" if t.tz else b"\x08")
        return tag + le(seconds, 8) + le(rest * (10**9 // per_second), 4, False)
    if pa.types.is_interval(t):
        value = scalar.as_py()
        return b"\x10" + le(value.months, 4) + le(value.days, 4) + le(value.nanoseconds, 8)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        data = scalar.as_py().encode()
        return b"\x0b" + le(len(data), 4, False) + data
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        data = scalar.as_py()
        return b"\x0c" + le(len(data), 4, False) + data
    if pa.types.is_map(t):
        entries = scalar.values
        body = b"".join(
            spec_encode(entries.field(0)[i]) + spec_encode(entries.field(1)[i]) for i in range(len(entries))
        )
        return b"\x0f" + le(len(entries), 4, False) + body
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        elements = scalar.values
        return b"\x0d" + le(len(elements), 4, False) + b"".join(spec_encode(e) for e in elements)
    if pa.types.is_struct(t):
        return b"\x0e" + b"".join(spec_encode(scalar[i]) for i in range(t.num_fields))
    raise AssertionError(f"no spec for {t}")


def spec_rows(table: pa.Table, columns: list[str]) -> list[bytes]:
    return [b"".join(spec_encode(table.column(c)[i]) for c in columns) for i in range(table.num_rows)]


def golden_table() -> pa.Table:
    """Four rows covering every supported type, edge values and NULLs."""
    ts = dt.datetime(2024, 2, 29, 23, 59, 58, 123456)
    point = pa.struct([("x", pa.int32()), ("label", pa.string())])
    columns = {
        "id": pa.array([1, 2, -3, None], pa.int64()),
        "code": pa.array(["a", "ab", "", "é€😀"], pa.string()),
        "i8": pa.array([-128, 127, 0, None], pa.int8()),
        "u64": pa.array([0, 2**63 - 1, 2**63, 2**64 - 1], pa.uint64()),
        "f16": pa.array([np.float16(1.5), np.float16(-0.0), None, np.float16("inf")], pa.float16()),
        "f32": pa.array([0.1, -0.0, float("nan"), None], pa.float32()),
        "f64": pa.array([0.1, -0.0, float("nan"), -float("inf")], pa.float64()),
        "dec": pa.array([Decimal("1.50"), Decimal("-1.50"), Decimal("0.00"), None], pa.decimal128(10, 2)),
        "dec32": pa.array([Decimal("1.5"), Decimal("-9.9"), None, Decimal("0.0")], pa.decimal32(3, 1)),
        "dec256": pa.array(
            [Decimal("1.50"), Decimal("-" + "9" * 50 + ".00"), Decimal(10**60), None], pa.decimal256(70, 2)
        ),
        "bool": pa.array([True, False, None, True]),
        "d32": pa.array([dt.date(1970, 1, 1), dt.date(1969, 12, 31), dt.date(2024, 2, 29), None]),
        "d64": pa.array([dt.date(1970, 1, 2), None, dt.date(1900, 1, 1), dt.date(9999, 12, 31)], pa.date64()),
        "t32": pa.array([0, 86_399, None, 3_600], pa.time32("s")),
        "t64": pa.array([1, None, 86_399_999_999_999, 0], pa.time64("ns")),
        "ts_naive": pa.array(
            [ts, dt.datetime(1969, 12, 31, 23, 59, 59, 500000), None, dt.datetime(1970, 1, 1)],
            pa.timestamp("us"),
        ),
        "ts_utc": pa.array(
            [
                ts.replace(tzinfo=UTC),
                None,
                dt.datetime(1970, 1, 1, tzinfo=UTC),
                dt.datetime(2262, 4, 11, tzinfo=UTC),
            ],
            pa.timestamp("ms", tz="UTC"),
        ),
        "ts_paris": pa.array([-1, 0, 1, None], pa.timestamp("ns", tz="Europe/Paris")),
        "dur": pa.array([-1, 0, 1_500, None], pa.duration("ms")),
        "ival": pa.array(
            [pa.MonthDayNano([1, 2, 3]), None, pa.MonthDayNano([-1, -2, -3]), pa.MonthDayNano([0, 0, 0])],
            pa.month_day_nano_interval(),
        ),
        "bin": pa.array([b"", b"\x00", None, b"\xff\xfe"], pa.binary()),
        "fbin": pa.array([b"ab", b"\x00\x00", None, b"zz"], pa.binary(2)),
        "lstr": pa.array(["x", None, "yy", ""], pa.large_string()),
        "dict": pa.array(["red", "blue", None, "red"]).dictionary_encode(),
        "list": pa.array([[1, None], [], None, [3]], pa.list_(pa.int64())),
        "flist": pa.array([[1, 2], None, [None, 4], [5, 6]], pa.list_(pa.int16(), 2)),
        "nested": pa.array([[["a"], []], None, [None, ["b", None]], []], pa.large_list(pa.list_(pa.string()))),
        "struct": pa.array([{"x": 1, "label": "p"}, None, {"x": None, "label": None}, {"x": -1, "label": ""}], point),
        "map": pa.array([[("k", 1)], [], None, [("a", None), ("b", 2)]], pa.map_(pa.string(), pa.int64())),
        "nulls": pa.nulls(4),
    }
    return pa.table(columns)


ALL = golden_table().column_names

# MD5 of the concatenated single-column encodings of the four rows, per column.
GOLDEN_COLUMNS: dict[str, str] = {
    "id": "66c0d16efe13599743ca761c5d12961e",
    "code": "2a3cb407cad59167591d67f67e0bf2e9",
    "i8": "bed87b9f4a8c5bda92b4991564404837",
    "u64": "e24675530a52088b50d48f90a26a6aa0",
    "f16": "cb57f2ab047d2324c7723fc8e7094605",
    "f32": "2f428ce2992728600eb59e3f44d6cb7a",
    "f64": "9a27511bc70eafa632ff181f9d9df807",
    "dec": "2af859a9c5c0c7f2046f8a9a4ac317b8",
    "dec32": "dcd1f5041ae7037f437464536a4126f6",
    "dec256": "5ab80d73d30ad4a2bdd5a8d97c1ef657",
    "bool": "b3af7733aebe7a90bb3c7e400aeaaeee",
    "d32": "420ed61e1ad87a808797b0609ddff584",
    "d64": "89a7f68b823aa597bca120729032e21c",
    "t32": "14449fff825e339763d32d89e04f5c2e",
    "t64": "42b7a0363542be974e578060a3a476ca",
    "ts_naive": "69e1eddeac913022ff276ad7fa20bdac",
    "ts_utc": "e662665a7f9cd63a593d2f549624d202",
    "ts_paris": "21bef4992bbf64023bb57bc0c5686e87",
    "dur": "f997dbeb183ee5def54210d9ae34484e",
    "ival": "72213258300fbd2d28a05e17b98424cf",
    "bin": "0a6aabaf1d0a0153edd661624bbe6c9f",
    "fbin": "eb3c12693522712b442178fa0f60edd0",
    "lstr": "e3ee8b6a8f7231fa7e5dc514beb473b0",
    "dict": "dc01e661af640e875e408f13e8d698ab",
    "list": "65792e3d5ec22aed805d4a66457c6d40",
    "flist": "ee8d2471b7fc471e668cf8f70dcaa20d",
    "nested": "64da8d616ac23bfa8db24de192cdaa1e",
    "struct": "a8c66f8b8d78363411bef6ccc48cb39e",
    "map": "1bb759d842dd93b6e196ac5ff188bfe0",
    "nulls": "f1d3ff8443297732862df21dc4e57262",
}
# (key fingerprint over ["id", "code"], content fingerprint over every column), per row.
GOLDEN_ROWS: list[tuple[str, str]] = [
    ("46e0826ca395723cd0e1be3f78fdd7ef", "59705f1d0dff4a9f"),
    ("eaa81fd79df8fd87335e0254914a1907", "ee0d91e6f10d20b5"),
    ("7a5aa96616ad7700dd09656439deac28", "9dd76dbc08810a6c"),
    ("b07bca4f3482ab0f516325903552e291", "6ee52ce250001a18"),
]


def column_digest(table: pa.Table, column: str) -> str:
    return hashlib.md5(b"".join(encode_rows(table, [column]).to_pylist())).hexdigest()


@pytest.mark.parametrize("column", ALL)
def test_vectorised_encoding_is_the_spec(column: str) -> None:
    table = golden_table()
    assert encode_rows(table, [column]).to_pylist() == spec_rows(table, [column])


@pytest.mark.parametrize("column", ALL)
def test_golden_column_encodings(column: str) -> None:
    assert column_digest(golden_table(), column) == GOLDEN_COLUMNS[column]


def test_golden_fingerprints() -> None:
    table = golden_table()
    fp = fingerprint_batch(table, ["id", "code"], ALL)
    keys = [bytes(k).hex() for k in fp.key_array().to_pylist()]
    contents = [f"{c:016x}" for c in fp.content]
    assert list(zip(keys, contents, strict=True)) == GOLDEN_ROWS
    assert fp.null_key.tolist() == [False, False, False, True]


def test_fingerprints_are_md5_of_the_spec_bytes() -> None:
    table = golden_table()
    fp = fingerprint_batch(table, ["code", "id"], ["f64", "dec", "struct"])
    for i, (key, value) in enumerate(
        zip(spec_rows(table, ["code", "id"]), spec_rows(table, ["f64", "dec", "struct"]), strict=True)
    ):
        digest = hashlib.md5(key).digest()
        assert (int(fp.key_hi[i]), int(fp.key_lo[i])) == (
            int.from_bytes(digest[:8], "big"),
            int.from_bytes(digest[8:], "big"),
        )
        assert int(fp.content[i]) == int.from_bytes(hashlib.md5(value).digest()[:8], "big")


def one(values: list[object], type_: pa.DataType | None = None) -> bytes:
    return encode_rows(pa.table({"c": pa.array(values, type_)}), ["c"]).to_pylist()[0]


def test_pinned_bytes_of_simple_values() -> None:
    assert one([1], pa.int64()).hex() == "020100000000000000"
    assert one(["ab"]).hex() == "0b020000006162"
    assert one([None], pa.string()).hex() == "00"
    assert one([True]).hex() == "0101"
    assert one([dt.date(1970, 1, 2)]).hex() == "060100000000000000"
    assert one([[7]], pa.list_(pa.int8())).hex() == "0d01000000" + "020700000000000000"


def test_columns_are_separated() -> None:
    table = pa.table({"a": ["ab", "a"], "b": ["c", "bc"]})
    rows = encode_rows(table, ["a", "b"]).to_pylist()
    assert rows[0] != rows[1]
    fp = fingerprint_batch(table, ["a", "b"], ["a", "b"])
    assert fp.key_hi[0] != fp.key_hi[1] and fp.content[0] != fp.content[1]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (pa.array([-0.0]), pa.array([0.0])),
        (pa.array([float("nan")]), pa.array([np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\xff", "<f8")[0]])),
        (pa.array([5], pa.int32()), pa.array([5], pa.int64())),
        (pa.array([5], pa.uint8()), pa.array([5], pa.int16())),
        (pa.array([0.5], pa.float32()), pa.array([0.5], pa.float64())),
        (pa.array([Decimal("1.50")], pa.decimal128(5, 2)), pa.array([Decimal("1.50")], pa.decimal256(40, 2))),
        (
            pa.array([1_000], pa.timestamp("ms", tz="UTC")),
            pa.array([1_000_000], pa.timestamp("us", tz="Asia/Tokyo")),
        ),
        (pa.array(["x"]), pa.array(["x"], pa.large_string())),
        (pa.array(["x"]).dictionary_encode(), pa.array(["x"])),
        (pa.array([dt.date(2020, 5, 17)]), pa.array([dt.date(2020, 5, 17)], pa.date64())),
    ],
    ids=[
        "zero",
        "nan",
        "int-width",
        "uint-int",
        "float-width",
        "dec-width",
        "ts-unit-tz",
        "large",
        "dict",
        "date",
    ],
)
def test_equal_values_encode_equally(left: pa.Array, right: pa.Array) -> None:
    assert encode_rows(pa.table({"c": left}), ["c"]) == encode_rows(pa.table({"c": right}), ["c"])


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (pa.array([""]), pa.array([None], pa.string())),
        (pa.array(["1"]), pa.array([1])),
        (pa.array([b"x"]), pa.array(["x"])),
        (pa.array([1.0]), pa.array([1])),
        (pa.array([Decimal("1.5")], pa.decimal128(3, 1)), pa.array([Decimal("1.50")], pa.decimal128(3, 2))),
        (pa.array([0], pa.timestamp("s")), pa.array([0], pa.timestamp("s", tz="UTC"))),
        (pa.array([[]], pa.list_(pa.int64())), pa.array([None], pa.list_(pa.int64()))),
        (pa.array([[None]], pa.list_(pa.int64())), pa.array([[]], pa.list_(pa.int64()))),
        (
            pa.array([{"x": None}], pa.struct([("x", pa.int64())])),
            pa.array([None], pa.struct([("x", pa.int64())])),
        ),
        (pa.array([False]), pa.array([None], pa.bool_())),
        (pa.array([0], pa.int64()), pa.array([None], pa.int64())),
    ],
    ids=[
        "empty-null",
        "str-int",
        "bin-str",
        "float-int",
        "dec-scale",
        "naive-utc",
        "empty-nulllist",
        "nullelem",
        "struct-null",
        "false-null",
        "zero-null",
    ],
)
def test_different_values_encode_differently(left: pa.Array, right: pa.Array) -> None:
    assert encode_rows(pa.table({"c": left}), ["c"]) != encode_rows(pa.table({"c": right}), ["c"])


def assert_same(a: Fingerprints, b: Fingerprints) -> None:
    for name in ("key_hi", "key_lo", "content", "null_key"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_invariant_to_batch_splitting() -> None:
    table = pa.concat_tables([golden_table()] * 50)  # 200 rows
    whole = fingerprint_batch(table, ["id", "code"], ALL, threads=1)
    rng = np.random.default_rng(7)
    cuts = sorted({0, table.num_rows, *rng.integers(1, table.num_rows, 12).tolist()})
    parts = [fingerprint_batch(table.slice(a, b - a), ["id", "code"], ALL) for a, b in itertools.pairwise(cuts)]
    joined = Fingerprints(
        *(np.concatenate([getattr(p, n) for p in parts]) for n in ("key_hi", "key_lo", "content", "null_key"))
    )
    assert_same(whole, joined)
    rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=33))
    assert_same(whole, fingerprint_batch(rechunked, ["id", "code"], ALL))


def test_threads_do_not_change_results() -> None:
    n = 100_000
    table = pa.table(
        {
            "id": np.arange(n),
            "s": pa.array(np.arange(n).astype(str)),
            "v": pa.array(np.arange(n) * 0.5, mask=np.arange(n) % 3 == 0),
        }
    )
    assert_same(
        fingerprint_batch(table, ["id"], ["s", "v"], threads=1),
        fingerprint_batch(table, ["id"], ["s", "v"], threads=3),
    )


def test_fingerprints_ahead_are_each_batchs_own() -> None:
    table = pa.concat_tables([golden_table()] * 30)
    batches = table.to_batches(max_chunksize=7)
    pulled: list[int] = []

    def source() -> Iterator[pa.RecordBatch]:
        for index, batch in enumerate(batches):
            pulled.append(index)
            yield batch

    ahead = fingerprint_ahead(source(), ["id", "code"], ALL, depth=3)
    for index, (batch, future) in enumerate(ahead):
        assert batch is batches[index]
        assert len(pulled) == min(index + 3, len(batches))  # never more than `depth` batches read ahead
        assert_same(future.result(), fingerprint_batch(batch, ["id", "code"], ALL))
    keys_only = [f.result() for _, f in fingerprint_ahead(iter(batches), ["id"], None, threads=1)]
    assert all(not fp.content.any() for fp in keys_only) and len(keys_only) == len(batches)


def test_a_batch_that_cannot_be_fingerprinted_fails_from_its_future() -> None:
    good = pa.table({"id": [1], "u": pa.array(["x"])}).to_batches()[0]
    union = pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array([1])])
    bad = pa.RecordBatch.from_arrays([pa.array([2]), union], names=["id", "u"])
    ahead = fingerprint_ahead(iter([good, bad, good]), ["id"], ["u"])
    assert len(next(ahead)[1].result()) == 1
    with pytest.raises(FormatError, match="column `u` has type"):
        next(ahead)[1].result()
    ahead.close()  # type: ignore[attr-defined]  # stopping early cancels what is still queued


def test_invariant_to_batch_column_order_but_not_spec_order() -> None:
    table = golden_table()
    shuffled = table.select(list(reversed(ALL)))
    assert_same(fingerprint_batch(table, ["id", "code"], ALL), fingerprint_batch(shuffled, ["id", "code"], ALL))
    swapped = fingerprint_batch(table, ["code", "id"], list(reversed(ALL)))
    assert not np.array_equal(swapped.key_hi, fingerprint_batch(table, ["id", "code"], ALL).key_hi)


def test_record_batch_and_sliced_record_batch() -> None:
    batch = golden_table().combine_chunks().to_batches()[0]
    whole = fingerprint_batch(batch, ["id"], ALL)
    tail = fingerprint_batch(batch.slice(1), ["id"], ALL)
    assert np.array_equal(whole.content[1:], tail.content)


def test_keys_only_and_empty_batches() -> None:
    table = golden_table()
    fp = fingerprint_batch(table, ["id"], None)
    assert not fp.content.any() and fp.null_key.tolist() == [False, False, False, True]
    empty = fingerprint_batch(table.slice(0, 0), ["id"], ALL)
    assert len(empty) == 0 and empty.key_hi.dtype == np.uint64


def test_key_array_round_trip() -> None:
    fp = fingerprint_batch(golden_table(), ["id", "code"], None)
    keys = fp.key_array()
    assert keys.type == pa.binary(16)
    hi, lo = split_key_array(pa.chunked_array([keys.slice(0, 1), keys.slice(1)]))
    assert np.array_equal(hi, fp.key_hi) and np.array_equal(lo, fp.key_lo)
    hi, lo = split_key_array(keys.slice(2))
    assert np.array_equal(hi, fp.key_hi[2:]) and np.array_equal(lo, fp.key_lo[2:])
    assert key_array(hi, lo).equals(keys.slice(2))


def test_unsupported_type_and_missing_column() -> None:
    union = pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array([1]), pa.array(["a"])])
    with pytest.raises(FormatError, match="column `u` has type `sparse_union"):
        fingerprint_batch(pa.table({"id": [1], "u": union}), ["id"], ["u"])
    with pytest.raises(ValueError, match="no column `nope` in the batch; columns are: id"):
        fingerprint_batch(pa.table({"id": [1]}), ["nope"], None)
