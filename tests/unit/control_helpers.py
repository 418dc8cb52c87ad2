"""Shared by the engine and service unit tests: a DuckDB table of people, a catalog exporting it, a
broken state store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from core.errors import StateError, StateUnavailable
from core.state.base import Snapshot
from core.state.memory import MemoryStateStore

T0 = "2025-04-01T10:00:00Z"


def people_db(path: Path, rows: int, *, name: str = "p") -> Path:
    """(Re)create `people(id, name)` with ids 0..rows-1 and names `<name><id>`."""
    with duckdb.connect(str(path)) as con:
        con.execute("create or replace table people as select i as id, ? || i as name from range(?) t(i)", [name, rows])
    return path


def catalog_doc(db: Path, **activation: Any) -> dict[str, Any]:
    """A catalog with one activation `sync` of `people` to the destination `out` (CSV, full only)."""
    spec: dict[str, Any] = {
        "model": "people",
        "destination": "out",
        "file_name": "people",
        "format": "csv",
        "run_type": "full_only",
        "sync_mode": "snapshot",
    }
    spec.update(activation)
    return {
        "sources": {"db": {"type": "duckdb", "database": str(db)}},
        "models": {"people": {"source": "db", "table": "people", "primary_key": ["id"]}},
        "destinations": {"out": {"type": "azure_blob", "container": "exports", "connection_setting": "OUT_STORAGE"}},
        "activations": {"sync": spec},
    }


class BrokenState(MemoryStateStore):
    """A delta state store whose `load` always fails, transiently or not."""

    def __init__(self, transient: bool):
        super().__init__()
        self.transient = transient

    def load(self, activation: str) -> Snapshot:
        self.calls.append("load")
        error = StateUnavailable if self.transient else StateError
        raise error("the state store is unreachable")
