"""Filecast's records in Table Storage: the applied catalog and the run history.

Catalog: one entity per catalog object (PartitionKey = section, RowKey = id, `doc` = its JSON), so
objects read by id and a new catalog removes what it no longer has. Runs: one entity per run under
the activation (RowKey sorts newest first) and an index entity by run id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

from ..azure.clients import queue_service, table_service
from ..azure.errors import RECORDS, map_azure_errors
from ..catalog.model import Catalog
from ..catalog.parse import app_root, parse_catalog
from ..clock import SYSTEM, Clock
from ..errors import DuplicateRun, NotFound, RunInProgress
from ..run.records import RunRecord
from ..settings import RUNS_QUEUE, Settings

SECTIONS = ("sources", "models", "segments", "destinations", "activations", "alerts")  # alerts: targets, rules
MAX_TIME = 10**13  # milliseconds; RowKey = MAX_TIME - start, so newer runs sort first


def map_table_errors(action: str) -> AbstractContextManager[None]:
    """Azure errors as `StateError`s by the one Azure boundary (core/azure/errors.py): a refusal is
    terminal, throttling and an unreachable account transient. The SDK's "not found", "exists" and
    "modified" answers the stores act on are caught inside the block, never passed through."""
    return map_azure_errors(f"Table Storage failed to {action}", boundary=RECORDS)


class Tables:
    """Creates Filecast's tables on first use, in `service` (a `TableServiceClient`, or
    `core.control.stores_memory.MemoryTableService`), by default the one the settings name."""

    def __init__(self, settings: Settings, service: Any = None):
        self.service = table_service(settings) if service is None else service
        self.prefix = settings.table_prefix
        self._ready: dict[str, Any] = {}

    def table(self, name: str) -> Any:
        if name not in self._ready:
            full = f"{self.prefix}{name}"
            with map_table_errors(f"create table `{full}`"), suppress(ResourceExistsError):
                self.service.create_table(full)
            self._ready[name] = self.service.get_table_client(full)
        return self._ready[name]


class CatalogStore:
    """The applied catalog, with the folder its relative paths start from.

    `apply` records that folder: relative to the app's root (the folder of `function_app.py`)
    when the catalog file sits inside it, so the same catalog resolves the same on the Function
    App; absolute otherwise (and `catalog_warnings` says it won't resolve once deployed). A
    catalog applied over HTTP has no file: its relative paths start at the app's root.
    """

    META = ("meta", "base_dir")  # PartitionKey, RowKey of the entity holding the base folder

    def __init__(self, tables: Tables):
        self.table = tables.table("catalog")

    def apply(
        self, doc: dict[str, Any], base_dir: Path | None = None, *, check: Callable[[Catalog], None] | None = None
    ) -> Catalog:
        """Validate `doc` as a whole and run `check` (e.g. the OpenPGP keys) on the parsed catalog,
        then store it, removing objects it no longer has."""
        root = app_root()
        base = base_dir.resolve() if base_dir is not None else root
        catalog = parse_catalog(doc, base)
        if check is not None:
            check(catalog)
        stored = base.relative_to(root).as_posix() if base.is_relative_to(root) else str(base)
        with map_table_errors("store the catalog"):
            existing = {
                (e["PartitionKey"], e["RowKey"]) for e in self.table.list_entities(select=["PartitionKey", "RowKey"])
            }
            wanted = {self.META}
            for section in SECTIONS:
                for key, value in (doc.get(section) or {}).items():
                    wanted.add((section, key))
                    self.table.upsert_entity({"PartitionKey": section, "RowKey": key, "doc": json.dumps(value)})
            self.table.upsert_entity({"PartitionKey": self.META[0], "RowKey": self.META[1], "doc": stored})
            for partition, row in existing - wanted:
                self.table.delete_entity(partition, row)
        return catalog

    def document(self) -> tuple[dict[str, Any], Path]:
        """The stored catalog document and the folder its relative paths start from."""
        doc: dict[str, Any] = {section: {} for section in SECTIONS}
        base = app_root()
        with map_table_errors("read the catalog"):
            for entity in self.table.list_entities():
                if entity["PartitionKey"] in doc:
                    doc[entity["PartitionKey"]][entity["RowKey"]] = json.loads(entity["doc"])
                elif (entity["PartitionKey"], entity["RowKey"]) == self.META:
                    base = base / entity["doc"]  # an absolute folder replaces the root
        return doc, base

    def load(self) -> Catalog:
        doc, base = self.document()
        if not any(doc.values()):
            raise NotFound("no catalog has been applied yet: run `filecast apply catalog.yaml` or `PUT /api/catalog`")
        return parse_catalog(doc, base)


class RunStore:
    def __init__(self, tables: Tables):
        self.table = tables.table("runs")

    @staticmethod
    def _row_key(record: RunRecord) -> str:
        started = record.logical_time.timestamp() * 1000
        return f"{MAX_TIME - int(started):013d}-{record.run_id}"

    def save(self, record: RunRecord) -> None:
        doc = json.dumps(record.as_dict())
        with map_table_errors(f"save run `{record.run_id}`"):
            self.table.upsert_entity(
                {"PartitionKey": f"a:{record.activation}", "RowKey": self._row_key(record), "doc": doc}
            )
            self.table.upsert_entity(
                {"PartitionKey": "run", "RowKey": record.run_id, "doc": doc, "activation": record.activation}
            )

    def get(self, run_id: str) -> RunRecord:
        with map_table_errors(f"read run `{run_id}`"):
            try:
                entity = self.table.get_entity("run", run_id)
            except ResourceNotFoundError:
                raise NotFound(f"no run `{run_id}`") from None
        return RunRecord.from_dict(json.loads(entity["doc"]))

    def history(self, activation: str, limit: int = 50) -> list[RunRecord]:
        with map_table_errors(f"read the runs of `{activation}`"):
            entities = self.table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": f"a:{activation}"}, results_per_page=limit
            )
            records = []
            for entity in entities:
                records.append(RunRecord.from_dict(json.loads(entity["doc"])))
                if len(records) >= limit:
                    break
        return records


class Leases:
    """One run per activation at a time: a lease entity per activation, taken and renewed with ETags."""

    TTL = timedelta(minutes=5)

    def __init__(self, tables: Tables, clock: Clock = SYSTEM):
        self.table = tables.table("leases")
        self.clock = clock

    def _entity(self, activation: str, run_id: str) -> dict[str, Any]:
        return {
            "PartitionKey": "lease",
            "RowKey": activation,
            "run_id": run_id,
            "expires": (self.clock.now() + self.TTL).isoformat(),
        }

    def holder(self, activation: str) -> str | None:
        """The run holding the activation's lease, if it has not expired."""
        with map_table_errors("read a lease"):
            try:
                entity = self.table.get_entity("lease", activation)
            except ResourceNotFoundError:
                return None
        if datetime.fromisoformat(entity["expires"]) <= self.clock.now():
            return None
        return str(entity["run_id"])

    def acquire(self, activation: str, run_id: str) -> None:
        """Take the lease or raise: `DuplicateRun` when this run already holds it, else `RunInProgress`."""
        with map_table_errors("take a lease"):
            try:
                self.table.create_entity(self._entity(activation, run_id))
                return
            except ResourceExistsError:
                pass
            try:
                current = self.table.get_entity("lease", activation)
            except ResourceNotFoundError:
                return self.acquire(activation, run_id)
            if datetime.fromisoformat(current["expires"]) > self.clock.now():
                if current["run_id"] == run_id:
                    raise DuplicateRun(f"run `{run_id}` of `{activation}` is already being processed")
                raise RunInProgress(
                    f"activation `{activation}` is already running (run `{current['run_id']}`); "
                    "this run waits until it ends"
                )
            try:
                self.table.update_entity(
                    self._entity(activation, run_id),
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, HttpResponseError) as exc:
                if getattr(exc, "status_code", 412) != 412:
                    raise
                raise RunInProgress(f"activation `{activation}` was just taken by another run") from None
        return None

    def renew(self, activation: str, run_id: str) -> None:
        with map_table_errors("renew a lease"):
            current = self.table.get_entity("lease", activation)
            if current["run_id"] == run_id:
                self.table.update_entity(
                    self._entity(activation, run_id),
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )

    def release(self, activation: str, run_id: str) -> None:
        with suppress(AzureError, KeyError):
            current = self.table.get_entity("lease", activation)
            if current["run_id"] == run_id:
                self.table.delete_entity(
                    "lease", activation, etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )


class ScheduleMarks:
    """The last occurrence enqueued per activation; claimed with ETags so two ticks never enqueue it twice."""

    def __init__(self, tables: Tables):
        self.table = tables.table("schedule")

    def last(self, activation: str) -> tuple[datetime | None, str | None]:
        with map_table_errors("read the schedule"):
            try:
                entity = self.table.get_entity("schedule", activation)
            except ResourceNotFoundError:
                return None, None
        return datetime.fromisoformat(entity["last_occurrence"]), entity.metadata["etag"]

    def claim(self, activation: str, occurrence: datetime, etag: str | None) -> bool:
        """Record `occurrence` as enqueued unless another tick changed the mark since it was read."""
        entity = {"PartitionKey": "schedule", "RowKey": activation, "last_occurrence": occurrence.isoformat()}
        with map_table_errors("claim a schedule occurrence"):
            try:
                if etag is None:
                    self.table.create_entity(entity)
                else:
                    self.table.update_entity(
                        entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
                return True
            except (ResourceExistsError, ResourceModifiedError):
                return False
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    return False
                raise


class StorageRunQueue:
    """The runs queue in Filecast's storage account, created on first send."""

    def __init__(self, settings: Settings):
        self.client = queue_service(settings).get_queue_client(RUNS_QUEUE)
        self._ready = False

    def send(self, body: str) -> None:
        if not self._ready:
            with suppress(Exception):
                self.client.create_queue()
            self._ready = True
        # The Functions queue trigger reads base64 message bodies (host.json messageEncoding).
        self.client.send_message(base64.b64encode(body.encode()).decode())
