"""DuckDB, the embedded default: a database file read in streaming record batches.

DuckDB's own memory is capped (`memory_limit`), and results come out through
`fetch_record_batch`, so a 10 M-row model never sits whole in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from ..errors import SourceError
from ..segments import DUCKDB, bind_where, segment_sql
from .base import BATCH_ROWS, Where

MEMORY_LIMIT = "256MB"


@contextmanager
def map_duckdb_errors(what: str) -> Iterator[None]:
    try:
        yield
    except duckdb.IOException as exc:
        raise SourceError(f"cannot open {what}: {exc}", transient=False) from exc
    except (duckdb.CatalogException, duckdb.BinderException, duckdb.ParserException) as exc:
        raise SourceError(f"the model query failed on {what}: {exc}; fix the model's `sql` or `table`") from exc
    except duckdb.Error as exc:
        raise SourceError(f"{what} failed: {exc}") from exc


def _reader(relation: duckdb.DuckDBPyRelation, batch_rows: int) -> pa.RecordBatchReader:
    """A streaming reader over a relation (DuckDB 2 renamed `fetch_record_batch`)."""
    if hasattr(relation, "to_arrow_reader"):
        return relation.to_arrow_reader(batch_rows)
    return relation.fetch_record_batch(batch_rows)


class DuckDBSource:
    def __init__(self, database: Path, *, batch_rows: int = BATCH_ROWS, memory_limit: str = MEMORY_LIMIT):
        self.database = database
        self.batch_rows = batch_rows
        self.what = f"DuckDB database `{database}`"
        self.readers: list[pa.RecordBatchReader] = []
        self._schemas: dict[str, pa.Schema] = {}
        if not database.is_file():
            raise SourceError(f"{self.what} does not exist; check the source's `database` path "
                              "(relative paths start at the catalog's folder)")
        with map_duckdb_errors(self.what):
            self.connection = duckdb.connect(str(database), read_only=True)
            self.connection.execute(f"SET memory_limit='{memory_limit}'")
            self.connection.execute("SET preserve_insertion_order=true")
            self.connection.execute("SET TimeZone='UTC'")

    def _relation(self, sql: str, where: Where) -> duckdb.DuckDBPyRelation:
        params: list[object] = []
        if where is not None:
            # Values become the column's type (a date for a date column, …); DuckDB takes `?` marks.
            sql, params = segment_sql(sql, bind_where(where, self.schema(sql)), DUCKDB)
        return self.connection.sql(sql, params=params or None)

    def schema(self, sql: str, where: Where = None) -> pa.Schema:
        # A segment narrows rows, never columns: the model's schema is the segment's. Described once
        # per source: the engine's segment check and the binding of its values both ask.
        if sql not in self._schemas:
            with map_duckdb_errors(self.what):
                relation = self.connection.sql(f"SELECT * FROM (\n{sql}\n) AS model LIMIT 0")
                self._schemas[sql] = _reader(relation, 1).schema
        return self._schemas[sql]

    def batches(self, sql: str, where: Where = None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        with map_duckdb_errors(self.what):
            reader = _reader(self._relation(sql, where), self.batch_rows)
            self.readers.append(reader)

        def stream() -> Iterator[pa.RecordBatch]:
            with map_duckdb_errors(self.what):
                try:
                    yield from reader
                except (pa.ArrowException, OSError) as exc:  # DuckDB's error, surfaced by pyarrow's reader
                    raise SourceError(f"{self.what} failed: {exc}") from exc

        return reader.schema, stream()

    def close(self) -> None:
        # A DuckDB reader still open when its connection closes leaves the database locked in this
        # process: the next connect() to the same file would hang. Close readers first.
        for reader in self.readers:
            reader.close()
        self.readers.clear()
        self.connection.close()
