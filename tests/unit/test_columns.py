"""Checks against a model's real columns (core/catalog/columns.py): the same exact messages from
`validate --probe` and from a run, and errors that carry their path apart from their message.

A DuckDB file in the test's folder is the source (in-process, no service)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from core.catalog.columns import format_problems, mapping_problems, require
from core.catalog.model import MappedColumn
from core.catalog.parse import parse_catalog
from core.destinations.memory import MemoryDestination
from core.errors import CatalogError, Problem, SchemaMismatch
from core.read.mapping import Mapper
from core.run.engine import Run
from core.run.records import RunRecord
from core.settings import Settings
from tests.helpers import cli, write_catalog

COLUMNS = "id, name, span, vip"
BLOB = {"type": "azure_blob", "container": "exports", "connection_setting": "EXPORT_STORAGE"}
ACTIVATIONS: dict[str, dict[str, Any]] = {
    "pq": {"model": "m", "format": "parquet"},
    "pq_unmapped": {"model": "m", "format": "parquet", "mapping": [{"from": "spam", "to": "s"}]},
    "xml": {"model": "n", "format": "xml"},
    "seg": {"segment": "s", "format": "csv"},
    "delta": {"model": "m", "format": "csv", "run_type": "full_then_delta", "sync_mode": "upsert"},
    "mapped": {"model": "m", "format": "csv", "mapping": ["id", "nope"]},
}
PARQUET = (
    "column `span` has type `month_day_nano_interval`, which Parquet cannot store (Unhandled type for Arrow "
    "to Parquet schema conversion: month_day_nano_interval); cast it in the model's query, e.g. to text"
)
XML = "columns `a b` and `a_b` both become the XML element `a_b`; rename one of them in the mapping"


@pytest.fixture
def doc(tmp_path: Path) -> dict[str, Any]:
    database = tmp_path / "db.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS id, 'a' AS name, INTERVAL 1 DAY AS span, true AS vip")
    return {
        "sources": {"db": {"type": "duckdb", "database": str(database)}},
        "models": {
            "m": {"source": "db", "table": "t", "primary_key": ["idd"]},
            "n": {"source": "db", "sql": 'select id, name as "a b", name as "a_b" from t'},
        },
        "segments": {
            "s": {
                "model": "m",
                "where": {
                    "all": [{"column": "nme", "op": "=", "value": "x"}, {"column": "id", "op": "=", "value": "y"}]
                },
            }
        },
        "destinations": {"out": BLOB},
        "activations": {aid: {"destination": "out", "file_name": "x", **a} for aid, a in ACTIVATIONS.items()},
    }


def test_validate_probe_lists_every_column_and_type_problem(tmp_path: Path, doc: dict[str, Any]) -> None:
    result = cli("validate", "--probe", str(write_catalog(tmp_path / "catalog.yaml", doc)))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: the catalog has 7 problems:",
        f'  - models.m.primary_key: unknown column "idd"; columns are: {COLUMNS}',
        f'  - segments.s.where.all[0].column: unknown column "nme"; columns are: {COLUMNS}',
        '  - segments.s.where.all[1].value: "y" is not a number for column id (int32)',
        f"  - activations.pq.parquet: {PARQUET}",
        # the format is not checked while a mapped column is missing
        f'  - activations.pq_unmapped.mapping[0].from: unknown column "spam"; columns are: {COLUMNS}',
        f"  - activations.xml.xml: {XML}",
        f'  - activations.mapped.mapping[1].from: unknown column "nope"; columns are: {COLUMNS}',
    ]


@pytest.mark.parametrize(
    "activation, message",
    [
        ("pq", f"activations.pq.parquet: {PARQUET}"),
        ("pq_unmapped", f'activations.pq_unmapped.mapping[0].from: unknown column "spam"; columns are: {COLUMNS}'),
        ("xml", f"activations.xml.xml: {XML}"),
        ("delta", f'models.m.primary_key: unknown column "idd"; columns are: {COLUMNS}'),
        ("mapped", f'activations.mapped.mapping[1].from: unknown column "nope"; columns are: {COLUMNS}'),
        (
            "seg",
            "the catalog has 2 problems:\n"
            f'  - segments.s.where.all[0].column: unknown column "nme"; columns are: {COLUMNS}\n'
            '  - segments.s.where.all[1].value: "y" is not a number for column id (int32)',
        ),
    ],
)
def test_a_run_stops_before_writing_with_the_same_message(
    tmp_path: Path, doc: dict[str, Any], activation: str, message: str
) -> None:
    destination = MemoryDestination()
    record = RunRecord("r1", activation, "manual", datetime(2025, 4, 14, 6, tzinfo=UTC))
    result = asyncio.run(
        Run(
            parse_catalog(doc, tmp_path),
            activation,
            Settings({"EXPORT_STORAGE": "x"}),
            record,
            destination=destination,
            retries=0,
        ).execute()
    )
    assert result.record.error == {"code": "invalid_catalog", "message": message}
    assert isinstance(result.exception, CatalogError) and not result.transient
    assert destination.files == {}


def test_errors_carry_the_path_apart_from_the_message() -> None:
    schema = pa.schema([("id", pa.int64()), ("span", pa.month_day_nano_interval())])
    with pytest.raises(SchemaMismatch) as caught:
        Mapper(schema, [MappedColumn("id", "id"), MappedColumn("ID", "key")], where="activations.a.mapping")
    message = 'unknown column "ID"; columns are: id, span'
    assert caught.value.problem == Problem("activations.a.mapping[1].from", message)
    assert caught.value.message == f"activations.a.mapping[1].from: {message}"
    assert caught.value.code == "invalid_catalog"


def test_require_raises_the_first_problem_only() -> None:
    require([])  # nothing to report: no error
    assert mapping_problems([MappedColumn("a", "b")], ["a"], "m") == []
    with pytest.raises(SchemaMismatch, match=r"^x: one$"):
        require([Problem("x", "one"), Problem("y", "two")])


def test_format_problems_join_every_column_under_the_activation() -> None:
    catalog = parse_catalog(
        {
            "sources": {"db": {"type": "duckdb", "database": "/x.duckdb"}},
            "models": {"m": {"source": "db", "table": "t"}},
            "destinations": {"out": BLOB},
            "activations": {"a": {"model": "m", "destination": "out", "file_name": "x", "format": "parquet"}},
        }
    )
    schema = pa.schema([("span", pa.duration("us")), ("ok", pa.int64()), ("gap", pa.month_day_nano_interval())])
    [problem] = format_problems(catalog.activations["a"], schema)
    assert problem.path == "activations.a.parquet"
    assert problem.message.startswith("column `span` has type `duration[us]`: Parquet has no duration type")
    assert "; column `gap` has type `month_day_nano_interval`, which Parquet cannot store" in problem.message
    assert format_problems(catalog.activations["a"], pa.schema([("ok", pa.int64())])) == []
