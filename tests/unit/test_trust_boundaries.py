"""Hostile catalogs and awkward data (issue 14, DESIGN.md §6 "Trust boundaries"): each case of the
issue gives a clear error before anything is published, or a file every reader reads back exactly.

Runs go through the real engine with an in-memory destination; sources are real DuckDB and SQLite
(ADBC) databases in a temp folder.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from lxml import etree

from core.catalog.limits import MAX_CATALOG_BYTES
from core.catalog.parse import parse_catalog, parse_text
from core.control import api
from core.destinations.memory import MemoryDestination
from core.errors import CatalogError, CatalogInvalid, SettingError
from core.run.engine import Run
from core.run.records import RunRecord
from core.settings import Settings
from core.write import naming
from core.write.formats import WRITERS
from tests.helpers import cli, write_catalog

BLOB = {"type": "azure_blob", "container": "exports", "connection_setting": "EXPORT_STORAGE"}
FTP = {"type": "ftp", "host": "127.0.0.1", "username": "u", "password_setting": "FTP_PW"}


def catalog_doc(
    source: dict[str, Any],
    sql: str,
    *,
    fmt: str = "csv",
    destination: dict[str, Any] | None = None,
    key: list[str] | None = None,
    **activation: Any,
) -> dict[str, Any]:
    return {
        "sources": {"db": source},
        "models": {"m": {"source": "db", "sql": sql, **({"primary_key": key} if key else {})}},
        "destinations": {"out": destination or BLOB},
        "activations": {"a": {"model": "m", "destination": "out", "file_name": "x", "format": fmt, **activation}},
    }


def run(doc: dict[str, Any], base: Path, settings: dict[str, str] | None = None) -> tuple[Any, MemoryDestination]:
    catalog = parse_catalog(doc, base)
    destination = MemoryDestination()
    record = RunRecord("r1", "a", "manual", datetime(2025, 4, 14, 6, tzinfo=UTC))
    result = asyncio.run(
        Run(catalog, "a", Settings(settings or {}), record, destination=destination, retries=0).execute()
    )
    return result, destination


def duck(tmp_path: Path, sql: str = "CREATE TABLE t AS SELECT 1 AS id") -> Path:
    path = tmp_path / "db.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(sql)
    return path


def problems(doc: dict[str, Any]) -> list[str]:
    try:
        parse_catalog(doc, Path("/tmp"))
    except CatalogInvalid as exc:
        return [str(p) for p in exc.problems]
    return []


# ------------------------------------------------------------------ 1. setting names


@pytest.fixture(autouse=True)
def _no_local_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILECAST_LOCAL_SETTINGS", "/nonexistent/local.settings.json")
    monkeypatch.delenv("FILECAST_ALLOWED_SETTINGS", raising=False)


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("AzureWebJobsStorage", "AzureWebJobs*"),
        ("AzureWebJobsStorage__accountName", "AzureWebJobs*"),
        ("APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_*"),
        ("WEBSITE_AUTH_ENCRYPTION_KEY", "WEBSITE_*"),
        ("FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_*"),
        ("AZURE_CLIENT_SECRET", "AZURE_*"),
        ("IDENTITY_HEADER", "IDENTITY_*"),
        ("MSI_SECRET", "MSI_*"),
        ("FILECAST_TABLE_PREFIX", "FILECAST_*"),
        ("azurewebjobsstorage", "AzureWebJobs*"),
    ],
)
def test_the_hosts_own_settings_are_refused(name: str, pattern: str) -> None:
    doc = catalog_doc(
        {"type": "duckdb", "database": "x.duckdb"}, "SELECT 1", destination={**FTP, "password_setting": name}
    )
    assert problems(doc) == [
        f"destinations.out.password_setting: `{name}` is one of the host's or Filecast's own settings (`{pattern}`), "
        "which a catalog may never name; store the secret in a setting of its own, e.g. `PARTNER_FTP_PASSWORD`"
    ]


def test_the_allowlist_admits_only_its_names_and_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILECAST_ALLOWED_SETTINGS", "PARTNER_*, EXPORT_STORAGE")
    doc = catalog_doc(
        {"type": "postgresql", "uri_setting": "CRM_URI"},
        "SELECT 1",
        destination={**FTP, "password_setting": "PARTNER_FTP_PASSWORD"},
    )
    assert problems(doc) == [
        "sources.db.uri_setting: `CRM_URI` is not among the settings the operator allows (`FILECAST_ALLOWED_SETTINGS`: "
        "PARTNER_*, EXPORT_STORAGE); add `CRM_URI` to FILECAST_ALLOWED_SETTINGS (the templates fill it from "
        "keyVaultSecretSettings / key_vault_secret_settings)"
    ]
    adbc = {"type": "adbc", "driver": "adbc_driver_sqlite", "option_settings": {"token": "OTHER"}}
    assert problems(catalog_doc(adbc, "SELECT 1"))[0].startswith(
        "sources.db.option_settings.token: `OTHER` is not among the settings the operator allows"
    )
    monkeypatch.setenv("FILECAST_ALLOWED_SETTINGS", "")
    assert problems(catalog_doc({"type": "duckdb", "database": "x"}, "SELECT 1")) == [
        "destinations.out.connection_setting: `EXPORT_STORAGE` is not allowed: `FILECAST_ALLOWED_SETTINGS` is set and "
        "empty, so a catalog may name no setting; add `EXPORT_STORAGE` to it (the templates fill it from "
        "keyVaultSecretSettings / key_vault_secret_settings)"
    ]


def test_resolution_refuses_them_too_whatever_validated_the_catalog() -> None:
    settings = Settings(
        {
            "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0",
            "FILECAST_ALLOWED_SETTINGS": "PARTNER_*",
            "OTHER": "x",
            "PARTNER_PW": "pw",
        }
    )
    with pytest.raises(SettingError) as caught:
        settings.secret("AzureWebJobsStorage", purpose="FTP password of out")
    assert caught.value.code == "refused_setting" and "c2VjcmV0" not in caught.value.message
    assert caught.value.message.startswith("app setting `AzureWebJobsStorage` is one of the host's")
    with pytest.raises(SettingError, match="`OTHER` is not among the settings the operator allows"):
        settings.secret("OTHER", purpose="x")
    assert settings.secret("PARTNER_PW", purpose="x") == "pw"


# ------------------------------------------------------------------ 2. sources can't read the machine


def test_duckdb_model_cannot_read_the_environment_or_files(tmp_path: Path) -> None:
    db = duck(tmp_path)
    (tmp_path / "secret.csv").write_text("token\nhunter2\n")
    for sql in (
        "SELECT content FROM read_text('/proc/self/environ')",
        f"SELECT * FROM read_csv('{tmp_path}/secret.csv')",
        f"SELECT * FROM read_text('{tmp_path}/secret.csv')",
    ):
        result, destination = run(catalog_doc({"type": "duckdb", "database": str(db)}, sql), tmp_path)
        assert result.record.error["code"] == "file_access_denied", sql
        assert "set `allow_file_access: true` on the source if its SQL is trusted" in result.record.error["message"]
        assert destination.files == {}


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET enable_external_access",
    ],
)
def test_duckdb_model_cannot_turn_file_access_back_on(tmp_path: Path, sql: str) -> None:
    from core.errors import SourceError
    from core.read.sources.duckdb import DuckDBSource

    source = DuckDBSource(duck(tmp_path))
    try:
        with pytest.raises(SourceError, match="the configuration has been locked"):
            source.batches(sql)
        with pytest.raises(SourceError, match="Cannot access file"):
            source.batches(f"ATTACH '{tmp_path}/other.duckdb' AS other")
        assert [b.to_pylist() for b in source.batches("SELECT id FROM t")[1]] == [[{"id": 1}]]
    finally:
        source.close()


def test_a_second_source_on_the_same_file_shares_the_locked_instance(tmp_path: Path) -> None:
    """Connections to one file share one DuckDB instance: the second finds it locked and reads."""
    from core.errors import SourceError
    from core.read.sources.duckdb import DuckDBSource

    db = duck(tmp_path)
    first = DuckDBSource(db)
    try:
        second = DuckDBSource(db)
        assert [b.to_pylist() for b in second.batches("SELECT id FROM t")[1]] == [[{"id": 1}]]
        with pytest.raises(SourceError, match="Cannot access file"):
            second.batches("SELECT * FROM read_text('/proc/self/environ')")
        second.close()
        with pytest.raises(SourceError, match="is already open without file access in this process"):
            DuckDBSource(db, allow_file_access=True)
    finally:
        first.close()


def test_allow_file_access_turns_it_on_explicitly(tmp_path: Path) -> None:
    db = duck(tmp_path)
    (tmp_path / "rates.csv").write_text("code,rate\nEUR,1.5\n")
    doc = catalog_doc(
        {"type": "duckdb", "database": str(db), "allow_file_access": True},
        f"SELECT * FROM read_csv('{tmp_path}/rates.csv')",
    )
    result, destination = run(doc, tmp_path, {"EXPORT_STORAGE": "x"})
    assert result.exception is None, result.record.error
    assert destination.files["x.csv"] == b'"code","rate"\n"EUR",1.5\n'
    bad = catalog_doc({"type": "duckdb", "database": "db", "allow_file_access": "yes"}, "SELECT 1")
    assert problems(bad) == ["sources.db.allow_file_access: must be true or false, got `yes`"]


def test_sqlite_sessions_are_read_only(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        con.execute("INSERT INTO t VALUES (1)")
    doc = catalog_doc(
        {"type": "adbc", "driver": "adbc_driver_sqlite", "uri_setting": "DB"}, "DELETE FROM t RETURNING id"
    )
    result, _ = run(doc, tmp_path, {"DB": f"file:{path}"})
    assert "attempt to write a readonly database" in result.record.error["message"]
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)


# ------------------------------------------------------------------ 3. templates and rendered names


@pytest.mark.parametrize(
    "field, template, written",
    [
        ("folder", "{activation:.<2.0}/victim", "{activation:.<2.0}"),
        ("file_name", "{YYYY!r}", "{YYYY!r}"),
        ("file_name", "{YYYY:>300}", "{YYYY:>300}"),
        ("folder", "out/{MM!s:>9}", "{MM!s:>9}"),
    ],
)
def test_templates_take_no_format_spec_or_conversion(field: str, template: str, written: str) -> None:
    fields: dict[str, Any] = {field: template}
    doc = catalog_doc({"type": "duckdb", "database": "x"}, "SELECT 1", **fields)
    name = written[1:].split("!")[0].split(":")[0]
    assert problems(doc) == [
        f"activations.a.{field}: `{written}` has a format spec or conversion, which "
        f"placeholders do not take; write `{{{name}}}`"
    ]


def test_rendered_names_are_checked_so_rendering_cannot_escape() -> None:
    """Validation is bypassed on purpose (a crafted activation id); the rendered name is refused."""
    context = naming.NameContext(datetime(2025, 1, 1, tzinfo=UTC), "..", "r")
    with pytest.raises(
        CatalogError,
        match=r"the file name `\.\./x\.csv` rendered from `\{activation\}/x` a blob name "
        r"cannot start with `/` or have empty, `\.` or `\.\.` segments: fix `folder` and `file_name`",
    ):
        naming.file_name("x", "{activation}", context, extension="csv", destination_type="azure_blob")
    with pytest.raises(CatalogError, match=r"`\{activation\}` renders `a/b.csv`, which is not a file name"):
        naming.file_name("{activation}", "", naming.NameContext(context.logical_time, "a/b", "r"), extension="csv")
    bidi = naming.NameContext(context.logical_time, "inv\u202egpj.exe", "r")
    with pytest.raises(CatalogError, match="control characters, bidirectional overrides"):
        naming.file_name("{activation}", "", bidi, extension="csv", destination_type="ftp")
    long = naming.NameContext(context.logical_time, "a" * 1100, "r")
    with pytest.raises(CatalogError, match="over Azure's 1024-character blob name limit"):
        naming.file_name("x", "{activation}", long, extension="csv", destination_type="azure_blob")
    with pytest.raises(CatalogError, match="has a name over 255 bytes"):
        naming.file_name("{activation}", "", long, extension="csv", destination_type="ftp")
    assert naming.file_name("x", "../up", context, extension="csv", destination_type="ftp") == "../up/x.csv"


@pytest.mark.parametrize("folder", ["/abs", "a//b/../c", "a\u202eb"])
def test_blob_folders_that_would_escape_are_validation_problems(folder: str) -> None:
    assert problems(catalog_doc({"type": "duckdb", "database": "x"}, "SELECT 1", folder=folder))


# ------------------------------------------------------------------ 4. valid UTF-8


def sqlite_people(tmp_path: Path) -> Path:
    path = tmp_path / "people.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute(
            "INSERT INTO people VALUES (1, 'ok'), (2, CAST(X'61FF62' AS TEXT)), (3, CAST(X'61EDA08062' AS TEXT))"
        )  # a stray 0xFF byte; a lone surrogate (U+D800)
    return path


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_invalid_utf8_from_a_source_fails_the_run_naming_column_and_key(tmp_path: Path, fmt: str) -> None:
    path = sqlite_people(tmp_path)
    doc = catalog_doc(
        {"type": "adbc", "driver": "adbc_driver_sqlite", "uri_setting": "DB"},
        "SELECT id, name FROM people ORDER BY id",
        fmt=fmt,
        key=["id"],
    )
    result, destination = run(doc, tmp_path, {"DB": f"file:{path}", "EXPORT_STORAGE": "x"})
    assert result.record.error == {
        "code": "invalid_text",
        "message": "column `name` holds text that is not valid UTF-8 at the row with key id=2; nothing was published; "
        "set `on_invalid_text: replace` on the activation to write U+FFFD instead, or fix the data",
    }
    assert destination.files == {}


def test_invalid_utf8_replaced_on_request_with_a_warning(tmp_path: Path) -> None:
    path = sqlite_people(tmp_path)
    doc = catalog_doc(
        {"type": "adbc", "driver": "adbc_driver_sqlite", "uri_setting": "DB"},
        "SELECT id, name FROM people ORDER BY id",
        fmt="xml",
        on_invalid_text="replace",
    )
    result, destination = run(doc, tmp_path, {"DB": f"file:{path}", "EXPORT_STORAGE": "x"})
    assert result.exception is None, result.record.error
    rows = etree.fromstring(destination.files["x.xml"])
    assert [row.findtext("name") for row in rows] == ["ok", "a\ufffdb", "a\ufffd\ufffd\ufffdb"]
    assert result.record.warnings == [
        {
            "code": "invalid_text",
            "message": "2 values held text that is not valid "
            "UTF-8 and were written with U+FFFD (on_invalid_text: replace): `name` 2",
        }
    ]


def test_xml_replacements_are_warnings_on_the_record(tmp_path: Path) -> None:
    db = duck(tmp_path)
    doc = catalog_doc(
        {"type": "duckdb", "database": str(db)},
        "SELECT 'a' || chr(0) || 'b' AS v UNION ALL SELECT 'c' || chr(7)",
        fmt="xml",
    )
    result, destination = run(doc, tmp_path, {"EXPORT_STORAGE": "x"})
    assert result.exception is None
    assert sorted(v.findtext("v") for v in etree.fromstring(destination.files["x.xml"])) == ["a\ufffdb", "c\ufffd"]
    assert result.record.warnings == [
        {
            "code": "xml_replaced_characters",
            "message": "2 values held characters XML "
            "1.0 cannot carry (NUL and other control characters, U+FFFE, U+FFFF); they "
            "were written as U+FFFD (file 1 of this output)",
        }
    ]


# ------------------------------------------------------------------ 5. plain decimals, ISO durations

DECIMALS_SQL = """
SELECT * FROM (VALUES
  (1, 0.0000000001::DECIMAL(38,10), 0.0000005::DECIMAL(18,8), INTERVAL 1 MICROSECOND),
  (2, 0::DECIMAL(38,10), -0.0000005::DECIMAL(18,8), -INTERVAL 1500 MILLISECOND),
  (3, 1234567890123456789012345678.0123456789::DECIMAL(38,10), NULL, NULL)) AS t(id, d, e, span)
"""


def test_decimals_are_positional_with_the_columns_scale_everywhere(tmp_path: Path) -> None:
    relation = duckdb.sql(
        DECIMALS_SQL.replace("INTERVAL 1 MICROSECOND", "NULL").replace("-INTERVAL 1500 MILLISECOND", "NULL")
    )
    assert relation is not None
    table = relation.select("id, d, e").to_arrow_table()
    span = pa.array([1_000, -1_500_000_000, None], pa.duration("ns"))
    table = table.append_column("span", span)

    def encode(fmt: str, **options: Any) -> str:
        writer = WRITERS[fmt](table.schema, options)
        return (writer.begin() + b"".join(writer.write(b) for b in table.to_batches()) + writer.end()).decode()

    assert encode("csv") == (
        '"id","d","e","span"\n1,0.0000000001,0.00000050,"PT0.000001000S"\n'
        '2,0.0000000000,-0.00000050,"-PT1.500000000S"\n'
        "3,1234567890123456789012345678.0123456789,,\n"
    )
    assert encode("ndjson").splitlines() == [
        '{"id":1,"d":0.0000000001,"e":0.00000050,"span":"PT0.000001000S"}',
        '{"id":2,"d":0.0000000000,"e":-0.00000050,"span":"-PT1.500000000S"}',
        '{"id":3,"d":1234567890123456789012345678.0123456789,"e":null,"span":null}',
    ]
    assert json.loads(encode("json", decimals_as_strings=True))[2] == {
        "id": 3,
        "d": "1234567890123456789012345678.0123456789",
        "e": None,
        "span": None,
    }
    assert json.loads(encode("json"), parse_float=Decimal)[0]["d"] == Decimal("1E-10")
    xml = etree.fromstring(encode("xml").encode())
    assert [row.findtext("d") for row in xml] == [
        "0.0000000001",
        "0.0000000000",
        "1234567890123456789012345678.0123456789",
    ]
    assert [row.findtext("span") for row in xml] == ["PT0.000001000S", "-PT1.500000000S", None]
    xsd = etree.XMLSchema(
        etree.fromstring(
            b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="v" type="xs:duration"/>'
            b"</xs:schema>"
        )
    )
    for text in ("PT0.000001000S", "-PT1.500000000S"):
        assert xsd.validate(etree.fromstring(f"<v>{text}</v>".encode())), text
    for option in ("yes", 1):
        assert WRITERS["json"].option_problems({"decimals_as_strings": option}) == [
            ("decimals_as_strings", f"must be true or false, got `{option}`")
        ]


# ------------------------------------------------------------------ 6. no lost row in CSV


def test_one_column_csv_keeps_null_and_empty_rows(tmp_path: Path) -> None:
    import pandas

    table = pa.table({"v": pa.array(["a", None, "", None, "b"])})
    writer = WRITERS["csv"](table.schema, {})
    data = writer.begin() + writer.write(table.to_batches()[0]) + writer.end()
    assert data == b'"v"\n"a"\n""\n""\n""\n"b"\n'
    assert len(pandas.read_csv(io.BytesIO(data))) == 5
    assert pandas.read_csv(io.BytesIO(data))["v"].isna().tolist() == [False, True, True, True, False]
    assert pacsv.read_csv(io.BytesIO(data)).column("v").to_pylist() == ["a", "", "", "", "b"]
    (tmp_path / "one.csv").write_bytes(data)
    assert duckdb.execute(f"SELECT v FROM read_csv('{tmp_path}/one.csv')").fetchall() == [
        ("a",),
        (None,),
        (None,),
        (None,),
        ("b",),
    ]
    assert list(csv.reader(io.StringIO(data.decode()))) == [["v"], ["a"], [""], [""], [""], ["b"]]
    with_marker = WRITERS["csv"](table.schema, {"null_value": "\\N"})
    assert with_marker.write(table.to_batches()[0]) == b'"a"\n\\N\n""\n\\N\n"b"\n'
    two = pa.table({"v": pa.array([None]), "w": pa.array([None], pa.int8())})
    assert WRITERS["csv"](two.schema, {}).write(two.to_batches()[0]) == b",\n"


# ------------------------------------------------------------------ 7. types a format can't hold


def test_hugeint_past_38_digits_is_refused_for_parquet(tmp_path: Path) -> None:
    db = duck(tmp_path)
    sql = "SELECT 170141183460469231731687303715884105727::HUGEINT AS big"
    result, destination = run(
        catalog_doc({"type": "duckdb", "database": str(db)}, sql, fmt="parquet"), tmp_path, {"EXPORT_STORAGE": "x"}
    )
    assert result.record.error == {
        "code": "format_error",
        "message": (
            "column `big` holds a value with more digits than its type `decimal128(38, 0)` allows, which Parquet readers "  # noqa: E501
            "refuse; a DuckDB HUGEINT past 38 digits does this: cast it in the model's query, e.g. to DOUBLE or VARCHAR"
        ),
    }
    assert destination.files == {}
    result, destination = run(
        catalog_doc({"type": "duckdb", "database": str(db)}, sql, fmt="ndjson"), tmp_path, {"EXPORT_STORAGE": "x"}
    )
    assert json.loads(destination.files["x.ndjson"], parse_int=int) == {"big": 170141183460469231731687303715884105727}


def test_durations_are_refused_for_parquet(tmp_path: Path) -> None:
    schema = pa.schema([("span", pa.duration("us"))])
    assert WRITERS["parquet"].prepare_schema(schema, {}) == [
        "column `span` has type `duration[us]`: Parquet has no duration type and readers other than pyarrow would "
        "see a bare integer; cast it in the model's query, e.g. to a number of seconds (`EXTRACT(EPOCH FROM x)`) "
        "or to text"
    ]


# ------------------------------------------------------------------ 8. bounded catalog parsing

LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8)
)
NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "text, message",
    [
        (
            LAUGHS,
            "`catalog` expands to more than 500,000 values at line 6, column 20 (YAML aliases `*name` repeat what "
            "`&name` anchors); write the values out, or use fewer nested aliases",
        ),
        (NESTED, "`catalog` nests deeper than 64 levels at line 1, column 65; a catalog needs about 6"),
        (
            "x: " + "a" * (MAX_CATALOG_BYTES + 1),
            f"`catalog` is {MAX_CATALOG_BYTES + 4:,} bytes, over the "
            f"{MAX_CATALOG_BYTES:,}-byte limit of a catalog; split it, or remove what the activations do not use",
        ),
    ],
    ids=["billion-laughs", "deep", "large"],
)
def test_catalog_bombs_are_validation_errors(text: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(CatalogError) as caught:
        parse_text(text)
    assert caught.value.message == message
    assert time.monotonic() - started < 30  # generous: the unbounded parse took 82 s and 4 GB


def test_catalog_bombs_through_the_cli_and_the_api(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(LAUGHS)
    result = cli("validate", str(path))
    assert result.returncode == 2
    assert "expands to more than 500,000 values" in result.stderr
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "a" * (MAX_CATALOG_BYTES + 1))
    result = cli("validate", str(big))
    assert result.returncode == 2 and "over the 2,097,152-byte limit of a catalog" in result.stderr
    settings = Settings({})
    status, body = api.handle(settings, "put_catalog", {}, ("x: " + "a" * (MAX_CATALOG_BYTES + 1)).encode())
    assert status == 413 and body["error"]["code"] == "catalog_too_large"
    status, body = api.handle(settings, "put_catalog", {}, NESTED.encode())
    assert status == 400 and body["error"] == {
        "code": "invalid_catalog",
        "message": "`request body` nests deeper than 64 levels at line 1, column 65; a catalog needs about 6",
    }
    status, body = api.handle(settings, "put_catalog", {}, LAUGHS.encode())
    assert status == 400 and "expands to more than 500,000 values" in body["error"]["message"]


def test_an_ordinary_catalog_with_aliases_still_loads(tmp_path: Path) -> None:
    doc = parse_text("common: &c {format: csv, destination: out}\nactivations:\n  a: {<<: *c, model: m}\n")
    assert doc["activations"]["a"] == {"format": "csv", "destination": "out", "model": "m"}
    write_catalog(tmp_path / "c.yaml", {"sources": {}})


# ------------------------------------------------------------------ reading back the Parquet refusal


def test_parquet_with_fitting_decimals_reads_back_in_duckdb(tmp_path: Path) -> None:
    table = pa.table({"d": pa.array([Decimal("99999999999999999999999999999999999999")], pa.decimal128(38, 0))})
    writer = WRITERS["parquet"](table.schema, {})
    (tmp_path / "d.parquet").write_bytes(writer.write(table.to_batches()[0]) + writer.end())
    assert duckdb.execute(f"SELECT d::VARCHAR FROM '{tmp_path}/d.parquet'").fetchall() == [("9" * 38,)]
    assert pq.read_table(tmp_path / "d.parquet").equals(table)


def test_an_xml_mapping_collision_is_found_by_validation() -> None:
    doc = catalog_doc(
        {"type": "duckdb", "database": "x"},
        "SELECT 1",
        fmt="xml",
        mapping=[{"from": "x", "to": "a b"}, {"from": "y", "to": "a_b"}],
    )
    assert problems(doc) == [
        "activations.a.mapping: columns `a b` and `a_b` both become the XML element `a_b`; "
        "rename one of them in the mapping"
    ]
