"""Use cases shared by the Functions triggers and the CLI: apply, run, enqueue, schedule tick, history.

Orchestration rules (DESIGN.md §3):
- the scheduler enqueues one message per activation with an occurrence since its last enqueue;
  missed occurrences collapse into the latest; the claim of an occurrence is ETag-guarded, and the
  run id is deterministic (`<activation>-<occurrence>`), so two overlapping ticks never enqueue it twice;
- the runner takes a per-activation lease: a second message for a running activation waits (the
  host retries it later), a second delivery of the same run id is dropped as a duplicate;
- terminal errors fail the run and complete the message; transient ones raise so the host retries,
  and a message that ends in the poison queue leaves a failed run record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalog.model import Catalog
from ..catalog.parse import load_catalog
from ..clock import SYSTEM, Clock
from ..destinations import Destination
from ..error_codes import ErrorCode
from ..errors import CatalogError, DuplicateRun, NotFound, RunInProgress
from ..run.engine import Run, RunResult
from ..run.records import RunRecord, iso, new_run_id, parse_time
from ..settings import STORAGE_SETTING, Settings
from ..state.base import StateStore
from .stores_base import (
    CatalogStoreProtocol,
    LeasesProtocol,
    RunQueue,
    RunStoreProtocol,
    ScheduleMarksProtocol,
)

if TYPE_CHECKING:  # the Table Storage stores and the alerts load the Azure SDK: a run without storage needs neither
    from .stores import Tables

log = logging.getLogger(__name__)

MAX_DEQUEUE = 5  # host.json extensions.queues.maxDequeueCount
FIRST_TICK_WINDOW = timedelta(minutes=1)


class Services:
    """The stores of one invocation, created on first use.

    Each is Filecast's Table Storage one unless given: `tables` (e.g. a
    `core.control.stores_memory.MemoryTableService` under `Tables`), or any store itself (the Protocols
    of `core.control.stores_base`), the runs `queue`, the delta `state` store (None: each run opens
    Filecast's own and closes it), the `clock`, and `destinations` by catalog destination id (the
    others are built from the catalog). `core.control.stores_memory.memory_services()` gives them all in
    memory.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tables: Tables | None = None,
        catalogs: CatalogStoreProtocol | None = None,
        runs: RunStoreProtocol | None = None,
        leases: LeasesProtocol | None = None,
        marks: ScheduleMarksProtocol | None = None,
        queue: RunQueue | None = None,
        state: StateStore | None = None,
        clock: Clock = SYSTEM,
        destinations: Mapping[str, Destination] | None = None,
    ):
        self.settings = settings
        self.state = state
        self.clock = clock
        self.destinations = dict(destinations or {})
        self._tables, self._catalogs, self._runs, self._leases = tables, catalogs, runs, leases
        self._marks, self._queue = marks, queue

    @property
    def tables(self) -> Tables:
        if self._tables is None:
            from .stores import Tables

            self._tables = Tables(self.settings)
        return self._tables

    @property
    def catalogs(self) -> CatalogStoreProtocol:
        if self._catalogs is None:
            from .stores import CatalogStore

            self._catalogs = CatalogStore(self.tables)
        return self._catalogs

    @property
    def runs(self) -> RunStoreProtocol:
        if self._runs is None:
            from .stores import RunStore

            self._runs = RunStore(self.tables)
        return self._runs

    @property
    def leases(self) -> LeasesProtocol:
        if self._leases is None:
            from .stores import Leases

            self._leases = Leases(self.tables, self.clock)
        return self._leases

    @property
    def marks(self) -> ScheduleMarksProtocol:
        if self._marks is None:
            from .stores import ScheduleMarks

            self._marks = ScheduleMarks(self.tables)
        return self._marks

    @property
    def queue(self) -> RunQueue:
        if self._queue is None:
            from .stores import StorageRunQueue

            self._queue = StorageRunQueue(self.settings)
        return self._queue

    def catalog(self, path: str | Path | None = None) -> Catalog:
        """The catalog file given, else the applied catalog."""
        return load_catalog(path) if path is not None else self.catalogs.load()


def _previous_read(runs: RunStoreProtocol | None, activation: str, run_id: str) -> int | None:
    if runs is None:
        return None
    for record in runs.history(activation, 20):
        if record.status == "succeeded" and record.run_id != run_id:
            return record.rows.read
    return None


def storage_services(settings: Settings) -> Services | None:
    """Filecast's stores when its storage account is configured (always so for delta runs), else
    None: a run without them can take no lease and keep no history."""
    from ..azure.clients import connection_string

    names = (f"{STORAGE_SETTING}__accountName", f"{STORAGE_SETTING}__tableServiceUri")
    return Services(settings) if connection_string(settings) or any(settings.get(n) for n in names) else None


async def run_activation(
    settings: Settings,
    catalog: Catalog,
    activation_id: str,
    *,
    logical_time: datetime | None = None,
    trigger: str = "manual",
    run_id: str | None = None,
    services: Services | None = None,
    progress: Callable[[int, int], None] | None = None,
    retries: int | None = None,
    record: RunRecord | None = None,
    alert: bool = True,
    busy_fails: bool = False,
    state: StateStore | None = None,
    clock: Clock | None = None,
) -> RunResult:
    """Run one activation now, in-process. With `services`, the run holds the activation's lease and
    its record is kept in the history. A lease held by another run raises `RunInProgress` (the
    runner's message waits), or with `busy_fails` ends this run as failed, having done nothing. A
    caller that passes its own `record` can still read it when the run is interrupted (cancelled)
    and this raises. The delta `state` store and the `clock` default to the services' ones."""
    catalog.activation(activation_id)  # unknown ids fail before anything starts
    clock = clock or (services.clock if services is not None else SYSTEM)
    state = state if state is not None or services is None else services.state
    destination = services.destinations.get(catalog.activation(activation_id).destination) if services else None
    logical_time = logical_time or clock.now()
    record = record or RunRecord(run_id or new_run_id(logical_time), activation_id, trigger, logical_time)
    if services is None:
        return await Run(
            catalog, activation_id, settings, record, progress=progress, retries=retries, state=state, clock=clock
        ).execute()
    runs, leases = services.runs, services.leases
    try:
        leases.acquire(activation_id, record.run_id)
    except RunInProgress as exc:
        if not busy_fails:
            raise
        return _busy(record, leases.holder(activation_id), exc, clock)
    try:
        record.status = "running"
        runs.save(record)
        renewer = asyncio.create_task(_renew(leases, activation_id, record.run_id))
        try:
            run = Run(
                catalog,
                activation_id,
                settings,
                record,
                progress=progress,
                retries=retries,
                state=state,
                clock=clock,
                destination=destination,
                previous_read=_previous_read(runs, activation_id, record.run_id),
            )
            result = await run.execute()
        except asyncio.CancelledError:
            runs.save(record)  # the history keeps what an interrupted run published
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        runs.save(result.record)
        if alert:  # after the record is saved; bounded, never raises
            from . import alerts

            await alerts.notify(services, catalog, result.record)
        return result
    finally:
        leases.release(activation_id, record.run_id)


def _busy(record: RunRecord, holder: str | None, exc: RunInProgress, clock: Clock) -> RunResult:
    """The record of a run refused because another run of the activation holds the lease."""
    exc.message = (
        f"activation `{record.activation}` is already running (run `{holder or 'unknown'}`), and two "
        "runs of one activation never overlap: this run published nothing; try again when it ends"
    )
    record.status, record.error = "failed", exc.as_dict()
    record.finished_at = clock.now()
    return RunResult(record, exc)


async def _renew(leases: LeasesProtocol, activation: str, run_id: str) -> None:
    interval = leases.TTL.total_seconds() / 5
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(leases.renew, activation, run_id)
        except Exception as exc:
            log.warning("could not renew the lease of %s: %s", activation, exc)


async def preview_activation(
    settings: Settings,
    catalog: Catalog,
    activation_id: str,
    at: datetime | None = None,
    *,
    state: StateStore | None = None,
    clock: Clock = SYSTEM,
) -> RunResult:
    """A dry run: file names and counts per change type; nothing uploaded, the state untouched."""
    catalog.activation(activation_id)
    logical_time = at or clock.now()
    record = RunRecord(new_run_id(logical_time), activation_id, "preview", logical_time)
    return await Run(
        catalog, activation_id, settings, record, preview=True, retries=0, state=state, clock=clock
    ).execute()


def reset_activation(
    settings: Settings, catalog: Catalog, activation_id: str, *, state: StateStore | None = None
) -> None:
    """Forget the delta state: the next run is a full one (a run in flight can no longer commit).
    Without a `state` store, Filecast's own is opened and closed."""
    from ..azure.clients import state_store

    catalog.activation(activation_id)
    if state is not None:
        state.reset(activation_id)
        return
    store = state_store(settings)
    try:
        store.reset(activation_id)
    finally:
        store.close()


def run_message(activation_id: str, logical_time: datetime, run_id: str, trigger: str) -> str:
    return json.dumps(
        {"activation": activation_id, "logical_time": iso(logical_time), "run_id": run_id, "trigger": trigger}
    )


def parse_run_message(body: str) -> tuple[str, datetime, str, str]:
    try:
        doc = json.loads(body)
        return doc["activation"], parse_time(doc["logical_time"]), doc["run_id"], doc.get("trigger", "schedule")
    except (ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"malformed run message ({exc}); expected activation, logical_time and run_id") from exc


def enqueue_run(
    services: Services, activation_id: str, *, logical_time: datetime, trigger: str, run_id: str | None = None
) -> RunRecord:
    """Record a queued run and send its message to the runs queue."""
    record = RunRecord(run_id or new_run_id(logical_time), activation_id, trigger, logical_time)
    services.runs.save(record)
    services.queue.send(run_message(activation_id, logical_time, record.run_id, trigger))
    return record


def request_run(services: Services, activation_id: str, now: datetime) -> RunRecord:
    """A manual run over HTTP: refused while the activation runs, so two never overlap."""
    holder = services.leases.holder(activation_id)
    if holder is not None:
        raise RunInProgress(f"activation `{activation_id}` is already running (run `{holder}`); try again when it ends")
    return enqueue_run(services, activation_id, logical_time=now, trigger="manual")


async def handle_run_message(
    settings: Settings, body: str, *, dequeue_count: int | None = None, services: Services | None = None
) -> RunResult | None:
    """The queue runner. Returns None for a dropped duplicate; raises RunInProgress to wait."""
    activation_id, logical_time, run_id, trigger = parse_run_message(body)
    services = services or Services(settings)
    try:
        existing = services.runs.get(run_id)
        if existing.status in ("succeeded", "failed"):
            log.info("run %s already ended (%s): dropping the duplicate message", run_id, existing.status)
            return None
    except NotFound:
        pass
    catalog = services.catalog()
    try:
        result = await run_activation(
            settings,
            catalog,
            activation_id,
            logical_time=logical_time,
            trigger=trigger,
            run_id=run_id,
            services=services,
            alert=False,
        )
    except DuplicateRun as exc:
        log.info("%s: dropping the duplicate message", exc.message)
        return None
    if result.transient and (dequeue_count or 1) >= MAX_DEQUEUE:
        log.error("run %s gave up after %d deliveries: %s", run_id, dequeue_count, result.record.error)
    elif result.transient:
        # The host retries the message: record it as queued again, with the error seen.
        result.record.status = "queued"
        services.runs.save(result.record)
    if result.record.status != "queued":  # a retried run alerts only once it ended for good
        from . import alerts

        await alerts.notify(services, catalog, result.record)
    return result


def mark_poisoned(settings: Settings, body: str, *, services: Services | None = None) -> RunRecord:
    """A message reached the poison queue: its run ends as failed (if it was not already recorded so)."""
    activation_id, logical_time, run_id, trigger = parse_run_message(body)
    services = services or Services(settings)
    runs = services.runs
    try:
        record = runs.get(run_id)
    except NotFound:
        record = RunRecord(run_id, activation_id, trigger, logical_time)
    if record.status != "failed":
        last = f" (last error: {record.error['message']})" if record.error else ""
        record.status = "failed"
        record.error = {
            "code": ErrorCode.POISONED.value,
            "message": f"the run was given up after {MAX_DEQUEUE} attempts{last}",
        }
        record.finished_at = services.clock.now()
        runs.save(record)
        from . import alerts

        alerts.notify_poisoned(services, record)
    return record


def utcnow() -> datetime:
    """The time the timer trigger ticks at (the scheduler itself takes `now`)."""
    return SYSTEM.now()


def due_occurrence(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The latest occurrence of `schedule` in (since, now], if any: missed ones collapse into it."""
    from croniter import croniter  # the scheduler's alone: a run does not load it

    latest = croniter(schedule, now + timedelta(microseconds=1)).get_prev(datetime)
    latest = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
    return latest if since < latest <= now else None


def schedule_tick(settings: Settings, now: datetime, *, services: Services | None = None) -> list[str]:
    """Enqueue one run per activation whose schedule has an occurrence since its last enqueue."""
    services = services or Services(settings)
    try:
        catalog = services.catalog()
    except NotFound:
        log.info("scheduler: no catalog applied yet")
        return []
    marks = services.marks
    sent = []
    for activation in sorted(catalog.activations.values(), key=lambda a: a.id):
        if activation.schedule is None:
            continue
        last, etag = marks.last(activation.id)
        occurrence = due_occurrence(activation.schedule, last or now - FIRST_TICK_WINDOW, now)
        if occurrence is None:
            continue
        if not marks.claim(activation.id, occurrence, etag):
            log.info("scheduler: %s at %s was claimed by another tick", activation.id, iso(occurrence))
            continue
        run_id = f"{activation.id}-{occurrence:%Y%m%dT%H%M%SZ}"
        enqueue_run(services, activation.id, logical_time=occurrence, trigger="schedule", run_id=run_id)
        sent.append(run_id)
    return sent


def preview_json(record: RunRecord) -> dict[str, object]:
    """What a preview shows: the files a run would write and the rows per change type."""
    return {
        "activation": record.activation,
        "status": record.status,
        "full": record.full,
        "rows": record.rows.as_dict(),
        "files": [{"path": f["path"], "rows": f["rows"], "bytes": f["bytes"]} for f in record.files],
        "warnings": record.warnings,
        "error": record.error,
    }


def record_json(record: RunRecord) -> str:
    return json.dumps(record.as_dict(), indent=2)
