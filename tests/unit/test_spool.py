"""Parts, gzip and the held-back first part, through a recording sink."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lxml import etree

from core.write.formats import ALL_WRITERS, Writer
from core.write.formats.csv import CsvWriter
from core.write.spool import FileInfo, Limits, Spool


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []
        self.content: dict[int, bytearray] = {}
        self.paths: dict[int, str] = {}
        self.closed: dict[int, FileInfo] = {}

    def open(self, index: int, path: str, content_type: str) -> None:
        self.events.append(("open", index, path))
        self.paths[index] = path
        self.content[index] = bytearray()

    def data(self, index: int, chunk: bytes) -> None:
        assert index in self.paths and index not in self.closed, "data outside an open file"
        self.content[index] += chunk

    def close(self, index: int, info: FileInfo) -> None:
        self.events.append(("close", index, info.path))
        self.closed[index] = info

    def files(self) -> list[tuple[str, bytes]]:
        return [(self.paths[i], bytes(self.content[i])) for i in sorted(self.paths)]


TABLE = pa.table({"id": list(range(1000)), "name": [f'name {i}, with "quotes"' for i in range(1000)]})


def name(part: int | None) -> str:
    return "out.csv" if part is None else f"out-{part:05d}.csv"


NO_LIMITS = Limits()


def run(
    limits: Limits = NO_LIMITS, *, gz: bool = False, table: pa.Table = TABLE, batch: int = 128, write_empty: bool = True
) -> tuple[Recorder, list[FileInfo]]:
    sink = Recorder()
    spool = Spool(CsvWriter, table.schema, {}, name, sink, limits=limits, gzip=gz)
    for piece in table.to_batches(max_chunksize=batch):
        spool.write(piece)
    return sink, spool.close(write_empty=write_empty)


def test_one_file_keeps_the_plain_name_even_with_a_limit() -> None:
    plain, _ = run()
    limited, infos = run(Limits(max_bytes=10_000_000))
    assert [p for p, _ in limited.files()] == ["out.csv"]
    assert limited.files() == plain.files()
    assert infos[0].rows == 1000 and infos[0].md5 == hashlib.md5(plain.files()[0][1]).hexdigest()


def test_parts_stay_within_the_size_limit_and_concatenate_to_the_whole() -> None:
    whole = run()[0].files()[0][1]
    sink, infos = run(Limits(max_bytes=5_000))
    files = sink.files()
    assert len(files) > 5
    assert [p for p, _ in files] == [f"out-{i:05d}.csv" for i in range(1, len(files) + 1)]
    header = whole.split(b"\n", 1)[0] + b"\n"
    body = b""
    for (path, data), info in zip(files, infos, strict=True):
        assert len(data) <= 5_000, path
        assert data.startswith(header)
        assert info.bytes == len(data) and info.path == path
        assert info.rows == data.count(b"\n") - 1
        body += data[len(header) :]
    assert header + body == whole
    assert sum(i.rows for i in infos) == 1000


def test_row_limits() -> None:
    sink, infos = run(Limits(max_rows=300), batch=1000)
    assert [i.rows for i in infos] == [300, 300, 300, 100]
    assert [p for p, _ in sink.files()] == ["out-00001.csv", "out-00002.csv", "out-00003.csv", "out-00004.csv"]


def test_events_are_ordered_and_each_file_closes_before_the_next_opens() -> None:
    sink, _ = run(Limits(max_rows=400))
    assert [e[0] for e in sink.events] == ["open", "close"] * 3


def test_a_row_larger_than_the_limit_goes_alone_with_a_warning() -> None:
    table = pa.table({"id": [1, 2, 3], "blob": ["x" * 10, "y" * 5000, "z" * 10]})
    warnings: list[str] = []
    sink = Recorder()
    spool = Spool(
        CsvWriter,
        table.schema,
        {},
        name,
        sink,
        limits=Limits(max_bytes=1_000),
        warn=lambda code, message: warnings.append(code),
    )
    spool.write(table.to_batches()[0])
    infos = spool.close()
    assert [i.rows for i in infos] == [1, 1, 1]
    assert warnings == ["row_larger_than_limit"]


def test_gzip_parts_are_bounded_as_stored_and_decompress_to_the_whole() -> None:
    # A 6,000-byte limit applies to the compressed files: each part is within it, and all but the
    # last fill it to within a few percent (they used to be bounded by the uncompressed bytes).
    names = [f"name {i % 977}, {i * 7919 % 10007}" for i in range(20_000)]
    table = pa.table({"id": list(range(20_000)), "name": names})
    whole = run(table=table)[0].files()[0][1]
    zipped, infos = run(Limits(max_bytes=6_000), gz=True, table=table, batch=4096)
    files = zipped.files()
    assert len(files) > 3
    header = whole.split(b"\n", 1)[0] + b"\n"
    body = b""
    for (path, compressed), info in zip(files, infos, strict=True):
        raw = gzip.decompress(compressed)
        assert raw.startswith(header), path
        body += raw[len(header) :]
        assert len(compressed) <= 6_000 and info.bytes == len(compressed)
        assert info.md5 == hashlib.md5(compressed).hexdigest()
    assert header + body == whole
    assert all(len(c) >= 6_000 * 0.95 for _, c in files[:-1]), [len(c) for _, c in files]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_parts_fill_to_within_a_few_percent_of_the_limit(gz: bool) -> None:
    # Batches of 65,536 rows (about 2.4 MB of CSV) against a 1 MB limit: a batch is cut at the rows
    # that fit instead of starting a new part, so no part is left a batch short.
    rows = 300_000
    table = pa.table({"id": list(range(rows)), "text": [f"row {i} " + "x" * (i % 50) for i in range(rows)]})
    limit = 1_000_000 if not gz else 200_000
    sink, infos = run(Limits(max_bytes=limit), gz=gz, table=table, batch=65_536)
    sizes = [len(c) for _, c in sink.files()]
    assert len(sizes) > 3 and max(sizes) <= limit
    assert min(sizes[:-1]) >= limit * 0.95, sizes
    assert sum(i.rows for i in infos) == rows


def test_gzip_files_are_served_as_gzip() -> None:
    sink = Recorder()
    types: list[str] = []
    sink.open = lambda index, path, content_type: types.append(content_type)  # type: ignore[method-assign]
    sink.data = lambda index, chunk: None  # type: ignore[method-assign]
    sink.close = lambda index, info: None  # type: ignore[method-assign]
    for gz in (False, True):
        spool = Spool(CsvWriter, TABLE.schema, {}, name, sink, gzip=gz)
        spool.write(TABLE.to_batches()[0])
        spool.close()
    assert types == ["text/csv; charset=utf-8", "application/gzip"]


def test_empty_output() -> None:
    empty = TABLE.slice(0, 0)
    sink, infos = run(table=empty)
    assert sink.files() == [("out.csv", b'"id","name"\n')] and infos[0].rows == 0
    sink, infos = run(table=empty, write_empty=False)
    assert sink.files() == [] and infos == []
    sink, _ = run(Limits(max_rows=10), table=empty)
    assert sink.files() == [("out.csv", b'"id","name"\n')]


def read_rows(fmt: str, data: bytes) -> list[Any]:
    """Rows of one file, read with an independent reader."""
    if fmt == "csv":
        return list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    if fmt == "json":
        return json.loads(data)
    if fmt == "ndjson":
        return [json.loads(line) for line in data.decode().splitlines()]
    if fmt == "xml":
        root = etree.fromstring(data)
        return [[(child.tag, child.text) for child in row] for row in root]
    return pq.read_table(io.BytesIO(data)).to_pylist()


@pytest.mark.parametrize("writer", ALL_WRITERS, ids=lambda w: w.spec.name)
def test_parts_for_every_format(writer: type[Writer]) -> None:
    table = pa.table(
        {
            "id": list(range(3000)),
            "name": [f'name {i} <&> "q"' for i in range(3000)],
            "score": [i / 7 for i in range(3000)],
        }
    )

    def files(limits: Limits) -> list[tuple[str, bytes]]:
        sink = Recorder()
        spool = Spool(writer, table.schema, {}, name, sink, limits=limits)
        for piece in table.to_batches(max_chunksize=500):
            spool.write(piece)
        spool.close()
        return sink.files()

    [(_, whole)] = files(Limits())
    limit = 12_000 if writer.spec.name == "parquet" else 20_000
    parts = files(Limits(max_bytes=limit))
    assert len(parts) > 3
    assert [p for p, _ in parts] == [f"out-{i:05d}.csv" for i in range(1, len(parts) + 1)]
    rows: list[Any] = []
    for _, data in parts:
        assert len(data) <= limit
        rows += read_rows(writer.spec.name, data)
    assert rows == read_rows(writer.spec.name, whole)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_md5_of_every_part_is_the_md5_of_its_bytes_when_hashed_behind_the_writer(gz: bool) -> None:
    # Batches of ~350 KB: over MD5_INLINE, so hashed on the MD5 thread, about eight per 3 MB part
    # (more than MD5_BEHIND), so the queue fills, drains and is waited for at each part's end.
    rows = 200_000
    table = pa.table({"id": list(range(rows)), "text": [f"row {i} " + "x" * (i % 50) for i in range(rows)]})
    sink, infos = run(Limits(max_bytes=3_000_000 if not gz else 300_000), gz=gz, table=table, batch=10_000)
    files = sink.files()
    assert len(files) >= 3 and len(infos) == len(files)
    for (path, content), info in zip(files, infos, strict=True):
        assert info.path == path and info.bytes == len(content)
        assert info.md5 == hashlib.md5(content).hexdigest()
    text = b"".join(gzip.decompress(c) if gz else c for _, c in files).decode()
    ids = [int(line.split(",")[0]) for line in text.splitlines() if not line.startswith('"id"')]
    assert ids == list(range(rows))
