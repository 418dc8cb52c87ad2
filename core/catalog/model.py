"""The catalog's typed, frozen objects (DESIGN.md §1): sources, models, segments, destinations,
activations and the `Catalog` that holds them; `core/catalog/parse.py` builds them from a document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..write.encryption import Encryption

if TYPE_CHECKING:
    from .alerts import Alerts

ID_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
RUN_TYPES = ("full_only", "full_then_delta")
SYNC_MODES = ("snapshot", "upsert", "insert", "difference")
TLS_MODES = ("none", "explicit", "implicit")
ON_EMPTY = ("write", "skip")
ON_DUPLICATE_KEY = ("warn", "fail")
ON_INVALID_TEXT = ("fail", "replace")  # text that is not valid UTF-8 (core/read/textcheck.py)
COMPRESSIONS = ("none", "gzip")
WARNING_CODES = (
    "zero_rows",
    "row_drop",
    "duplicate_key",
    "null_key",
    "sas_expiring",
    "overwrite_risk",
    "too_many_parts",
    "row_larger_than_limit",
    "part_over_limit",
    "state_reset",
    "key_expiring",
    "invalid_text",
    "xml_replaced_characters",
)


@dataclass(frozen=True)
class Source:
    id: str
    type: str  # duckdb | postgresql | adbc
    database: Path | None = None  # duckdb: absolute path of the database file
    allow_file_access: bool = False  # duckdb: model SQL may read files, ATTACH, load extensions
    memory_limit: str | None = None  # duckdb: its memory cap, e.g. `64MB` (default: the source's)
    threads: int | None = None  # duckdb: threads a model query may use (default: DuckDB's, one per core)
    uri_setting: str | None = None  # postgresql, adbc: app setting holding the connection URI
    statement_timeout: float | None = None  # postgresql: seconds a model query may run (server-side)
    driver: str | None = None  # adbc: driver module, e.g. adbc_driver_sqlite
    dialect: str | None = None  # adbc: SQL dialect of segment filters (default: from the driver)
    options: Mapping[str, str] = field(default_factory=dict)  # adbc: driver options
    option_settings: Mapping[str, str] = field(default_factory=dict)  # adbc: driver options from app settings


@dataclass(frozen=True)
class Model:
    id: str
    source: str
    sql: str | None = None
    table: str | None = None
    primary_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Segment:
    id: str
    model: str
    where: Mapping[str, Any]


@dataclass(frozen=True)
class Destination:
    id: str
    type: str  # ftp | sftp | azure_blob
    # ftp (host, port, username, password_setting also sftp)
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password_setting: str | None = None
    tls: str = "none"
    passive: bool = True
    ca_file: str | None = None  # CA certificates to trust for FTPS (relative to the catalog)
    # sftp
    private_key_setting: str | None = None  # app setting holding an OpenSSH or PEM private key
    passphrase_setting: str | None = None  # app setting holding that key's passphrase
    host_key: tuple[str, ...] = ()  # pinned: `SHA256:` fingerprints or known_hosts lines
    # azure_blob
    container: str | None = None
    connection_setting: str | None = None
    sas_url_setting: str | None = None
    account_url: str | None = None
    create_container: bool = False


@dataclass(frozen=True)
class MappedColumn:
    source: str  # `from`
    target: str  # `to`


@dataclass(frozen=True)
class Activation:
    id: str
    destination: str
    file_name: str
    format: str
    model: str | None = None
    segment: str | None = None
    folder: str = ""
    format_options: Mapping[str, Any] = field(default_factory=dict)
    mapping: tuple[MappedColumn, ...] | None = None
    run_type: str = "full_only"
    sync_mode: str = "snapshot"
    schedule: str | None = None
    compression: str = "none"
    max_file_size: int | None = None
    max_file_rows: int | None = None
    on_empty: str = "write"
    on_duplicate_key: str = "warn"
    manifest: bool = False
    fail_on: tuple[str, ...] = ()
    row_drop_percent: int = 50  # warn when rows read fall by more than this vs the last success
    max_parts: int = 100  # warn when a run writes more parts than this
    encryption: Encryption | None = None  # OpenPGP (core/write/encryption.py)
    on_invalid_text: str = "fail"  # invalid UTF-8 from the source: fail the run, or write U+FFFD


@dataclass(frozen=True)
class Catalog:
    sources: Mapping[str, Source]
    models: Mapping[str, Model]
    segments: Mapping[str, Segment]
    destinations: Mapping[str, Destination]
    activations: Mapping[str, Activation]
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    alerts: Alerts | None = None  # the `alerts` section (core/control/alerts.py)

    def activation(self, activation_id: str) -> Activation:
        from ..errors import NotFound

        try:
            return self.activations[activation_id]
        except KeyError:
            known = ", ".join(sorted(self.activations)) or "(none)"
            raise NotFound(f"no activation `{activation_id}` in the catalog; activations are: {known}") from None

    def model_of(self, activation: Activation) -> Model:
        if activation.segment is not None:
            return self.models[self.segments[activation.segment].model]
        assert activation.model is not None
        return self.models[activation.model]
