"""ADBC sources: any database with an ADBC driver (SQLite, Snowflake, BigQuery, Flight SQL, …).

The driver hands Arrow record batches straight from the database (`fetch_record_batch`), so a
result is streamed, never materialised. `AdbcSource` is the generic reader; `postgresql.py`
specialises it. Both normalise what drivers return into plain Arrow types every writer knows:
extension types become their storage (`arrow.json` → text), PostgreSQL `numeric(p,s)` becomes a
decimal.

Errors are translated once, in `map_adbc_errors`, by SQLSTATE where the driver gives one and by
the driver's words otherwise. No message carries a password or the connection URI.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from ...catalog.columns import bind_where
from ...error_codes import ErrorCode
from ...errors import CatalogError, SourceError, SourceUnavailable
from ...scrub import scrub
from ..segments import ANSI, DIALECTS, Dialect, segment_sql

log = logging.getLogger(__name__)

# Statements that make a session read-only, per driver: the model's SQL cannot write. PostgreSQL
# is `postgresql.py` (`default_transaction_read_only`, `BEGIN READ ONLY`); other warehouses rely on
# the credentials' grants (README "Trust boundaries").
READ_ONLY_SETUP = {"adbc_driver_sqlite": ("PRAGMA query_only = ON",)}

DRIVER_DIALECTS = {
    "adbc_driver_postgresql": "postgresql",
    "adbc_driver_sqlite": "sqlite",
    "adbc_driver_snowflake": "snowflake",
    "adbc_driver_bigquery": "bigquery",
    "adbc_driver_duckdb": "duckdb",
    "adbc_driver_flightsql": "ansi",
}

# --- errors ---------------------------------------------------------------------------------------

_UNREACHABLE = (
    "connection refused",
    "could not translate host name",
    "could not connect",
    "timeout expired",
    "network is unreachable",
    "no route to host",
    "connection timed out",
    "server closed the connection",
    "connection reset",
    "name or service not known",
    "temporary failure in name resolution",
    "no connection to the server",
    "unavailable",
)
_AUTHENTICATION = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "invalid password",
    "incorrect username or password",
    "invalid credentials",
    "unauthenticated",
    "permission denied for database",
    "no pg_hba.conf entry",
)


def secrets_of(uri: str | None) -> list[str]:
    """What must never appear in a message: the URI itself and its password."""
    if not uri:
        return []
    found = [uri]
    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    return found


def describe_uri(uri: str | None) -> str:
    """`host:port/database` of a URI, without user or password, for messages."""
    if not uri:
        return ""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return ""
    path = parts.path if parts.path not in ("", "/") else ""
    return f"{host}{port}{path}" if host else ""


def server_message(exc: BaseException) -> str:
    """The database's own words: the primary message (and hint) without the driver's wrapping."""
    details = dict(getattr(exc, "details", None) or [])
    primary = details.get(b"PG_DIAG_MESSAGE_PRIMARY")
    if primary:
        text: str = primary.decode("utf-8", "replace")
        hint = details.get(b"PG_DIAG_MESSAGE_HINT")
        return text + (f" (hint: {hint.decode('utf-8', 'replace')})" if hint else "")
    text = str(exc).split("\n\nQuery was:")[0]
    text = re.sub(r"\. SQLSTATE: [0-9A-Z]{5}$", "", text.strip())
    text = re.sub(r"^[A-Z_]+: ", "", text)  # the ADBC status, e.g. `IO: `
    text = re.sub(r"^\[[^\]]+\] ", "", text)  # the driver's tag, e.g. `[libpq] `
    text = re.sub(r"^(Failed to connect|Failed to execute query|Failed to prepare query): ", "", text)
    text = re.sub(r"\s+", " ", text.replace("FATAL:", "").replace("ERROR:", "")).strip()
    return text.rstrip(".")


@contextmanager
def map_adbc_errors(
    what: str, *, secrets: Sequence[str] = (), uri_setting: str | None = None, connecting: bool = False
) -> Iterator[None]:
    """Translate ADBC driver errors into `SourceError`s a user can act on."""
    import adbc_driver_manager

    try:
        yield
    except (adbc_driver_manager.Error, pa.ArrowException) as exc:  # Arrow's: a stream read by pyarrow's reader
        raise classify(exc, what, uri_setting=uri_setting, secrets=secrets, connecting=connecting) from None


def classify(
    exc: Exception, what: str, *, uri_setting: str | None = None, secrets: Sequence[str] = (), connecting: bool = False
) -> SourceError:
    """A `SourceError` for a driver error: code, transient (`SourceUnavailable`) or terminal, and a fix."""
    sqlstate = (getattr(exc, "sqlstate", None) or "").upper()
    if not sqlstate:
        found = re.search(r"SQLSTATE: ([0-9A-Z]{5})", str(exc))
        sqlstate = found.group(1) if found else ""
    said = scrub(server_message(exc), secrets)
    lowered = said.lower()
    setting = f" in the app setting `{uri_setting}`" if uri_setting else ""
    if sqlstate.startswith("28") or any(words in lowered for words in _AUTHENTICATION):
        return SourceError(
            f"authentication failed on {what}: {said}; check the user and password{setting}",
            code=ErrorCode.AUTHENTICATION_FAILED,
        )
    if sqlstate == "3D000" or re.search(r"database \S+ does not exist", lowered):
        return SourceError(f"{what}: {said}; check the database name{setting}", code=ErrorCode.SOURCE_NOT_FOUND)
    if "statement timeout" in lowered and sqlstate in ("57014", ""):
        return SourceUnavailable(
            f"the model query on {what} ran longer than the source's `statement_timeout` and was "
            f"cancelled: {said}; make the query faster or raise `statement_timeout`",
            code=ErrorCode.STATEMENT_TIMEOUT,
        )
    if sqlstate.startswith("08") or (not sqlstate and any(words in lowered for words in _UNREACHABLE)):
        return SourceUnavailable(
            f"cannot reach {what}: {said}; check the host and port{setting} and that the server "
            "accepts connections from this app",
            code=ErrorCode.SOURCE_UNREACHABLE,
        )
    if connecting:
        return SourceError(
            f"cannot connect to {what}: {said}; check the connection URI{setting} and the source's `options`",
            code=ErrorCode.SOURCE_CONNECTION_FAILED,
        )
    if sqlstate == "42501":
        return SourceError(
            f"permission denied on {what}: {said}; grant the user SELECT on the model's tables",
            code=ErrorCode.PERMISSION_DENIED,
        )
    if sqlstate.startswith(("42", "22", "0A", "21", "25", "2B", "3F")):
        return SourceError(
            f"the model query failed on {what}: {said}; fix the model's `sql` or `table`",
            code=ErrorCode.MODEL_QUERY_FAILED,
        )
    if sqlstate.startswith(("40", "53", "55", "57", "58", "XX")):
        return SourceUnavailable(f"{what} failed: {said}; the run will be retried")
    import adbc_driver_manager

    if isinstance(exc, adbc_driver_manager.ProgrammingError | adbc_driver_manager.NotSupportedError):
        return SourceError(
            f"the model query failed on {what}: {said}; fix the model's `sql` or `table`",
            code=ErrorCode.MODEL_QUERY_FAILED,
        )
    kind = SourceUnavailable if isinstance(exc, adbc_driver_manager.OperationalError) else SourceError
    return kind(f"{what} failed: {said}")


# --- Arrow types ----------------------------------------------------------------------------------


def _pg_numeric(field: pa.Field) -> pa.DataType | None:
    """decimal(p, s) for a PostgreSQL `numeric(p, s)` column (exact); None when unconstrained."""
    metadata = field.metadata or {}
    if metadata.get(b"POSTGRESQL:type") != b"numeric":
        return None
    try:
        typmod = int(metadata.get(b"POSTGRESQL:typmod", b"-1"))
    except ValueError:
        return None
    if typmod < 4:
        return None
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024  # PostgreSQL 15 allows negative scales
    if not 0 <= scale <= precision or precision > 76:
        return None
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def _plain(t: pa.DataType) -> pa.DataType:
    if isinstance(t, pa.BaseExtensionType):
        return _plain(t.storage_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        value = t.value_field.with_type(_plain(t.value_type))
        if pa.types.is_large_list(t):
            return pa.large_list(value)
        return pa.list_(value, t.list_size) if pa.types.is_fixed_size_list(t) else pa.list_(value)
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_plain(t.field(i).type)) for i in range(t.num_fields)])
    return t


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """The schema Filecast exports: plain Arrow types, field metadata (e.g. `POSTGRESQL:type`) kept."""
    return pa.schema([f.with_type(_pg_numeric(f) or _plain(f.type)) for f in schema], metadata=schema.metadata)


def plain_batch(batch: pa.RecordBatch, target: pa.Schema, what: str) -> pa.RecordBatch:
    if batch.schema.equals(target, check_metadata=False):
        return batch
    columns = []
    for column, field in zip(batch.columns, target, strict=True):
        if column.type != field.type:
            if isinstance(column.type, pa.BaseExtensionType):
                column = column.storage
            try:
                column = column.cast(field.type) if column.type != field.type else column
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SourceError(
                    f"column `{field.name}` of {what} holds a value that does not fit {field.type} "
                    f"({exc}); cast it in the model's SQL, e.g. to text"
                ) from None
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=target)


def result_reader(cursor: Any) -> pa.RecordBatchReader:
    """The cursor's result as a streaming reader whose errors keep the driver's details (SQLSTATE).

    `fetch_record_batch()` hands out pyarrow's own reader, whose errors are bare `OSError`s; the
    driver manager's wrapper of the same stream (`AdbcRecordBatchReader`) raises ADBC errors."""
    reader = getattr(getattr(cursor, "_results", None), "reader", None)
    return reader if isinstance(reader, pa.RecordBatchReader) else cursor.fetch_record_batch()


# --- the generic source ---------------------------------------------------------------------------


class AdbcSource:
    """A database reached through an ADBC driver, read in streaming record batches."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        what: str,
        dialect: Dialect = ANSI,
        secrets: Sequence[str] = (),
        uri_setting: str | None = None,
        setup: Sequence[str] = (),
    ):
        self.what = what
        self.dialect = dialect
        self.secrets = list(secrets)
        self.uri_setting = uri_setting
        self._cursors: list[Any] = []
        self._schemas: dict[str, pa.Schema] = {}  # a run describes its model once (engine check, segment binding)
        self.connection: Any = None
        with self._errors(connecting=True):
            self.connection = connect()
        with self._errors():
            for statement in (*dialect.setup, *setup):
                cursor = self._cursor()
                cursor.execute(statement)
                self._close_cursor(cursor)

    @contextmanager
    def _errors(self, *, connecting: bool = False) -> Iterator[None]:
        with map_adbc_errors(self.what, secrets=self.secrets, uri_setting=self.uri_setting, connecting=connecting):
            yield

    def _cursor(self) -> Any:
        cursor = self.connection.cursor()
        self._cursors.append(cursor)
        return cursor

    def _close_cursor(self, cursor: Any) -> None:
        if cursor in self._cursors:
            self._cursors.remove(cursor)
        try:
            cursor.close()
        except Exception:  # a cursor whose stream failed may refuse to close cleanly
            log.debug("closing an ADBC cursor failed", exc_info=True)

    def raw_schema(self, sql: str) -> pa.Schema:
        """The driver's schema of `sql`: described without running it where the driver can, else
        from the first batch (SQLite infers types from the rows), never by reading every row."""
        import adbc_driver_manager

        if sql in self._schemas:
            return self._schemas[sql]
        cursor = self._cursor()
        try:
            try:
                schema = cursor.adbc_execute_schema(sql)
            except adbc_driver_manager.NotSupportedError:
                cursor.execute(sql)
                schema = cursor.fetch_record_batch().schema
            self._schemas[sql] = schema
            return schema
        finally:
            self._close_cursor(cursor)

    def prepare(self, sql: str) -> str:
        """The model query as this source runs it (PostgreSQL adds casts for types Arrow lacks)."""
        return sql

    def schema(self, sql: str, where: Any = None) -> pa.Schema:
        # A segment narrows rows, never columns: the model's schema is the segment's.
        with self._errors():
            return plain_schema(self.raw_schema(self.prepare(sql)))

    def query(self, sql: str, where: Any) -> tuple[str, list[Any]]:
        """The SQL to run and its parameters: the model query, narrowed by the segment's filter."""
        prepared = self.prepare(sql)
        if where is None:
            return prepared, []
        bound = bind_where(where, plain_schema(self.raw_schema(prepared)))
        return segment_sql(prepared, bound, self.dialect)

    def stream(self, sql: str, params: list[Any]) -> pa.RecordBatchReader:
        cursor = self._cursor()
        cursor.execute(sql, parameters=params or None)
        return result_reader(cursor)

    def batches(self, sql: str, where: Any = None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        with self._errors():
            text, params = self.query(sql, where)
            reader = self.stream(text, params)
            target = plain_schema(reader.schema)

        def generate() -> Iterator[pa.RecordBatch]:
            with self._errors():
                for batch in reader:
                    yield plain_batch(batch, target, self.what)

        return target, generate()

    def close(self) -> None:
        for cursor in list(self._cursors):
            self._close_cursor(cursor)
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:
                log.debug("closing the ADBC connection of %s failed", self.what, exc_info=True)
            self.connection = None


def driver_module(name: str, source_id: str) -> Any:
    """The driver's Python package (`adbc_driver_sqlite`, …), with an install hint when missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        package = name.replace("_", "-")
        raise CatalogError(
            f"sources.{source_id}.driver: the ADBC driver `{name}` is not installed; add "
            f"`{package}` to requirements.txt"
        ) from None


def open_adbc(source: Any, uri: str | None, options: dict[str, str]) -> AdbcSource:
    """A generic ADBC source from a catalog `Source` of type `adbc` (options already resolved)."""
    import adbc_driver_manager.dbapi

    module = driver_module(source.driver, source.id)
    dialect = DIALECTS[source.dialect or DRIVER_DIALECTS.get(source.driver, "ansi")]
    where = describe_uri(uri)
    what = f"source `{source.id}` ({source.driver}{' at ' + where if where else ''})"
    secrets = secrets_of(uri) + [v for k, v in options.items() if k in source.option_settings]
    path = module._driver_path() if hasattr(module, "_driver_path") else source.driver

    def connect() -> Any:
        return adbc_driver_manager.dbapi.connect(driver=path, uri=uri, db_kwargs=options or None, autocommit=True)

    return AdbcSource(
        connect,
        what=what,
        dialect=dialect,
        secrets=secrets,
        uri_setting=source.uri_setting,
        setup=READ_ONLY_SETUP.get(source.driver, ()),
    )
