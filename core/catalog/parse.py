"""The catalog (DESIGN.md §1): typed, frozen objects and a validation that lists every problem.

`load_catalog(path)` reads YAML or JSON; `parse_catalog(doc, base_dir)` validates a document and
returns a `Catalog` or raises `CatalogInvalid` with every problem found, each with its path
(`activations.daily.mapping[1].to: …`). Checks that need the source's columns live in
`core/catalog/columns.py`, which the engine and `validate --probe` call with a real schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..destinations.sftp_config import sftp_destination
from ..errors import CatalogError, CatalogInvalid, Problem
from ..read.segments import where_problems
from ..settings import allowed_settings, setting_refusal
from ..write import naming
from ..write.encryption import parse_encryption
from ..write.formats import WRITERS
from .alerts import parse_alerts
from .cron import cron_problem
from .limits import check_size, check_structure
from .model import (
    COMPRESSIONS,
    ID_PATTERN,
    ON_DUPLICATE_KEY,
    ON_EMPTY,
    ON_INVALID_TEXT,
    RUN_TYPES,
    SYNC_MODES,
    TLS_MODES,
    WARNING_CODES,
    Activation,
    Catalog,
    Destination,
    MappedColumn,
    Model,
    Segment,
    Source,
)
from .reader import Reader, show
from .units import parse_size

if TYPE_CHECKING:
    pass


def app_root() -> Path:
    """The app's root folder: where `function_app.py` sits (`/home/site/wwwroot` on Azure). The
    relative paths of a catalog applied without a file (`PUT /api/catalog`) start here."""
    return Path(__file__).resolve().parents[2]


def deployment_warnings(catalog: Catalog) -> list[Problem]:
    """Paths that resolve on this machine but not on the Function App, which only has its own files."""
    root = app_root()
    warnings = []
    for source in catalog.sources.values():
        if source.database is not None and not source.database.resolve().is_relative_to(root):
            warnings.append(
                Problem(
                    f"sources.{source.id}.database",
                    f"`{source.database}` is outside the app folder `{root}`: this machine's CLI reads it, but on the "
                    "Function App a DuckDB database is a file deployed with the app, named relative to the catalog "
                    "(or, for `PUT /api/catalog`, to the app's root, next to function_app.py), and read-only under "
                    "run-from-package",
                )
            )
    return warnings


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file (YAML or JSON); paths inside are relative to its folder."""
    catalog, problems = load_catalog_partly(path)
    if problems:
        raise CatalogInvalid(problems)
    return catalog


def load_catalog_partly(path: str | Path) -> tuple[Catalog, list[Problem]]:
    """The catalog file as far as it is valid, and every problem (see `parse_catalog_partly`)."""
    return parse_catalog_partly(read_catalog(path), base_dir=Path(path).resolve().parent)


def read_catalog(path: str | Path) -> Any:
    """A catalog file's document, unvalidated: its size is checked before it is read."""
    path = Path(path)
    try:
        check_size(path.stat().st_size, str(path))
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read the catalog `{path}`: {exc.strerror or exc}") from exc
    return parse_text(text, str(path))


def parse_text(text: str, origin: str = "catalog") -> Any:
    """A YAML or JSON document, bounded in size, depth and alias expansion (`limits`)."""
    check_size(len(text.encode("utf-8", "surrogatepass")), origin)
    check_structure(text, origin)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CatalogError(f"`{origin}` is not valid YAML or JSON{where}: {getattr(exc, 'problem', exc)}") from exc


def parse_catalog(doc: Any, base_dir: Path | None = None) -> Catalog:
    """Validate a catalog document; raise `CatalogInvalid` listing every problem."""
    catalog, problems = parse_catalog_partly(doc, base_dir)
    if problems:
        raise CatalogInvalid(problems)
    return catalog


def parse_catalog_partly(doc: Any, base_dir: Path | None = None) -> tuple[Catalog, list[Problem]]:
    """The catalog as far as it is valid, and every problem: `validate --probe` checks the valid
    objects against their sources even when others have problems, and reports both together."""
    problems: list[Problem] = []
    top = Reader(problems, "", doc)
    top.path = "catalog"
    sections = ("sources", "models", "segments", "destinations", "activations")
    top.known((*sections, "alerts"))
    raw = {name: _section(problems, top.raw, name) for name in sections}

    sources = {k: _source(problems, k, v, base_dir) for k, v in raw["sources"].items()}
    models = {k: _model(problems, k, v, sources) for k, v in raw["models"].items()}
    segments = {k: _segment(problems, k, v, models) for k, v in raw["segments"].items()}
    destinations = {k: _destination(problems, k, v, base_dir) for k, v in raw["destinations"].items()}
    activations = {
        k: _activation(problems, k, v, models, segments, destinations, sources) for k, v in raw["activations"].items()
    }
    alerts = parse_alerts(problems, top.raw.get("alerts"), raw["activations"])
    return Catalog(sources, models, segments, destinations, activations, document=doc, alerts=alerts), problems


def _section(problems: list[Problem], doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    section = doc.get(name) or {}
    if not isinstance(section, Mapping):
        problems.append(Problem(name, "must be a mapping of id to definition"))
        return {}
    valid = {}
    for key, value in section.items():
        if not isinstance(key, str) or not ID_PATTERN.match(key):
            problems.append(Problem(f"{name}.{key}", "ids are 1 to 64 of a-z, 0-9, `_` and `-`"))
            continue
        valid[key] = value
    return valid


def _source(problems: list[Problem], sid: str, raw: Any, base_dir: Path | None) -> Source:
    r = Reader(problems, f"sources.{sid}", raw)
    kind = r.choice("type", ("duckdb", "postgresql", "adbc"), "duckdb")
    if kind == "duckdb":
        r.known(("type", "database", "allow_file_access", "memory_limit", "threads"))
        database = r.text("database", required=True)
        memory_limit = _memory_limit(r)
        path = None
        if database is not None:
            path = Path(database)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
        return Source(
            sid,
            kind,
            database=path,
            allow_file_access=r.flag("allow_file_access", False),
            memory_limit=memory_limit,
            threads=r.integer("threads", minimum=1, maximum=64),
        )
    if kind == "postgresql":
        r.known(("type", "uri_setting", "statement_timeout"))
        timeout = None
        value = r.raw.get("statement_timeout")  # seconds, or text: 500ms, 30s, 5min, 1h
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*", value) if isinstance(value, str) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            timeout = float(value)
        elif match and float(match.group(1)) > 0:
            timeout = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}[match.group(2) or "s"]
        elif value is not None:
            r.problem(
                "statement_timeout",
                f"must be a duration such as 30s, 5min or 1h (or a number of seconds), got `{show(value)}`",
            )
        return Source(sid, kind, uri_setting=r.setting("uri_setting", required=True), statement_timeout=timeout)
    r.known(("type", "driver", "uri_setting", "dialect", "options", "option_settings"))
    driver = r.text("driver", required=True)
    if driver is not None and not re.fullmatch(r"adbc_driver_[a-z0-9_]+", driver):
        r.problem(
            "driver",
            f"must name an ADBC driver module such as adbc_driver_sqlite, adbc_driver_snowflake, "
            f"adbc_driver_bigquery or adbc_driver_flightsql; got `{show(driver)}`",
        )
        driver = None
    # the dialects of core.read.segments.DIALECTS
    dialects = ("duckdb", "postgresql", "sqlite", "snowflake", "bigquery", "ansi")
    dialect = r.choice("dialect", dialects, "ansi") if "dialect" in r.raw else None
    options: dict[str, str] = {}
    raw_options = r.raw.get("options") or {}
    if not isinstance(raw_options, Mapping):
        r.problem("options", "must be a mapping of driver option names to values")
        raw_options = {}
    for key, value in raw_options.items():
        if not isinstance(key, str) or not key or isinstance(value, Mapping | list) or value is None:
            r.problem(f"options.{key}", f"must be a text, number or boolean value, got `{show(value)}`")
        elif key.lower().endswith(("password", "secret", "token")):
            r.problem(
                f"options.{key}",
                "looks like a secret: secrets never sit in the catalog; name the app "
                "setting holding it under `option_settings`",
            )
        else:
            options[key] = str(value).lower() if isinstance(value, bool) else str(value)
    option_settings: dict[str, str] = {}
    raw_settings = r.raw.get("option_settings") or {}
    if not isinstance(raw_settings, Mapping):
        r.problem("option_settings", "must be a mapping of driver option names to app setting names")
        raw_settings = {}
    for key, value in raw_settings.items():
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]*", value):
            r.problem(f"option_settings.{key}", f"must name an app setting (letters, digits, `_`), got `{show(value)}`")
        elif key in options:
            r.problem(f"option_settings.{key}", "is also set in `options`; keep one")
        elif refusal := setting_refusal(value, allowed_settings()):
            r.problem(f"option_settings.{key}", refusal)
        else:
            option_settings[str(key)] = value
    return Source(
        sid,
        kind,
        uri_setting=r.setting("uri_setting"),
        driver=driver,
        dialect=dialect,
        options=options,
        option_settings=option_settings,
    )


def _memory_limit(r: Reader) -> str | None:
    """A DuckDB source's `memory_limit`, as DuckDB takes it (`64MB`); at least 16 MB."""
    value = r.raw.get("memory_limit")
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        r.problem("memory_limit", str(exc))
        return None
    if size < 16 * 1000**2:
        r.problem("memory_limit", f"must be at least 16MB (DuckDB needs room for a scan), got `{show(value)}`")
        return None
    return f"{size // 1000}KB"


def _model(problems: list[Problem], mid: str, raw: Any, sources: Mapping[str, Source]) -> Model:
    r = Reader(problems, f"models.{mid}", raw)
    r.known(("source", "sql", "table", "primary_key"))
    source = r.reference("source", sources, "source") or ""
    sql, table = r.text("sql"), r.text("table")
    if (sql is None) == (table is None):
        r.problem("", "needs exactly one of `sql` or `table`")
    key = r.raw.get("primary_key", [])
    if isinstance(key, str):
        key = [key]
    if not isinstance(key, list) or not all(isinstance(k, str) and k for k in key):
        r.problem("primary_key", "must be a column name or a list of column names")
        key = []
    elif len(set(key)) != len(key):
        r.problem("primary_key", "lists a column twice")
    return Model(mid, source, sql=sql, table=table, primary_key=tuple(key))


def _segment(problems: list[Problem], sid: str, raw: Any, models: Mapping[str, Model]) -> Segment:
    r = Reader(problems, f"segments.{sid}", raw)
    r.known(("model", "where"))
    model = r.reference("model", models, "model") or ""
    where = r.raw.get("where")
    if not isinstance(where, Mapping):
        r.problem("where", "is required: a condition, or a group `all: [...]` / `any: [...]`")
        where = {}
    else:
        for subpath, message in where_problems(where):
            problems.append(Problem(f"segments.{sid}.where{subpath}", message))
    return Segment(sid, model, where)


def _destination(problems: list[Problem], did: str, raw: Any, base_dir: Path | None = None) -> Destination:
    r = Reader(problems, f"destinations.{did}", raw)
    kind = r.choice("type", ("ftp", "sftp", "azure_blob"), "ftp") if "type" in r.raw else None
    if kind is None:
        r.problem("type", "is required: ftp, sftp or azure_blob")
        return Destination(did, "ftp")
    if kind == "sftp":
        return sftp_destination(r, did)
    if kind == "ftp":
        r.known(("type", "host", "port", "username", "password_setting", "tls", "passive", "ca_file"))
        tls = r.choice("tls", TLS_MODES, "none")
        ca_file = r.text("ca_file")  # used only with tls explicit/implicit
        if ca_file is not None and base_dir is not None and not Path(ca_file).is_absolute():
            ca_file = str(base_dir / ca_file)
        if r.raw.get("passive") is False:
            r.problem(
                "passive", "active mode is not supported: an Azure Function cannot accept the server's data connections"
            )
        return Destination(
            did,
            kind,
            host=r.text("host", required=True),
            port=r.integer("port", minimum=1, maximum=65535) or (990 if tls == "implicit" else 21),
            username=r.text("username", required=True),
            password_setting=r.setting("password_setting"),
            tls=tls,
            passive=r.flag("passive", True),
            ca_file=ca_file,
        )
    r.known(("type", "container", "connection_setting", "sas_url_setting", "account_url", "create_container"))
    container = r.text("container", required=True)
    if container is not None and not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", container):
        r.problem("container", "must be 3 to 63 of a-z, 0-9 and `-`, starting and ending with a letter or digit")
    auth = [k for k in ("connection_setting", "sas_url_setting", "account_url") if r.raw.get(k) is not None]
    if len(auth) != 1:
        r.problem("", "needs exactly one of `connection_setting`, `sas_url_setting` or `account_url`")
    account_url = r.text("account_url")
    if account_url is not None and not account_url.startswith("https://"):
        r.problem(
            "account_url",
            "must be an https URL such as `https://myaccount.blob.core.windows.net` (tokens are only sent over HTTPS)",
        )
    if r.raw.get("sas_url_setting") is not None and r.raw.get("create_container") is True:
        r.problem(
            "create_container",
            "a container SAS cannot create its container: create it, or use `connection_setting` or `account_url`",
        )
    return Destination(
        did,
        kind,
        container=container,
        connection_setting=r.setting("connection_setting"),
        sas_url_setting=r.setting("sas_url_setting"),
        account_url=account_url,
        create_container=r.flag("create_container", False),
    )


ACTIVATION_FIELDS = (
    "model",
    "segment",
    "destination",
    "folder",
    "file_name",
    "format",
    *sorted(WRITERS),
    "mapping",
    "run_type",
    "sync_mode",
    "schedule",
    "compression",
    "max_file_size",
    "max_file_rows",
    "on_empty",
    "on_duplicate_key",
    "manifest",
    "fail_on",
    "warnings",
    "encryption",
    "on_invalid_text",
)


def _activation(
    problems: list[Problem],
    aid: str,
    raw: Any,
    models: Mapping[str, Model],
    segments: Mapping[str, Segment],
    destinations: Mapping[str, Destination],
    sources: Mapping[str, Source],
) -> Activation:
    r = Reader(problems, f"activations.{aid}", raw)
    r.known(ACTIVATION_FIELDS)
    model = segment = None
    if ("model" in r.raw) == ("segment" in r.raw):
        r.problem("", "needs exactly one of `model` or `segment`")
    elif "model" in r.raw:
        model = r.reference("model", models, "model")
    else:
        segment = r.reference("segment", segments, "segment")
    destination = r.reference("destination", destinations, "destination") or ""
    dest_type = destinations[destination].type if destination in destinations else None

    fmt = r.choice("format", sorted(WRITERS), "csv") if "format" in r.raw else None
    if fmt is None:
        r.problem("format", f"is required: one of {', '.join(sorted(WRITERS))}")
        fmt = "csv"
    for other in WRITERS:
        if other != fmt and other in r.raw:
            r.problem(other, f"options for `{other}` given, but the format is `{fmt}`")
    options = r.raw.get(fmt) or {}
    if not isinstance(options, Mapping):
        r.problem(fmt, "must be a mapping of options")
        options = {}
    for key, message in WRITERS[fmt].option_problems(options):
        r.problem(f"{fmt}.{key}", message)

    folder = r.raw.get("folder", "")
    if folder is None or not isinstance(folder, str):
        r.problem("folder", f"must be a string, got `{show(folder)}`")
        folder = ""
    else:
        for message in naming.folder_problems(folder, dest_type):
            r.problem("folder", message)
    file_name = r.text("file_name", required=True) or ""
    if file_name:
        for message in naming.template_problems(file_name):
            r.problem("file_name", message)

    mapping = _mapping(r)
    if fmt == "xml" and mapping:
        from ..write.formats.xml import name_collisions

        for message in name_collisions([column.target for column in mapping]):
            r.problem("mapping", message)
    run_type = r.choice("run_type", RUN_TYPES, "full_only")
    sync_mode = r.choice("sync_mode", SYNC_MODES, "snapshot")
    if run_type == "full_only" and sync_mode == "difference":
        r.problem("sync_mode", "DIFFERENCE needs FULL THEN DELTA: set `run_type: full_then_delta`")
    if run_type == "full_then_delta" and sync_mode == "snapshot":
        r.problem(
            "sync_mode", "SNAPSHOT has no delta: use `run_type: full_only`, or choose upsert, insert or difference"
        )
    if run_type == "full_then_delta":
        owner_id = model or (segments[segment].model if segment is not None and segment in segments else "")
        owner = models.get(owner_id)
        if owner is not None and not owner.primary_key:
            r.problem("run_type", f"FULL THEN DELTA needs a primary key: set `primary_key` on model `{owner.id}`")
    schedule = r.text("schedule")
    if schedule is not None and (wrong := cron_problem(schedule)):
        r.problem("schedule", wrong)

    max_size = None
    if r.raw.get("max_file_size") is not None:
        try:
            max_size = parse_size(r.raw["max_file_size"])
        except ValueError as exc:
            r.problem("max_file_size", str(exc))
    compression = r.choice("compression", COMPRESSIONS, "none")
    if compression == "gzip" and not WRITERS[fmt].spec.text:
        r.problem("compression", f"gzip applies to text formats; {fmt} compresses with its own codec")
    return Activation(
        aid,
        destination,
        file_name,
        fmt,
        model=model,
        segment=segment,
        folder=folder,
        format_options=dict(options),
        mapping=mapping,
        run_type=run_type,
        sync_mode=sync_mode,
        schedule=schedule,
        compression=compression,
        max_file_size=max_size,
        max_file_rows=r.integer("max_file_rows", minimum=1),
        on_empty=r.choice("on_empty", ON_EMPTY, "write"),
        on_duplicate_key=r.choice("on_duplicate_key", ON_DUPLICATE_KEY, "warn"),
        on_invalid_text=r.choice("on_invalid_text", ON_INVALID_TEXT, "fail"),
        manifest=r.flag("manifest", False),
        fail_on=_fail_on(r),
        encryption=parse_encryption(Reader(problems, f"activations.{aid}.encryption", r.raw["encryption"]))
        if "encryption" in r.raw
        else None,
        **_thresholds(problems, f"activations.{aid}.warnings", r.raw.get("warnings")),
    )


def _fail_on(r: Reader) -> tuple[str, ...]:
    raw = r.raw.get("fail_on", [])
    if not isinstance(raw, list):
        r.problem("fail_on", f"must be a list of warning codes: {', '.join(WARNING_CODES)}")
        return ()
    for code in raw:
        if code not in WARNING_CODES:
            r.problem("fail_on", f"unknown warning `{show(code)}`; warnings are: {', '.join(WARNING_CODES)}")
    return tuple(code for code in raw if code in WARNING_CODES)


def _thresholds(problems: list[Problem], path: str, raw: Any) -> dict[str, int]:
    if raw is None:
        return {}
    r = Reader(problems, path, raw)
    r.known(("row_drop_percent", "max_parts"))
    values = {
        "row_drop_percent": r.integer("row_drop_percent", minimum=1, maximum=100),
        "max_parts": r.integer("max_parts", minimum=1),
    }
    return {key: value for key, value in values.items() if value is not None}


def _mapping(r: Reader) -> tuple[MappedColumn, ...] | None:
    raw = r.raw.get("mapping")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        r.problem("mapping", "must be a non-empty list of `{from: column, to: name}`")
        return None
    columns: list[MappedColumn] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        path = f"mapping[{index}]"
        if isinstance(item, str):
            item = {"from": item, "to": item}
        if not isinstance(item, Mapping) or set(item) - {"from", "to"} or not isinstance(item.get("from"), str):
            r.problem(path, "must be `{from: column, to: name}` (or a column name)")
            continue
        target = item.get("to", item["from"])
        if not isinstance(target, str) or not target or not item["from"]:
            r.problem(path, "`from` and `to` must be non-empty strings")
            continue
        if target in seen:
            r.problem(f"{path}.to", f"`{target}` is already the name of mapping[{seen[target]}]")
            continue
        seen[target] = index
        columns.append(MappedColumn(item["from"], target))
    return tuple(columns)
