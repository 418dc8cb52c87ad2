"""The service and the API over the memory control plane (`core.control.stores_memory`): no Azurite, a manual clock.

The real stores of `core.control.stores` run over the in-memory Table service, so their lease, claim and
history logic is what is tested; faults are Azure SDK errors injected under them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

import core.run.engine
from core.catalog.model import Catalog
from core.clock import ManualClock
from core.control import api, service
from core.control.service import Services
from core.control.stores_memory import MemoryQueue, MemoryTableService, memory_services
from core.destinations.memory import MemoryDestination
from core.errors import RunInProgress, StateError
from core.run.engine import RunResult
from core.run.records import RunRecord
from core.settings import Settings
from core.state.memory import MemoryStateStore

from .control_helpers import BrokenState, catalog_doc, people_db

T0 = datetime(2025, 4, 1, 10, 0, tzinfo=UTC)


class Control:
    """Memory services, a destination `out`, a clock and the people database, for one test."""

    def __init__(self, tmp_path: Path, *, state: MemoryStateStore | None = None, **activation: Any):
        self.db = people_db(tmp_path / "people.duckdb", 10)
        self.clock = ManualClock(T0)
        self.out = MemoryDestination()
        self.services = memory_services(Settings({}), clock=self.clock, state=state, destinations={"out": self.out})
        self.catalog: Catalog = self.services.catalogs.apply(catalog_doc(self.db, **activation))

    @property
    def table_service(self) -> MemoryTableService:
        service_: MemoryTableService = self.services.tables.service
        return service_

    @property
    def queue(self) -> MemoryQueue:
        assert isinstance(self.services.queue, MemoryQueue)
        return self.services.queue

    def run(self, **kwargs: Any) -> RunRecord:
        result = asyncio.run(
            service.run_activation(
                self.services.settings, self.catalog, "sync", services=self.services, alert=False, **kwargs
            )
        )
        return result.record

    def deliver(self, body: str, dequeue_count: int = 1) -> RunResult | None:
        return asyncio.run(
            service.handle_run_message(
                self.services.settings, body, dequeue_count=dequeue_count, services=self.services
            )
        )

    def enqueue(self, run_id: str = "sync-1") -> str:
        service.enqueue_run(self.services, "sync", logical_time=self.clock.now(), trigger="manual", run_id=run_id)
        [body] = self.queue.take()
        return body


def rows_of(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_a_run_holds_the_lease_and_keeps_its_record_in_the_history(tmp_path: Path) -> None:
    control = Control(tmp_path)
    record = control.run()
    assert record.status == "succeeded" and record.logical_time == T0
    assert record.run_id.startswith("20250401T100000Z-")
    assert record.started_at == record.finished_at == T0
    assert control.services.runs.get(record.run_id).as_dict() == record.as_dict()
    assert [r.run_id for r in control.services.runs.history("sync")] == [record.run_id]
    assert control.services.leases.holder("sync") is None  # released
    assert [int(r["id"]) for r in rows_of(control.out.files["people.csv"])] == list(range(10))


@pytest.mark.parametrize(
    ("rows", "threshold", "warned"),
    [
        (4, None, "4 rows read, 60% fewer than the 10 of the last successful run (threshold 50%)"),
        (6, None, None),
        (6, 30, "6 rows read, 40% fewer than the 10 of the last successful run (threshold 30%)"),
        (10, 30, None),
    ],
)
def test_row_drop_compares_with_the_last_successful_run(
    tmp_path: Path, rows: int, threshold: int | None, warned: str | None
) -> None:
    extra: dict[str, Any] = {"warnings": {"row_drop_percent": threshold}} if threshold else {}
    control = Control(tmp_path, **extra)
    assert control.run().warnings == []
    control.clock.advance(timedelta(hours=1))
    people_db(control.db, rows)
    record = control.run()
    assert record.status == "succeeded"
    assert record.warnings == ([{"code": "row_drop", "message": warned}] if warned else [])
    assert control.services.runs.history("sync")[0].warnings == record.warnings


def test_row_drop_in_fail_on_fails_the_run_and_publishes_nothing(tmp_path: Path) -> None:
    control = Control(tmp_path, fail_on=["row_drop"])
    first = control.run()
    control.clock.advance(timedelta(hours=1))
    people_db(control.db, 2, name="q")
    second = control.run()
    assert second.status == "failed"
    assert second.error == {
        "code": "failed_on_warning",
        "message": (
            "warning `row_drop` fails this activation (fail_on): 2 rows read, 80% fewer than the 10 of the last "
            "successful run (threshold 50%); nothing was published"
        ),
    }
    assert len(rows_of(control.out.files["people.csv"])) == 10  # still the first run's file
    # A failed run is not the baseline: the next comparison is still against the 10 rows of the first.
    control.clock.advance(timedelta(hours=1))
    third = control.run()
    assert third.warnings[0]["message"].endswith("than the 10 of the last successful run (threshold 50%)")
    assert [r.run_id for r in control.services.runs.history("sync")] == [third.run_id, second.run_id, first.run_id]


def test_a_transient_state_error_leaves_the_run_queued_for_the_host_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core.run.engine, "BACKOFF", 0.0)
    state = BrokenState(transient=True)
    control = Control(tmp_path, state=state, run_type="full_then_delta", sync_mode="upsert")
    body = control.enqueue()
    result = control.deliver(body, dequeue_count=1)
    assert result is not None and result.transient  # the queue trigger raises it: the host delivers again
    assert state.calls == ["load"] * (core.run.engine.RETRIES + 1)
    stored = control.services.runs.get("sync-1")
    assert stored.status == "queued"
    assert stored.error == {"code": "state_error", "message": "the state store is unreachable"}
    assert control.services.leases.holder("sync") is None and control.out.files == {}
    # The last delivery the host makes: the run ends failed, then the poison queue marks it given up.
    last = control.deliver(body, dequeue_count=service.MAX_DEQUEUE)
    assert last is not None and control.services.runs.get("sync-1").status == "failed"
    poisoned = service.mark_poisoned(control.services.settings, body, services=control.services)
    assert poisoned.status == "failed" and poisoned.error == {
        "code": "state_error",
        "message": "the state store is unreachable",
    }


def test_a_terminal_state_error_fails_the_run_and_completes_the_message(tmp_path: Path) -> None:
    state = BrokenState(transient=False)
    control = Control(tmp_path, state=state, run_type="full_then_delta", sync_mode="upsert")
    result = control.deliver(control.enqueue())
    assert result is not None and not result.transient  # the queue trigger returns: no redelivery
    assert state.calls == ["load"]  # not retried within the run either
    stored = control.services.runs.get("sync-1")
    assert stored.status == "failed"
    assert stored.error == {"code": "state_error", "message": "the state store is unreachable"}
    assert stored.finished_at == T0


def busy(status: int = 503) -> HttpResponseError:
    error = HttpResponseError(message="The server is busy.")
    error.status_code = status
    return error


@pytest.mark.parametrize("fault", [busy(), ServiceRequestError("connection refused")], ids=["503", "network"])
def test_a_table_storage_outage_is_transient_for_the_queue_trigger_and_the_api(
    tmp_path: Path, fault: Exception
) -> None:
    control = Control(tmp_path)
    body = control.enqueue()
    control.table_service.fail(fault, table="runs", operation="get_entity")
    with pytest.raises(StateError) as raised:  # the queue trigger lets it out: the host retries the message
        control.deliver(body)
    assert raised.value.transient and raised.value.code == "state_error"
    assert raised.value.message.startswith("Table Storage failed to read run `sync-1`: ")
    assert control.out.files == {}
    control.table_service.fail(fault, table="runs", operation="get_entity")
    status, answer = api.handle(control.services.settings, "get_run", {"run_id": "sync-1"}, services=control.services)
    assert status == 503 and answer["error"]["code"] == "state_error"
    assert control.deliver(body) is not None  # the outage over, the redelivered message runs
    assert control.services.runs.get("sync-1").status == "succeeded"


def test_a_transient_error_saving_the_record_releases_the_lease_and_raises(tmp_path: Path) -> None:
    control = Control(tmp_path)
    body = control.enqueue()
    control.table_service.fail(busy(), table="runs", operation="upsert_entity", times=None)
    with pytest.raises(StateError) as raised:
        control.deliver(body)
    assert raised.value.transient
    assert raised.value.message.startswith("Table Storage failed to save run `sync-1`: ")
    control.table_service.faults.clear()
    assert control.services.leases.holder("sync") is None


def test_a_second_run_waits_for_the_lease_until_it_expires(tmp_path: Path) -> None:
    control = Control(tmp_path)
    control.services.leases.acquire("sync", "other-run")
    body = control.enqueue()
    with pytest.raises(RunInProgress) as raised:
        control.deliver(body)
    assert raised.value.message == (
        "activation `sync` is already running (run `other-run`); this run waits until it ends"
    )
    busy_run = control.run(busy_fails=True)
    assert busy_run.status == "failed" and busy_run.error == {
        "code": "run_in_progress",
        "message": (
            "activation `sync` is already running (run `other-run`), and two runs of one activation never overlap: "
            "this run published nothing; try again when it ends"
        ),
    }
    control.clock.advance(control.services.leases.TTL)  # never renewed: the lease expires
    assert control.services.leases.holder("sync") is None
    result = control.deliver(body)
    assert result is not None and result.record.status == "succeeded"


def test_a_message_for_a_run_that_ended_is_dropped(tmp_path: Path) -> None:
    control = Control(tmp_path)
    body = control.enqueue()
    assert control.deliver(body) is not None
    control.out.files.clear()
    assert control.deliver(body) is None
    assert control.out.files == {}


def test_the_scheduler_enqueues_each_occurrence_once_and_missed_ones_collapse(tmp_path: Path) -> None:
    control = Control(tmp_path, schedule="0 * * * *")

    def tick() -> list[str]:
        return service.schedule_tick(control.services.settings, control.clock.now(), services=control.services)

    control.clock.set(T0 + timedelta(seconds=30))
    assert tick() == ["sync-20250401T100000Z"]
    control.clock.advance(timedelta(seconds=20))
    assert tick() == []  # the same occurrence
    control.clock.set(T0 + timedelta(hours=2, seconds=10))
    assert tick() == ["sync-20250401T120000Z"]  # 11:00 was missed: it collapses into 12:00
    messages = control.queue.take()
    assert [json.loads(m) for m in messages] == [
        {
            "activation": "sync",
            "logical_time": "2025-04-01T10:00:00.000Z",
            "run_id": "sync-20250401T100000Z",
            "trigger": "schedule",
        },
        {
            "activation": "sync",
            "logical_time": "2025-04-01T12:00:00.000Z",
            "run_id": "sync-20250401T120000Z",
            "trigger": "schedule",
        },
    ]
    assert [r.status for r in control.services.runs.history("sync")] == ["queued", "queued"]
    for message in messages:
        control.deliver(message)
    assert [(r.run_id, r.status) for r in control.services.runs.history("sync")] == [
        ("sync-20250401T120000Z", "succeeded"),
        ("sync-20250401T100000Z", "succeeded"),
    ]


def test_the_api_over_the_memory_control_plane(tmp_path: Path) -> None:
    control = Control(tmp_path, run_type="full_then_delta", sync_mode="upsert")
    services: Services = control.services
    status, answer = api.handle(services.settings, "run_activation", {"id": "sync"}, services=services)
    assert status == 202 and answer["status"] == "queued"
    [message] = control.queue.take()
    assert json.loads(message)["run_id"] == answer["run_id"]
    assert json.loads(message)["logical_time"] == "2025-04-01T10:00:00.000Z"  # the services' clock
    control.deliver(message)
    status, record = api.handle(services.settings, "get_run", {"run_id": answer["run_id"]}, services=services)
    assert status == 200 and record["status"] == "succeeded" and record["rows"]["added"] == 10
    status, preview = api.handle(services.settings, "preview_activation", {"id": "sync"}, services=services)
    assert status == 200 and preview["full"] is False and preview["rows"]["unchanged"] == 10
    status, reset = api.handle(services.settings, "reset_activation", {"id": "sync"}, services=services)
    assert (status, reset) == (200, {"activation": "sync", "reset": True, "next_run": "full"})
    status, preview = api.handle(services.settings, "preview_activation", {"id": "sync"}, services=services)
    assert status == 200 and preview["full"] is True and preview["rows"]["added"] == 10
