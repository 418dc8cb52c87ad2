"""Fuzz: random Arrow batches through every writer, read back by independent readers.

Hypothesis draws a schema (1 to 4 columns over every type the writers accept) and rows with the
awkward values: NaN, ±inf, -0.0, extreme decimals (any precision and scale up to 38 digits),
timestamps at the ends of years 1 and 9999 in every unit, empty, huge and control-character text,
and invalid UTF-8 arriving from a source. Each batch goes through the engine's UTF-8 guard, then
the writer; the file is read back with the csv module, json, lxml or pyarrow, and with DuckDB
(CSV, JSON, NDJSON, Parquet), and compared value by value, or the batch is refused with a clear
error. Never a file a reader refuses.

Examples per writer: `FILECAST_FUZZ_EXAMPLES` (CI keeps the default, 40, `make test-unit` 10; issue 14 was checked
with 2,000 per writer).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import itertools
import json
import os
import re
import struct
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from core.errors import FormatError
from core.read.textcheck import TextGuard
from core.write.formats import WRITERS
from core.write.formats.csv import CsvWriter
from tests.helpers import examples

EXAMPLES = int(os.environ.get("FILECAST_FUZZ_EXAMPLES") or examples(40))
CSV_NULL = "\\N"
SCALE = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
YEAR_1 = -62_135_596_800  # 0001-01-01T00:00:00Z in seconds
YEAR_9999 = 253_402_300_799  # 9999-12-31T23:59:59Z
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
DURATION = re.compile(r"-?PT[0-9]+(\.[0-9]+)?S")  # xs:duration with seconds only

# -- strategies --------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    st.sampled_from(
        [
            "",
            " ",
            '"',
            '""',
            ",",
            "\n",
            "\r\n",
            "\r",
            "\x00",
            "a\x00b",
            "\x1f",
            "\u2028",
            "<&>]]>",
            "\ufeff",
            "\ufffe",
            "\U0001f642",
            "null",
            "NULL",
            "nan",
            "-0",
            "1E-10",
        ]
    ),
    st.just("x" * 70_000),
).filter(lambda text: text != CSV_NULL)
RAW_BYTES = st.one_of(
    TEXT.map(lambda t: t.encode()),
    st.sampled_from([b"a\xffb", b"\xed\xa0\x80", b"\xc3", b"\x80", b"ok\xf5", b"\xf0\x9f\x99"]),
)


@st.composite
def decimal_type(draw: st.DrawFn) -> pa.DataType:
    precision = draw(st.integers(1, 38))
    return pa.decimal128(precision, draw(st.integers(0, precision)))


@st.composite
def decimal_value(draw: st.DrawFn, kind: pa.Decimal128Type) -> Decimal:
    limit = 10**kind.precision - 1
    unscaled = draw(st.one_of(st.integers(-limit, limit), st.sampled_from([0, 1, -1, limit, -limit])))
    return Decimal(unscaled).scaleb(-kind.scale, context=decimal.Context(prec=80))


def timestamp_strategy(unit: str) -> st.SearchStrategy[int]:
    low, high = YEAR_1 * SCALE[unit], (YEAR_9999 + 1) * SCALE[unit] - 1
    if unit == "ns":  # int64 nanoseconds span 1677..2262
        low, high = -(2**63) + 1, 2**63 - 1
    return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, -1, 1]))


FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1e16, 1e-7]),
)

SCALARS: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "int8": (pa.int8(), st.integers(-128, 127)),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "uint16": (pa.uint16(), st.integers(0, 65535)),
    "float64": (pa.float64(), FLOATS),
    "float32": (pa.float32(), st.one_of(st.floats(width=32), st.sampled_from([float("nan"), -0.0, float("inf")]))),
    "string": (pa.string(), TEXT),
    "large_string": (pa.large_string(), TEXT),
    "bool": (pa.bool_(), st.booleans()),
    "date32": (pa.date32(), st.dates()),
    "binary": (pa.binary(), st.binary(max_size=20)),
    "time64": (pa.time64("us"), st.times()),
    "list": (pa.list_(pa.int64()), st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=4)),
    "struct": (
        pa.struct([("a", pa.int64()), ("b", pa.string())]),
        st.fixed_dictionaries({"a": st.one_of(st.none(), st.integers(-5, 5)), "b": st.one_of(st.none(), TEXT)}),
    ),
}


@st.composite
def column(draw: st.DrawFn, rows: int, fmt: str) -> tuple[pa.DataType, list[Any], list[bytes | None] | None]:
    """(type, values, raw string bytes when the column arrives with possibly invalid UTF-8)."""
    kinds = [*SCALARS, "decimal", "timestamp", "invalid_utf8", *(["duration"] if fmt != "parquet" else [])]
    kind = draw(st.sampled_from(kinds))
    nullable = st.none()
    if kind == "decimal":
        dtype = draw(decimal_type())
        return dtype, draw(st.lists(st.one_of(nullable, decimal_value(dtype)), min_size=rows, max_size=rows)), None
    if kind == "timestamp":
        unit = draw(st.sampled_from(list(SCALE)))
        dtype = pa.timestamp(unit, draw(st.sampled_from([None, "UTC"])))
        return dtype, draw(st.lists(st.one_of(nullable, timestamp_strategy(unit)), min_size=rows, max_size=rows)), None
    if kind == "duration":
        unit = draw(st.sampled_from(list(SCALE)))
        values = st.one_of(st.integers(-(2**63) + 1, 2**63 - 1), st.sampled_from([0, 1, -1]))
        return pa.duration(unit), draw(st.lists(st.one_of(nullable, values), min_size=rows, max_size=rows)), None
    if kind == "invalid_utf8":
        raw = draw(st.lists(st.one_of(nullable, RAW_BYTES), min_size=rows, max_size=rows))
        return pa.string(), [None if b is None else b.decode("utf-8", "replace") for b in raw], raw
    dtype, values = SCALARS[kind]
    return dtype, draw(st.lists(st.one_of(nullable, values), min_size=rows, max_size=rows)), None


@st.composite
def case(draw: st.DrawFn, fmt: str) -> dict[str, Any]:
    rows = draw(st.integers(0, 6))
    width = draw(st.integers(1, 4))
    columns = [draw(column(rows, fmt)) for _ in range(width)]
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=2)))
    return {"rows": rows, "columns": columns, "cuts": cuts, "replace": draw(st.booleans())}


def build(columns: list[tuple[pa.DataType, list[Any], Any]]) -> pa.Table:
    arrays = []
    for kind, values, raw in columns:
        if raw is not None:
            arrays.append(pa.array(raw, pa.binary()).view(pa.string()))
        elif pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
            arrays.append(pa.array(values, pa.int64()).cast(kind))
        else:
            arrays.append(pa.array(values, kind))
    return pa.table(arrays, names=[f"c{i}" for i in range(len(columns))])


# -- expected values (canonical: what every reader must give back) -----------------------------


def plain_decimal(value: Decimal, kind: pa.Decimal128Type) -> str:
    with decimal.localcontext(prec=80):
        return f"{value.quantize(Decimal((0, (1,), -kind.scale))):f}"


def iso_duration(count: int, unit: str) -> str:
    digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[unit]
    whole, part = divmod(abs(count), SCALE[unit])
    return ("-" if count < 0 else "") + f"PT{whole}" + (f".{part:0{digits}d}" if digits else "") + "S"


def float_canon(value: float, kind: pa.DataType, fmt: str) -> Any:
    if kind == pa.float32():
        value = struct.unpack("<f", struct.pack("<f", value))[0]
    if fmt in ("json", "ndjson") and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return repr(value)


def canon(value: Any, kind: pa.DataType, fmt: str) -> Any:
    if value is None:
        return None
    if pa.types.is_floating(kind):
        return float_canon(value, kind, fmt)
    if pa.types.is_decimal(kind):
        return plain_decimal(value, kind)
    if pa.types.is_duration(kind):
        return iso_duration(value, kind.unit)
    if pa.types.is_timestamp(kind):
        return value
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return XML_INVALID.sub("\ufffd", value) if fmt == "xml" else value
    if pa.types.is_list(kind):
        return [canon(v, kind.value_type, fmt) for v in value]
    if pa.types.is_struct(kind):
        return {f.name: canon(value[f.name], f.type, fmt) for f in kind}
    return value


# -- readers (independent of Filecast) ---------------------------------------------------------


def parse_timestamp(text: str, kind: pa.TimestampType) -> int:
    zoned = text.endswith("Z")
    assert zoned == (kind.tz is not None), text
    whole, _, fraction = text.removesuffix("Z").partition(".")
    assert len(fraction) == {"s": 0, "ms": 3, "us": 6, "ns": 9}[kind.unit], text
    moment = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.UTC)
    seconds = (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(seconds=1)
    return seconds * SCALE[kind.unit] + (int(fraction) if fraction else 0)


def from_text(text: str, kind: pa.DataType, fmt: str) -> Any:
    """A CSV field's or an XML element's text as a canonical value."""
    if pa.types.is_integer(kind):
        return int(text)
    if pa.types.is_floating(kind):
        return float_canon(float(text), kind, fmt)
    if pa.types.is_decimal(kind):
        assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text), f"not a plain decimal: {text!r}"
        return text
    if pa.types.is_duration(kind):
        assert DURATION.fullmatch(text), f"not an xs:duration: {text!r}"
        return text
    if pa.types.is_boolean(kind):
        return {"true": True, "false": False}[text]
    if pa.types.is_date(kind):
        return dt.date.fromisoformat(text)
    if pa.types.is_time(kind):
        return dt.time.fromisoformat(text)
    if pa.types.is_timestamp(kind):
        return parse_timestamp(text, kind)
    if pa.types.is_binary(kind):
        return base64.b64decode(text, validate=True)
    return text


def from_json(value: Any, kind: pa.DataType, fmt: str) -> Any:
    if value is None:
        return None
    if pa.types.is_decimal(kind):
        if kind.scale == 0 and type(value) is int:
            return str(value)
        assert isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value), value
        return value
    if pa.types.is_floating(kind):
        assert isinstance(value, str) and re.search(r"[.eE]", value), f"float without fraction: {value!r}"
        return float_canon(float(value), kind, fmt)
    if pa.types.is_integer(kind):
        assert type(value) is int
        return value
    if pa.types.is_boolean(kind):
        assert type(value) is bool
        return value
    if pa.types.is_list(kind):
        return [from_json(v, kind.value_type, fmt) for v in value]
    if pa.types.is_struct(kind):
        assert list(value) == [f.name for f in kind]
        return {f.name: from_json(value[f.name], f.type, fmt) for f in kind}
    assert isinstance(value, str), value
    return from_text(value, kind, fmt)


def json_objects(text: str, fmt: str) -> list[dict[str, Any]]:
    def raw_number(token: str) -> str:
        return token

    def integer(token: str) -> Any:
        return int(token)

    if fmt == "json":
        return json.loads(text, parse_float=raw_number, parse_int=integer)
    assert text == "" or text.endswith("\n")
    lines = text.split("\n")[:-1]  # NDJSON lines end at \n only (U+2028 may sit inside a string)
    return [json.loads(line, parse_float=raw_number, parse_int=integer) for line in lines]


def read_back(fmt: str, data: bytes, schema: pa.Schema) -> list[list[Any]]:
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
        rows: list[list[Any]] = [[] for _ in range(table.num_rows)]
        for field, col in zip(schema, table.columns, strict=True):
            if pa.types.is_timestamp(field.type):
                values = col.cast(field.type).cast(pa.int64()).to_pylist()
            else:
                values = col.to_pylist()
            for i, value in enumerate(values):
                rows[i].append(canon(value, field.type, fmt))
        return rows
    text = data.decode("utf-8")  # strict: invalid UTF-8 fails here
    if fmt == "csv":
        records = list(csv.reader(io.StringIO(text, newline="")))
        assert records[0] == schema.names
        out = []
        for record in records[1:]:
            assert len(record) == len(schema), record
            row: list[Any] = []
            for field, field_text in zip(schema, record, strict=True):
                if field_text == CSV_NULL:
                    row.append(None)
                elif pa.types.is_list(field.type) or pa.types.is_struct(field.type):
                    row.append(from_json(json.loads(field_text, parse_float=str), field.type, fmt))
                else:
                    row.append(from_text(field_text, field.type, fmt))
            out.append(row)
        return out
    if fmt == "xml":
        root = etree.fromstring(data)
        return [
            [from_xml(element.find(name), field.type) for name, field in zip(schema.names, schema, strict=True)]
            for element in root
        ]
    return [[from_json(obj[f.name], f.type, fmt) for f in schema] for obj in json_objects(text, fmt)]


def from_xml(element: Any, kind: pa.DataType) -> Any:
    if element is None:
        return None
    if pa.types.is_list(kind):
        return [None if item.get("nil") == "true" else from_xml(item, kind.value_type) for item in element]
    if pa.types.is_struct(kind):
        return {f.name: from_xml(element.find(f.name), f.type) for f in kind}
    return from_text(element.text or "", kind, "xml")


def duckdb_rows(fmt: str, data: bytes) -> int:
    """DuckDB reads the file without refusing it; returns its row count."""
    suffix = {"csv": "csv", "json": "json", "ndjson": "ndjson", "parquet": "parquet"}[fmt]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"f.{suffix}"
        path.write_bytes(data)
        reader = {
            "csv": f"read_csv('{path}', header=true, delim=',', quote='\"', escape='\"', all_varchar=true, "
            "strict_mode=true, nullstr='\\N')",
            "json": f"read_json('{path}', format='array', records=false, maximum_object_size=100000000)",
            "ndjson": f"read_json('{path}', format='newline_delimited', records=false, maximum_object_size=100000000)",
            "parquet": f"read_parquet('{path}')",
        }[fmt]
        with duckdb.connect() as con:
            return int(con.sql(f"SELECT count(*) FROM {reader}").fetchall()[0][0])


# -- the property ------------------------------------------------------------------------------


def check(fmt: str, drawn: dict[str, Any]) -> None:
    table = build(drawn["columns"])
    schema = table.schema
    guard = TextGuard("fuzz", replace=drawn["replace"], key_columns=(), warn=lambda code, message: None)
    invalid = [
        f"c{i}"
        for i, (_, _, raw) in enumerate(drawn["columns"])
        if raw is not None and any(b is not None and b.decode("utf-8", "replace").encode() != b for b in raw)
    ]
    bounds = [0, *drawn["cuts"], drawn["rows"]]
    batches = [
        table.slice(a, b - a).combine_chunks().to_batches()
        or [pa.record_batch([pa.array([], f.type) for f in schema], schema=schema)]
        for a, b in itertools.pairwise(bounds)
    ]
    flat = [b for group in batches for b in group]
    if fmt == "parquet":
        assert WRITERS[fmt].prepare_schema(schema, {}) == []
    try:
        checked = [guard.check(b, b) for b in flat]
    except FormatError as exc:
        assert invalid and not drawn["replace"], exc.message
        assert exc.message.startswith(f"column `{invalid[0]}` holds text that is not valid UTF-8")
        return
    assert not invalid or drawn["replace"]
    writer = WRITERS[fmt](schema, {"null_value": CSV_NULL} if fmt == "csv" else {})
    data = writer.begin() + b"".join(writer.write(b) for b in checked) + writer.end()
    expected = [[canon(v[r], kind, fmt) for kind, v, _ in drawn["columns"]] for r in range(drawn["rows"])]
    assert read_back(fmt, data, schema) == expected
    if fmt != "xml":
        assert duckdb_rows(fmt, data) == drawn["rows"]


FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@FUZZ
@given(data=st.data())
def test_random_batches_read_back_exactly(fmt: str, data: st.DataObject) -> None:
    check(fmt, data.draw(case(fmt), label="batch"))


@FUZZ
@given(
    data=st.data(),
    delimiter=st.sampled_from([",", ";", "\t", "|", "a", ".", "-"]),
    null_value=st.sampled_from(["", CSV_NULL, "NULL"]),
    line_ending=st.sampled_from(["lf", "crlf"]),
)
def test_csv_arrow_writer_path_writes_the_row_joins_bytes(
    data: st.DataObject, delimiter: str, null_value: str, line_ending: str
) -> None:
    """CSV batches go through pyarrow's CSV writer when their columns allow it; its bytes must be
    exactly those of Filecast's own row join (the reference), for every type, option and value."""
    drawn = data.draw(case("csv"), label="batch")
    table = build([(kind, values, None) for kind, values, _ in drawn["columns"]])
    options = {"delimiter": delimiter, "null_value": null_value, "line_ending": line_ending}
    writer = CsvWriter(table.schema, options)
    for batch in table.to_batches():
        if batch.num_rows:
            assert bytes(writer._encode_arrow(batch)) == bytes(writer._encode(batch))
