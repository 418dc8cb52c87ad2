"""The generic `adbc` source: any ADBC driver module, here SQLite (`adbc-driver-sqlite`), through
the same code path Snowflake, BigQuery or Flight SQL would take; and PostgreSQL named that way."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from core.catalog.parse import parse_catalog
from core.errors import SourceError
from core.read.sources import open_source
from core.settings import Settings
from devtools.postgres import PostgresServer
from devtools.services import Azurite
from tests.helpers import cli, run_record, write_catalog

pytest_plugins = ["tests.integration.conftest_postgres"]

pytestmark = pytest.mark.integration

ROWS = 20_000


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written with Python's own sqlite3 module, independent of the ADBC driver under test."""
    path = tmp_path_factory.mktemp("sqlite") / "shop.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, note TEXT)")
        con.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            [
                (
                    i,
                    ["Zoé", "O'Brien", 'Chloé "Coco"', "Li, Jr."][i % 4],
                    round(i * 1.25, 2),
                    None if i % 5 == 0 else ("" if i % 5 == 1 else f"line one\nline {i}"),
                )
                for i in range(1, ROWS + 1)
            ],
        )
    return path


def catalog(where: dict[str, Any] | None = None, **source: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "sources": {"shop": {"type": "adbc", "driver": "adbc_driver_sqlite", "uri_setting": "SHOP_DB", **source}},
        "models": {"orders": {"source": "shop", "sql": "select * from orders order by id", "primary_key": ["id"]}},
        "destinations": {
            "lake": {
                "type": "azure_blob",
                "container": "adbc-exports",
                "connection_setting": "EXPORT_STORAGE",
                "create_container": True,
            }
        },
        "activations": {"export": {"model": "orders", "destination": "lake", "file_name": "orders", "format": "csv"}},
    }
    if where is not None:
        doc["segments"] = {"big": {"model": "orders", "where": where}}
        doc["activations"]["export"] = {**doc["activations"]["export"], "segment": "big"}
        del doc["activations"]["export"]["model"]
    return doc


def export(azurite: Azurite, tmp_path: Path, doc: dict[str, Any], db: Path) -> list[dict[str, str]]:
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = cli(
        "run",
        "export",
        "--catalog",
        str(path),
        env={"SHOP_DB": f"file:{db}", "EXPORT_STORAGE": azurite.connection_string},
    )
    assert result.returncode == 0, result.stderr
    record = run_record(result)
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        "adbc-exports", record["files"][0]["path"]
    )
    return list(csv.DictReader(io.StringIO(blob.download_blob().readall().decode(), newline="")))


def expected(db: Path, where: str = "1") -> list[dict[str, Any]]:
    with sqlite3.connect(db) as con:
        rows = con.execute(f"SELECT id, customer, total, note FROM orders WHERE {where} ORDER BY id").fetchall()
    return [{"id": str(i), "customer": c, "total": float(t), "note": "" if n is None else n} for i, c, t, n in rows]


def typed(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{**row, "total": float(row["total"])} for row in rows]


def test_sqlite_model_export(sqlite_db: Path, azurite: Azurite, tmp_path: Path) -> None:
    assert typed(export(azurite, tmp_path, catalog(), sqlite_db)) == expected(sqlite_db)


def test_sqlite_segment_export(sqlite_db: Path, azurite: Azurite, tmp_path: Path) -> None:
    text: dict[str, Any] = {"column": "note", "op": "contains", "value": "LINE"}
    where = {
        "all": [
            {"column": "total", "op": ">=", "value": 100},
            {"column": "customer", "op": "in", "value": ["O'Brien", "Li, Jr."]},
            text,
        ]
    }
    # LIKE in SQLite ignores case unless told otherwise: Filecast turns case_sensitive_like on.
    assert export(azurite, tmp_path, catalog(where), sqlite_db) == []
    text["value"] = "line"
    assert typed(export(azurite, tmp_path, catalog(where), sqlite_db)) == expected(
        sqlite_db, "total >= 100 AND customer IN ('O''Brien', 'Li, Jr.') AND instr(note, 'line') > 0"
    )


def test_a_missing_driver_is_a_catalog_error(sqlite_db: Path, azurite: Azurite, tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "catalog.yaml", catalog(driver="adbc_driver_nosuch"))
    result = cli(
        "run",
        "export",
        "--catalog",
        str(path),
        env={"SHOP_DB": f"file:{sqlite_db}", "EXPORT_STORAGE": azurite.connection_string},
    )
    assert result.returncode == 2
    assert run_record(result)["error"] == {
        "code": "invalid_catalog",
        "message": "sources.shop.driver: the ADBC driver `adbc_driver_nosuch` is not installed; add "
        "`adbc-driver-nosuch` to requirements.txt",
    }


def test_secret_options_come_from_app_settings_and_stay_out_of_messages(sqlite_db: Path) -> None:
    doc = catalog(option_settings={"adbc.sqlite.no_such_option": "SHOP_TOKEN"})
    source_config = parse_catalog(doc).sources["shop"]
    with pytest.raises(SourceError) as caught:
        open_source(source_config, Settings({"SHOP_DB": f"file:{sqlite_db}", "SHOP_TOKEN": "tok-very-secret"}))
    assert caught.value.message == (
        "cannot connect to source `shop` (adbc_driver_sqlite): Unknown database option "
        "adbc.sqlite.no_such_option='***'; check the connection URI in the app setting `SHOP_DB` and the source's "
        "`options`"
    )
    assert caught.value.code == "source_connection_failed" and not caught.value.transient


def test_postgresql_through_the_generic_type(postgres: PostgresServer, pg_customers: str) -> None:
    doc = {"sources": {"crm": {"type": "adbc", "driver": "adbc_driver_postgresql", "uri_setting": "CRM"}}}
    source = open_source(parse_catalog(doc).sources["crm"], Settings({"CRM": postgres.uri()}))
    try:
        _, batches = source.batches(
            f"select customer_id from {pg_customers}", {"column": "customer_id", "op": "between", "value": [10, 19]}
        )
        ids = [i for batch in batches for i in batch.column(0).to_pylist()]
    finally:
        source.close()
    assert sorted(ids) == list(range(10, 20))
