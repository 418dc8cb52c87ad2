"""CSV encoding of tricky values, read back with Python's csv module (an independent reader)."""

from __future__ import annotations

import csv
import io

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
