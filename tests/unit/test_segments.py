"""Segment filters: structure, schema checks with exact messages, SQL per dialect, bound values.

The last tests run the compiled SQL in an in-memory DuckDB (no service) to show that any value,
SQL metacharacters included, is compared as data and never read as SQL.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.catalog.columns import bind_where, schema_problems, segment_problems
from core.catalog.parse import parse_catalog
from core.errors import CatalogInvalid
from core.read.segments import (
    BIGQUERY,
    DUCKDB,
    POSTGRESQL,
    SQLITE,
    compile_where,
    segment_sql,
    where_problems,
)
from tests.helpers import examples

SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("name", pa.string()),
        ("country", pa.string()),
        ("age", pa.int16()),
        ("score", pa.float64()),
        ("amount", pa.decimal128(12, 2)),
        ("vip", pa.bool_()),
        ("signup", pa.date32()),
        ("seen_at", pa.timestamp("us", tz="UTC")),
        ("local_at", pa.timestamp("us")),
        ("opens", pa.time64("us")),
        ("tags", pa.list_(pa.string())),
        ("raw", pa.binary()),
        ('odd "name"', pa.string()),
    ]
)
COLUMNS = ", ".join(SCHEMA.names)


def cond(column: str, op: str, value: Any = ...) -> dict[str, Any]:
    return {"column": column, "op": op} if value is ... else {"column": column, "op": op, "value": value}


# --- structure ------------------------------------------------------------------------------------


def test_dates_written_without_quotes_get_a_hint() -> None:
    # YAML reads an unquoted 2024-01-31 as a date object
    assert where_problems(cond("signup", ">=", dt.date(2024, 1, 31))) == [
        (".value", 'write dates and times in quotes, e.g. "2024-01-31" or "2024-01-31T12:00:00Z"')
    ]


@pytest.mark.parametrize(
    "node, problem",
    [
        (cond("age", "between", [1]), (".value", "`between` needs a list of two values [low, high]")),
        (cond("age", "in", "FR"), (".value", "`in` needs a non-empty list of values")),
        (cond("name", "contains", 3), (".value", "`contains` needs a text value")),
        (cond("vip", "is_true", True), (".value", "`is_true` takes no value")),
        (cond("age", "=", None), (".value", "`=` needs a value (text, number or boolean)")),
        ({"all": []}, (".all", "must be a non-empty list of conditions or groups")),
        (
            {"all": [cond("age", "=", 1)], "any": [cond("age", "=", 1)]},
            ("", "a group has exactly one key, `all` or `any`"),
        ),
        (
            {"column": "age", "op": "=", "value": 1, "values": 2},
            ("", "unknown keys values; a condition has column, op, value"),
        ),
    ],
)
def test_structure_problems(node: dict[str, Any], problem: tuple[str, str]) -> None:
    assert where_problems(node) == [problem]


# --- schema checks --------------------------------------------------------------------------------


def test_every_schema_problem_is_listed_with_its_path() -> None:
    where = {
        "all": [
            cond("cuntry", "=", "FR"),
            cond("age", ">=", "abc"),
            cond("country", "=", 18),
            {"any": [cond("vip", "=", "yes"), cond("signup", "between", ["2020-01-01", "2020-13-01"])]},
            cond("seen_at", ">", "yesterday"),
            cond("age", "contains", "1"),
            cond("name", "is_true"),
            cond("tags", "=", "a"),
            cond("opens", "<", "25:00"),
            cond("amount", "in", [1, "1e400x", True]),
        ]
    }
    assert [(p.path, p.message) for p in schema_problems(where, SCHEMA, "segments.s.where")] == [
        ("segments.s.where.all[0].column", f'unknown column "cuntry"; columns are: {COLUMNS}'),
        ("segments.s.where.all[1].value", '"abc" is not a number for column age (int16)'),
        ("segments.s.where.all[2].value", '18 is not text for column country (string); write it in quotes: "18"'),
        ("segments.s.where.all[3].any[0].value", '"yes" is not true or false for column vip (bool)'),
        (
            "segments.s.where.all[3].any[1].value[1]",
            '"2020-13-01" is not a date (YYYY-MM-DD) for column signup (date32[day])',
        ),
        (
            "segments.s.where.all[4].value",
            '"yesterday" is not a date and time (ISO 8601, e.g. '
            '"2024-01-31T12:00:00Z") for column seen_at (timestamp[us, tz=UTC])',
        ),
        ("segments.s.where.all[5].op", "`contains` needs a text column; age (int16) is not"),
        ("segments.s.where.all[6].op", "`is_true` needs a true/false column; name (string) is not"),
        ("segments.s.where.all[7].op", "column tags (list<item: string>) can only be tested with is_null or not_null"),
        ("segments.s.where.all[8].value", '"25:00" is not a time of day (HH:MM:SS) for column opens (time64[us])'),
        ("segments.s.where.all[9].value[1]", '"1e400x" is not a number for column amount (decimal128(12, 2))'),
        ("segments.s.where.all[9].value[2]", "true is not a number for column amount (decimal128(12, 2))"),
    ]


def test_values_take_their_column_type() -> None:
    where = {
        "all": [
            cond("age", ">=", "18"),
            cond("age", "<", 17.5),
            cond("score", "=", 3),
            cond("amount", "<=", "100.50"),
            cond("amount", "in", [1, 2.25]),
            cond("signup", "between", ["2020-01-01", "2020-12-31"]),
            cond("seen_at", ">", "2024-06-01T02:00:00+02:00"),
            cond("local_at", "<", "2024-06-01T00:00:00Z"),
            cond("opens", ">=", "08:30"),
            cond("vip", "!=", False),
            cond("tags", "not_null"),
        ]
    }
    bound = bind_where(where, SCHEMA)["all"]
    values = [c.get("value") for c in bound]
    assert values == [
        18,
        17.5,
        3.0,
        Decimal("100.50"),
        [Decimal("1"), Decimal("2.25")],
        [dt.date(2020, 1, 1), dt.date(2020, 12, 31)],
        dt.datetime(2024, 6, 1, 0, 0, tzinfo=dt.UTC),
        dt.datetime(2024, 6, 1, 0, 0),
        dt.time(8, 30),
        False,
        None,
    ]
    assert type(values[0]) is int and type(values[2]) is float


def test_bind_where_raises_every_problem() -> None:
    with pytest.raises(CatalogInvalid) as caught:
        bind_where({"any": [cond("nme", "=", "x"), cond("age", "=", "x")]}, SCHEMA, "segments.s.where")
    assert [str(p) for p in caught.value.problems] == [
        f'segments.s.where.any[0].column: unknown column "nme"; columns are: {COLUMNS}',
        'segments.s.where.any[1].value: "x" is not a number for column age (int16)',
    ]


def test_check_segment_reports_catalog_paths() -> None:
    catalog = parse_catalog(
        {
            "sources": {"w": {"type": "duckdb", "database": "/x.duckdb"}},
            "models": {"m": {"source": "w", "table": "t"}},
            "segments": {"fr": {"model": "m", "where": cond("cuntry", "=", "FR")}},
        }
    )
    found = [str(p) for p in segment_problems(catalog, "fr", SCHEMA)]
    assert found == [f'segments.fr.where.column: unknown column "cuntry"; columns are: {COLUMNS}']


# --- SQL ------------------------------------------------------------------------------------------

NESTED = {
    "all": [
        cond("country", "=", "FR"),
        cond("age", ">=", 18),
        {"any": [cond("name", "in", ["a", "b"]), cond("vip", "is_true"), cond("amount", "between", [1, 2])]},
        cond("name", "starts_with", "50%_off\\"),
        cond('odd "name"', "not_null"),
    ]
}


def test_duckdb_sql_and_parameters() -> None:
    sql, params = segment_sql("select * from t -- trailing comment", NESTED, DUCKDB)
    assert sql == (
        'SELECT * FROM (\nselect * from t -- trailing comment\n) AS model WHERE (("country" = ?) AND ("age" >= ?) '
        'AND (("name" IN (?, ?)) OR ("vip" IS TRUE) OR ("amount" BETWEEN ? AND ?)) '
        'AND ("name" LIKE ? ESCAPE \'\\\') AND ("odd ""name""" IS NOT NULL))'
    )
    assert params == ["FR", 18, "a", "b", 1, 2, "50\\%\\_off\\\\%"]


def test_postgresql_numbers_its_parameters() -> None:
    params: list[Any] = []
    assert compile_where(NESTED, params, POSTGRESQL) == (
        '(("country" = $1) AND ("age" >= $2) AND (("name" IN ($3, $4)) OR ("vip" IS TRUE) OR '
        '("amount" BETWEEN $5 AND $6)) AND ("name" LIKE $7 ESCAPE \'\\\') AND ("odd ""name""" IS NOT NULL))'
    )
    assert len(params) == 7


def test_bigquery_backquotes_and_escapes_without_a_clause() -> None:
    params: list[Any] = []
    assert (
        compile_where({"all": [cond("a`b", "ends_with", "x"), cond("c", "not_in", [1])]}, params, BIGQUERY)
        == "((`a\\`b` LIKE ?) AND (`c` NOT IN (?)))"
    )
    assert params == ["%x", 1]
    assert SQLITE.setup == ("PRAGMA case_sensitive_like = ON",)


@pytest.mark.parametrize(
    "op, text",
    [
        ("!=", '("x" <> ?)'),
        ("<", '("x" < ?)'),
        ("<=", '("x" <= ?)'),
        (">", '("x" > ?)'),
        ("=", '("x" = ?)'),
        ("is_null", '("x" IS NULL)'),
        ("is_false", '("x" IS FALSE)'),
        ("contains", "(\"x\" LIKE ? ESCAPE '\\')"),
    ],
)
def test_each_operator(op: str, text: str) -> None:
    params: list[Any] = []
    node = cond("x", op) if op in ("is_null", "is_false") else cond("x", op, "v")
    assert compile_where(node, params) == text


# --- values are data, never SQL (in-memory DuckDB) ------------------------------------------------

NASTY = [
    "x'); DROP TABLE people; --",
    "O'Brien",
    'say "hi"',
    "50%",
    "a_b",
    "back\\slash",
    "?",
    "$1",
    "--",
    "é ✓",
    "' OR '1'='1",
    "\\%",
    "",
]


def _people() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE people (id INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO people VALUES (?, ?)", list(enumerate([*NASTY, "50x", "axb", "other"])))
    return con


def _ids(con: duckdb.DuckDBPyConnection, where: dict[str, Any]) -> list[int]:
    schema = con.sql("SELECT * FROM people LIMIT 0").to_arrow_table().schema
    sql, params = segment_sql("SELECT * FROM people", bind_where(where, schema), DUCKDB)
    return sorted(row[0] for row in con.execute(sql, params).fetchall())


@pytest.mark.parametrize("value", NASTY)
def test_metacharacters_are_compared_as_text(value: str) -> None:
    con = _people()
    assert _ids(con, cond("name", "=", value)) == [NASTY.index(value)]
    assert _ids(con, cond("name", "in", [value, "nobody"])) == [NASTY.index(value)]
    contains = _ids(con, cond("name", "contains", value))
    assert contains == sorted(i for i, name in enumerate([*NASTY, "50x", "axb", "other"]) if value in name)
    assert con.execute("SELECT count(*) FROM people").fetchone() == (16,)


@settings(max_examples=examples(150), deadline=None)
@given(st.text(max_size=12), st.sampled_from(["=", "contains", "starts_with", "ends_with"]))
def test_any_text_matches_exactly_as_python_would(value: str, op: str) -> None:
    names = [*NASTY, "50x", "axb", "other", value]
    con = duckdb.connect()
    con.execute("CREATE TABLE people (id INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO people VALUES (?, ?)", list(enumerate(names)))
    test = {"=": str.__eq__, "contains": lambda n, v: v in n, "starts_with": str.startswith, "ends_with": str.endswith}[
        op
    ]
    assert _ids(con, cond("name", op, value)) == [i for i, n in enumerate(names) if test(n, value)]
