"""Sources by catalog type; `open_source` builds the one a model names.

| type | reads through | segment dialect |
|---|---|---|
| `duckdb` | the embedded DuckDB engine, a database file | `?` |
| `postgresql` | ADBC (`adbc-driver-postgresql`), URI from `uri_setting` | `$1` |
| `adbc` | any ADBC driver module (`driver`), URI from `uri_setting`, `options` | from the driver |
"""

from __future__ import annotations

from ...catalog.model import Model, Source
from ...errors import CatalogError
from ...settings import Settings
from ..segments import quote_identifier
from .base import Source as SourceReader


def open_source(source: Source, settings: Settings) -> SourceReader:
    """Connect to a catalog source; secrets come from the app settings the catalog names."""
    from ...write.arrow_memory import use_lean_pool

    use_lean_pool()  # before the run's first batch: the writers' buffers come from this pool
    if source.type == "duckdb":
        from .duckdb import DuckDBSource

        assert source.database is not None
        return DuckDBSource(
            source.database,
            allow_file_access=source.allow_file_access,
            memory_limit=source.memory_limit,
            threads=source.threads,
        )
    if source.type in ("postgresql", "adbc"):
        uri = (
            settings.secret(source.uri_setting, purpose=f"connection URI of source `{source.id}`")
            if source.uri_setting
            else None
        )
        options = dict(source.options)
        for option, setting in source.option_settings.items():
            options[option] = settings.secret(setting, purpose=f"option `{option}` of source `{source.id}`")
        if source.type == "postgresql" or source.driver == "adbc_driver_postgresql":
            from .postgresql import PostgresSource

            if uri is None:
                raise CatalogError(f"sources.{source.id}.uri_setting: is required for PostgreSQL")
            return PostgresSource(
                uri,
                source_id=source.id,
                uri_setting=source.uri_setting,
                statement_timeout=source.statement_timeout,
                options=options,
            )
        from .adbc import open_adbc

        return open_adbc(source, uri, options)
    raise CatalogError(f"sources.{source.id}.type: `{source.type}` sources are not supported")


def model_sql(model: Model) -> str:
    if model.sql is not None:
        return model.sql.strip().rstrip(";")
    assert model.table is not None
    return "SELECT * FROM " + ".".join(quote_identifier(part) for part in model.table.split("."))
