"""`python -m core`: validate, apply, run, runs (DESIGN.md §4).

Exit codes: 0 success (warnings included), 1 the run failed, 2 bad input (an invalid catalog, an
unknown activation, a missing setting). The run record goes to stdout as JSON; progress and
messages go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from .catalog import Catalog, check_columns, load_catalog
from .engine import RunResult
from .errors import CatalogError, CatalogInvalid, FilecastError, Problem, SettingError
from .records import parse_time
from .service import Services, preview_activation, preview_json, record_json, reset_activation, run_activation
from .settings import Settings

BAD_INPUT = (CatalogError, SettingError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Filecast: exports models to files.")
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
    runs.add_argument("--limit", type=int, default=20)
    return parser


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "aioftp", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def probe(catalog: Catalog, settings: Settings) -> list[Problem]:
    """Checks that need the sources: each model's query runs (described, not read), and primary keys,
    mapped columns and segment filters (columns and value types) fit the real schemas."""
    from .engine import format_problems
    from .mapping import Mapper
    from .segments import check_segment
    from .sources import model_sql, open_source

    problems: list[Problem] = []

    def problem(path: str, message: str) -> None:
        if Problem(path, message) not in problems:
            problems.append(Problem(path, message))

    schemas: dict[str, list[str]] = {}  # model id → its real columns
    segment_schemas = {}
    for source_id, source_config in catalog.sources.items():
        models = [m for m in catalog.models.values() if m.source == source_id]
        if not models:
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
        for key in catalog.models[model_id].primary_key:
            if key not in names:
                problem(f"models.{model_id}.primary_key", f'unknown column "{key}"; columns are: {", ".join(names)}')
    for segment_id, segment in catalog.segments.items():
        if segment.model in segment_schemas:
            check_segment(catalog, segment_id, segment_schemas[segment.model], problem=problem)
    for activation in catalog.activations.values():
        model_id = catalog.model_of(activation).id
        columns = schemas.get(model_id)
        if columns is not None:
            check_columns(catalog, activation, columns, problem=problem)
            if all(c.source in columns for c in activation.mapping or ()):
                try:
                    format_problems(activation, Mapper(segment_schemas[model_id], activation.mapping).schema)
                except CatalogError as exc:
                    problem(f"activations.{activation.id}.{activation.format}", exc.message.split(": ", 1)[-1])
    return problems


def _show_progress(rows: int, size: int) -> None:
    """One self-overwriting progress line on an interactive terminal."""
    print(f"\r{rows:,} rows read, {size / 1_048_576:,.1f} MB written", end="", file=sys.stderr, flush=True)


def _exit_code(result: RunResult) -> int:
    if result.exception is None:
        return 0
    return 2 if isinstance(result.exception, BAD_INPUT) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging()
    try:
        settings = Settings.load()
        if args.command == "validate":
            catalog = load_catalog(args.catalog)
            problems = probe(catalog, settings) if args.probe else []
            if problems:
                raise CatalogInvalid(problems)
            print(f"{args.catalog}: valid ({len(catalog.activations)} activations)", file=sys.stderr)
            return 0
        services = Services(settings)
        if args.command == "apply":
            from .catalog import parse_text

            with open(args.catalog, encoding="utf-8") as handle:
                doc = parse_text(handle.read(), args.catalog)
            catalog = services.catalogs.apply(doc)
            print(f"applied {args.catalog}: {len(catalog.activations)} activations", file=sys.stderr)
            return 0
        if args.command == "runs":
            records = services.runs.history(args.activation, args.limit)
            print(json.dumps([r.as_dict() for r in records], indent=2))
            return 0
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
        from .service import storage_services  # the lease, whenever storage is configured (one run at a time)

        result = asyncio.run(run_activation(
            settings, catalog, args.activation, logical_time=at, trigger="manual",
            services=services if args.catalog is None else storage_services(settings), busy_fails=True,
            progress=_show_progress if sys.stderr.isatty() else None))
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(record_json(result.record))
        return _exit_code(result)
    except BAD_INPUT as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except FilecastError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
