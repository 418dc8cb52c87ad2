"""The vertical slice end to end: the demo model through the CLI to Azurite and to a real FTP server.

Files are read back with DuckDB's own CSV reader (an independent parser: quoted `""` is an empty
string, an unquoted empty field is NULL) and compared row for row with the model query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from azure.storage.blob import BlobServiceClient

from devtools.services import Azurite, FtpServer
from tests.helpers import CUSTOMER_COLUMNS, cli, run_record, write_catalog

COLUMNS = CUSTOMER_COLUMNS
PASSWORDS = {"FTP_ALEX_PASSWORD": "alex-secret-pw", "FTP_READER_PASSWORD": "reader-secret-pw"}


def catalog(demo_db: Path, destination: dict[str, Any], **activation: Any) -> dict[str, Any]:
    return {
        "sources": {"warehouse": {"type": "duckdb", "database": str(demo_db)}},
        "models": {"customers": {"source": "warehouse", "table": "customers", "primary_key": ["customer_id"]}},
        "destinations": {"target": destination},
        "activations": {
            "export": {
                "model": "customers",
                "destination": "target",
                "file_name": "{YY}-{MM}-{DD}_export",
                "format": "csv",
                "csv": {"delimiter": ";"},
                **activation,
            }
        },
    }


def ftp_destination(server: FtpServer, user: str = "alex", setting: str = "FTP_ALEX_PASSWORD") -> dict[str, Any]:
    return {"type": "ftp", "host": "127.0.0.1", "port": server.port, "username": user, "password_setting": setting}


def assert_same_rows(csv_path: Path, demo_db: Path, columns: dict[str, str] = COLUMNS) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(f"ATTACH '{demo_db}' AS demo (READ_ONLY)")
    exported = con.sql(
        "SELECT * FROM read_csv(?, delim=';', header=true, quote='\"', escape='\"', allow_quoted_nulls=false, "
        "columns=?)",
        params=[str(csv_path), columns],
    )
    names = ", ".join(f'"{c}"' for c in columns)
    source = con.sql(f"SELECT {names} FROM demo.customers")
    assert exported.shape[0] == source.shape[0] == 100_000
    assert exported.except_(source).shape[0] == 0
    assert source.except_(exported).shape[0] == 0
    # Every value round-trips, NULLs and empty strings included: compare in order too.
    assert exported.to_arrow_table().equals(source.to_arrow_table())


@pytest.mark.parametrize(
    "folder, on_disk",
    [
        ("exports/daily", "home/alex/exports/daily"),  # relative to the login directory
        ("/shared/drop", "shared/drop"),  # absolute
        ("../outbox", "home/outbox"),  # relative, up one level
        (".", "home/alex"),  # the login directory itself
    ],
)
def test_ftp_export_matches_the_model(
    ftp_server: FtpServer, demo_db: Path, tmp_path: Path, folder: str, on_disk: str
) -> None:
    path = write_catalog(tmp_path / "catalog.yaml", catalog(demo_db, ftp_destination(ftp_server), folder=folder))
    result = cli("run", "export", "--catalog", str(path), "--at", "2025-04-14T06:00:00Z", env=PASSWORDS)
    record = run_record(result)
    assert result.returncode == 0, result.stderr
    assert record["status"] == "succeeded" and record["error"] is None
    assert record["rows"]["read"] == record["rows"]["exported"] == 100_000
    target = ftp_server.root / on_disk / "25-04-14_export.csv"
    [file] = record["files"]
    assert file["path"] == ("" if folder == "." else folder + "/") + "25-04-14_export.csv"
    assert file["rows"] == 100_000 and file["bytes"] == target.stat().st_size
    import hashlib

    assert file["md5"] == hashlib.md5(target.read_bytes()).hexdigest()
    assert_same_rows(target, demo_db)
    leftovers = [p.name for p in target.parent.iterdir() if "filecast-tmp" in p.name]
    assert leftovers == []
    assert "alex-secret-pw" not in result.stdout + result.stderr


def test_ftp_overwrites_an_existing_file(ftp_server: FtpServer, demo_db: Path, tmp_path: Path) -> None:
    target = ftp_server.root / "home/alex/overwrite/25-04-14_export.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("old content\n")
    path = write_catalog(tmp_path / "catalog.yaml", catalog(demo_db, ftp_destination(ftp_server), folder="overwrite"))
    result = cli("run", "export", "--catalog", str(path), "--at", "2025-04-14T06:00:00Z", env=PASSWORDS)
    assert result.returncode == 0, result.stderr
    assert_same_rows(target, demo_db)


def test_ftp_permission_denied_leaves_nothing(ftp_server: FtpServer, demo_db: Path, tmp_path: Path) -> None:
    drop = ftp_server.root / "home/reader"
    before = sorted(p.name for p in drop.rglob("*"))
    destination = ftp_destination(ftp_server, "reader", "FTP_READER_PASSWORD")
    path = write_catalog(tmp_path / "catalog.yaml", catalog(demo_db, destination, folder="."))
    result = cli("run", "export", "--catalog", str(path), "--at", "2025-04-14T06:00:00Z", env=PASSWORDS)
    record = run_record(result)
    assert result.returncode == 1
    assert record["status"] == "failed" and record["files"] == []
    assert record["error"]["code"] == "permission_denied"
    message = record["error"]["message"]
    assert message.startswith(f"permission denied to write `25-04-14_export.csv` on 127.0.0.1:{ftp_server.port}")
    assert "the FTP user `reader` needs write access to the folder and the file" in message
    assert sorted(p.name for p in drop.rglob("*")) == before
    assert "reader-secret-pw" not in result.stdout + result.stderr


def test_ftp_wrong_password_is_an_authentication_error(ftp_server: FtpServer, demo_db: Path, tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "catalog.yaml", catalog(demo_db, ftp_destination(ftp_server), folder="x"))
    result = cli("run", "export", "--catalog", str(path), env={"FTP_ALEX_PASSWORD": "not-the-password"})
    record = run_record(result)
    assert result.returncode == 1
    assert record["error"]["code"] == "authentication_failed"
    assert record["error"]["message"].startswith(f"login failed for user `alex` on 127.0.0.1:{ftp_server.port}")
    assert "check the username and app setting `FTP_ALEX_PASSWORD`" in record["error"]["message"]
    assert "not-the-password" not in result.stdout + result.stderr
    assert not (ftp_server.root / "home/alex/x").exists()


def test_azure_blob_export_matches_the_model(azurite: Azurite, demo_db: Path, tmp_path: Path) -> None:
    destination = {
        "type": "azure_blob",
        "container": "exports",
        "connection_setting": "EXPORT_STORAGE",
        "create_container": True,
    }
    path = write_catalog(
        tmp_path / "catalog.yaml",
        catalog(
            demo_db, destination, folder="customers/{YYYY}/{MM}", file_name="customers_{YYYY}{MM}{DD}T{HH}{mm}{ss}"
        ),
    )
    result = cli(
        "run",
        "export",
        "--catalog",
        str(path),
        "--at",
        "2025-04-14T06:00:00Z",
        env={"EXPORT_STORAGE": azurite.connection_string},
    )
    record = run_record(result)
    assert result.returncode == 0, result.stderr
    [file] = record["files"]
    assert file["path"] == "customers/2025/04/customers_20250414T060000.csv"
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client("exports", file["path"])
    content = blob.download_blob().readall()
    properties = blob.get_blob_properties()
    assert properties.content_settings.content_type == "text/csv; charset=utf-8"
    assert bytes(properties.content_settings.content_md5 or b"").hex() == file["md5"]
    local = tmp_path / "downloaded.csv"
    local.write_bytes(content)
    assert len(content) == file["bytes"]
    assert_same_rows(local, demo_db)


def test_azure_missing_container_is_a_clear_error(azurite: Azurite, demo_db: Path, tmp_path: Path) -> None:
    destination = {"type": "azure_blob", "container": "does-not-exist", "connection_setting": "EXPORT_STORAGE"}
    path = write_catalog(tmp_path / "catalog.yaml", catalog(demo_db, destination))
    result = cli("run", "export", "--catalog", str(path), env={"EXPORT_STORAGE": azurite.connection_string})
    record = run_record(result)
    assert result.returncode == 2  # `not_found` is bad input (core/error_codes.py): HTTP 404, exit 2
    assert record["error"]["code"] == "not_found"
    assert (
        "container `does-not-exist` of storage account `devstoreaccount1` was not found" in record["error"]["message"]
    )
    assert "AccountKey" not in result.stdout + result.stderr


def test_a_segment_that_does_not_fit_the_model_is_bad_input(azurite: Azurite, demo_db: Path, tmp_path: Path) -> None:
    doc = catalog(
        demo_db,
        {
            "type": "azure_blob",
            "container": "exports",
            "connection_setting": "EXPORT_STORAGE",
            "create_container": True,
        },
    )
    doc["segments"] = {
        "adults": {
            "model": "customers",
            "where": {
                "all": [
                    {"column": "cuntry", "op": "=", "value": "FR"},
                    {"column": "age", "op": ">=", "value": "eighteen"},
                ]
            },
        }
    }
    doc["activations"]["export"].pop("model")
    doc["activations"]["export"]["segment"] = "adults"
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = cli("run", "export", "--catalog", str(path), env={"EXPORT_STORAGE": azurite.connection_string})
    record = run_record(result)
    assert result.returncode == 2 and record["error"]["code"] == "invalid_catalog"
    message = record["error"]["message"]
    assert message.startswith("the catalog has 2 problems:\n  - segments.adults.where.all[0].column: unknown column")
    assert "segments.adults.where.all[1].value:" in message and record["files"] == []
