"""The control plane's seams: what the service needs of each store, as Protocols.

`core.control.stores` implements them over Table Storage and the runs queue; `core.control.stores_memory` gives
an in-memory Table service and queue under the same code, for unit tests and for anyone embedding
Filecast without an Azure storage account. The delta state store's protocol is
`core.state.base.StateStore` (memory: `core.state.memory.MemoryStateStore`); the clock's is
`core.clock.Clock`. `core.control.service.Services` takes any of them as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ..catalog.model import Catalog
from ..run.records import RunRecord


class CatalogStoreProtocol(Protocol):
    """The applied catalog and the folder its relative paths start from."""

    def apply(
        self, doc: dict[str, Any], base_dir: Path | None = None, *, check: Callable[[Catalog], None] | None = None
    ) -> Catalog:
        """Validate `doc` as a whole (`CatalogInvalid`), run `check` on the parsed catalog, then store
        it in place of the previous one."""
        ...

    def document(self) -> tuple[dict[str, Any], Path]: ...

    def load(self) -> Catalog:
        """The applied catalog (`NotFound` when none has been applied)."""
        ...


class RunStoreProtocol(Protocol):
    """The run history: one record per run, by run id and newest first per activation."""

    def save(self, record: RunRecord) -> None: ...

    def get(self, run_id: str) -> RunRecord:
        """The record of `run_id` (`NotFound` when there is none)."""
        ...

    def history(self, activation: str, limit: int = 50) -> list[RunRecord]:
        """The activation's runs, newest logical time first."""
        ...


class LeasesProtocol(Protocol):
    """One run per activation at a time; a lease not renewed within `TTL` expires."""

    TTL: timedelta

    def holder(self, activation: str) -> str | None: ...

    def acquire(self, activation: str, run_id: str) -> None:
        """Take the lease or raise: `DuplicateRun` when this run holds it, else `RunInProgress`."""
        ...

    def renew(self, activation: str, run_id: str) -> None: ...

    def release(self, activation: str, run_id: str) -> None:
        """Give the lease back if this run still holds it; never raises."""
        ...


class ScheduleMarksProtocol(Protocol):
    """The last occurrence enqueued per activation, claimed so two ticks never enqueue it twice."""

    def last(self, activation: str) -> tuple[datetime | None, str | None]:
        """(the last occurrence enqueued, the token `claim` checks), or (None, None)."""
        ...

    def claim(self, activation: str, occurrence: datetime, etag: str | None) -> bool:
        """Record `occurrence` unless another tick changed the mark since `last` read `etag`."""
        ...


class RunQueue(Protocol):
    """The runs queue the queue trigger reads."""

    def send(self, body: str) -> None:
        """Send one run message (`core.control.service.run_message`); the queue encodes it as the host expects."""
        ...
