"""The `filecast` command (also `python -m core`): validate, apply, run, preview, reset, runs (DESIGN.md §4).

Exit codes: 0 success (warnings included), 1 the run failed, 2 bad input (an invalid catalog, an
unknown activation, a missing setting, a bad option), 130 interrupted (Ctrl-C): an error's exit
code comes from the table the HTTP API answers from too (core/error_codes.py). The run record
goes to stdout as JSON; progress and messages go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .error_codes import ANSWERS, ErrorCode
from .errors import CatalogError, CatalogInvalid, FilecastError, Problem
from .run.records import RunRecord, new_run_id, parse_time
from .settings import Settings

if TYPE_CHECKING:  # the run machinery (pyarrow, DuckDB, the SDKs) loads once a command needs it
    from .catalog.model import Catalog
    from .control.service import Services
    from .run.engine import RunResult

INTERRUPTED = ANSWERS[ErrorCode.INTERRUPTED].exit  # 130: 128 + SIGINT, as shells report it
CLEAR_LINE = "\r\x1b[K"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number of at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="filecast", description="Filecast: exports models to files.")
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a catalog and list every problem")
    validate.add_argument("catalog")
    validate.add_argument("--probe", action="store_true", help="also check columns against the real sources")
    apply = sub.add_parser("apply", help="validate, then store the catalog in Table Storage")
    apply.add_argument("catalog")
    run = sub.add_parser("run", help="run an activation now, in-process")
    run.add_argument("activation")
    run.add_argument("--catalog", help="catalog file (default: the applied catalog)")
    run.add_argument("--at", help="logical time, ISO 8601 (default: now)")
    preview = sub.add_parser("preview", help="dry run: file names and row counts, no upload, no state change")
    preview.add_argument("activation")
    preview.add_argument("--catalog", help="catalog file (default: the applied catalog)")
    preview.add_argument("--at", help="logical time, ISO 8601 (default: now)")
    reset = sub.add_parser("reset", help="clear the delta state: the next run is a full one")
    reset.add_argument("activation")
    reset.add_argument("--catalog", help="catalog file (default: the applied catalog)")
    runs = sub.add_parser("runs", help="run history of an activation, newest first")
    runs.add_argument("activation")
    runs.add_argument(
        "--limit",
        type=_positive,
        default=20,
        metavar="N",
        help="how many runs to show, newest first (a whole number of at least 1; default 20)",
    )
    console = sub.add_parser("console", help="serve the run console on 127.0.0.1 against the configured storage")
    console.add_argument("--port", type=int, default=7071, help="port to listen on (default 7071; 0 = any free)")
    console.add_argument("--run-queued", action="store_true", help="also run queued runs, like the Functions runner")
    return parser


class Progress:
    """The live progress line of a run on a terminal: cleared before any log line is written, and
    replaced by one closing line when the run ends."""

    def __init__(self, stream: TextIO, live: bool):
        self.stream = stream
        self.live = live
        self.shown = False
        self.started = time.monotonic()

    def update(self, rows: int, size: int) -> None:
        if self.live:
            self.stream.write(f"{CLEAR_LINE}{rows:,} rows read, {size / 1_048_576:,.1f} MB written")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.shown = False

    def finish(self, record: RunRecord) -> None:
        self.clear()
        size = sum(int(f.get("bytes", 0)) for f in record.files)
        files = len(record.files)
        self.stream.write(
            f"{record.activation}: {record.status}, {record.rows.read:,} rows read, "
            f"{record.rows.exported:,} exported in {files} file{'s' if files != 1 else ''} "
            f"({size / 1_048_576:,.1f} MB) in {time.monotonic() - self.started:.1f} s\n"
        )
        self.stream.flush()


class _LogHandler(logging.StreamHandler[TextIO]):
    """Clears the progress line before a log line, so the two never share a line."""

    progress: Progress | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.progress is not None:
            self.progress.clear()
        super().emit(record)


def _configure_logging() -> _LogHandler:
    handler = _LogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("azure", "aioftp", "urllib3", "asyncssh"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def _invalid(problems: list[Problem]) -> set[str]:
    """The catalog objects (`sources.x`, `models.y`…) that validation found problems in."""
    return {".".join(p.path.split(".")[:2]) for p in problems}


def probe(catalog: Catalog, settings: Settings, known: list[Problem] | None = None) -> list[Problem]:
    """Checks that need the sources: each model's query runs (described, not read), and primary keys,
    mapped columns and segment filters (columns and value types) fit the real schemas. Objects with
    problems of their own (`known`) are left out, so this runs alongside the static checks."""
    from .catalog.columns import column_problems, format_problems, key_problems, segment_problems
    from .errors import SchemaMismatch
    from .read.mapping import Mapper
    from .read.sources import model_sql, open_source

    bad = _invalid(known or [])
    problems: list[Problem] = []

    def problem(path: str, message: str) -> None:
        report([Problem(path, message)])

    def report(found: list[Problem]) -> None:
        problems.extend(p for p in found if p not in problems)

    def usable(section: str, key: str | None) -> bool:
        return key is not None and f"{section}.{key}" not in bad

    schemas: dict[str, list[str]] = {}  # model id → its real columns
    segment_schemas = {}
    for source_id, source_config in catalog.sources.items():
        models = [m for m in catalog.models.values() if m.source == source_id and usable("models", m.id)]
        if not models or not usable("sources", source_id):
            continue
        try:
            source = open_source(source_config, settings)
        except FilecastError as exc:
            problem(f"sources.{source_id}", exc.message)
            continue
        try:
            for model in models:
                try:
                    segment_schemas[model.id] = source.schema(model_sql(model))
                except FilecastError as exc:
                    problem(f"models.{model.id}", exc.message)
                    continue
                schemas[model.id] = segment_schemas[model.id].names
        finally:
            source.close()
    for model_id, names in schemas.items():
        report(key_problems(catalog.models[model_id], names))
    for segment_id, segment in catalog.segments.items():
        if segment.model in segment_schemas and usable("segments", segment_id):
            report(segment_problems(catalog, segment_id, segment_schemas[segment.model]))
    for activation in catalog.activations.values():
        if not usable("activations", activation.id) or (
            activation.segment is not None and not usable("segments", activation.segment)
        ):
            continue
        model_id = catalog.model_of(activation).id
        columns = schemas.get(model_id)
        if columns is not None:
            report(column_problems(catalog, activation, columns))
            with contextlib.suppress(SchemaMismatch):  # a mapped column is missing: reported just above
                report(format_problems(activation, Mapper(segment_schemas[model_id], activation.mapping).schema))
    return problems


def _exit_code(result: RunResult) -> int:
    return 0 if result.exception is None else ANSWERS[result.exception.code].exit


def _validate(path: str, settings: Settings, with_probe: bool) -> int:
    from .catalog.parse import load_catalog, load_catalog_partly

    if with_probe:
        from .destinations.sftp_probe import probe_host_keys

        keys, key_problems = probe_host_keys(path)
        for line in keys:  # SFTP: each server's key and the `host_key` line to paste, before any pin exists
            print(line, file=sys.stderr)
        catalog, problems = load_catalog_partly(path)
        problems = problems + key_problems + probe(catalog, settings, problems)
    else:
        catalog = load_catalog(path)
        problems = []
    from .write.encryption import check_catalog

    pgp_problems, key_lines = check_catalog(catalog, settings)  # OpenPGP keys, with or without --probe
    problems += [p for p in pgp_problems if p not in problems]
    if problems:
        raise CatalogInvalid(problems)
    for line in key_lines if with_probe else ():
        print(line, file=sys.stderr)
    print(f"{path}: valid ({len(catalog.activations)} activations)", file=sys.stderr)
    return 0


def _apply(path: str, services: Services) -> int:
    from .catalog.parse import deployment_warnings, read_catalog

    catalog = services.catalogs.apply(read_catalog(path), base_dir=Path(path).resolve().parent)
    for warning in deployment_warnings(catalog):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"applied {path}: {len(catalog.activations)} activations", file=sys.stderr)
    return 0


def _runs(activation: str, limit: int, services: Services) -> int:
    records = services.runs.history(activation, limit)
    if not records:
        services.catalog().activation(activation)  # an unknown id exits 2, naming the known ones
    print(json.dumps([r.as_dict() for r in records], indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = _configure_logging()
    record: RunRecord | None = None
    try:
        settings = Settings.load()
        if args.command == "validate":
            return _validate(args.catalog, settings, args.probe)
        if args.command == "console":
            from .control.console.server import server

            httpd = server(settings, args.port, run_queued=args.run_queued)
            print(
                f"console: http://127.0.0.1:{httpd.server_address[1]}/api/console (Ctrl-C stops)",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt), httpd:
                httpd.serve_forever()
            return 0
        from .control.service import (
            Services,
            preview_activation,
            preview_json,
            record_json,
            reset_activation,
            run_activation,
        )

        services = Services(settings)
        if args.command == "apply":
            return _apply(args.catalog, services)
        if args.command == "runs":
            return _runs(args.activation, args.limit, services)
        catalog = services.catalog(args.catalog)
        if args.command == "reset":
            reset_activation(settings, catalog, args.activation)
            print(f"reset the delta state of {args.activation}: its next run is a full one", file=sys.stderr)
            return 0
        at = None
        if args.at:
            try:
                at = parse_time(args.at)
            except ValueError:
                raise CatalogError(f"--at `{args.at}` is not an ISO 8601 time such as 2025-04-14T06:00:00Z") from None
        if args.command == "preview":
            result = asyncio.run(preview_activation(settings, catalog, args.activation, at))
            print(json.dumps(preview_json(result.record), indent=2))
            return _exit_code(result)
        from .control.service import storage_services  # the lease, whenever storage is configured (one run at a time)

        catalog.activation(args.activation)
        logical_time = at or datetime.now(UTC)
        record = RunRecord(new_run_id(logical_time), args.activation, "manual", logical_time)
        progress = handler.progress = Progress(sys.stderr, live=sys.stderr.isatty())
        result = asyncio.run(
            run_activation(
                settings,
                catalog,
                args.activation,
                logical_time=logical_time,
                trigger="manual",
                record=record,
                services=services if args.catalog is None else storage_services(settings),
                busy_fails=True,
                progress=progress.update,
            )
        )
        progress.finish(result.record)
        print(record_json(result.record))
        return _exit_code(result)
    except KeyboardInterrupt:
        if handler.progress is not None:
            handler.progress.clear()
        if record is not None and record.error is not None:
            print(json.dumps(record.as_dict(), indent=2))
            print(f"interrupted: {record.error['message']}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except FilecastError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return ANSWERS[exc.code].exit
