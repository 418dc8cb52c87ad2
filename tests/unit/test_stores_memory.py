"""The stores of `core.control.stores` over the in-memory Table service, and the manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError

from core.catalog.parse import app_root
from core.clock import SYSTEM, ManualClock
from core.control.stores import CatalogStore, Leases, RunStore, ScheduleMarks, Tables
from core.control.stores_memory import MemoryTableService, memory_services
from core.errors import CatalogInvalid, DuplicateRun, NotFound, RunInProgress
from core.run.records import RunRecord
from core.settings import Settings

from .control_helpers import catalog_doc

T0 = datetime(2025, 4, 1, 10, 0, tzinfo=UTC)


def tables() -> Tables:
    return Tables(Settings({"FILECAST_TABLE_PREFIX": "t1"}), service=MemoryTableService("t1"))


def test_two_leases_never_overlap_and_an_expired_one_is_taken_over() -> None:
    clock, shared = ManualClock(T0), tables()
    first, second = Leases(shared, clock), Leases(shared, clock)
    first.acquire("sync", "run-a")
    with pytest.raises(DuplicateRun, match=r"^run `run-a` of `sync` is already being processed$"):
        second.acquire("sync", "run-a")
    with pytest.raises(RunInProgress, match=r"^activation `sync` is already running \(run `run-a`\)"):
        second.acquire("sync", "run-b")
    clock.advance(Leases.TTL - timedelta(seconds=1))
    first.renew("sync", "run-a")
    clock.advance(Leases.TTL - timedelta(seconds=1))
    assert second.holder("sync") == "run-a"  # renewed: still held
    clock.advance(timedelta(seconds=2))
    assert second.holder("sync") is None
    second.acquire("sync", "run-b")
    first.release("sync", "run-a")  # no longer its lease: nothing happens
    assert first.holder("sync") == "run-b"
    second.release("sync", "run-b")
    assert first.holder("sync") is None


def test_of_two_ticks_reading_the_same_mark_only_one_claims_the_occurrence() -> None:
    shared = tables()
    a, b = ScheduleMarks(shared), ScheduleMarks(shared)
    assert a.last("sync") == (None, None)
    assert a.claim("sync", T0, None) is True
    assert b.claim("sync", T0, None) is False  # created meanwhile
    last, etag = a.last("sync")
    assert last == T0
    assert b.claim("sync", T0 + timedelta(hours=1), etag) is True
    assert a.claim("sync", T0 + timedelta(hours=1), etag) is False  # the ETag it read is stale
    assert b.last("sync")[0] == T0 + timedelta(hours=1)


def test_the_history_is_newest_first_and_bounded() -> None:
    runs = RunStore(tables())
    for hour in (1, 3, 2):
        runs.save(RunRecord(f"r{hour}", "sync", "schedule", T0 + timedelta(hours=hour)))
    runs.save(RunRecord("other", "other", "manual", T0))
    assert [r.run_id for r in runs.history("sync")] == ["r3", "r2", "r1"]
    assert [r.run_id for r in runs.history("sync", 2)] == ["r3", "r2"]
    with pytest.raises(NotFound, match=r"^no run `r9`$"):
        runs.get("r9")


def test_the_catalog_store_replaces_the_catalog_and_refuses_a_bad_one(tmp_path: Path) -> None:
    store = CatalogStore(tables())
    with pytest.raises(NotFound, match="no catalog has been applied yet"):
        store.load()
    doc = catalog_doc(tmp_path / "people.duckdb")
    store.apply(doc, app_root())
    doc["activations"]["second"] = {**doc["activations"]["sync"], "file_name": "second"}
    store.apply(doc)
    del doc["activations"]["sync"]
    store.apply(doc)
    assert sorted(store.load().activations) == ["second"]  # `sync` was removed
    broken = {**doc, "activations": {"x": {"model": "nope"}}}
    with pytest.raises(CatalogInvalid):
        store.apply(broken)
    assert sorted(store.load().activations) == ["second"]  # a refused catalog changed nothing


def test_a_stale_etag_is_refused_like_table_storage_does() -> None:
    table = MemoryTableService().get_table_client("x")
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "v": 1})
    etag = table.get_entity("p", "r").metadata["etag"]
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "v": 2})
    with pytest.raises(ResourceModifiedError) as raised:
        table.delete_entity("p", "r", etag=etag, match_condition=MatchConditions.IfNotModified)
    assert raised.value.status_code == 412
    assert table.get_entity("p", "r")["v"] == 2


def test_memory_services_default_to_the_system_clock_and_a_memory_state_store() -> None:
    services = memory_services()
    assert services.clock is SYSTEM and services.state is not None
    assert services.state.load("any").info is None


def test_the_manual_clock_moves_only_forward_and_only_in_utc() -> None:
    clock = ManualClock(T0)
    assert clock.advance(timedelta(minutes=5)) == clock.now() == T0 + timedelta(minutes=5)
    with pytest.raises(ValueError, match=r"^a clock only moves forward, not by `-1 day, 23:59:59`$"):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match=r"^`2025-04-01T10:00:00` has no time zone: give the clock a UTC time$"):
        ManualClock(datetime(2025, 4, 1, 10, 0))
    clock.set(T0)
    assert clock.now() == T0 and clock.now().tzinfo is UTC
