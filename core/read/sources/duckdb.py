"""DuckDB, the embedded default: a database file read in streaming record batches.

DuckDB's own memory is capped (`memory_limit`, per source; 32 MB by default: a streaming scan
runs as fast under it, while a larger cap only lets the buffer pool keep scanned blocks, which
made a run's peak grow with the table: 35 MB more at 10 M rows than at 1 M under 64 MB), and
results come out through `fetch_record_batch`, so a 10 M-row model never sits whole in memory.
A model query runs on as many DuckDB threads as the machine has cores, or `threads` (per source).
On 2 cores, `threads: 1` lowered a 1 M-row run's peak by 6–15 MB (CSV export and UPSERT runs to
Azurite, as fast) but made fast paths slower (0.63 → 0.70 s to a destination that keeps nothing,
CSV to FTP on loopback 4 % slower), so the default stays DuckDB's.
What a query needs beyond the cap (a sort, a large join) spills to `temp_directory`, a folder of
the system's temporary directory: the app folder of a run-from-package deployment is read-only.

Model SQL cannot read the machine: once the database file is open, external access is turned off
(no `read_text('/proc/self/environ')`, `read_csv` of local files, `COPY … TO`, `ATTACH`, no
extension loading) and the configuration is locked, so the model's SQL cannot `SET` it back.
Spilling to the temp directory still works. A source with `allow_file_access: true` skips this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from ...catalog.columns import bind_where
from ...error_codes import ErrorCode
from ...errors import SourceError, SourceUnavailable
from ..segments import DUCKDB, segment_sql
from ..spill import temp_directory
from .base import Where

MEMORY_LIMIT = "32MB"
BATCH_ROWS_DUCKDB = 16_384  # smaller than other sources' batches: every per-batch buffer downstream (mapping,
#                             text encoding, MD5, upload) scales with it; measured no slower at 1 M rows


def out_of_memory(what: str, limit: str, detail: str) -> SourceError:
    """DuckDB's own advice (`SET memory_limit`, `SET threads`) cannot be taken from model SQL,
    whose configuration is locked: say which catalog field to raise."""
    return SourceError(
        f"the model query on {what} needs more memory than the source's `memory_limit` ({limit}) "
        f"allows ({detail.splitlines()[0].strip()}): raise `memory_limit` on the source, e.g. "
        "`256MB`, for queries that sort, join or aggregate large results",
        code=ErrorCode.SOURCE_OUT_OF_MEMORY,
    )


@contextmanager
def map_duckdb_errors(what: str, limit: str = MEMORY_LIMIT) -> Iterator[None]:
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        raise out_of_memory(what, limit, str(exc)) from exc
    except duckdb.PermissionException as exc:
        raise SourceError(
            f"the model query on {what} tried to reach files, the network or extensions, which "
            f"model SQL may not ({exc}); query the database's own tables, or set "
            "`allow_file_access: true` on the source if its SQL is trusted to read this machine",
            code=ErrorCode.FILE_ACCESS_DENIED,
        ) from exc
    except duckdb.IOException as exc:
        raise SourceError(f"cannot open {what}: {exc}") from exc
    except (duckdb.CatalogException, duckdb.BinderException, duckdb.ParserException) as exc:
        raise SourceError(f"the model query failed on {what}: {exc}; fix the model's `sql` or `table`") from exc
    except duckdb.Error as exc:
        raise SourceError(f"{what} failed: {exc}") from exc


def _reader(relation: duckdb.DuckDBPyRelation, batch_rows: int) -> pa.RecordBatchReader:
    """A streaming reader over a relation (DuckDB 2 renamed `fetch_record_batch`)."""
    if hasattr(relation, "to_arrow_reader"):
        return relation.to_arrow_reader(batch_rows)
    return relation.fetch_record_batch(batch_rows)


def lock_down(connection: duckdb.DuckDBPyConnection) -> None:
    """No file, network or extension access from SQL, and no `SET` that could undo it; the
    database file must be open already. Every other setting must be made before this."""
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")


def already_locked(connection: duckdb.DuckDBPyConnection, allow_file_access: bool, what: str) -> bool:
    """Whether the database was locked down by another connection of this process: connections
    to one file share one DuckDB instance and its (global, now locked) settings. A source that
    asks for file access on a locked instance cannot have it."""
    locked, external = connection.sql(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')"
    ).fetchall()[0]
    if locked and allow_file_access and not external:
        connection.close()
        raise SourceUnavailable(
            f"{what} is already open without file access in this process (another source or run "
            "uses the same file); give the `allow_file_access` source a database file of its own"
        )
    return bool(locked)


class DuckDBSource:
    def __init__(
        self,
        database: Path,
        *,
        batch_rows: int = BATCH_ROWS_DUCKDB,
        memory_limit: str | None = None,
        threads: int | None = None,
        allow_file_access: bool = False,
    ):
        self.database = database
        self.batch_rows = batch_rows
        self.what = f"DuckDB database `{database}`"
        self.memory_limit = memory_limit or MEMORY_LIMIT
        self.threads = threads
        self.readers: list[pa.RecordBatchReader] = []
        self._schemas: dict[str, pa.Schema] = {}
        if not database.is_file():
            raise SourceError(
                f"{self.what} does not exist; check the source's `database` path (a relative path "
                "starts at the catalog file's folder, or at the app's root for a catalog applied "
                "with `PUT /api/catalog`)"
            )
        with map_duckdb_errors(self.what):
            self.connection = duckdb.connect(str(database), read_only=True)
            if already_locked(self.connection, allow_file_access, self.what):
                return  # a source of this process opened the same file: its settings are in force
            self.connection.execute(f"SET memory_limit='{self.memory_limit}'")
            if self.threads is not None:
                self.connection.execute(f"SET threads={int(self.threads)}")
            self.connection.execute("SET temp_directory=?", [str(temp_directory())])
            self.connection.execute("SET preserve_insertion_order=true")
            self.connection.execute("SET TimeZone='UTC'")
            if not allow_file_access:
                lock_down(self.connection)

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
        with map_duckdb_errors(self.what, self.memory_limit):
            reader = _reader(self._relation(sql, where), self.batch_rows)
            self.readers.append(reader)

        def stream() -> Iterator[pa.RecordBatch]:
            with map_duckdb_errors(self.what, self.memory_limit):
                try:
                    yield from reader
                except (pa.ArrowException, OSError) as exc:  # DuckDB's error, surfaced by pyarrow's reader
                    if "Out of Memory Error" in str(exc):
                        raise out_of_memory(self.what, self.memory_limit, str(exc)) from exc
                    raise SourceError(f"{self.what} failed: {exc}") from exc

        return reader.schema, stream()

    def close(self) -> None:
        # A DuckDB reader still open when its connection closes leaves the database locked in this
        # process: the next connect() to the same file would hang. Close readers first.
        for reader in self.readers:
            reader.close()
        self.readers.clear()
        self.connection.close()
