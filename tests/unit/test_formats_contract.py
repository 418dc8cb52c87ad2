"""Every registered writer round-trips every Arrow type the sources produce, read back with an
independent reader (csv module, json, lxml, pyarrow.parquet) and compared exactly; then each
format's options and empty-file shape.

Values are compared in a canonical form: floats as `repr` (so -0.0, NaN and float32 rounding
count), decimals as `Decimal` text (digits and exponent), timestamps as (count of the unit,
zoned?). The encoding rules under test are in the writers' module docstrings.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import struct
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from core.errors import CatalogError, FormatError
from core.write.formats import ALL_WRITERS, WRITERS, Writer, writer_for
from tests.helpers import examples

CSV_NULL = "\\N"  # a marker the csv module can tell from the empty string
OPTIONS: dict[str, dict[str, Any]] = {"csv": {"null_value": CSV_NULL}}
NAN, INF = float("nan"), float("inf")
US = 1_000_000
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z

COLUMNS: list[tuple[str, pa.DataType, list[Any]]] = [
    ("i8", pa.int8(), [-128, 127, 0, None, 1, -1, 5, 6, 7, 8, 9, 10]),
    ("i16", pa.int16(), [-32768, 32767, None, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
    ("i32", pa.int32(), [-(2**31), 2**31 - 1, None, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
    ("i64", pa.int64(), [-(2**63), 2**63 - 1, None, 0, 1, 2, 3, 4, 5, 6, 7, -8]),
    ("u8", pa.uint8(), [0, 255, None, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("u16", pa.uint16(), [0, 65535, None, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("u32", pa.uint32(), [0, 2**32 - 1, None, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("u64", pa.uint64(), [0, 2**64 - 1, None, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("f32", pa.float32(), [0.1, -0.0, NAN, INF, -INF, None, 3.0, 1e-45, 3.4028234663852886e38, 1.5, 16777216.0, 2.5]),
    (
        "f64",
        pa.float64(),
        [0.1, -0.0, NAN, INF, -INF, None, 3.0, 5e-324, 1.7976931348623157e308, 1e16, 123456789.125, 1 / 3],
    ),
    (
        "dec",
        pa.decimal128(38, 10),
        [
            Decimal("0.0000000001"),
            Decimal("-1234567890123456789012345678.0123456789"),
            None,
            Decimal("1.5000000000"),
            Decimal(0),
            *[Decimal("2.25")] * 7,
        ],
    ),
    ("dec0", pa.decimal128(5, 0), [Decimal(12345), Decimal(-1), None, *[Decimal(7)] * 9]),
    (
        "text",
        pa.string(),
        [
            "plain",
            "a,b;c\td|e",
            'say "hi"',
            "two\nlines",
            "crlf\r\nend",
            "<tag> & ]]> 'q'",
            "Zoé ñ 東京 🙂",
            "",
            None,
            "back\\slash /",
            "  spaces  ",
            "\u2028sep\u2029",
        ],
    ),
    ("large_text", pa.large_string(), ["x", None, "", 'y"', "z<", *["ok"] * 7]),
    ("enum", pa.dictionary(pa.int32(), pa.string()), ["red", "green", None, "red", 'a"b', *["blue"] * 7]),
    (
        "day",
        pa.date32(),
        [
            dt.date(1970, 1, 1),
            dt.date(2024, 2, 29),
            None,
            dt.date(1, 1, 1),
            dt.date(9999, 12, 31),
            *[dt.date(2000, 1, 1)] * 7,
        ],
    ),
    ("ts_utc", pa.timestamp("us", "UTC"), [T0 * US, T0 * US + 1, None, -1, 0, *[T0 * US + 250_000] * 7]),
    ("ts_naive", pa.timestamp("ms"), [T0 * 1000, None, -1001, 0, 253402300799_999, *[T0 * 1000 + 5] * 7]),
    ("ts_paris", pa.timestamp("s", "Europe/Paris"), [T0, None, 0, -62135596800, *[T0 + 1] * 8]),
    ("ts_ns", pa.timestamp("ns", "UTC"), [T0 * 10**9 + 123456789, None, -1, *[T0 * 10**9] * 9]),
    ("clock", pa.time64("us"), [dt.time(0, 0), dt.time(23, 59, 59, 999999), None, *[dt.time(12, 30, 1, 5)] * 9]),
    ("flag", pa.bool_(), [True, False, None, *[True, False, True] * 3]),
    ("blob", pa.binary(), [b"\x00\xff\x10", b"", None, b"abc", b'\n"<', *[b"\x01"] * 7]),
    ("ints", pa.list_(pa.int64()), [[1, None, 3], [], None, [2**62], *[[4, 5]] * 8]),
    ("words", pa.list_(pa.string()), [["a", 'b,"c"'], [None], [], None, ["<&>"], *[["x"]] * 7]),
    (
        "thing",
        pa.struct([("a", pa.int32()), ("b", pa.string()), ("c", pa.list_(pa.float64())), ("d", pa.date32())]),
        [
            {"a": 1, "b": "x\ny", "c": [1.5, None], "d": dt.date(2020, 1, 2)},
            None,
            {"a": None, "b": None, "c": None, "d": None},
            {"a": -1, "b": "", "c": [], "d": dt.date(1999, 9, 9)},
            *[{"a": 2, "b": "q", "c": [0.25], "d": dt.date(2001, 1, 1)}] * 8,
        ],
    ),
    ("tags", pa.map_(pa.string(), pa.int64()), [[("k", 1), ("k 2", None)], [], None, *[[("z", 3)]] * 9]),
    ("last name", pa.string(), ["Dupont", None, "", "O'Brien", *["Li"] * 8]),
]
SCHEMA = pa.schema([(name, kind) for name, kind, _ in COLUMNS])
ROWS = len(COLUMNS[0][2])


def _array(kind: pa.DataType, values: list[Any]) -> pa.Array:
    if pa.types.is_timestamp(kind):
        return pa.array(values, pa.int64()).cast(kind)
    if pa.types.is_dictionary(kind):
        return pa.array(values, kind.value_type).dictionary_encode()
    return pa.array(values, kind)


TABLE = pa.Table.from_arrays([_array(kind, values) for _, kind, values in COLUMNS], schema=SCHEMA)
# Several batches, one of them empty, so batch boundaries (JSON commas, CSV headers) are exercised.
BATCHES = [
    *TABLE.slice(0, 5).to_batches(),
    TABLE.to_batches()[0].slice(5, 0),
    *TABLE.slice(5).to_batches(max_chunksize=4),
]


# -- canonical values ---------------------------------------------------------------------------
def f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def canon(value: Any, kind: pa.DataType) -> Any:
    """The comparable form of a source value of Arrow type `kind`."""
    if value is None:
        return None
    if pa.types.is_dictionary(kind):
        return canon(value, kind.value_type)
    if pa.types.is_floating(kind):
        return repr(f32(float(value)) if kind == pa.float32() else float(value))
    if pa.types.is_decimal(kind):  # the column's scale gives the digits: 1.5 in (38, 10) is 1.5000000000
        with decimal.localcontext(prec=80):
            return str(Decimal(value).quantize(Decimal((0, (1,), -kind.scale))))
    if pa.types.is_timestamp(kind):
        return (value, kind.tz is not None)
    if pa.types.is_map(kind):
        return [(canon(k, kind.key_type), canon(v, kind.item_type)) for k, v in value]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [canon(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        return {f.name: canon(value[f.name], f.type) for f in kind}
    return value


def no_nonfinite(value: Any) -> Any:
    """JSON's float policy applied to canonical values: NaN and ±inf become null."""
    if value in ("nan", "inf", "-inf"):
        return None
    if isinstance(value, list):
        return [no_nonfinite(v) for v in value]
    if isinstance(value, dict):
        return {k: no_nonfinite(v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[1], bool):
        return (value[0], no_nonfinite(value[1]))
    return value


def expected_rows(columns: list[tuple[str, pa.DataType, list[Any]]], json_family: bool = False) -> list[dict]:
    rows = [{name: canon(values[i], kind) for name, kind, values in columns} for i in range(len(columns[0][2]))]
    return [no_nonfinite(row) for row in rows] if json_family else rows


# -- readers: text back to canonical values -----------------------------------------------------
def parse_timestamp(text: str, unit: str) -> tuple[int, bool]:
    zoned = text.endswith("Z")
    body = text.removesuffix("Z")
    whole, _, fraction = body.partition(".")
    assert "T" in whole and len(fraction) == {"s": 0, "ms": 3, "us": 6, "ns": 9}[unit], text
    seconds = (dt.datetime.fromisoformat(whole) - dt.datetime(1970, 1, 1)) // dt.timedelta(seconds=1)
    scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    return seconds * scale + (int(fraction) if fraction else 0), zoned


def parse_text(text: str, kind: pa.DataType) -> Any:
    """A scalar's text (CSV field, XML element) as a canonical value."""
    if pa.types.is_dictionary(kind):
        return parse_text(text, kind.value_type)
    if pa.types.is_integer(kind):
        return int(text)
    if pa.types.is_floating(kind):
        return canon(float(text), kind)
    if pa.types.is_decimal(kind):
        return str(Decimal(text))
    if pa.types.is_boolean(kind):
        return {"true": True, "false": False}[text]
    if pa.types.is_date(kind):
        return dt.date.fromisoformat(text)
    if pa.types.is_timestamp(kind):
        return parse_timestamp(text, kind.unit)
    if pa.types.is_time(kind):
        return dt.time.fromisoformat(text)
    if pa.types.is_binary(kind):
        return base64.b64decode(text, validate=True)
    assert pa.types.is_string(kind) or pa.types.is_large_string(kind), kind
    return text


def from_json(value: Any, kind: pa.DataType) -> Any:
    """A value parsed by `json` (floats as Decimal) as a canonical value, checking JSON types."""
    if value is None:
        return None
    if pa.types.is_dictionary(kind):
        return from_json(value, kind.value_type)
    if pa.types.is_integer(kind):
        assert type(value) is int
        return value
    if pa.types.is_floating(kind):
        assert isinstance(value, Decimal), f"float written without a fraction or exponent: {value!r}"
        return canon(float(value), kind)
    if pa.types.is_decimal(kind):
        assert isinstance(value, int | Decimal)
        return str(Decimal(value))
    if pa.types.is_boolean(kind):
        assert type(value) is bool
        return value
    if pa.types.is_map(kind):
        return [(parse_text(k, kind.key_type), from_json(v, kind.item_type)) for k, v in value.items()]
    if pa.types.is_list(kind):
        return [from_json(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        assert list(value) == [f.name for f in kind]
        return {f.name: from_json(value[f.name], f.type) for f in kind}
    assert isinstance(value, str)
    return parse_text(value, kind)


def xml_element(name: str) -> str:
    return {"last name": "last_name"}.get(name, name)


def from_xml(element: Any, kind: pa.DataType) -> Any:
    if element is None:
        return None
    if pa.types.is_map(kind):
        return [(from_xml(e.find("key"), kind.key_type), from_xml(e.find("value"), kind.item_type)) for e in element]
    if pa.types.is_list(kind):
        assert all(item.tag == "item" for item in element)
        return [None if item.get("nil") == "true" else from_xml(item, kind.value_type) for item in element]
    if pa.types.is_struct(kind):
        return {f.name: from_xml(element.find(xml_element(f.name)), f.type) for f in kind}
    return parse_text(element.text or "", kind)


def read_csv(data: bytes, schema: pa.Schema, delimiter: str = ",") -> list[dict]:
    records = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter))
    assert records[0] == schema.names
    rows = []
    for record in records[1:]:
        row: dict[str, Any] = {}
        for field, text in zip(schema, record, strict=True):
            nested = pa.types.is_list(field.type) or pa.types.is_struct(field.type) or pa.types.is_map(field.type)
            if text == CSV_NULL:
                row[field.name] = None
            elif nested:
                row[field.name] = from_json(json.loads(text, parse_float=Decimal), field.type)
            else:
                row[field.name] = parse_text(text, field.type)
        rows.append(row)
    return rows


def read_json_rows(objects: Iterable[dict], schema: pa.Schema) -> list[dict]:
    rows = []
    for obj in objects:
        assert list(obj) == schema.names  # key order = column order
        rows.append({f.name: from_json(obj[f.name], f.type) for f in schema})
    return rows


def read_json(data: bytes, schema: pa.Schema) -> list[dict]:
    return read_json_rows(json.loads(data, parse_float=Decimal), schema)


def read_ndjson(data: bytes, schema: pa.Schema) -> list[dict]:
    assert data == b"" or data.endswith(b"\n")
    return read_json_rows((json.loads(line, parse_float=Decimal) for line in data.splitlines()), schema)


def read_xml(data: bytes, schema: pa.Schema, root: str = "rows", row: str = "row") -> list[dict]:
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    tree = etree.fromstring(data)
    assert tree.tag == root
    rows = []
    for element in tree:
        assert element.tag == row
        rows.append({f.name: from_xml(element.find(xml_element(f.name)), f.type) for f in schema})
    return rows


def read_parquet(data: bytes, schema: pa.Schema) -> list[dict]:
    table = pq.read_table(io.BytesIO(data))
    # Types are kept (decimals, zones, dictionaries, nesting), except that Parquet has no seconds
    # unit: those timestamps come back as milliseconds.
    stored = pa.schema(
        [
            f.with_type(pa.timestamp("ms", f.type.tz)) if pa.types.is_timestamp(f.type) and f.type.unit == "s" else f
            for f in schema
        ]
    )
    assert table.schema.remove_metadata() == stored
    columns = {}
    for field, column in zip(schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):  # compare the stored counts exactly (ns included)
            counts = column.cast(field.type).cast(pa.int64())
            columns[field.name] = [canon(v, field.type) for v in counts.to_pylist()]
        else:
            columns[field.name] = [canon(v, field.type) for v in column.to_pylist()]
    return [{name: columns[name][i] for name in schema.names} for i in range(table.num_rows)]


READERS: dict[str, Callable[[bytes, pa.Schema], list[dict]]] = {
    "csv": read_csv,
    "json": read_json,
    "ndjson": read_ndjson,
    "xml": read_xml,
    "parquet": read_parquet,
}
JSON_FAMILY = {"json", "ndjson"}


def encode(
    writer_class: type[Writer], batches: Iterable[pa.RecordBatch], schema: pa.Schema = SCHEMA, **options: Any
) -> bytes:
    writer = writer_class(schema, {**OPTIONS.get(writer_class.spec.name, {}), **options})
    out = writer.begin()
    for batch in batches:
        out += writer.write(batch)
    return out + writer.end()


def by_name(writer_class: type[Writer]) -> str:
    return writer_class.spec.name


# -- the contract -------------------------------------------------------------------------------
def test_every_format_is_registered() -> None:
    assert sorted(WRITERS) == ["csv", "json", "ndjson", "parquet", "xml"]
    assert {w.spec.extension for w in ALL_WRITERS} == {"csv", "json", "ndjson", "parquet", "xml"}
    with pytest.raises(CatalogError, match="unknown format `yaml`; known formats are: csv, json, ndjson, parquet, xml"):
        writer_for("yaml")


@pytest.mark.parametrize("writer_class", ALL_WRITERS, ids=by_name)
def test_every_type_round_trips_exactly(writer_class: type[Writer]) -> None:
    name = writer_class.spec.name
    assert writer_class.option_problems(OPTIONS.get(name, {})) == []
    assert writer_class.prepare_schema(SCHEMA, {}) == []
    rows = READERS[name](encode(writer_class, BATCHES), SCHEMA)
    expected = expected_rows(COLUMNS, json_family=name in JSON_FAMILY)
    assert len(rows) == ROWS
    for got, want in zip(rows, expected, strict=True):
        assert got == want


@pytest.mark.parametrize("writer_class", ALL_WRITERS, ids=by_name)
def test_empty_file_has_its_shape(writer_class: type[Writer]) -> None:
    data = encode(writer_class, [])
    assert READERS[writer_class.spec.name](data, SCHEMA) == []
    expected = {
        "csv": ",".join(f'"{n}"' for n in SCHEMA.names).encode() + b"\n",
        "json": b"[]\n",
        "ndjson": b"",
        "xml": b'<?xml version="1.0" encoding="UTF-8"?>\n<rows>\n</rows>\n',
    }
    if writer_class.spec.name in expected:
        assert data == expected[writer_class.spec.name]


@pytest.mark.parametrize("writer_class", ALL_WRITERS, ids=by_name)
def test_output_does_not_depend_on_batch_boundaries(writer_class: type[Writer]) -> None:
    """20,000 rows in one batch (encoded in parallel slices) or in batches of 999: the same bytes."""
    big = TABLE.take(pa.array([i % ROWS for i in range(20_000)]))
    one = encode(writer_class, big.combine_chunks().to_batches())
    assert one == encode(writer_class, big.to_batches(max_chunksize=999))
    rows = READERS[writer_class.spec.name](one, SCHEMA)
    assert len(rows) == 20_000 and rows[16_384 + 7] == rows[(16_384 + 7) % ROWS]


TEXT_ONLY = [w for w in ALL_WRITERS if w.spec.name != "parquet"]
XML_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\ufffe\uffff")


@pytest.mark.parametrize("writer_class", TEXT_ONLY, ids=by_name)
@settings(max_examples=examples(60), deadline=None)
@given(texts=st.lists(st.one_of(st.none(), st.text(XML_CHARS, max_size=12)), min_size=1, max_size=8))
def test_any_string_round_trips(writer_class: type[Writer], texts: list[str | None]) -> None:
    name = writer_class.spec.name
    if name == "xml":  # XML 1.0 cannot carry most C0 controls (they become U+FFFD, tested below)
        texts = [t if t is None else "".join(c for c in t if c >= " " or c in "\t\n\r") for t in texts]
    if name == "csv":
        texts = [t for t in texts if t != CSV_NULL]
    schema = pa.schema([("s", pa.string())])
    batch = pa.record_batch([pa.array(texts, pa.string())], schema=schema)
    rows = READERS[name](encode(writer_class, [batch], schema), schema)
    assert [r["s"] for r in rows] == texts


def one_batch(**columns: pa.Array) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    batch = pa.record_batch(columns)
    return batch.schema, [batch.slice(0, 1), batch.slice(1)]


# -- CSV ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|", "."])
def test_csv_any_delimiter_round_trips(delimiter: str) -> None:
    data = encode(WRITERS["csv"], BATCHES, delimiter=delimiter)
    assert read_csv(data, SCHEMA, delimiter) == expected_rows(COLUMNS)
    if delimiter == ".":  # `.` occurs in unquoted numbers: every value is then quoted
        assert f'"{CSV_NULL}"' not in data.decode() and '"0.1"' in data.decode()


def test_csv_value_text() -> None:
    schema, batches = one_batch(
        ts=pa.array([T0 * US + 250_000, None], pa.int64()).cast(pa.timestamp("us", "UTC")),
        naive=pa.array([T0, None], pa.int64()).cast(pa.timestamp("s")),
        blob=pa.array([b"\x00\xff", b""]),
        nested=pa.array([[1, None], []]),
        obj=pa.array([{"a": 1.0, "b": 'q"'}, None]),
        f=pa.array([NAN, -INF]),
        d=pa.array([Decimal("1.50"), None], pa.decimal128(5, 2)),
        s=pa.array(["", None]),
    )
    assert encode(WRITERS["csv"], batches, schema, null_value="").decode() == (
        '"ts","naive","blob","nested","obj","f","d","s"\n'
        '"2023-11-14T22:13:20.250000Z","2023-11-14T22:13:20","AP8=","[1,null]","{""a"":1.0,""b"":""q\\""""}",nan,1.50,""\n'
        ',,"","[]",,-inf,,\n'
    )


def test_csv_header_off_crlf_and_bom() -> None:
    data = encode(WRITERS["csv"], BATCHES, header=False, line_ending="crlf", bom=True)
    assert data.startswith(b"\xef\xbb\xbf-128,")
    text = data.decode("utf-8-sig")
    assert text.count("\r\n") == ROWS + 1  # each row, plus the one inside "crlf\r\nend"
    header = ",".join(SCHEMA.names) + "\r\n"
    assert read_csv(header.encode() + text.encode(), SCHEMA) == expected_rows(COLUMNS)
    assert encode(WRITERS["csv"], [], header=False) == b""
    assert encode(WRITERS["csv"], [], header=False, bom=True) == b"\xef\xbb\xbf"


def test_csv_null_value() -> None:
    schema, batches = one_batch(s=pa.array(["NULL", None, ""]), n=pa.array([None, 1, 2]))
    assert encode(WRITERS["csv"], batches, schema, null_value="NULL") == b'"s","n"\n"NULL",NULL\nNULL,1\n"",2\n'
    assert encode(WRITERS["csv"], batches, schema, null_value="") == b'"s","n"\n"NULL",\n,1\n"",2\n'


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        ({"delimiter": ";;"}, [("delimiter", "must be a single character, got `;;`")]),
        ({"delimiter": "§"}, [("delimiter", "must be an ASCII character (tab included), got `§`")]),
        ({"delimiter": '"'}, [("delimiter", "cannot be `'\"'`: it is part of CSV quoting or line ends")]),
        ({"null_value": "a;b", "delimiter": ";"}, [("null_value", "`a;b` contains the delimiter `;`")]),
        (
            {"header": "yes", "line_ending": "cr"},
            [("header", "must be true or false, got `yes`"), ("line_ending", "must be `lf` (\\n) or `crlf` (\\r\\n)")],
        ),
        (
            {"quote": "'"},
            [("quote", "unknown option `quote`; csv options are: bom, delimiter, header, line_ending, null_value")],
        ),
    ],
)
def test_csv_option_problems(options: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    assert WRITERS["csv"].option_problems(options) == problems


# -- JSON and NDJSON ----------------------------------------------------------------------------
SMALL = dict(
    n=pa.array([1, None], pa.int64()),
    f=pa.array([1.0, NAN]),
    d=pa.array([Decimal("0.10"), None], pa.decimal128(9, 2)),
    s=pa.array(['é"\\\x01\n/', None]),
    day=pa.array([dt.date(2024, 1, 31), None]),
    ts=pa.array([T0 * US, None], pa.int64()).cast(pa.timestamp("us", "UTC")),
    naive=pa.array([T0 * 1000, None], pa.int64()).cast(pa.timestamp("ms")),
    b=pa.array([True, None]),
    l=pa.array([[{"x": 1}], None]),
    m=pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int64())),
)
OBJECTS = [
    '{"n":1,"f":1.0,"d":0.10,"s":"é\\"\\\\\\u0001\\n/","day":"2024-01-31","ts":"2023-11-14T22:13:20.000000Z",'
    '"naive":"2023-11-14T22:13:20.000","b":true,"l":[{"x":1}],"m":{"k":1}}',
    '{"n":null,"f":null,"d":null,"s":null,"day":null,"ts":null,"naive":null,"b":null,"l":null,"m":null}',
]


def test_json_exact_text() -> None:
    schema, batches = one_batch(**SMALL)
    data = encode(WRITERS["json"], batches, schema)
    assert data.decode() == "[\n" + ",\n".join(OBJECTS) + "\n]\n"
    assert "é".encode() in data  # UTF-8 kept, not \u-escaped
    assert json.loads(data)[0]["s"] == 'é"\\\x01\n/'


def test_rare_types_as_json() -> None:
    """Durations and intervals as ISO 8601, UUIDs as text, fixed-size lists, half floats."""
    schema, batches = one_batch(
        dur=pa.array([dt.timedelta(seconds=90, microseconds=500000), dt.timedelta(seconds=-1)]),
        span=pa.array([pa.MonthDayNano([1, 2, 3_500_000_000]), None], pa.month_day_nano_interval()),
        uid=pa.array([(1).to_bytes(16, "big"), None], pa.uuid()),
        pair=pa.array([[1, 2], None], pa.list_(pa.int8(), 2)),
        half=pa.array([1.5, NAN], pa.float16()),
    )
    assert encode(WRITERS["ndjson"], batches, schema).decode().splitlines() == [
        '{"dur":"PT90.500000S","span":"P1M2DT3.500000000S","uid":"00000000-0000-0000-0000-000000000001",'
        '"pair":[1,2],"half":1.5}',
        '{"dur":"-PT1.000000S","span":null,"uid":null,"pair":null,"half":null}',
    ]


def test_ndjson_exact_text() -> None:
    schema, batches = one_batch(**SMALL)
    assert encode(WRITERS["ndjson"], batches, schema).decode() == "".join(o + "\n" for o in OBJECTS)


# -- XML ----------------------------------------------------------------------------------------
def test_xml_exact_text_and_options() -> None:
    schema, batches = one_batch(
        **{
            "last name": pa.array(["<a & b>", None]),
            "x": pa.array([1.5, NAN]),
            "y": pa.array([INF, -INF]),
            "s": pa.array(["\r\n\t ", ""]),
            "l": pa.array([["a", None], []]),
            "o": pa.array([{"k": None, "v": 1}, None]),
        }
    )
    data = encode(WRITERS["xml"], batches, schema, root="customers", row="customer")
    assert data.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n<customers>\n'
        "<customer><last_name>&lt;a &amp; b&gt;</last_name><x>1.5</x><y>INF</y><s>&#13;\n\t </s>"
        '<l><item>a</item><item nil="true"/></l><o><v>1</v></o></customer>\n'
        "<customer><x>NaN</x><y>-INF</y><s></s><l></l></customer>\n</customers>\n"
    )
    tree = etree.fromstring(data)
    assert tree[0].find("s").text == "\r\n\t "


@pytest.mark.parametrize(
    ("name", "element"),
    [
        ("last name", "last_name"),
        ("2nd", "_2nd"),
        ("a:b", "a_b"),
        ("ok-name.x", "ok-name.x"),
        ("é", "é"),
        ("", "_"),
        ("-x", "_-x"),
        ("a/b(c)", "a_b_c_"),
    ],
)
def test_xml_names_are_made_valid(name: str, element: str) -> None:
    schema, batches = one_batch(**{name: pa.array([1, 2])})
    root = etree.fromstring(encode(WRITERS["xml"], batches, schema))
    assert [child.tag for child in root[0]] == [element]


def test_xml_name_collisions_are_problems() -> None:
    address = pa.struct([("zip code", pa.string()), ("zip-code", pa.string()), ("zip_code", pa.string())])
    schema = pa.schema([("last name", pa.int8()), ("last_name", pa.int8()), ("ok", pa.int8()), ("addr", address)])
    assert WRITERS["xml"].prepare_schema(schema, {}) == [
        "columns `last name` and `last_name` both become the XML element `last_name`; rename one of them in the "
        "mapping",
        "fields `zip code` and `zip_code` of `addr` both become the XML element `zip_code`; rename one of them in "
        "the model's query",
    ]


def test_xml_option_problems() -> None:
    assert WRITERS["xml"].option_problems({"root": "1rows", "row": "a b", "indent": 2}) == [
        ("indent", "unknown option `indent`; xml options are: root, row"),
        ("root", "`1rows` is not a valid XML element name; use letters, digits, `_`, `-`, `.`"),
        ("row", "`a b` is not a valid XML element name; use letters, digits, `_`, `-`, `.`"),
    ]


def test_xml_replaces_characters_it_cannot_carry(caplog: pytest.LogCaptureFixture) -> None:
    schema, batches = one_batch(s=pa.array(["a\x01b\x1f", "ok"]))
    root = etree.fromstring(encode(WRITERS["xml"], batches, schema))
    assert [row.find("s").text for row in root] == ["a\ufffdb\ufffd", "ok"]
    assert "U+FFFD" in caplog.text


# -- Parquet ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "codec"), [({}, "ZSTD"), ({"compression": "snappy"}, "SNAPPY")])
def test_parquet_codec_is_in_the_metadata(options: dict[str, Any], codec: str) -> None:
    meta = pq.ParquetFile(io.BytesIO(encode(WRITERS["parquet"], BATCHES, **options))).metadata
    group = meta.row_group(0)
    assert {group.column(i).compression for i in range(group.num_columns)} == {codec}


def test_parquet_keeps_types_and_utc() -> None:
    parquet = pq.ParquetFile(io.BytesIO(encode(WRITERS["parquet"], BATCHES)))
    column = parquet.schema.column(SCHEMA.get_field_index("ts_utc"))
    logical = json.loads(column.logical_type.to_json())
    assert (logical["Type"], logical["isAdjustedToUTC"], logical["timeUnit"]) == ("Timestamp", True, "microseconds")
    naive = parquet.schema.column(SCHEMA.get_field_index("ts_naive"))
    assert json.loads(naive.logical_type.to_json())["isAdjustedToUTC"] is False
    assert parquet.schema_arrow.field("dec").type == pa.decimal128(38, 10)


def test_parquet_row_groups_span_batches_and_bytes_stream() -> None:
    writer = WRITERS["parquet"](SCHEMA, {"row_group_size": 5})
    chunks = [writer.begin()] + [writer.write(batch) for batch in TABLE.to_batches(max_chunksize=3)] + [writer.end()]
    assert chunks[0] == b"" and chunks[2].startswith(b"PAR1")  # the file starts with the first row group
    assert [bool(c) for c in chunks[1:]] == [False, True, False, True, True]  # out as each group of 5 fills
    meta = pq.ParquetFile(io.BytesIO(b"".join(chunks))).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [5, 5, 2]
    default = pq.ParquetFile(io.BytesIO(encode(WRITERS["parquet"], BATCHES))).metadata
    assert default.num_row_groups == 1 and default.num_rows == ROWS


def test_parquet_row_groups_are_cut_at_the_byte_cap_too() -> None:
    """Wide rows fill `MAX_GROUP_BYTES` of Arrow data before the default 131,072 rows: the group
    is cut there, so the buffered input stays bounded by bytes, whatever the row width."""
    from core.write.formats.parquet import DEFAULT_ROW_GROUP_SIZE, MAX_GROUP_BYTES

    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    rows = 1_000 * (3 * MAX_GROUP_BYTES // 1_012_000 + 1)  # 1,012 B a row: just over three caps
    batches = [
        pa.RecordBatch.from_pydict(
            {"id": list(range(s, s + 1_000)), "text": [f"{i:01000d}" for i in range(s, s + 1_000)]}, schema
        )
        for s in range(0, rows, 1_000)
    ]
    meta = pq.ParquetFile(io.BytesIO(encode(WRITERS["parquet"], batches, schema))).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) == rows and rows < DEFAULT_ROW_GROUP_SIZE
    assert len(sizes) >= 3 and all(s * 1_012 <= MAX_GROUP_BYTES + 1_000 * 1_012 for s in sizes), sizes  # 1,012 B a row


def test_parquet_uses_dictionaries_where_values_repeat() -> None:
    table = pa.table({"unique": pa.array(range(10_000)), "few": pa.array(["a", "b"] * 5_000)})
    meta = pq.ParquetFile(io.BytesIO(encode(WRITERS["parquet"], table.to_batches(), table.schema))).metadata
    encodings = [set(meta.row_group(0).column(i).encodings) for i in range(2)]
    assert "RLE_DICTIONARY" not in encodings[0] and "RLE_DICTIONARY" in encodings[1]


def test_parquet_reports_columns_it_cannot_store() -> None:
    schema = pa.schema([("ok", pa.int64()), ("span", pa.month_day_nano_interval())])
    problem = (
        "column `span` has type `month_day_nano_interval`, which Parquet cannot store (Unhandled type "
        "for Arrow to Parquet schema conversion: month_day_nano_interval); cast it in the model's query, "
        "e.g. to text"
    )
    assert WRITERS["parquet"].prepare_schema(schema, {}) == [problem]
    with pytest.raises(FormatError) as caught:
        encode(WRITERS["parquet"], [], schema)
    assert caught.value.message == problem
    assert [w.prepare_schema(schema, {}) for w in TEXT_ONLY] == [[], [], [], []]  # text formats write ISO 8601


def test_parquet_option_problems() -> None:
    assert WRITERS["parquet"].option_problems({"compression": "gzip", "row_group_size": 0}) == [
        ("compression", "must be `zstd` or `snappy`, got `gzip`"),
        ("row_group_size", "must be a whole number of rows from 1 to 10,000,000, got `0`"),
    ]
    assert WRITERS["parquet"].option_problems({"compression": "snappy", "row_group_size": 100_000}) == []


@pytest.mark.parametrize("writer_class", [w for w in ALL_WRITERS if w.retractable], ids=by_name)
def test_dropping_a_writes_bytes_leaves_a_valid_file(writer_class: type[Writer]) -> None:
    """What the spool does when a batch does not fit in a part: drop its bytes, then `end()`."""
    writer = writer_class(SCHEMA, OPTIONS.get(writer_class.spec.name, {}))
    data = writer.begin() + writer.write(BATCHES[0])
    writer.write(BATCHES[2])  # encoded, then dropped
    rows = READERS[writer_class.spec.name](data + writer.end(), SCHEMA)
    assert rows == expected_rows(COLUMNS, json_family=writer_class.spec.name in JSON_FAMILY)[:5]


def test_parquet_is_not_retractable_and_counts_what_it_holds() -> None:
    assert not WRITERS["parquet"].retractable
    writer = WRITERS["parquet"](SCHEMA, {"row_group_size": 5})
    writer.begin()
    assert writer.pending_bytes() < 2048 + 256 * len(SCHEMA)
    assert writer.write(BATCHES[0].slice(0, 3)) == b""
    held = writer.pending_bytes()
    assert held > BATCHES[0].slice(0, 3).nbytes  # before any row group: the Arrow size, an upper bound
    flushed = writer.write(BATCHES[0].slice(3))
    assert flushed and writer.pending_bytes() < held
