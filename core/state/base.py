"""The delta state: what a store keeps between runs, and the protocol every store implements.

A state is a sorted array of fixed-width entries, one per delivered row: the 128-bit key
fingerprint and the 64-bit content fingerprint of `core.delta.fingerprint` (24 bytes per row in memory
and at rest). Stores keep it in **generations**: a run writes a new generation next to the current
one (`begin`, `open_payload`, `write`), and only after every file of the run is published does
`commit` make it current, with a write guarded by the token `load` returned (an ETag for Table
Storage). So a failed or interrupted run leaves the state as it was, and of two runs racing to
commit one wins and the other gets `StateConflict`. An optional **payload** (bytes: e.g. the last
delivered values of the mapped rows, for DIFFERENCE's `_removed` files) belongs to a generation
and shares its lifecycle.

Between the two, `stage` records the written generation as **in flight** (also guarded by the
token): its files are about to be published, so nobody knows whether the partner got them. `load`
returns the in-flight generation when there is one (`Snapshot.pending`), else the current one.
An in-flight generation describes what the partner may hold, entry by entry (`core.delta.diff` uses it):
a content with the `SENT` bit was sent by the run that wrote it and may or may not have arrived
(`ADDED` too: sent as a new row); `GONE` is a row whose removal was sent the same way; an entry
without the bit is certain. Once committed, every entry is certain: `settle` drops the tombstones
and clears the bits (content fingerprints keep 62 bits).

Packed layout (also the Table Storage property format): the keys as 16-byte big-endian digests,
one after the other, followed by the contents as 8-byte big-endian integers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, Protocol

import numpy as np

from ..errors import StateConflict

ENTRY_BYTES = 24
CHUNK_ROWS = 1 << 16  # rows per chunk of entries handed between a run and a store (~1.5 MB)
SENT = np.uint64(1 << 63)  # content bit: sent by the run that wrote the generation, delivery unknown
ADDED = np.uint64(1 << 62)  # with SENT: sent as a new row (`_added`), so the partner may lack it
CONTENT_BITS = np.uint64((1 << 62) - 1)  # what a content fingerprint keeps of its 64 bits
GONE = np.uint64((1 << 64) - 1)  # a tombstone: the row's removal was sent, delivery unknown


@dataclass(frozen=True)
class Entries:
    """State entries as three parallel uint64 arrays, sorted by (hi, lo) with unique keys."""

    hi: np.ndarray
    lo: np.ndarray
    content: np.ndarray

    def __len__(self) -> int:
        return len(self.hi)

    @classmethod
    def empty(cls) -> Entries:
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint64))

    @classmethod
    def allocate(cls, rows: int) -> Entries:
        """Uninitialised arrays for `rows` entries (stores fill them page by page)."""
        return cls(np.empty(rows, np.uint64), np.empty(rows, np.uint64), np.empty(rows, np.uint64))

    @classmethod
    def concat(cls, parts: Iterable[Entries]) -> Entries:
        chunks = list(parts)
        if not chunks:
            return cls.empty()
        return cls(*(np.concatenate([getattr(c, name) for c in chunks]) for name in ("hi", "lo", "content")))

    def slice(self, start: int, stop: int) -> Entries:
        return Entries(self.hi[start:stop], self.lo[start:stop], self.content[start:stop])

    def copy(self) -> Entries:
        return Entries(self.hi.copy(), self.lo.copy(), self.content.copy())

    def pack(self) -> bytes:
        """The packed layout: 16-byte keys, then 8-byte contents, all big-endian."""
        keys = np.empty((len(self), 2), dtype=">u8")
        keys[:, 0], keys[:, 1] = self.hi, self.lo
        return keys.tobytes() + self.content.astype(">u8").tobytes()

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> Entries:
        rows, extra = divmod(len(data), ENTRY_BYTES)
        if extra:
            raise ValueError(f"packed state of {len(data)} bytes is not a whole number of entries")
        out = cls.allocate(rows)
        out.unpack_into(data, 0)
        return out

    def unpack_into(self, data: bytes | memoryview, start: int) -> int:
        """Decode packed entries into `self` from row `start`; returns the number of rows."""
        rows = len(data) // ENTRY_BYTES
        keys = np.frombuffer(data, dtype=">u8", count=2 * rows).reshape(rows, 2)
        self.hi[start : start + rows] = keys[:, 0]
        self.lo[start : start + rows] = keys[:, 1]
        self.content[start : start + rows] = np.frombuffer(data, dtype=">u8", count=rows, offset=16 * rows)
        return rows

    def is_sorted_unique(self) -> bool:
        """Check the invariant (used by stores before writing and by tests)."""
        if len(self) < 2:
            return True
        hi, lo = self.hi, self.lo
        return bool(np.all((hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1]))))


@dataclass(frozen=True)
class StateInfo:
    """One generation of an activation's state, as recorded by the store."""

    activation: str
    generation: str
    rows: int
    meta: Mapping[str, str] = field(default_factory=dict)
    payload: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Snapshot:
    """What `load` returns: the current generation (None: never committed or reset) and its entries.

    `token` is what `commit` checks to detect a concurrent commit; it is opaque to callers.
    """

    activation: str
    info: StateInfo | None
    entries: Entries
    token: str | None
    pending: bool = False  # `info` is the in-flight generation, not a committed one


def settle(entries: Entries) -> Entries:
    """A committed generation's entries as certain ones: tombstones dropped, `SENT` bits cleared."""
    gone = entries.content == GONE
    if gone.any():
        keep = ~gone
        entries = Entries(entries.hi[keep], entries.lo[keep], entries.content[keep])
    np.bitwise_and(entries.content, CONTENT_BITS, out=entries.content)
    return entries


def conflict_error(activation: str) -> StateConflict:
    """The error every store raises when another run committed (or a reset happened) first."""
    return StateConflict(
        f"the delta state of `{activation}` changed while this run was in progress (another run committed "
        "first, or the state was reset); this run's state was not saved, so the next run compares against "
        "the newer state and re-sends what it has not seen"
    )


def new_generation_id(now: datetime | None = None) -> str:
    """A sortable, unique generation id: UTC time to the microsecond plus 32 random bits."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


class StateStore(Protocol):
    """Where delta state lives between runs. Methods are blocking: call them via `asyncio.to_thread`."""

    def load(self, activation: str) -> Snapshot:
        """The current generation's entries (empty, info None, when there is no state)."""
        ...

    def peek(self, activation: str) -> Snapshot:
        """What `load` returns, possibly without the entries (`read_entries` then reads them), so a
        run can start streaming its source while the state arrives."""
        ...

    def read_entries(self, snapshot: Snapshot) -> Entries:
        """The entries of the generation a `peek` snapshot names (its own entries, if it has them)."""
        ...

    def iter_entries(self, snapshot: Snapshot) -> Iterator[Entries]:
        """The entries `read_entries` returns, as sorted consecutive chunks, so a run can stream a
        large state without holding it (`core.delta.spilled`)."""
        ...

    def begin(self, activation: str) -> str:
        """Start a new generation (recorded, so cleanup can find it if the run dies); returns its id."""
        ...

    def open_payload(self, activation: str, generation: str) -> BinaryIO:
        """A writable stream for the generation's payload; closing it stores the bytes."""
        ...

    def read_payload(self, info: StateInfo) -> BinaryIO:
        """A readable stream of the generation's payload (`StateError` when it has none)."""
        ...

    def write(
        self,
        activation: str,
        generation: str,
        chunks: Iterable[Entries],
        *,
        meta: Mapping[str, str] | None = None,
        payload: bool = False,
    ) -> StateInfo:
        """Store a new generation from sorted, consecutive chunks; it is not current until `commit`."""
        ...

    def stage(self, info: StateInfo, snapshot: Snapshot) -> Snapshot:
        """Record the written generation `info` as in flight, before its files are published, if the
        state is still the one `snapshot` saw (else `StateConflict`: nothing may be published).
        Returns the snapshot (token) that `commit` then checks; the current generation stays."""
        ...

    def commit(self, info: StateInfo, snapshot: Snapshot) -> None:
        """Make `info` current (and clear the in-flight one) if the state is still the one `snapshot`
        saw, else `StateConflict`."""
        ...

    def reset(self, activation: str) -> None:
        """Forget the state: the next run is a full one, and a run in flight can no longer commit."""
        ...

    def cleanup(self, activation: str) -> int:
        """Remove the generations no run can commit any more: every generation neither current nor in
        flight whose writing started before the pointer last changed (a stage, commit or reset, by
        the store's clock). Generations started later may belong to a run in progress; a later
        cleanup removes them.
        Returns how many generations were removed."""
        ...
