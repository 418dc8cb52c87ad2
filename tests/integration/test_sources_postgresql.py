"""PostgreSQL sources against a real server: exports through the CLI, types, memory, errors.

Exported files are read back with independent readers (DuckDB's CSV reader, Python's csv and json
modules, ElementTree, pyarrow.parquet) and compared with what PostgreSQL holds.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi
import duckdb
import pyarrow.parquet as pq
import pytest
from azure.storage.blob import BlobServiceClient

from core.write.formats import WRITERS
from devtools.postgres import PostgresServer
from devtools.services import Azurite, free_port
from tests.helpers import CUSTOMER_COLUMNS, REPO, cli, run_record, write_catalog

pytest_plugins = ["tests.integration.conftest_postgres"]

pytestmark = pytest.mark.integration

URI_SETTING = "CRM_POSTGRES_URI"
COLUMNS = CUSTOMER_COLUMNS
MAX_RSS_MB = 400  # the CLI child exporting 1 M rows; the CSV alone is about 160 MB


def pg_catalog(model: dict[str, Any], destination: dict[str, Any], **activation: Any) -> dict[str, Any]:
    return {
        "sources": {"crm": {"type": "postgresql", "uri_setting": URI_SETTING, "statement_timeout": "5min"}},
        "models": {"customers": {"source": "crm", **model}},
        "destinations": {"target": destination},
        "activations": {
            "export": {
                "model": "customers",
                "destination": "target",
                "file_name": "export",
                "format": "csv",
                **activation,
            }
        },
    }


def blob_destination() -> dict[str, Any]:
    return {
        "type": "azure_blob",
        "container": "pg-exports",
        "connection_setting": "EXPORT_STORAGE",
        "create_container": True,
    }


def download(azurite: Azurite, path: str) -> bytes:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    return bytes(service.get_blob_client("pg-exports", path).download_blob().readall())


def fetch_table(server: PostgresServer, sql: str) -> Any:
    with adbc_driver_postgresql.dbapi.connect(server.uri()) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetch_arrow_table()


def cli_with_rss(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """`cli()` with the child's own peak RSS in MB, from its VmHWM in /proc while it runs.

    Not from wait4's ru_maxrss: Linux carries the high-water mark of the memory a process had before
    `exec` into it, and a child forked from this (by then large) pytest process would report the
    parent's size."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "FTP_", "EXPORT_"))}
    full_env.update(env, PYTHONPATH=str(REPO))
    full_env.setdefault("FILECAST_LOCAL_SETTINGS", os.devnull)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "core", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=full_env,
            cwd=REPO,
        )
        peak_kb = 0
        while process.poll() is None:
            try:
                status_text = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                break
            for line in status_text.splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
            time.sleep(0.05)
        process.wait()
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(process.args, process.returncode, out.read().decode(), err.read().decode())
    return result, peak_kb / 1024


# --- a 1 M-row model, end to end ------------------------------------------------------------------


def test_one_million_rows_export_to_azure_with_bounded_memory(
    postgres: PostgresServer,
    pg_big_customers: str,
    azurite: Azurite,
    tmp_path: Path,
) -> None:
    doc = pg_catalog(
        {"table": pg_big_customers, "primary_key": ["customer_id"]}, blob_destination(), csv={"delimiter": ";"}
    )
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result, rss_mb = cli_with_rss(
        "run",
        "export",
        "--catalog",
        str(path),
        "--at",
        "2025-04-14T06:00:00Z",
        env={URI_SETTING: postgres.uri(), "EXPORT_STORAGE": azurite.connection_string},
    )
    record = run_record(result)
    assert result.returncode == 0, result.stderr
    assert record["rows"]["read"] == record["rows"]["exported"] == 1_000_000
    [file] = record["files"]
    local = tmp_path / "export.csv"
    local.write_bytes(download(azurite, file["path"]))
    assert local.stat().st_size == file["bytes"]
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB"
    assert postgres.password not in result.stdout + result.stderr

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    exported = con.sql(
        "SELECT * FROM read_csv(?, delim=';', header=true, quote='\"', escape='\"', allow_quoted_nulls=false, "
        "columns=?)",
        params=[str(local), COLUMNS],
    )
    names = ", ".join(f"{c}::text AS {c}" if c == "lifetime_value" else c for c in COLUMNS)
    con.register("pg_rows", fetch_table(postgres, f"SELECT {names} FROM {pg_big_customers}"))
    source = con.sql("SELECT * REPLACE (lifetime_value::DECIMAL(12,2) AS lifetime_value) FROM pg_rows")
    assert exported.shape[0] == source.shape[0] == 1_000_000
    assert exported.except_(source).shape[0] == 0
    assert source.except_(exported).shape[0] == 0
    # NULLs and empty strings stay apart (CSV: unquoted empty = NULL, "" = empty string)
    assert exported.filter("notes IS NULL").shape[0] == 200_000
    assert exported.filter("notes = ''").shape[0] == 400_000


# --- every type PostgreSQL gives -------------------------------------------------------------------

TYPED_TABLE = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE typed_ids;
CREATE TABLE typed (
    id int4 PRIMARY KEY, small int2, big int8, real4 float4, double8 float8, amount numeric(12, 2),
    exact numeric, flag bool, note text, code varchar(10), padded char(4), day date, at timestamptz,
    local_at timestamp, clock time, doc jsonb, plain_json json, tags text[], scores int4[], uid uuid,
    raw bytea, span interval, ip inet, cash money, feeling mood
);
INSERT INTO typed VALUES
 (1, -32768, 9007199254740993, 1.5, 0.1, 12345.67, 123456789012345678901234567890.123456789, true,
  E'héllo, "wörld"\\n日本 ✓ ; tab\\there', 'abc', 'ab', '2024-02-29', '2024-02-29 23:59:59.123456+00',
  '2024-02-29 23:59:59', '12:34:56.5', '{"a": [1, "é"], "b": null}', '{"x":1}', ARRAY['a', 'b,c', 'd"e', NULL],
  ARRAY[1, NULL, 3], 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '1 day 02:03:04', '192.168.0.1',
  12.5, 'happy'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{}', NULL,
  NULL, '\\x', NULL, NULL, NULL, NULL);
"""

# Row 1 as a reader should see it, written out by hand (strings exactly as exported).
EXPECTED: dict[str, Any] = {
    "id": 1,
    "small": -32768,
    "big": 9007199254740993,
    "real4": 1.5,
    "double8": 0.1,
    "amount": Decimal("12345.67"),
    "exact": "123456789012345678901234567890.123456789",
    "flag": True,
    "note": 'héllo, "wörld"\n日本 ✓ ; tab\there',
    "code": "abc",
    "padded": "ab  ",
    "day": "2024-02-29",
    "at": "2024-02-29T23:59:59.123456Z",
    "local_at": "2024-02-29T23:59:59.000000",
    "clock": "12:34:56.500000",
    "doc": '{"a": [1, "é"], "b": null}',
    "plain_json": '{"x":1}',
    "tags": ["a", "b,c", 'd"e', None],
    "scores": [1, None, 3],
    "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "raw": base64.b64encode(b"\x00\xff\x10"),
    "span": "P1DT2H3M4S",
    "ip": "192.168.0.1/32",
    "cash": "12.50",
    "feeling": "happy",
}


@pytest.fixture(scope="module")
def typed_table(postgres: PostgresServer) -> str:
    postgres.execute(*[s for s in TYPED_TABLE.split(";\n") if s.strip()])
    return "typed"


def _same(field: str, got: Any, want: Any) -> None:
    if isinstance(want, bytes):
        want = want.decode()
    if isinstance(want, float):
        assert float(got) == want, field
    elif isinstance(want, Decimal):
        assert Decimal(str(got)) == want, field
    elif isinstance(want, bool):
        assert got in (want, str(want).lower()), field
    elif isinstance(want, int):
        assert int(got) == want, field
    elif isinstance(want, list):
        assert (json.loads(got) if isinstance(got, str) else list(got)) == want, field
    else:
        assert got == want, field


def test_types_in_csv(postgres: PostgresServer, typed_table: str, azurite: Azurite, tmp_path: Path) -> None:
    doc = pg_catalog({"sql": f"select * from {typed_table} order by id"}, blob_destination(), file_name="typed")
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = cli(
        "run",
        "export",
        "--catalog",
        str(path),
        env={URI_SETTING: postgres.uri(), "EXPORT_STORAGE": azurite.connection_string},
    )
    record = run_record(result)
    assert result.returncode == 0, result.stderr
    text = download(azurite, record["files"][0]["path"]).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(rows[0]) == list(EXPECTED)
    for name, want in EXPECTED.items():
        _same(name, rows[0][name], want)
    # Row 2: NULL is an empty unquoted field, the empty string is "", an empty array "[]" and empty bytes "".
    assert text.splitlines()[-1] == '2,,,,,,,,"",,,,,,,,,"[]",,,"",,,,'


def _read(fmt: str, content: bytes) -> list[dict[str, Any]]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(content.decode(), newline="")))
    if fmt == "json":
        return list(json.loads(content))
    if fmt == "ndjson":
        return [json.loads(line) for line in content.decode().splitlines() if line]
    if fmt == "xml":
        root = ET.fromstring(content)
        return [
            {
                child.tag: (
                    [None if item.get("nil") else item.text for item in child] if len(child) else (child.text or "")
                )
                for child in row
            }
            for row in root
        ]
    assert fmt == "parquet"
    return list(pq.read_table(io.BytesIO(content)).to_pylist())


def _normalised(fmt: str, name: str, value: Any) -> Any:
    """Typed formats (Parquet) give Python objects; bring them to the exported text forms."""
    if fmt == "xml" and name in ("tags", "scores"):
        return value if name == "tags" else [None if v is None else int(v) for v in value]
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if value.tzinfo
            else value.strftime("%Y-%m-%dT%H:%M:%S.%f")
        )
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "isoformat") and name == "clock":
        return value.strftime("%H:%M:%S.%f")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if fmt == "xml" and name == "flag":
        return value == "true"
    return value


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_types_in_every_format(
    postgres: PostgresServer, typed_table: str, azurite: Azurite, tmp_path: Path, fmt: str
) -> None:
    doc = pg_catalog(
        {"sql": f"select * from {typed_table} where id = 1"}, blob_destination(), file_name=f"typed-{fmt}", format=fmt
    )
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = cli(
        "run",
        "export",
        "--catalog",
        str(path),
        env={URI_SETTING: postgres.uri(), "EXPORT_STORAGE": azurite.connection_string},
    )
    record = run_record(result)
    assert result.returncode == 0, result.stderr
    [row] = _read(fmt, download(azurite, record["files"][0]["path"]))
    for name, want in EXPECTED.items():
        _same(f"{fmt}: {name}", _normalised(fmt, name, row[name]), want)


# --- errors ---------------------------------------------------------------------------------------


def _run_expecting_failure(tmp_path: Path, model: dict[str, Any], uri: str) -> dict[str, Any]:
    path = write_catalog(tmp_path / "catalog.yaml", pg_catalog(model, blob_destination()))
    result = cli(
        "run", "export", "--catalog", str(path), env={URI_SETTING: uri, "EXPORT_STORAGE": "UseDevelopmentStorage=true"}
    )
    record = run_record(result)
    assert result.returncode == 1, result.stderr
    assert record["status"] == "failed"
    for secret in ("wrong-password-123", PostgresServer.password):
        assert secret not in result.stdout + result.stderr
    return dict(record["error"])


def test_wrong_password_is_an_authentication_error(postgres: PostgresServer, tmp_path: Path) -> None:
    error = _run_expecting_failure(tmp_path, {"table": "typed"}, postgres.uri(password="wrong-password-123"))
    assert error == {
        "code": "authentication_failed",
        "message": f"authentication failed on PostgreSQL source `crm` (127.0.0.1:{postgres.port}/filecast): "
        f'connection to server at "127.0.0.1", port {postgres.port} failed: password authentication '
        f'failed for user "filecast"; check the user and password in the app setting `{URI_SETTING}`',
    }


def test_unknown_table_quotes_the_server(postgres: PostgresServer, tmp_path: Path) -> None:
    error = _run_expecting_failure(tmp_path, {"sql": "select * from custmers"}, postgres.uri())
    assert error == {
        "code": "model_query_failed",
        "message": f"the model query failed on PostgreSQL source `crm` (127.0.0.1:{postgres.port}/filecast): "
        'relation "custmers" does not exist; fix the model\'s `sql` or `table`',
    }


def test_unknown_column_quotes_the_server(postgres: PostgresServer, typed_table: str, tmp_path: Path) -> None:
    error = _run_expecting_failure(tmp_path, {"sql": "select nme from typed"}, postgres.uri())
    assert error["code"] == "model_query_failed"
    assert 'column "nme" does not exist' in error["message"]


def test_unreachable_host_is_transient(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    error = _run_expecting_failure(
        tmp_path, {"table": "typed"}, f"postgresql://filecast:wrong-password-123@127.0.0.1:{port}/filecast"
    )
    assert error["code"] == "source_unreachable"
    assert error["message"].startswith(
        f"cannot reach PostgreSQL source `crm` (127.0.0.1:{port}/filecast): "
        f'connection to server at "127.0.0.1", port {port} failed: Connection refused'
    )
    assert error["message"].endswith(
        f"check the host and port in the app setting `{URI_SETTING}` and that the "
        "server accepts connections from this app"
    )


def test_statement_timeout_is_reported(postgres: PostgresServer, tmp_path: Path) -> None:
    from core.errors import SourceError
    from core.read.sources.postgresql import PostgresSource

    source = PostgresSource(postgres.uri(), source_id="crm", statement_timeout=0.2)
    try:
        with pytest.raises(SourceError) as caught:
            _, batches = source.batches("select pg_sleep(2) as slept")
            list(batches)
    finally:
        source.close()
    assert caught.value.code == "statement_timeout" and caught.value.transient
    assert caught.value.message == (
        f"the model query on PostgreSQL source `crm` (127.0.0.1:{postgres.port}/filecast) ran longer than the "
        "source's `statement_timeout` and was cancelled: canceling statement due to statement timeout; make the "
        "query faster or raise `statement_timeout`"
    )


def test_sessions_are_read_only(postgres: PostgresServer, typed_table: str) -> None:
    from core.errors import SourceError
    from core.read.sources.postgresql import PostgresSource

    source = PostgresSource(postgres.uri(), source_id="crm")
    try:
        with pytest.raises(SourceError, match=r"cannot execute nextval\(\) in a read-only transaction") as caught:
            _, batches = source.batches("select nextval('typed_ids') as next_id")
            list(batches)
    finally:
        source.close()
    assert caught.value.code == "model_query_failed" and not caught.value.transient
    assert fetch_table(postgres, "select last_value from typed_ids").column(0)[0].as_py() == 1


def test_schema_without_reading_rows(postgres: PostgresServer, pg_big_customers: str) -> None:
    from core.read.sources.postgresql import PostgresSource

    source = PostgresSource(postgres.uri(), source_id="crm")
    try:
        # pg_sleep per row would take hours if the rows were read
        schema = source.schema(f"select *, pg_sleep(1) as pause from {pg_big_customers}")
    finally:
        source.close()
    assert schema.names == [*COLUMNS, "pause"]
    assert str(schema.field("lifetime_value").type) == "decimal128(12, 2)"
    assert str(schema.field("last_seen_at").type) == "timestamp[us, tz=UTC]"


# --- validate --probe -----------------------------------------------------------------------------


def test_probe_checks_columns_keys_and_segments(postgres: PostgresServer, pg_customers: str, tmp_path: Path) -> None:
    doc = pg_catalog(
        {"table": pg_customers, "primary_key": ["customer_idd"]},
        blob_destination(),
        mapping=[{"from": "emial", "to": "mail"}],
    )
    doc["models"]["broken"] = {"source": "crm", "sql": "select * from nowhere"}
    doc["segments"] = {
        "adults": {
            "model": "customers",
            "where": {
                "all": [
                    {"column": "cuntry", "op": "=", "value": "FR"},
                    {"column": "age", "op": ">=", "value": "abc"},
                    {"column": "signup_date", "op": "between", "value": ["2020-01-01", "2020-13-01"]},
                ]
            },
        }
    }
    doc["activations"]["segmented"] = {**doc["activations"]["export"], "model": None, "segment": "adults"}
    del doc["activations"]["segmented"]["model"]
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = cli("validate", str(path), "--probe", env={URI_SETTING: postgres.uri()})
    assert result.returncode == 2, result.stderr
    columns = ", ".join(COLUMNS)
    port = postgres.port
    assert result.stderr.splitlines()[1:] == [
        f"  - models.broken: the model query failed on PostgreSQL source `crm` (127.0.0.1:{port}/filecast): "
        'relation "nowhere" does not exist; fix the model\'s `sql` or `table`',
        f'  - models.customers.primary_key: unknown column "customer_idd"; columns are: {columns}',
        f'  - segments.adults.where.all[0].column: unknown column "cuntry"; columns are: {columns}',
        '  - segments.adults.where.all[1].value: "abc" is not a number for column age (int16)',
        '  - segments.adults.where.all[2].value[1]: "2020-13-01" is not a date (YYYY-MM-DD) for column '
        "signup_date (date32[day])",
        f'  - activations.export.mapping[0].from: unknown column "emial"; columns are: {columns}',
        f'  - activations.segmented.mapping[0].from: unknown column "emial"; columns are: {columns}',
    ]


@pytest.mark.parametrize("where", [None, {"column": "id", "op": "=", "value": 1}])
def test_model_sql_may_end_with_a_comment(postgres: PostgresServer, typed_table: str, where: Any) -> None:
    from core.read.sources.postgresql import PostgresSource

    source = PostgresSource(postgres.uri(), source_id="crm")
    try:
        _, batches = source.batches(f"select id, uid from {typed_table} where id = 1 -- only the first", where)
        rows = [row for batch in batches for row in batch.to_pylist()]
    finally:
        source.close()
    assert rows == [{"id": 1, "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}]
