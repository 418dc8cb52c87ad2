"""Segments on real engines: each operator, nested groups, NULLs and hostile values, on DuckDB,
PostgreSQL and SQLite (through the generic ADBC source), each compared with a query written by
hand with literals, run on the same database without Filecast's compiler.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi
import adbc_driver_sqlite.dbapi
import duckdb
import pyarrow as pa
import pytest

from core.catalog.parse import parse_catalog
from core.errors import CatalogInvalid
from core.read.sources import open_source
from core.read.sources.base import Source as SourceReader
from core.settings import Settings
from devtools.postgres import PostgresServer
from tests.helpers import cli, run_record, write_catalog

pytest_plugins = ["tests.integration.conftest_postgres"]

pytestmark = pytest.mark.integration

NAMES = [
    "Zoé",
    "O'Brien",
    'Chloé "Coco"',
    "x'); DROP TABLE people; --",
    "50% off",
    "50x off",
    "a_b",
    "axb",
    "back\\slash",
    "Ana María",
    None,
    "",
    "zoe",
    "' OR '1'='1",
    "ends--",
]
COUNTRIES = ["FR", "DE", None, "ES", "fr"]
PLANS = ["free", "pro", "team", None]
ROWS = 90


def people() -> pa.Table:
    """90 people with a NULL in every column somewhere, and names that break string-built SQL."""
    rows: list[dict[str, Any]] = []
    for i in range(1, ROWS + 1):
        rows.append(
            {
                "id": i,
                "name": NAMES[i % len(NAMES)],
                "country": COUNTRIES[i % len(COUNTRIES)],
                "plan": PLANS[i % len(PLANS)],
                "age": None if i % 9 == 0 else 10 + i % 60,
                "vip": None if i % 7 == 0 else i % 3 == 0,
                "amount": None if i % 8 == 0 else Decimal(i * 1325 % 40000) / 100,
                "signup": None if i % 10 == 0 else dt.date(2020, 1, 1) + dt.timedelta(days=i * 17),
                "seen_at": None if i % 11 == 0 else dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i * 37),
            }
        )
    schema = pa.schema(
        [
            ("id", pa.int32()),
            ("name", pa.string()),
            ("country", pa.string()),
            ("plan", pa.string()),
            ("age", pa.int16()),
            ("vip", pa.bool_()),
            ("amount", pa.decimal128(12, 2)),
            ("signup", pa.date32()),
            ("seen_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


DDL = (
    "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, country TEXT, plan TEXT, age SMALLINT, "
    "vip BOOLEAN, amount NUMERIC(12, 2), signup DATE, seen_at TIMESTAMPTZ)"
)

# (name, where, the same filter written by hand with literals, engines that have the column types)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("eq", {"column": "country", "op": "=", "value": "FR"}, "country = 'FR'"),
    ("ne_leaves_out_null", {"column": "country", "op": "!=", "value": "FR"}, "country <> 'FR'"),
    ("lt", {"column": "age", "op": "<", "value": 30}, "age < 30"),
    ("le_decimal_text", {"column": "amount", "op": "<=", "value": "100.50"}, "amount <= 100.50"),
    ("gt_float_on_int", {"column": "age", "op": ">", "value": 40.5}, "age > 40.5"),
    ("ge", {"column": "age", "op": ">=", "value": 60}, "age >= 60"),
    ("gt_date", {"column": "signup", "op": ">", "value": "2021-06-01"}, "signup > DATE '2021-06-01'"),
    (
        "ge_timestamp_offset",
        {"column": "seen_at", "op": ">=", "value": "2024-03-01T12:00:00+02:00"},
        "seen_at >= TIMESTAMPTZ '2024-03-01 10:00:00+00'",
    ),
    ("in", {"column": "plan", "op": "in", "value": ["pro", "team"]}, "plan IN ('pro', 'team')"),
    ("not_in_leaves_out_null", {"column": "plan", "op": "not_in", "value": ["free"]}, "plan NOT IN ('free')"),
    ("between", {"column": "age", "op": "between", "value": [20, 40]}, "age BETWEEN 20 AND 40"),
    (
        "between_dates",
        {"column": "signup", "op": "between", "value": ["2020-06-01", "2021-01-01"]},
        "signup BETWEEN DATE '2020-06-01' AND DATE '2021-01-01'",
    ),
    ("is_null", {"column": "age", "op": "is_null"}, "age IS NULL"),
    ("not_null", {"column": "vip", "op": "not_null"}, "vip IS NOT NULL"),
    ("is_true", {"column": "vip", "op": "is_true"}, "vip IS TRUE"),
    ("is_false_leaves_out_null", {"column": "vip", "op": "is_false"}, "vip IS FALSE"),
    ("eq_false", {"column": "vip", "op": "=", "value": False}, "vip = false"),
    ("contains_percent", {"column": "name", "op": "contains", "value": "50%"}, "strpos(name, '50%') > 0"),
    ("contains_underscore", {"column": "name", "op": "contains", "value": "a_b"}, "strpos(name, 'a_b') > 0"),
    ("contains_is_case_sensitive", {"column": "name", "op": "contains", "value": "zo"}, "strpos(name, 'zo') > 0"),
    ("contains_backslash", {"column": "name", "op": "contains", "value": "k\\s"}, "strpos(name, 'k\\s') > 0"),
    ("starts_with_quote", {"column": "name", "op": "starts_with", "value": "O'"}, "left(name, 2) = 'O'''"),
    ("ends_with", {"column": "name", "op": "ends_with", "value": "--"}, "right(name, 2) = '--'"),
    ("quotes", {"column": "name", "op": "=", "value": 'Chloé "Coco"'}, "name = 'Chloé \"Coco\"'"),
    (
        "injection_is_a_name",
        {"column": "name", "op": "=", "value": "x'); DROP TABLE people; --"},
        "name = 'x''); DROP TABLE people; --'",
    ),
    ("injection_or_true", {"column": "name", "op": "in", "value": ["' OR '1'='1' --", "nobody"]}, "false"),
    (
        "nested",
        {
            "all": [
                {"column": "country", "op": "in", "value": ["FR", "DE"]},
                {
                    "any": [
                        {"column": "age", "op": ">=", "value": 50},
                        {"column": "vip", "op": "is_true"},
                        {
                            "all": [
                                {"column": "plan", "op": "=", "value": "free"},
                                {"column": "amount", "op": ">", "value": 100},
                            ]
                        },
                    ]
                },
            ]
        },
        "country IN ('FR', 'DE') AND (age >= 50 OR vip IS TRUE OR (plan = 'free' AND amount > 100))",
    ),
]
# SQLite has no date, timestamp or boolean types: the driver reports text and integers.
SQLITE_SKIPS = {
    "gt_date",
    "ge_timestamp_offset",
    "between_dates",
    "is_true",
    "is_false_leaves_out_null",
    "eq_false",
    "le_decimal_text",
    "nested",
}
ENGINES = ("duckdb", "postgresql", "sqlite")


class Engine:
    """One database holding `people`, opened as Filecast opens it, plus a plain connection for the
    hand-written reference queries."""

    def __init__(self, name: str, source: SourceReader, reference: Any):
        self.name = name
        self.source = source
        self.reference = reference

    def filecast_ids(self, where: dict[str, Any]) -> list[int]:
        _, batches = self.source.batches("SELECT * FROM people", where)
        return sorted(i for batch in batches for i in batch.column("id").to_pylist())

    def reference_ids(self, condition: str) -> list[int]:
        sql = f"SELECT id FROM people WHERE {condition}"
        if self.name == "sqlite":
            sql = (
                sql.replace("strpos(", "instr(")
                .replace("left(name, 2)", "substr(name, 1, 2)")
                .replace("right(name, 2)", "substr(name, -2)")
            )
        if self.name == "duckdb":
            return sorted(row[0] for row in self.reference.execute(sql).fetchall())
        with self.reference.cursor() as cursor:
            cursor.execute(sql)
            return sorted(row[0] for row in cursor.fetchall())

    def count(self) -> int:
        return len(self.reference_ids("true" if self.name != "sqlite" else "1"))


def _catalog(source: dict[str, Any]) -> Any:
    return parse_catalog({"sources": {"db": source}})


@pytest.fixture(scope="module")
def engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    table = people()
    folder = tmp_path_factory.mktemp("segments")
    found: dict[str, Engine] = {}

    duck_path = folder / "people.duckdb"
    with duckdb.connect(str(duck_path)) as con:
        con.execute("SET TimeZone='UTC'")
        con.execute(DDL)
        con.register("rows", table)
        con.execute("INSERT INTO people SELECT * FROM rows")
    catalog = _catalog({"type": "duckdb", "database": str(duck_path)})
    duck_reference = duckdb.connect(str(duck_path), read_only=True)
    found["duckdb"] = Engine("duckdb", open_source(catalog.sources["db"], Settings({})), duck_reference)

    sqlite_path = folder / "people.sqlite"
    sqlite_table = table.set_column(
        table.schema.get_field_index("amount"), "amount", table.column("amount").cast(pa.float64())
    )
    with adbc_driver_sqlite.dbapi.connect(str(sqlite_path)) as lite, lite.cursor() as cursor:
        cursor.execute(DDL.replace("TIMESTAMPTZ", "TEXT").replace("DATE", "TEXT"))
        cursor.adbc_ingest(
            "people",
            sqlite_table.drop_columns(["signup", "seen_at"]).cast(
                pa.schema(
                    [
                        f if f.name != "vip" else pa.field("vip", pa.int64())
                        for f in sqlite_table.drop_columns(["signup", "seen_at"]).schema
                    ]
                )
            ),
            mode="append",
        )
        lite.commit()
    settings = {"PEOPLE_SQLITE": f"file:{sqlite_path}"}
    catalog = _catalog({"type": "adbc", "driver": "adbc_driver_sqlite", "uri_setting": "PEOPLE_SQLITE"})
    sqlite_reference = adbc_driver_sqlite.dbapi.connect(str(sqlite_path))
    found["sqlite"] = Engine("sqlite", open_source(catalog.sources["db"], Settings(settings)), sqlite_reference)

    postgres: PostgresServer = request.getfixturevalue("postgres")
    postgres.execute("DROP TABLE IF EXISTS people", DDL)
    with adbc_driver_postgresql.dbapi.connect(postgres.uri()) as con, con.cursor() as cursor:
        cursor.adbc_ingest("people", table, mode="append")
        con.commit()
    catalog = _catalog({"type": "postgresql", "uri_setting": "PEOPLE_PG"})
    pg_reference = adbc_driver_postgresql.dbapi.connect(postgres.uri(), autocommit=True)
    found["postgresql"] = Engine(
        "postgresql", open_source(catalog.sources["db"], Settings({"PEOPLE_PG": postgres.uri()})), pg_reference
    )
    yield found
    for engine in found.values():
        engine.source.close()
        engine.reference.close()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, where, condition", CASES, ids=[c[0] for c in CASES])
def test_segment_matches_the_hand_written_query(
    engines: dict[str, Engine], engine: str, name: str, where: dict[str, Any], condition: str
) -> None:
    if engine == "sqlite" and name in SQLITE_SKIPS:
        pytest.skip("SQLite stores dates, timestamps, booleans and decimals as text, integers and floats")
    db = engines[engine]
    expected = db.reference_ids(condition)
    assert db.filecast_ids(where) == expected
    assert db.count() == ROWS  # nothing was dropped or changed


def test_the_cases_select_something_and_not_everything(engines: dict[str, Engine]) -> None:
    """Guards the comparison above against vacuous cases (both sides empty, or both everything)."""
    db = engines["postgresql"]
    sizes = {name: len(db.reference_ids(condition)) for name, _, condition in CASES}
    assert {name for name, size in sizes.items() if size in (0, ROWS)} == {"injection_or_true"}
    assert sizes["injection_is_a_name"] == ROWS // len(NAMES)


@pytest.mark.parametrize("engine", ENGINES)
def test_null_semantics(engines: dict[str, Engine], engine: str) -> None:
    db = engines[engine]
    null_country = set(db.reference_ids("country IS NULL"))
    fr = set(db.filecast_ids({"column": "country", "op": "=", "value": "FR"}))
    not_fr = set(db.filecast_ids({"column": "country", "op": "!=", "value": "FR"}))
    assert null_country and not (null_country & (fr | not_fr))
    assert fr | not_fr | null_country == set(range(1, ROWS + 1))


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_value_types_are_catalog_errors(engines: dict[str, Engine], engine: str) -> None:
    with pytest.raises(CatalogInvalid) as caught:
        engines[engine].filecast_ids(
            {"all": [{"column": "age", "op": ">=", "value": "abc"}, {"column": "cuntry", "op": "=", "value": "FR"}]}
        )
    columns = "id, name, country, plan, age, vip, amount, signup, seen_at"
    age_type = "int64" if engine == "sqlite" else "int16"
    assert [str(p) for p in caught.value.problems] == [
        f'the segment\'s where.all[0].value: "abc" is not a number for column age ({age_type})',
        f'the segment\'s where.all[1].column: unknown column "cuntry"; columns are: {columns}',
    ]


# --- a segment activation end to end ---------------------------------------------------------------


def test_segment_export_through_the_cli(
    postgres: PostgresServer, engines: dict[str, Engine], azurite: Any, tmp_path: Path
) -> None:
    """The injection attempt travels through the catalog, `validate --probe` and a run: it selects
    the people of that name, and the table is still there."""
    from azure.storage.blob import BlobServiceClient

    doc = {
        "sources": {"crm": {"type": "postgresql", "uri_setting": "CRM_POSTGRES_URI"}},
        "models": {"people": {"source": "crm", "table": "people", "primary_key": ["id"]}},
        "segments": {
            "target": {
                "model": "people",
                "where": {
                    "any": [
                        {"column": "name", "op": "=", "value": "x'); DROP TABLE people; --"},
                        {"column": "name", "op": "starts_with", "value": "O'"},
                    ]
                },
            }
        },
        "destinations": {
            "lake": {
                "type": "azure_blob",
                "container": "segments",
                "connection_setting": "EXPORT_STORAGE",
                "create_container": True,
            }
        },
        "activations": {
            "export": {
                "segment": "target",
                "destination": "lake",
                "file_name": "target",
                "format": "csv",
                "mapping": ["id", "name"],
            }
        },
    }
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    env = {"CRM_POSTGRES_URI": postgres.uri(), "EXPORT_STORAGE": azurite.connection_string}
    result = cli("validate", str(path), "--probe", env=env)
    assert result.returncode == 0, result.stderr
    result = cli("run", "export", "--catalog", str(path), env=env)
    assert result.returncode == 0, result.stderr
    record = run_record(result)
    expected = engines["postgresql"].reference_ids("name = 'x''); DROP TABLE people; --' OR name LIKE 'O''%'")
    assert len(expected) == 2 * (ROWS // len(NAMES)) == record["rows"]["exported"]
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        "segments", record["files"][0]["path"]
    )
    rows = list(csv.DictReader(io.StringIO(blob.download_blob().readall().decode(), newline="")))
    assert sorted(int(row["id"]) for row in rows) == expected
    assert {row["name"] for row in rows} == {"x'); DROP TABLE people; --", "O'Brien"}
    assert engines["postgresql"].count() == ROWS


def test_segment_delta_puts_leavers_in_removed(
    postgres: PostgresServer, pg_customers: str, azurite: Any, storage_env: dict[str, str], tmp_path: Path
) -> None:
    """Rows that stop matching the segment appear in `_removed` with their last delivered values."""
    from azure.storage.blob import BlobServiceClient

    postgres.execute(
        "DROP TABLE IF EXISTS members",
        f"CREATE TABLE members AS SELECT customer_id, first_name, country, age FROM {pg_customers} "
        "WHERE customer_id <= 500",
    )
    doc = {
        "sources": {"crm": {"type": "postgresql", "uri_setting": "CRM_POSTGRES_URI"}},
        "models": {"members": {"source": "crm", "table": "members", "primary_key": ["customer_id"]}},
        "segments": {"french": {"model": "members", "where": {"column": "country", "op": "=", "value": "FR"}}},
        "destinations": {
            "lake": {
                "type": "azure_blob",
                "container": "segment-delta",
                "connection_setting": "EXPORT_STORAGE",
                "create_container": True,
            }
        },
        "activations": {
            "french_delta": {
                "segment": "french",
                "destination": "lake",
                "file_name": "french_{run_id}",
                "format": "csv",
                "run_type": "full_then_delta",
                "sync_mode": "difference",
            }
        },
    }
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    env = {"CRM_POSTGRES_URI": postgres.uri(), "EXPORT_STORAGE": azurite.connection_string, **storage_env}
    first = cli("run", "french_delta", "--catalog", str(path), "--at", "2025-04-14T06:00:00Z", env=env)
    assert first.returncode == 0, first.stderr
    french = engines_ids(postgres, "SELECT customer_id FROM members WHERE country = 'FR'")
    assert run_record(first)["rows"]["added"] == len(french) > 0
    leavers = french[:5]
    postgres.execute(f"UPDATE members SET country = 'DE' WHERE customer_id IN ({', '.join(map(str, leavers))})")
    second = cli("run", "french_delta", "--catalog", str(path), "--at", "2025-04-15T06:00:00Z", env=env)
    record = run_record(second)
    assert second.returncode == 0, second.stderr
    assert record["rows"]["removed"] == 5 and record["rows"]["added"] == record["rows"]["updated"] == 0
    [removed] = [f for f in record["files"] if f["path"].endswith("_removed.csv")]
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        "segment-delta"
    )
    rows = list(csv.DictReader(io.StringIO(container.download_blob(removed["path"]).readall().decode(), newline="")))
    assert list(rows[0]) == ["customer_id", "first_name", "country", "age"]
    assert sorted(int(row["customer_id"]) for row in rows) == leavers
    assert {row["country"] for row in rows} == {"FR"}  # the last delivered values


def engines_ids(postgres: PostgresServer, sql: str) -> list[int]:
    with adbc_driver_postgresql.dbapi.connect(postgres.uri()) as con, con.cursor() as cursor:
        cursor.execute(sql)
        return sorted(row[0] for row in cursor.fetchall())
