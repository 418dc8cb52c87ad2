"""CSV encoding of tricky values, read back with Python's csv module (an independent reader)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal as D

import pyarrow as pa
import pytest

from core.write.formats.csv import CsvWriter

TRICKY = pa.table(
    {
        "text": [
            "plain",
            "a,b",
            'say "hi"',
            "two\nlines",
            "crlf\r\nend",
            "Zoé ñ 東京 🙂",
            "",
            None,
            "semi;colon",
            "tab\there",
        ],
        "n": [1, -2, None, 0, 2**40, 7, 8, 9, 10, 11],
    }
)


def encode(table: pa.Table, **options: object) -> bytes:
    writer = CsvWriter(table.schema, options)
    out = writer.begin()
    for batch in table.to_batches(max_chunksize=3):
        out += writer.write(batch)
    return out + writer.end()


def read(data: bytes, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter))


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_tricky_values_round_trip(delimiter: str) -> None:
    rows = read(encode(TRICKY, delimiter=delimiter), delimiter)
    assert rows[0] == ["text", "n"]
    expected = [
        ["" if v is None else v, "" if n is None else str(n)]
        for v, n in zip(TRICKY["text"].to_pylist(), TRICKY["n"].to_pylist(), strict=True)
    ]
    assert rows[1:] == expected


def test_null_and_empty_string_stay_distinct() -> None:
    table = pa.table({"text": ["", None, 'say "hi"'], "n": [8, 9, None]})
    assert encode(table).decode() == '"text","n"\n"",8\n,9\n"say ""hi""",\n'  # "" is empty text, nothing is NULL
    assert encode(table, null_value="NULL").decode() == '"text","n"\n"",8\nNULL,9\n"say ""hi""",NULL\n'


def test_header_off_crlf_and_bom() -> None:
    data = encode(TRICKY.slice(0, 2), header=False, line_ending="crlf", bom=True)
    assert data == b'\xef\xbb\xbf"plain",1\r\n"a,b",-2\r\n'
    assert encode(TRICKY.slice(0, 1), header=True).startswith(b'"text","n"\n')


def test_empty_output_is_just_the_header() -> None:
    writer = CsvWriter(TRICKY.schema, {"delimiter": ";"})
    assert writer.begin() + writer.end() == b'"text";"n"\n'


def _awkward_columns() -> dict[str, pa.Array]:
    text = pa.array(["", None, 'q"uote', "a,b", "two\nlines", "Zoé"], pa.string())
    return {
        "text": text,
        "large": text.cast(pa.large_string()),
        "view": text.cast(pa.string_view()),
        "dict": text.dictionary_encode(),
        "half": pa.array([1.5, None, -0.0, float("nan"), float("inf"), 65504.0], pa.float16()),
        "double": pa.array([0.1, 1e-7, None, float("-inf"), 5e-324, 1e16]),
        "null": pa.nulls(6),
        "date64": pa.array([0, None, 86_400_000, -86_400_000, 1, 2], pa.date64()),
        "time32": pa.array([0, 1, None, 86_399, 5, 6], pa.time32("s")),
        "dec0": pa.array([1, -2, None, 0, 10**17, 3], pa.decimal128(18, 0)),
        "dec6": pa.array([D("0.000001"), D("-1.5"), None, D("0"), D("123456.789012"), D("7")], pa.decimal128(12, 6)),
        "dec10": pa.array([D("0.0000000001"), D("-1"), None, D("0"), D("1"), D("2")], pa.decimal128(20, 10)),
        "negative_scale": pa.array([100, 200, None, 0, -300, 400], pa.decimal128(5, 0)).cast(pa.decimal128(7, -2)),
        "seconds_utc": pa.array([0, None, -1, 10**9, 1, 2], pa.timestamp("s", "UTC")),
        "binary": pa.array([b"", None, b"\x00\xff", b"abc", b"d", b"e"]),
        "duration": pa.array([0, -1_500_000, None, 90_500_000, 1, 2], pa.duration("us")),
        "uint64": pa.array([0, 2**64 - 1, None, 1, 2, 3], pa.uint64()),
        "flag": pa.array([True, False, None, True, False, True]),
    }


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "a", "."])
@pytest.mark.parametrize("null_value", ["", "\\N"])
def test_pyarrow_writer_path_writes_the_row_joins_bytes(delimiter: str, null_value: str) -> None:
    """Each column type, alone and with a plain column beside it, comes out of pyarrow's CSV writer
    (or, where that writer cannot, the row join) exactly as the row join writes it."""
    for name, array in _awkward_columns().items():
        for columns in ({name: array}, {name: array, "n": pa.array(range(6))}):
            batch = pa.record_batch(list(columns.values()), names=list(columns))
            writer = CsvWriter(batch.schema, {"delimiter": delimiter, "null_value": null_value})
            assert bytes(writer._encode_arrow(batch)) == bytes(writer._encode(batch)), (name, list(columns))


def test_common_columns_take_pyarrows_writer_and_the_rest_the_row_join() -> None:
    """The fast path is the one taken for the usual warehouse columns (and not a dead branch)."""
    columns = _awkward_columns()
    usual = pa.record_batch(
        [columns[n] for n in ("text", "double", "dec6", "seconds_utc", "flag")], names=list("abcde")
    )
    assert CsvWriter(usual.schema, {})._arrow_columns(usual) is not None
    for name in ("dec10", "negative_scale"):  # bare text pyarrow would quote
        batch = pa.record_batch([columns[name], columns["text"]], names=["x", "y"])
        assert CsvWriter(batch.schema, {})._arrow_columns(batch) is None
    lone = pa.record_batch([columns["text"]], names=["x"])  # a one-column NULL is written `""`
    assert CsvWriter(lone.schema, {})._arrow_columns(lone) is None
    assert CsvWriter(lone.schema, {"null_value": "\\N"})._arrow_columns(lone) is not None
