"""Delta state in Azure Table Storage, packed: about 40 entities per million rows.

One entity per row costs about 1 ms of SDK CPU each (18 minutes per million rows), so entries are
packed (`Entries.pack`: 16-byte keys then 8-byte contents) into **shard** entities of at most
`ROWS_PER_SHARD` rows = 639,984 bytes, split over binary properties `d0`…`d9` of at most 64,000
bytes each (Azure's limits: 64 KiB per property, 1 MiB per entity; Azurite rejects more than about
1 MB of base64 JSON). Shards hold consecutive ranges of the sorted key fingerprints, so they are
sharded by key prefix. Layout in the table:

    PartitionKey               RowKey      holds
    {activation}               current     the pointer: generation id ("" after a reset), rows,
                                           meta, and the in-flight generation (`pending`,
                                           `pending_rows`…); its ETag is the commit token
    {activation}@{generation}  meta        written by `begin`; its service Timestamp dates the
                                           generation for cleanup
    {activation}@{generation}  s000000…    the shards, 4 per entity-group transaction (< 4 MiB)

A generation is written in full; `stage` then merges it into the pointer as in flight and
`commit` replaces the pointer with it, both with `etag=…, match_condition=IfNotModified` (or
`create_entity` when there was no pointer): of two racing runs one stages first and the other gets
`StateConflict` before publishing anything. Payloads go to the blob
`{activation}/{generation}.bin` of the state container, staged in blocks and committed on close.
Sync SDK clients, with a small thread pool for shard reads and writes (sent as raw requests by
`table_requests.py`); call from asyncio via `asyncio.to_thread`. Azure errors are translated at
this boundary into `StateError`/`StateConflict`.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import io
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContainerClient

from ..azure import errors as azure_errors
from ..azure.table_requests import binary, query_entities, upsert_transaction
from ..errors import StateError
from .base import ENTRY_BYTES, Entries, Snapshot, StateInfo, conflict_error, new_generation_id

log = logging.getLogger(__name__)

PROPERTY_BYTES = 64_000
PROPERTIES_PER_SHARD = 10
ROWS_PER_SHARD = PROPERTY_BYTES * PROPERTIES_PER_SHARD // ENTRY_BYTES  # 26,666 rows, 639,984 bytes
SHARDS_PER_TRANSACTION = 4  # 4 × ~853 KB of base64 < 4 MiB
SHARDS_PER_PAGE = 5  # a page costs ~6 MB of SDK memory per shard
STREAMED_SHARDS_PER_PAGE = 1  # `iter_entries`: two pages in flight cost ~12 MB, not ~60
POINTER = "current"
FORMAT = 1
_BLOCK_BYTES = 4 << 20
# A payload download reads 4 MiB at a time: the SDK's default first read of 32 MiB is held whole.
_PAYLOAD_READS: dict[str, Any] = {"max_single_get_size": _BLOCK_BYTES, "max_chunk_get_size": _BLOCK_BYTES}


def map_azure_errors(what: str) -> AbstractContextManager[None]:
    """Azure errors as `StateError`s (transient ones `StateUnavailable`) by the one Azure boundary,
    core/azure/errors.py; `what` is the whole subject of the message ("reading the delta state of …")."""
    return azure_errors.map_azure_errors(what, boundary=azure_errors.STATE)


class RequestCounter:
    """A `raw_request_hook` counting HTTP requests (one per transaction, per page, per retry)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> None:
        with self._lock:
            self.count += 1


class TableStorageStateStore:
    """`StateStore` over an Azure table (entries) and a blob container (payloads)."""

    def __init__(self, table: TableClient, container: ContainerClient, *, workers: int = 2):
        self.table, self.container = table, container
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="state")
        self._workers = workers
        self._ready: set[str] = set()
        self._ready_lock = threading.Lock()

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        table_name: str,
        container_name: str,
        table_hook: Callable[[Any], None] | None = None,
        **client_kwargs: Any,
    ) -> TableStorageStateStore:
        """Build the clients from a storage connection string (`table_hook` e.g. a `RequestCounter`)."""
        hooks: dict[str, Any] = {"raw_request_hook": table_hook} if table_hook else {}
        tables = TableServiceClient.from_connection_string(connection_string, **client_kwargs, **hooks)
        blobs = BlobServiceClient.from_connection_string(connection_string, **_PAYLOAD_READS, **client_kwargs)
        return cls(tables.get_table_client(table_name), blobs.get_container_client(container_name))

    @classmethod
    def from_account(
        cls,
        table_url: str,
        blob_url: str,
        credential: Any,
        *,
        table_name: str,
        container_name: str,
        table_hook: Callable[[Any], None] | None = None,
        **client_kwargs: Any,
    ) -> TableStorageStateStore:
        """Build the clients from endpoints and a credential (e.g. a managed identity's)."""
        hooks: dict[str, Any] = {"raw_request_hook": table_hook} if table_hook else {}
        tables = TableServiceClient(table_url, credential=credential, **client_kwargs, **hooks)
        blobs = BlobServiceClient(blob_url, credential=credential, **_PAYLOAD_READS, **client_kwargs)
        return cls(tables.get_table_client(table_name), blobs.get_container_client(container_name))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.table.close()
        self.container.close()

    def __enter__(self) -> TableStorageStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure(self, what: str) -> None:
        """Create the table (`what="table"`) or the container on first use, once per store."""
        with self._ready_lock:
            if what in self._ready:
                return
            failed_because_exists = contextlib.suppress(ResourceExistsError)
            with map_azure_errors(f"creating the state {what}"), failed_because_exists:
                if what == "table":
                    self.table.create_table()
                else:
                    self.container.create_container()
            self._ready.add(what)

    # --- reading ---

    def load(self, activation: str) -> Snapshot:
        snapshot = self.peek(activation)
        if snapshot.info is None:
            return snapshot
        return replace(snapshot, entries=self.read_entries(snapshot))

    def peek(self, activation: str) -> Snapshot:
        """`load` without the entries (one request): `read_entries` reads them, e.g. meanwhile."""
        with map_azure_errors(f"reading the delta state of `{activation}`"):
            try:
                pointer = self.table.get_entity(activation, POINTER)
            except ResourceNotFoundError:  # no pointer, or no table yet (`begin` creates it)
                return Snapshot(activation, None, Entries.empty(), None)
        self._ready.add("table")
        token = pointer.metadata["etag"]
        pending = bool(pointer.get("pending"))
        if not pointer.get("generation") and not pending:
            return Snapshot(activation, None, Entries.empty(), token)
        info = _info(activation, pointer, "pending_" if pending else "")
        return Snapshot(activation, info, Entries.empty(), token, pending=pending)

    def read_entries(self, snapshot: Snapshot) -> Entries:
        """The entries of the generation `snapshot` (from `peek`) names."""
        activation, info = snapshot.activation, snapshot.info
        if info is None:
            return Entries.empty()
        with map_azure_errors(f"reading the delta state of `{activation}`"):
            entries = Entries.allocate(info.rows)
            got = sum(self._pool.map(lambda r: self._read_range(activation, info, entries, *r), _pages(info.rows)))
        _release_freed_memory()
        _check_complete(activation, info, got)
        return entries

    def iter_entries(self, snapshot: Snapshot) -> Iterator[Entries]:
        """The same entries a shard at a time, in order, the next shard read meanwhile (so at most
        two shards are held: the bounded-memory diff of `core.delta.spilled` reads them)."""
        activation, info = snapshot.activation, snapshot.info
        if info is None:
            return
        got, ahead = 0, deque[tuple[Entries, Future[int]]]()
        pages = iter(_pages(info.rows, STREAMED_SHARDS_PER_PAGE))
        with map_azure_errors(f"reading the delta state of `{activation}`"):
            while True:
                while len(ahead) < 2 and (page := next(pages, None)) is not None:
                    first, stop = page
                    rows = min(info.rows, stop * ROWS_PER_SHARD) - first * ROWS_PER_SHARD
                    entries = Entries.allocate(rows)
                    base = first * ROWS_PER_SHARD
                    read = self._pool.submit(self._read_range, activation, info, entries, *page, base=base)
                    ahead.append((entries, read))
                if not ahead:
                    break
                entries, future = ahead.popleft()
                got += future.result()
                yield entries
        _check_complete(activation, info, got)

    def _read_range(
        self, activation: str, info: StateInfo, entries: Entries, first: int, stop: int, *, base: int = 0
    ) -> int:
        """Shards `first`..`stop` into `entries`, whose row 0 is the state's row `base`."""
        pk = f"{activation}@{info.generation}"
        query = f"PartitionKey eq '{pk}' and RowKey ge '{_row(first)}' and RowKey lt '{_row(stop)}'"
        found = 0
        with map_azure_errors(f"reading the delta state of `{activation}`"):
            for entity in query_entities(self.table, query, min(SHARDS_PER_PAGE, stop - first)):
                index = int(entity["RowKey"][1:])
                data = b"".join(binary(entity[f"d{i}"]) for i in range(PROPERTIES_PER_SHARD) if f"d{i}" in entity)
                expected = min(ROWS_PER_SHARD, info.rows - index * ROWS_PER_SHARD)
                if not first <= index < stop or entries.unpack_into(data, index * ROWS_PER_SHARD - base) != expected:
                    raise StateError(
                        f"shard {index} of the delta state of `{activation}` has a wrong size; "
                        "reset the activation to start with a full run"
                    )
                found += 1
        return found

    def read_payload(self, info: StateInfo) -> BinaryIO:
        if not info.payload:
            raise StateError(f"state generation `{info.generation}` of `{info.activation}` has no payload")
        with map_azure_errors(f"reading the last delivered values of `{info.activation}`"):
            download = self._blob(info.activation, info.generation).download_blob()
        return io.BufferedReader(_DownloadReader(download, info.activation), buffer_size=1 << 20)

    # --- writing ---

    def begin(self, activation: str) -> str:
        self._ensure("table")
        generation = new_generation_id()
        with map_azure_errors(f"starting a new delta state for `{activation}`"):
            self.table.create_entity(
                {"PartitionKey": f"{activation}@{generation}", "RowKey": "meta", "generation": generation}
            )
        return generation

    def open_payload(self, activation: str, generation: str) -> BinaryIO:
        self._ensure("container")
        return io.BufferedWriter(_BlockWriter(self._blob(activation, generation), activation), _BLOCK_BYTES)

    def write(
        self,
        activation: str,
        generation: str,
        chunks: Iterable[Entries],
        *,
        meta: Mapping[str, str] | None = None,
        payload: bool = False,
    ) -> StateInfo:
        pk = f"{activation}@{generation}"
        pending: deque[Future[Any]] = deque()
        rows = 0
        with map_azure_errors(f"writing the delta state of `{activation}`"):
            for group in _transactions(_shard_entities(pk, chunks)):
                rows += sum(e["rows"] for e in group)
                if len(pending) >= self._workers:  # bounds memory: a transaction body is ~3.4 MB
                    pending.popleft().result()
                pending.append(self._pool.submit(upsert_transaction, self.table, group))
            while pending:
                pending.popleft().result()
        _release_freed_memory()
        return StateInfo(activation, generation, rows, dict(meta or {}), payload)

    def stage(self, info: StateInfo, snapshot: Snapshot) -> Snapshot:
        entity = {"PartitionKey": info.activation, "RowKey": POINTER, **_pointer_fields(info, "pending_")}
        if snapshot.token is None:
            entity["generation"] = ""
        token = self._swap(info, snapshot, entity, UpdateMode.MERGE, "recording the new delta state of")
        return Snapshot(info.activation, info, Entries.empty(), token, pending=True)

    def commit(self, info: StateInfo, snapshot: Snapshot) -> None:
        entity = {"PartitionKey": info.activation, "RowKey": POINTER, **_pointer_fields(info, "")}
        self._swap(info, snapshot, entity, UpdateMode.REPLACE, "committing the delta state of")

    def _swap(self, info: StateInfo, snapshot: Snapshot, entity: dict[str, Any], mode: UpdateMode, what: str) -> str:
        """Write the pointer if it is still the one `snapshot` saw (its ETag); returns the new ETag."""
        with map_azure_errors(f"{what} `{info.activation}`"):
            try:
                if snapshot.token is None:
                    written = self.table.create_entity(entity)
                else:
                    written = self.table.update_entity(
                        entity, mode=mode, etag=snapshot.token, match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
                raise conflict_error(info.activation) from exc
        return str(written["etag"])

    # --- housekeeping ---

    def reset(self, activation: str) -> None:
        self._ensure("table")
        with map_azure_errors(f"resetting the delta state of `{activation}`"):
            self.table.upsert_entity(
                {"PartitionKey": activation, "RowKey": POINTER, "generation": "", "format": FORMAT},
                mode=UpdateMode.REPLACE,
            )
        self._remove(activation, [g for g, _ in self._generations(activation)])

    def cleanup(self, activation: str) -> int:
        with map_azure_errors(f"cleaning up the delta state of `{activation}`"):
            try:
                pointer = self.table.get_entity(activation, POINTER)
            except ResourceNotFoundError:
                return 0
        committed, keep = pointer.metadata["timestamp"], (pointer.get("generation"), pointer.get("pending"))
        dead = [g for g, started in self._generations(activation) if g not in keep and started < committed]
        self._remove(activation, dead)
        return len(dead)

    def _generations(self, activation: str) -> list[tuple[str, Any]]:
        query = f"PartitionKey gt '{activation}@' and PartitionKey lt '{activation}@~' and RowKey eq 'meta'"
        with map_azure_errors(f"listing the delta state generations of `{activation}`"):
            metas = self.table.query_entities(query, select=["PartitionKey", "RowKey", "Timestamp", "generation"])
            return [(m["generation"], m.metadata["timestamp"]) for m in metas]

    def _remove(self, activation: str, generations: list[str]) -> None:
        for generation in generations:
            pk = f"{activation}@{generation}"
            with map_azure_errors(f"removing delta state generation `{generation}` of `{activation}`"):
                keys = [e["RowKey"] for e in self.table.query_entities(f"PartitionKey eq '{pk}'", select=["RowKey"])]
                keys.sort(key=lambda k: k == "meta")  # the meta entity goes last: cleanup can find leftovers
                for start in range(0, len(keys), 100):
                    self.table.submit_transaction(
                        [("delete", {"PartitionKey": pk, "RowKey": k}) for k in keys[start : start + 100]]
                    )
                with contextlib.suppress(ResourceNotFoundError):
                    self._blob(activation, generation).delete_blob()
            log.debug("removed delta state generation %s of %s", generation, activation)

    def _blob(self, activation: str, generation: str) -> BlobClient:
        return self.container.get_blob_client(f"{activation}/{generation}.bin")


def _release_freed_memory() -> None:
    """Give the SDK's freed page and transaction buffers back to the OS.

    They are freed in the pool threads' glibc arenas, which keep them (tens of MB) for the rest
    of the process otherwise; the run's peak RSS budget has no room for that. No-op off glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _row(index: int) -> str:
    return f"s{index:06d}"


def _shards(rows: int) -> int:
    return -(-rows // ROWS_PER_SHARD)


def _pages(rows: int, size: int = SHARDS_PER_PAGE) -> list[tuple[int, int]]:
    """The state's shards in pages of `size`: (first, stop) shard indices."""
    shards = _shards(rows)
    return [(i, min(i + size, shards)) for i in range(0, shards, size)]


def _check_complete(activation: str, info: StateInfo, got: int) -> None:
    if got != _shards(info.rows):
        raise StateError(
            f"the delta state of `{activation}` (generation `{info.generation}`) is incomplete: "
            f"{got} of {_shards(info.rows)} shards found; reset the activation to start with a full run"
        )


def _info(activation: str, pointer: Mapping[str, Any], prefix: str) -> StateInfo:
    """The generation the pointer names: the current one (`prefix=""`) or the in-flight one."""
    if pointer.get("format") != FORMAT or pointer.get("rows_per_shard") != ROWS_PER_SHARD:
        raise StateError(f"the delta state of `{activation}` has an unknown layout; reset the activation")
    return StateInfo(
        activation,
        pointer["pending" if prefix else "generation"],
        int(pointer[f"{prefix}rows"]),
        json.loads(pointer.get(f"{prefix}meta") or "{}"),
        bool(pointer.get(f"{prefix}payload")),
    )


def _pointer_fields(info: StateInfo, prefix: str) -> dict[str, Any]:
    """The pointer's properties naming `info`: as the current generation, or (`pending_`) in flight."""
    fields: dict[str, Any] = {"generation" if not prefix else "pending": info.generation}
    fields.update(
        {
            f"{prefix}rows": info.rows,
            f"{prefix}payload": info.payload,
            f"{prefix}meta": json.dumps(dict(info.meta), sort_keys=True),
        }
    )
    return {**fields, "rows_per_shard": ROWS_PER_SHARD, "format": FORMAT}


def _shard_entities(pk: str, chunks: Iterable[Entries]) -> Iterator[dict[str, Any]]:
    """Re-cut sorted chunks into shard entities of exactly ROWS_PER_SHARD rows (the last one less)."""
    index, rest, last = 0, Entries.empty(), Entries.empty()
    for chunk in chunks:
        if not len(chunk):
            continue
        if not Entries.concat([last, chunk.slice(0, 1)]).is_sorted_unique() or not chunk.is_sorted_unique():
            raise ValueError("state entries must be sorted by key with unique keys")
        last = chunk.slice(len(chunk) - 1, len(chunk))
        joined = Entries.concat([rest, chunk]) if len(rest) else chunk
        full = len(joined) // ROWS_PER_SHARD
        for i in range(full):
            yield _shard(pk, index, joined.slice(i * ROWS_PER_SHARD, (i + 1) * ROWS_PER_SHARD))
            index += 1
        rest = joined.slice(full * ROWS_PER_SHARD, len(joined))
    if len(rest):
        yield _shard(pk, index, rest)


def _shard(pk: str, index: int, entries: Entries) -> dict[str, Any]:
    data = entries.pack()
    entity: dict[str, Any] = {
        "PartitionKey": pk,
        "RowKey": _row(index),
        "rows": len(entries),
        "first": f"{int(entries.hi[0]):016x}" if len(entries) else "",
    }
    for i in range(0, len(data), PROPERTY_BYTES):
        entity[f"d{i // PROPERTY_BYTES}"] = data[i : i + PROPERTY_BYTES]
    return entity


def _transactions(entities: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    group: list[dict[str, Any]] = []
    for entity in entities:
        group.append(entity)
        if len(group) == SHARDS_PER_TRANSACTION:
            yield group
            group = []
    if group:
        yield group


class _BlockWriter(io.RawIOBase):
    """Stages each write as a block of the payload blob; `close` commits the block list."""

    def __init__(self, blob: BlobClient, activation: str):
        self._blob, self._activation = blob, activation
        self._blocks: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block_id = base64.b64encode(f"{len(self._blocks):08d}".encode()).decode()
        with map_azure_errors(f"saving the last delivered values of `{self._activation}`"):
            self._blob.stage_block(block_id, bytes(data))
        self._blocks.append(block_id)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with map_azure_errors(f"saving the last delivered values of `{self._activation}`"):
                self._blob.commit_block_list([BlobBlock(block_id=b) for b in self._blocks])
        super().close()


class _DownloadReader(io.RawIOBase):
    """A readable view of a blob download, chunk by chunk (no whole-blob buffer)."""

    def __init__(self, download: Any, activation: str):
        self._chunks, self._activation = download.chunks(), activation
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._rest:
            with map_azure_errors(f"reading the last delivered values of `{self._activation}`"):
                self._rest = memoryview(next(self._chunks, b""))
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size
