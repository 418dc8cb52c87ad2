"""DuckDB sources: the `memory_limit` and `threads` catalog fields, and a model query that must spill.

The spill test sorts 3 M rows under a 100 MB cap (the sorted data alone is about 150 MB): it
completes only because DuckDB writes the excess to the source's temp folder, which must be under
the system's temporary directory (a run-from-package app folder is read-only), not beside the
database file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb
import pytest

from core.catalog.model import Source
from core.catalog.parse import parse_catalog_partly
from core.errors import SourceError
from core.read.sources import open_source
from core.read.sources.duckdb import MEMORY_LIMIT, DuckDBSource
from core.read.spill import temp_directory
from core.settings import Settings

ROWS = 3_000_000


def _catalog(memory_limit: object, **fields: object) -> tuple[object, list[str]]:
    source: dict[str, object] = {"type": "duckdb", "database": "demo.duckdb", **fields}
    if memory_limit is not None:
        source["memory_limit"] = memory_limit
    catalog, problems = parse_catalog_partly({"sources": {"db": source}}, Path("/app"))
    return catalog, [f"{p.path}: {p.message}" for p in problems]


def test_memory_limit_field_is_parsed_into_bytes_duckdb_reads() -> None:
    catalog, problems = _catalog("48MB")
    assert problems == []
    assert catalog.sources["db"].memory_limit == "48000KB"  # type: ignore[attr-defined]
    catalog, _ = _catalog(None)
    assert catalog.sources["db"].memory_limit is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "sources.db.memory_limit: must be a size such as `500KB`, `100MB` or `2GB`, got `lots`"),
        ("8MB", "sources.db.memory_limit: must be at least 16MB (DuckDB needs room for a scan), got `8MB`"),
    ],
)
def test_bad_memory_limit_says_what_to_write(value: str, message: str) -> None:
    _, problems = _catalog(value)
    assert problems == [message]


def test_threads_field_is_a_whole_number_of_threads() -> None:
    catalog, problems = _catalog(None, threads=4)
    assert problems == []
    assert catalog.sources["db"].threads == 4  # type: ignore[attr-defined]
    catalog, _ = _catalog(None)
    assert catalog.sources["db"].threads is None  # type: ignore[attr-defined]
    for value in (0, 65, "two"):
        _, problems = _catalog(None, threads=value)
        assert len(problems) == 1 and problems[0].startswith("sources.db.threads: "), problems


def _database(folder: Path, rows: int) -> Path:
    path = folder / "spill.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range({rows})")
    return path


def _setting(source: DuckDBSource, name: str) -> str:
    found = source.connection.execute(f"SELECT current_setting('{name}')").fetchone()
    assert found is not None
    return str(found[0])


def test_source_settings_default_cap_and_spill_folder(tmp_path: Path) -> None:
    source = DuckDBSource(_database(tmp_path, 10))
    try:
        assert MEMORY_LIMIT == "32MB"
        assert _setting(source, "memory_limit") == "30.5 MiB"  # DuckDB shows 32 MB in MiB
        folder = Path(_setting(source, "temp_directory"))
        assert folder == temp_directory()
        assert folder.parent == Path(tempfile.gettempdir())
        assert folder.name.startswith(f"filecast-duckdb-{os.getpid()}-")
        assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == os.getuid()
    finally:
        source.close()
    limited = DuckDBSource(tmp_path / "spill.duckdb", memory_limit="32000KB")  # as the catalog hands it over
    try:
        assert _setting(limited, "memory_limit") == "30.5 MiB"
        assert _setting(limited, "threads") == str(os.cpu_count())  # DuckDB's default: one per core
    finally:
        limited.close()


def test_a_source_with_threads_runs_its_queries_on_that_many(tmp_path: Path) -> None:
    """The catalog's `threads` reaches DuckDB through `open_source`, and model SQL cannot change it."""
    source = open_source(Source("db", "duckdb", database=_database(tmp_path, 10), threads=3), Settings({}))
    assert isinstance(source, DuckDBSource)
    try:
        assert _setting(source, "threads") == "3"
        with pytest.raises(duckdb.Error, match="locked"):
            source.connection.execute("SET threads=8")
    finally:
        source.close()


def test_a_sort_bigger_than_the_cap_spills_and_reads_back_in_order(tmp_path: Path) -> None:
    database = _database(tmp_path, ROWS)
    source = DuckDBSource(database, memory_limit="100MB")
    seen_spill = False
    rows, previous = 0, ""
    try:
        _, batches = source.batches("SELECT id, h FROM t ORDER BY h")
        for batch in batches:
            seen_spill = seen_spill or any(temp_directory().iterdir())
            hashes = batch.column("h").to_pylist()
            assert hashes == sorted(hashes) and (not previous or previous <= hashes[0])
            previous = hashes[-1]
            rows += batch.num_rows
    finally:
        source.close()
    assert rows == ROWS
    assert seen_spill, "DuckDB did not spill to the source's temp folder"
    assert not database.with_name(database.name + ".tmp").exists()  # nothing written beside the database


def test_a_query_over_the_cap_says_which_field_to_raise(tmp_path: Path) -> None:
    """DuckDB's own advice (`SET memory_limit=…`) cannot work: the configuration is locked."""
    source = DuckDBSource(_database(tmp_path, 10), memory_limit="16MB")
    try:
        with pytest.raises(SourceError) as caught:
            _, batches = source.batches("SELECT list(range) AS l FROM range(20000000)")  # a list cannot spill
            for _ in batches:
                pass
    finally:
        source.close()
    error = caught.value
    assert error.code == "source_out_of_memory" and not error.transient
    assert error.message.startswith(
        f"the model query on DuckDB database `{tmp_path / 'spill.duckdb'}` needs more "
        "memory than the source's `memory_limit` (16MB) allows (Out of Memory Error: "
    )
    assert error.message.endswith(
        "): raise `memory_limit` on the source, e.g. `256MB`, for queries that sort, join or aggregate large results"
    )
