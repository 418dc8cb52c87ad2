"""PostgreSQL over ADBC (`adbc-driver-postgresql`), streamed in record batches.

Two read paths, both bounded in memory:

- a model without a segment filter runs as `COPY (query) TO STDOUT (FORMAT binary)`, which the
  driver turns into batches of about `BATCH_BYTES` as the rows arrive (the fastest path);
- a segment's filter needs bound parameters, which COPY cannot take, and libpq would buffer a
  parameterised result whole. So it runs as a server-side cursor (`DECLARE … CURSOR` with the
  parameters bound, then `FETCH FORWARD n` until empty), `n` sized so a fetch is about `BATCH_BYTES`.

Sessions are read-only, in UTC, with ISO 8601 intervals, and `statement_timeout` from the catalog.
Types Arrow has no plain equivalent for (uuid, interval, inet, enums, ranges, composites, …) are
cast to text by the server, so every writer receives plain Arrow types.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ..segments import POSTGRESQL
from .adbc import AdbcSource, describe_uri, result_reader, secrets_of

log = logging.getLogger(__name__)

BATCH_BYTES = 8 * 1024 * 1024
FIRST_FETCH_ROWS = 2_000
MAX_FETCH_ROWS = 200_000
CURSOR = "filecast_rows"


def _needs_text(t: pa.DataType) -> bool:
    """Types the server should send as text: Arrow would get raw bytes or a type writers lack."""
    if isinstance(t, pa.BaseExtensionType):
        if t.extension_name == "arrow.uuid":
            return True
        if t.extension_name == "arrow.opaque":
            return bool(pa.types.is_binary(t.storage_type) or pa.types.is_large_binary(t.storage_type))
        return False
    return bool(pa.types.is_interval(t))


def _cast(field: pa.Field) -> str | None:
    """The SQL cast a column needs (`::text`, `::text[]`, `::numeric`), or None."""
    if (field.metadata or {}).get(b"POSTGRESQL:type") == b"money":
        return "numeric"  # the driver gives money as integer cents
    t = field.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "text[]" if _needs_text(t.value_type) else None
    return "text" if _needs_text(t) else None


class PostgresSource(AdbcSource):
    def __init__(
        self,
        uri: str,
        *,
        source_id: str,
        uri_setting: str | None = None,
        statement_timeout: float | None = None,
        options: dict[str, str] | None = None,
    ):
        import adbc_driver_postgresql.dbapi

        where = describe_uri(uri)
        setup = [
            "SET TIME ZONE 'UTC'",
            "SET IntervalStyle = 'iso_8601'",
            "SET default_transaction_read_only = on",
            "SET application_name = 'filecast'",
        ]
        if statement_timeout:
            setup.append(f"SET statement_timeout = {max(1, round(statement_timeout * 1000))}")

        def connect() -> Any:
            return adbc_driver_postgresql.dbapi.connect(uri, db_kwargs=options or None, autocommit=True)

        super().__init__(
            connect,
            what=f"PostgreSQL source `{source_id}`" + (f" ({where})" if where else ""),
            dialect=POSTGRESQL,
            secrets=secrets_of(uri) + list((options or {}).values()),
            uri_setting=uri_setting,
            setup=setup,
        )

    def prepare(self, sql: str) -> str:
        schema = self.raw_schema(sql)
        casts = {field.name: _cast(field) for field in schema}
        if not any(casts.values()):
            return sql
        if len(set(schema.names)) != len(schema.names):
            from ...errors import SourceError

            duplicates = sorted({n for n in schema.names if schema.names.count(n) > 1})
            raise SourceError(
                f"the model query on {self.what} returns the column name "
                f"`{'`, `'.join(duplicates)}` twice; give each column its own name"
            )
        quote = self.dialect.quote
        columns = [
            quote(name) if cast is None else f"{quote(name)}::{cast} AS {quote(name)}" for name, cast in casts.items()
        ]
        return f"SELECT {', '.join(columns)} FROM (\n{sql}\n) AS model"

    def stream(self, sql: str, params: list[Any]) -> pa.RecordBatchReader:
        if not params:
            cursor = self._cursor()
            cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
            cursor.execute(sql + "\n")  # the driver wraps it in COPY (…): a trailing `-- comment` must end
            return result_reader(cursor)
        cursor = self._cursor()
        cursor.execute("BEGIN READ ONLY")
        cursor.execute(f"DECLARE {CURSOR} NO SCROLL CURSOR FOR {sql}", parameters=params)
        fetch = self._cursor()
        fetch.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})
        first = self._fetch(fetch, FIRST_FETCH_ROWS)
        return pa.RecordBatchReader.from_batches(first.schema, self._fetches(cursor, fetch, first))

    def _fetch(self, fetch: Any, rows: int) -> pa.Table:
        fetch.execute(f"FETCH FORWARD {rows} FROM {CURSOR}")
        return fetch.fetch_arrow_table()

    def _fetches(self, cursor: Any, fetch: Any, table: pa.Table) -> Iterator[pa.RecordBatch]:
        with self._errors():
            try:
                rows = FIRST_FETCH_ROWS
                while True:
                    yield from table.to_batches()
                    if table.num_rows < rows:
                        break
                    width = max(1, table.nbytes // max(1, table.num_rows))
                    rows = max(FIRST_FETCH_ROWS, min(MAX_FETCH_ROWS, BATCH_BYTES // width))
                    table = self._fetch(fetch, rows)
            finally:
                if self.connection is not None:
                    try:
                        cursor.execute("ROLLBACK")  # read only: nothing to keep; also closes the cursor
                    except Exception:  # the connection may be gone: the error that got us here matters
                        log.debug("ROLLBACK after streaming failed", exc_info=True)
                    self._close_cursor(fetch)
                    self._close_cursor(cursor)
