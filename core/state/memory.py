"""An in-memory `StateStore` with the same semantics as Table Storage, for unit tests and previews.

Generations, the ETag-like commit token, conflict detection, reset tombstones and cleanup behave
as in `core.state.table_storage`; a logical clock stands in for the service's timestamps. Entries
are copied in and out, so a caller mutating what `load` returned (the differ does) never changes
what is stored. Thread-safe.
"""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import StateError, StateUnavailable
from .base import CHUNK_ROWS, Entries, Snapshot, StateInfo, conflict_error, new_generation_id


@dataclass
class _Generation:
    started: int  # logical time `begin` was called
    info: StateInfo | None = None  # set by `write`
    entries: Entries | None = None
    payload: bytes | None = None


@dataclass
class _Pointer:
    generation: str | None  # None: a reset tombstone
    version: int
    committed: int  # logical time of the last stage, commit or reset
    pending: str | None = None  # the in-flight generation


class _PayloadWriter(io.BytesIO):
    def __init__(self, store: MemoryStateStore, activation: str, generation: str):
        super().__init__()
        self._store, self._key = store, (activation, generation)

    def close(self) -> None:
        if not self.closed:
            self._store._put_payload(self._key, self.getvalue())
        super().close()


class MemoryStateStore:
    """Delta state held in a dict; `fail_on` lets tests make one operation fail once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clock = itertools.count(1)
        self._pointers: dict[str, _Pointer] = {}
        self._generations: dict[tuple[str, str], _Generation] = {}
        self.fail_on: set[str] = set()  # operation names ("load", "write", "commit", ...) to fail once
        self.calls: list[str] = []

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        if operation in self.fail_on:
            self.fail_on.discard(operation)
            raise StateUnavailable(f"injected failure in `{operation}`")

    def load(self, activation: str) -> Snapshot:
        with self._lock:
            self._enter("load")
            pointer = self._pointers.get(activation)
            token = None if pointer is None else str(pointer.version)
            shown = None if pointer is None else pointer.pending or pointer.generation
            if pointer is None or shown is None:
                return Snapshot(activation, None, Entries.empty(), token)
            generation = self._generations[(activation, shown)]
            assert generation.info is not None and generation.entries is not None
            return Snapshot(
                activation, generation.info, generation.entries.copy(), token, pending=pointer.pending is not None
            )

    def peek(self, activation: str) -> Snapshot:
        """`load`; entries come with it here (`read_entries` hands them over)."""
        return self.load(activation)

    def read_entries(self, snapshot: Snapshot) -> Entries:
        with self._lock:
            self._enter("read_entries")  # a fault point of its own, as the shard reads are elsewhere
        return snapshot.entries

    def iter_entries(self, snapshot: Snapshot) -> Iterator[Entries]:
        entries = self.read_entries(snapshot)
        for start in range(0, len(entries), CHUNK_ROWS):
            yield entries.slice(start, start + CHUNK_ROWS)

    def begin(self, activation: str) -> str:
        with self._lock:
            self._enter("begin")
            generation = new_generation_id()
            self._generations[(activation, generation)] = _Generation(started=next(self._clock))
            return generation

    def open_payload(self, activation: str, generation: str) -> BinaryIO:
        with self._lock:
            self._enter("open_payload")
            self._generation(activation, generation)
        return _PayloadWriter(self, activation, generation)

    def _put_payload(self, key: tuple[str, str], data: bytes) -> None:
        with self._lock:
            if key in self._generations:  # else cleaned up meanwhile: the run can't commit anyway
                self._generations[key].payload = data

    def read_payload(self, info: StateInfo) -> BinaryIO:
        with self._lock:
            self._enter("read_payload")
            generation = self._generations.get((info.activation, info.generation))
            if generation is None or generation.payload is None:
                raise StateError(f"state generation `{info.generation}` of `{info.activation}` has no payload")
            return io.BytesIO(generation.payload)

    def write(
        self,
        activation: str,
        generation: str,
        chunks: Iterable[Entries],
        *,
        meta: Mapping[str, str] | None = None,
        payload: bool = False,
    ) -> StateInfo:
        entries = Entries.concat(c.copy() for c in chunks)
        if not entries.is_sorted_unique():
            raise ValueError("state entries must be sorted by key with unique keys")
        with self._lock:
            self._enter("write")
            record = self._generation(activation, generation)
            if payload and record.payload is None:
                raise StateError(f"state generation `{generation}` has no payload: close the payload stream first")
            record.entries = entries
            record.info = StateInfo(activation, generation, len(entries), dict(meta or {}), payload)
            return record.info

    def stage(self, info: StateInfo, snapshot: Snapshot) -> Snapshot:
        with self._lock:
            self._enter("stage")
            pointer = self._swap(info, snapshot)
            version = 1 if pointer is None else pointer.version + 1
            current = None if pointer is None else pointer.generation
            self._pointers[info.activation] = _Pointer(current, version, next(self._clock), info.generation)
            return Snapshot(info.activation, info, Entries.empty(), str(version), pending=True)

    def commit(self, info: StateInfo, snapshot: Snapshot) -> None:
        with self._lock:
            self._enter("commit")
            pointer = self._swap(info, snapshot)
            version = 1 if pointer is None else pointer.version + 1
            self._pointers[info.activation] = _Pointer(info.generation, version, next(self._clock))

    def _swap(self, info: StateInfo, snapshot: Snapshot) -> _Pointer | None:
        """The pointer `stage`/`commit` replace, checked against the token `snapshot` carries."""
        pointer = self._pointers.get(info.activation)
        current = None if pointer is None else str(pointer.version)
        if current != snapshot.token:
            raise conflict_error(info.activation)
        record = self._generations.get((info.activation, info.generation))
        if record is None or record.info is None:
            raise StateError(f"state generation `{info.generation}` was not written or was cleaned up")
        return pointer

    def reset(self, activation: str) -> None:
        with self._lock:
            self._enter("reset")
            pointer = self._pointers.get(activation)
            version = 1 if pointer is None else pointer.version + 1
            self._pointers[activation] = _Pointer(None, version, next(self._clock))
            for key in [k for k in self._generations if k[0] == activation]:
                del self._generations[key]

    def cleanup(self, activation: str) -> int:
        with self._lock:
            self._enter("cleanup")
            pointer = self._pointers.get(activation)
            if pointer is None:
                return 0
            dead = [
                key
                for key, record in self._generations.items()
                if key[0] == activation
                and key[1] not in (pointer.generation, pointer.pending)
                and record.started < pointer.committed
            ]
            for key in dead:
                del self._generations[key]
            return len(dead)

    def generations(self, activation: str) -> list[str]:
        """Ids of the generations held for `activation` (tests use it to check cleanup)."""
        with self._lock:
            return sorted(g for a, g in self._generations if a == activation)

    def _generation(self, activation: str, generation: str) -> _Generation:
        record = self._generations.get((activation, generation))
        if record is None:
            raise StateError(f"state generation `{generation}` of `{activation}` was not begun or was cleaned up")
        return record
