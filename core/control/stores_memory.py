"""The control plane in memory: a Table service and a runs queue with the semantics Filecast relies on.

`MemoryTableService` stands in for `azure.data.tables.TableServiceClient` *under* the real stores
of `core.control.stores` (catalog, run history, leases, schedule marks, alert outages), so the stores'
own logic (ETag-guarded leases and claims, newest-first history) runs unchanged, and an injected
fault is a real Azure SDK error going through the same translation as in production.
`memory_services()` wires them, an in-memory delta state store and a clock into a
`core.control.service.Services`: unit tests use it, and so can an application embedding Filecast
without an Azure storage account (everything is lost when the process ends).

Only what `core` uses of the SDK is implemented: entities by (PartitionKey, RowKey) with ETags,
the `IfNotModified` condition, `list_entities` and the `PartitionKey eq @pk` query, in key order.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from ..clock import SYSTEM, Clock
from ..settings import Settings
from ..state.memory import MemoryStateStore

if TYPE_CHECKING:
    from ..destinations import Destination
    from ..state.base import StateStore
    from .service import Services


class Entity(dict[str, Any]):
    """A stored entity as the SDK returns it: its properties, and `metadata["etag"]`."""

    def __init__(self, properties: dict[str, Any], etag: str):
        super().__init__(properties)
        self.metadata: dict[str, Any] = {"etag": etag}


@dataclass
class Fault:
    """An error to raise instead of running matching operations: `times` more times (None: always)."""

    error: Exception
    table: str | None = None  # the table name without Filecast's prefix; None: any table
    operation: str | None = None  # e.g. "upsert_entity", "get_entity"; None: any operation
    times: int | None = 1


class MemoryTable:
    """One table: the `TableClient` calls `core` makes."""

    def __init__(self, service: MemoryTableService, name: str):
        self.service, self.name = service, name
        self.entities: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}  # key → (properties, etag)

    def _key(self, entity: dict[str, Any]) -> tuple[str, str]:
        return str(entity["PartitionKey"]), str(entity["RowKey"])

    def _put(self, key: tuple[str, str], entity: dict[str, Any]) -> None:
        self.entities[key] = (copy.deepcopy(dict(entity)), self.service.new_etag())

    def _checked(self, key: tuple[str, str], etag: str | None, match_condition: MatchConditions | None) -> None:
        stored = self.entities.get(key)
        if stored is None:
            raise ResourceNotFoundError(f"The specified resource does not exist. {key}")
        if match_condition == MatchConditions.IfNotModified and etag != stored[1]:
            error = ResourceModifiedError("The update condition specified in the request was not satisfied.")
            error.status_code = 412
            raise error

    def create_entity(self, entity: dict[str, Any]) -> None:
        with self.service.operation(self.name, "create_entity"):
            key = self._key(entity)
            if key in self.entities:
                raise ResourceExistsError(f"The specified entity already exists. {key}")
            self._put(key, entity)

    def upsert_entity(self, entity: dict[str, Any], mode: UpdateMode = UpdateMode.MERGE) -> None:
        with self.service.operation(self.name, "upsert_entity"):
            key = self._key(entity)
            merged = dict(self.entities[key][0]) if mode == UpdateMode.MERGE and key in self.entities else {}
            self._put(key, {**merged, **entity})

    def update_entity(
        self,
        entity: dict[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        with self.service.operation(self.name, "update_entity"):
            key = self._key(entity)
            self._checked(key, etag, match_condition)
            merged = dict(self.entities[key][0]) if mode == UpdateMode.MERGE else {}
            self._put(key, {**merged, **entity})

    def get_entity(self, partition_key: str, row_key: str) -> Entity:
        with self.service.operation(self.name, "get_entity"):
            stored = self.entities.get((partition_key, row_key))
            if stored is None:
                raise ResourceNotFoundError(f"The specified resource does not exist. {(partition_key, row_key)}")
            return Entity(copy.deepcopy(stored[0]), stored[1])

    def delete_entity(
        self,
        partition_key: str,
        row_key: str,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        """Deleting a missing entity is not an error (as in the SDK); a stale ETag is."""
        with self.service.operation(self.name, "delete_entity"):
            key = (partition_key, row_key)
            if key in self.entities:
                self._checked(key, etag, match_condition)
                del self.entities[key]

    def list_entities(self, *, select: list[str] | None = None, **_: Any) -> Iterator[Entity]:
        with self.service.operation(self.name, "list_entities"):
            found = self._sorted(lambda key: True)
        for properties, etag in found:
            yield Entity({k: v for k, v in properties.items() if select is None or k in select}, etag)

    def query_entities(
        self, query_filter: str, *, parameters: dict[str, Any] | None = None, **_: Any
    ) -> Iterator[Entity]:
        if query_filter != "PartitionKey eq @pk" or not parameters or "pk" not in parameters:
            raise NotImplementedError(f"the memory table answers `PartitionKey eq @pk` only, not `{query_filter}`")
        partition = parameters["pk"]
        with self.service.operation(self.name, "query_entities"):
            found = self._sorted(lambda key: key[0] == partition)
        for properties, etag in found:
            yield Entity(properties, etag)

    def _sorted(self, wanted: Callable[[tuple[str, str]], bool]) -> list[tuple[dict[str, Any], str]]:
        """Copies of the matching entities in (PartitionKey, RowKey) order, as Table Storage returns them."""
        return [(copy.deepcopy(self.entities[k][0]), self.entities[k][1]) for k in sorted(self.entities) if wanted(k)]


class MemoryTableService:
    """Tables by name (`create_table`, `get_table_client`); `fail(...)` injects SDK errors. Thread-safe."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix  # Filecast's table prefix, stripped when matching a `Fault.table`
        self.tables: dict[str, MemoryTable] = {}
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str]] = []  # (table, operation), in order
        self._lock = threading.RLock()
        self._etags = itertools.count(1)

    def new_etag(self) -> str:
        return f'W/"{next(self._etags)}"'

    def fail(
        self, error: Exception, *, table: str | None = None, operation: str | None = None, times: int | None = 1
    ) -> Fault:
        """Raise `error` (an Azure SDK error, as the service would) from the next matching calls."""
        fault = Fault(error, table, operation, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    @contextmanager
    def operation(self, table: str, name: str) -> Iterator[None]:
        """Serialise one table operation, raising an injected fault first when one matches."""
        with self._lock:
            self._inject(table, name)
            yield

    def _inject(self, table: str, name: str) -> None:
        self.calls.append((table, name))
        short = table.removeprefix(self.prefix)
        for fault in self.faults:
            if fault.table not in (None, short) or fault.operation not in (None, name):
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            raise fault.error

    def create_table(self, name: str) -> None:
        with self.operation(name, "create_table"):
            if name in self.tables:
                raise ResourceExistsError(f"The table specified already exists. `{name}`")
            self.tables[name] = MemoryTable(self, name)

    def get_table_client(self, name: str) -> MemoryTable:
        with self._lock:
            if name not in self.tables:
                self.tables[name] = MemoryTable(self, name)
            return self.tables[name]


class MemoryQueue:
    """The runs queue in memory: `messages` holds the bodies sent, oldest first."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._lock = threading.Lock()

    def send(self, body: str) -> None:
        with self._lock:
            self.messages.append(body)

    def take(self) -> list[str]:
        """The messages sent so far, removed from the queue."""
        with self._lock:
            taken, self.messages = self.messages, []
        return taken


def memory_services(
    settings: Settings | None = None,
    *,
    clock: Clock = SYSTEM,
    state: StateStore | None = None,
    destinations: Mapping[str, Destination] | None = None,
) -> Services:
    """`Services` whose stores, queue and delta state all live in this process (see the module doc);
    runs write to `destinations` by catalog destination id (e.g. `core.destinations.memory`'s)."""
    from .service import Services
    from .stores import Tables

    settings = settings or Settings({})
    tables = Tables(settings, service=MemoryTableService(settings.table_prefix))
    return Services(
        settings,
        tables=tables,
        queue=MemoryQueue(),
        clock=clock,
        destinations=destinations,
        state=state if state is not None else MemoryStateStore(),
    )
