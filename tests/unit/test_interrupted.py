"""A run stopped from outside (Ctrl-C, a host shutdown) says exactly which files went live."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from core.catalog.model import Catalog
from core.catalog.parse import parse_catalog
from core.destinations.memory import MemoryDestination, MemoryUpload
from core.run.engine import Run
from core.run.records import RunRecord
from core.settings import Settings
from core.state.memory import MemoryStateStore


class StallingDestination(MemoryDestination):
    """Publishes files until one whose path contains `stall`, whose publish never returns."""

    def __init__(self, stall: str):
        super().__init__()
        self.stall = stall
        self.stalled = asyncio.Event()

    async def open(self, path: str, *, content_type: str) -> MemoryUpload:
        upload = await super().open(path, content_type=content_type)
        if self.stall in path:

            async def publish() -> None:
                self.stalled.set()
                await asyncio.Event().wait()

            upload.publish = publish  # type: ignore[method-assign]
        return upload


def catalog(tmp_path: Path) -> Catalog:
    database = tmp_path / "people.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create table people as select i as id, 'p' || i as name from range(10) t(i)")
    return parse_catalog(
        {
            "sources": {"db": {"type": "duckdb", "database": str(database)}},
            "models": {"people": {"source": "db", "table": "people", "primary_key": ["id"]}},
            "destinations": {"mem": {"type": "azure_blob", "container": "xyz", "connection_setting": "X"}},
            "activations": {
                "sync": {
                    "model": "people",
                    "destination": "mem",
                    "file_name": "people",
                    "format": "csv",
                    "run_type": "full_then_delta",
                    "sync_mode": "difference",
                }
            },
        }
    )


def test_an_interrupted_run_lists_the_files_it_published_and_keeps_the_state(tmp_path: Path) -> None:
    destination, state = StallingDestination("_updated"), MemoryStateStore()
    record = RunRecord("r1", "sync", "manual", datetime(2025, 4, 1, tzinfo=UTC))

    async def interrupt() -> None:
        run = asyncio.create_task(
            Run(
                catalog(tmp_path),
                "sync",
                Settings({}),
                record,
                destination=destination,
                state=state,
                retries=0,
            ).execute()
        )
        await destination.stalled.wait()
        run.cancel()
        try:
            await run
        except asyncio.CancelledError:
            return
        raise AssertionError("the run was not interrupted")

    asyncio.run(interrupt())
    assert list(destination.files) == ["people_added.csv"]  # published before the stall
    assert [f["path"] for f in record.files] == ["people_added.csv"]
    assert record.status == "failed"
    assert record.error == {
        "code": "interrupted",
        "message": "the run was interrupted after publishing 1 file(s) "
        "(`people_added.csv`); the delta state did not advance, so the next run sends those "
        "rows again",
    }
    assert state.load("sync").pending  # staged in flight, never committed: the next run sends those rows again
