"""Catalog validation: every rule, every problem at once, exact messages with paths."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from core.catalog.columns import column_problems
from core.catalog.parse import app_root, load_catalog, parse_catalog
from core.errors import CatalogError, CatalogInvalid
from core.write.formats import WRITERS

BASE: dict[str, Any] = {
    "sources": {"warehouse": {"type": "duckdb", "database": "demo.duckdb"}},
    "models": {"customers": {"source": "warehouse", "sql": "select * from customers", "primary_key": ["id"]}},
    "segments": {"adults": {"model": "customers", "where": {"all": [{"column": "age", "op": ">=", "value": 18}]}}},
    "destinations": {
        "ftp": {"type": "ftp", "host": "ftp.example.com", "username": "u", "password_setting": "FTP_PW"},
        "lake": {"type": "azure_blob", "container": "exports", "connection_setting": "LAKE"},
    },
    "activations": {
        "daily": {
            "model": "customers",
            "destination": "ftp",
            "folder": "exports/daily",
            "file_name": "{YY}-{MM}-{DD}_export",
            "format": "csv",
            "csv": {"delimiter": ";", "header": True},
            "mapping": [{"from": "age", "to": "age"}, {"from": "name", "to": "last name"}],
            "run_type": "full_only",
            "sync_mode": "snapshot",
            "schedule": "0 6 * * *",
        },
    },
}


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(doc, Path("/cat"))
    return [str(p) for p in caught.value.problems]


def with_activation(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["activations"]["daily"].update(changes)
    for key, value in changes.items():
        if value is None:
            del doc["activations"]["daily"][key]
    return doc


def test_a_valid_catalog_becomes_typed_objects() -> None:
    catalog = parse_catalog(copy.deepcopy(BASE), Path("/cat"))
    daily = catalog.activations["daily"]
    assert catalog.sources["warehouse"].database == Path("/cat/demo.duckdb")
    assert daily.format_options == {"delimiter": ";", "header": True}
    assert [(m.source, m.target) for m in daily.mapping or ()] == [("age", "age"), ("name", "last name")]
    assert catalog.destinations["ftp"].port == 21 and catalog.destinations["ftp"].passive is True
    assert catalog.model_of(daily).primary_key == ("id",)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    doc = copy.deepcopy(BASE)
    doc["models"]["customers"]["source"] = "nowhere"
    doc["destinations"]["ftp"].pop("host")
    doc["activations"]["daily"].update(destination="nope", format="xlsx", schedule="every day")
    assert problems(doc) == [
        "models.customers.source: unknown source `nowhere`; sources are: warehouse",
        "destinations.ftp.host: is required",
        "activations.daily.destination: unknown destination `nope`; destinations are: ftp, lake",
        f"activations.daily.format: must be one of {', '.join(sorted(WRITERS))}; got `xlsx`",
        "activations.daily.schedule: `every day` has 2 fields; a schedule is a 5-field cron expression (minute "
        "hour day-of-month month day-of-week, UTC) or @hourly/@daily/@midnight/@weekly/@monthly/@yearly/@annually",
    ]


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("0 25 * * *", "the hour `25` is out of range (0-23)"),
        ("61 * * * *", "the minute `61` is out of range (0-59)"),
        ("0 0 32 * *", "the day of month `32` is out of range (1-31)"),
        ("0 0 1 13 *", "the month `13` is out of range (1-12)"),
        ("0 0 * * 8", "the day of week `8` is out of range (0-7)"),
        ("0 0-30 * * *", "the hour `30` is out of range (0-23)"),
        ("*/0 * * * *", "the minute step `0` must be a whole number of at least 1"),
        (
            "0 6 * * funday",
            "the day of week field has `funday`, not a number or a name (sun, mon, tue, wed, thu, fri, sat)",
        ),
    ],
)
def test_cron_fields_out_of_range_are_named(schedule: str, message: str) -> None:
    assert problems(with_activation(schedule=schedule)) == [f"activations.daily.schedule: `{schedule}`: {message}"]


@pytest.mark.parametrize("schedule", ["0 6 * * *", "*/15 1-5 1,15 jan-jun mon-fri", "0 0 * * 7", "@daily"])
def test_valid_cron_schedules(schedule: str) -> None:
    assert parse_catalog(with_activation(schedule=schedule), Path("/cat")).activations["daily"].schedule == schedule


def test_references_are_checked() -> None:
    doc = with_activation(model=None, segment="ghosts")
    assert problems(doc) == ["activations.daily.segment: unknown segment `ghosts`; segments are: adults"]
    doc = with_activation(segment="adults")
    assert problems(doc) == ["activations.daily: needs exactly one of `model` or `segment`"]


@pytest.mark.parametrize(
    "run_type, sync_mode, message",
    [
        (
            "full_only",
            "difference",
            "activations.daily.sync_mode: DIFFERENCE needs FULL THEN DELTA: set `run_type: full_then_delta`",
        ),
        (
            "full_then_delta",
            "snapshot",
            "activations.daily.sync_mode: SNAPSHOT has no delta: use `run_type: "
            "full_only`, or choose upsert, insert or difference",
        ),
    ],
)
def test_run_type_and_sync_mode_combinations(run_type: str, sync_mode: str, message: str) -> None:
    assert problems(with_activation(run_type=run_type, sync_mode=sync_mode)) == [message]


@pytest.mark.parametrize(
    "run_type, sync_mode",
    [
        ("full_only", "snapshot"),
        ("full_only", "upsert"),
        ("full_only", "insert"),
        ("full_then_delta", "insert"),
        ("full_then_delta", "upsert"),
        ("full_then_delta", "difference"),
    ],
)
def test_allowed_combinations(run_type: str, sync_mode: str) -> None:
    parse_catalog(with_activation(run_type=run_type, sync_mode=sync_mode), Path("/cat"))


def test_delta_needs_a_primary_key() -> None:
    doc = with_activation(run_type="full_then_delta", sync_mode="upsert")
    del doc["models"]["customers"]["primary_key"]
    assert problems(doc) == [
        "activations.daily.run_type: FULL THEN DELTA needs a primary key: set `primary_key` on model `customers`"
    ]


@pytest.mark.parametrize(
    "file_name, message",
    [
        (
            "{YYYY}-{week}",
            "activations.daily.file_name: unknown placeholder `{week}`; placeholders are: {YYYY}, {YY}, "
            "{MM}, {DD}, {HH}, {mm}, {ss}, {ms}, {X}, {x}, {activation}, {run_id}, {part}",
        ),
        (
            "../escape",
            "activations.daily.file_name: `../escape` must be a file name, not a path: put folders in `folder`",
        ),
        (
            "/etc/passwd",
            "activations.daily.file_name: `/etc/passwd` must be a file name, not a path: put folders in `folder`",
        ),
        ("..", "activations.daily.file_name: `..` would escape the folder"),
        ("bad\tname", "activations.daily.file_name: must not contain control characters"),
        (
            "{YYYY",
            "activations.daily.file_name: `{YYYY` has an unbalanced brace (expected '}' before end of string); "
            "write placeholders as `{YYYY}`",
        ),
    ],
)
def test_file_name_templates(file_name: str, message: str) -> None:
    assert problems(with_activation(file_name=file_name)) == [message]


def test_blob_folders_cannot_go_up() -> None:
    assert problems(with_activation(destination="lake", folder="../x")) == [
        "activations.daily.folder: `../x`: a blob folder is a name prefix and cannot go up with `..`"
    ]
    parse_catalog(with_activation(folder="../x"), Path("/cat"))  # FTP: relative to the login directory


def test_mapping_rules() -> None:
    doc = with_activation(mapping=[{"from": "a", "to": "x"}, {"from": "b", "to": "x"}, {"to": "y"}])
    assert problems(doc) == [
        "activations.daily.mapping[1].to: `x` is already the name of mapping[0]",
        "activations.daily.mapping[2]: must be `{from: column, to: name}` (or a column name)",
    ]


def test_csv_options_are_checked() -> None:
    doc = with_activation(csv={"delimiter": ";;", "header": "yes", "quote": "'"})
    assert problems(doc) == [
        "activations.daily.csv.quote: unknown option `quote`; csv options are: bom, delimiter, header, "
        "line_ending, null_value",
        "activations.daily.csv.delimiter: must be a single character, got `;;`",
        "activations.daily.csv.header: must be true or false, got `yes`",
    ]
    parse_catalog(with_activation(csv={"delimiter": "\t"}), Path("/cat"))


def test_sizes_and_unknown_fields() -> None:
    doc = with_activation(max_file_size="lots", colour="blue")
    assert problems(doc) == [
        "activations.daily.colour: unknown field; allowed fields are: "
        + ", ".join(__import__("core.catalog.parse", fromlist=["ACTIVATION_FIELDS"]).ACTIVATION_FIELDS),
        "activations.daily.max_file_size: must be a size such as `500KB`, `100MB` or `2GB`, got `lots`",
    ]
    catalog = parse_catalog(with_activation(max_file_size="100MB", max_file_rows=5000), Path("/cat"))
    assert catalog.activations["daily"].max_file_size == 100_000_000


def test_destination_auth_and_ids() -> None:
    doc = copy.deepcopy(BASE)
    doc["destinations"]["lake"]["sas_url_setting"] = "LAKE_SAS"
    doc["destinations"]["Bad Id"] = {"type": "ftp"}
    assert problems(doc) == [
        "destinations.Bad Id: ids are 1 to 64 of a-z, 0-9, `_` and `-`",
        "destinations.lake: needs exactly one of `connection_setting`, `sas_url_setting` or `account_url`",
    ]


def test_segment_trees_are_checked() -> None:
    doc = copy.deepcopy(BASE)
    doc["segments"]["adults"]["where"] = {
        "any": [{"column": "age", "op": "~", "value": 1}, {"column": "plan", "op": "in", "value": []}]
    }
    assert problems(doc) == [
        "segments.adults.where.any[0].op: unknown operator `~`; operators are: =, !=, <, <=, >, >=, in, not_in, "
        "between, is_null, not_null, is_true, is_false, contains, starts_with, ends_with",
        "segments.adults.where.any[1].value: `in` needs a non-empty list of values",
    ]


def test_column_checks_need_the_real_columns() -> None:
    catalog = parse_catalog(copy.deepcopy(BASE), Path("/cat"))
    found = [str(p) for p in column_problems(catalog, catalog.activations["daily"], ["age", "nme", "id"])]
    assert found == ['activations.daily.mapping[1].from: unknown column "name"; columns are: age, nme, id']


def test_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(CatalogError, match=r"is not valid YAML or JSON at line 2"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match=r"cannot read the catalog `.*missing.yaml`"):
        load_catalog(tmp_path / "missing.yaml")


def test_the_demo_catalog_is_valid() -> None:
    # `make demo` is not part of CI: at least its catalog must stay valid as the format evolves.
    catalog = load_catalog(Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml")
    assert sorted(catalog.activations) == [
        "customers_to_ftp",
        "customers_to_lake",
        "customers_to_sftp",
        "french_adults_changes",
    ]
    changes = catalog.activations["french_adults_changes"]
    assert (changes.segment, changes.run_type, changes.sync_mode) == ("french_adults", "full_then_delta", "difference")


def test_the_app_root_is_the_folder_of_function_app() -> None:
    """Relative paths of a catalog applied with `PUT /api/catalog` start there (wwwroot on Azure)."""
    assert (app_root() / "function_app.py").is_file()
    assert (app_root() / "core" / "catalog").is_dir()
