"""The clock of the control plane: what time a run starts and ends, when a lease expires, what a tick sees.

Every place that asks for "now" takes a `Clock`, defaulting to `SYSTEM` (timezone-aware UTC), so a
test or an embedding application can pass a `ManualClock` and move time by hand instead of
monkeypatching `datetime`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of the current time, always timezone-aware UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until told to move: `advance(delta)` or `set(moment)`. Thread-safe."""

    def __init__(self, start: datetime | None = None):
        self._now = _utc(start or datetime(2025, 1, 1, tzinfo=UTC))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by `delta`; returns the new time."""
        if delta < timedelta(0):
            raise ValueError(f"a clock only moves forward, not by `{delta}`")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, moment: datetime) -> None:
        moment = _utc(moment)
        with self._lock:
            self._now = moment


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"`{moment.isoformat()}` has no time zone: give the clock a UTC time")
    return moment.astimezone(UTC)


SYSTEM: Clock = SystemClock()
