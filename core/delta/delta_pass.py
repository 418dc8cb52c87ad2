"""The delta side of a FULL THEN DELTA run: state in, classification per batch, new state out.

- `load()` reads the last committed generation; a state written under another primary key,
  mapping, mode or fingerprint encoding can't be compared with, so the run becomes a full one.
- `classify()` fingerprints each source batch (key over the primary key, content over the mapped
  columns) and returns which mapped rows go to which output.
- DIFFERENCE keeps the last delivered values of every row (an Arrow IPC stream, zstd, beside the
  state) so that `_removed` files can carry them.
- `write_state()` writes the new generation (not yet current); `stage()` records it as in flight
  just before the files are published, and `commit()` makes it current after every file is
  published, both with ETag-guarded writes. A run that finds an in-flight generation (its
  predecessor stopped somewhere between the two) compares against it, uncertain rows included
  (`core.delta.diff`), so whatever reached the partner, the partner converges to the source.
- A run that changed nothing against a committed state writes no generation: `commit()` names the
  current one again (one guarded pointer write). Only DIFFERENCE begins its generation at `load()`
  (its payload streams in); the others begin it when they write it.
- `ahead()` fingerprints the source's next batches on pool threads while the engine diffs and
  writes the current one.
- Memory: a previous state of up to `SPILL_FROM_ROWS` entries is diffed in memory (`Differ`),
  batch by batch, so rows are routed as they stream. A larger one, and the new state of a full
  run, are diffed on disk (`core.delta.spilled`): a delta run's rows are then routed once the
  whole source is read (`replay()`), so the run's memory does not grow with the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..catalog.model import Activation, Model
from ..state.base import Entries, Snapshot, StateInfo, StateStore
from .diff import DeltaSummary, Differ, filter_removed
from .fingerprint import ENCODING_VERSION, Fingerprints, fingerprint_ahead, fingerprint_batch
from .spilled import SPILL_FROM_ROWS, SpilledDiffer

log = logging.getLogger(__name__)

KEY_COLUMN = "__filecast_key"
PAYLOAD_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")
_LOADER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="state-load")  # reads a run's state meanwhile


def signature(activation: Activation, model: Model) -> str:
    """What a stored state's fingerprints depend on; a state with another signature is not comparable."""
    mapping = [[c.source, c.target] for c in activation.mapping] if activation.mapping is not None else None
    text = json.dumps(
        {
            "key": list(model.primary_key),
            "mapping": mapping,
            "mode": activation.sync_mode,
            "encoding": ENCODING_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Routed:
    """Masks over one batch's mapped rows."""

    export: np.ndarray  # INSERT / UPSERT: the rows of the file
    added: np.ndarray  # DIFFERENCE: `_added` (every row on a full run)
    updated: np.ndarray  # DIFFERENCE: `_updated`


class DeltaPass:
    """One run's use of the delta state; blocking methods, called from the engine's worker thread."""

    def __init__(
        self,
        store: StateStore,
        activation: Activation,
        model: Model,
        *,
        preview: bool = False,
        spill_from: int = SPILL_FROM_ROWS,
    ):
        self.store = store
        self.spill_from = spill_from
        self.spilled: SpilledDiffer | None = None
        self.activation = activation
        self.model = model
        self.preview = preview
        self.mode = activation.sync_mode
        self.signature = signature(activation, model)
        self.snapshot: Snapshot | None = None
        self.differ: Differ | None = None
        self.generation: str | None = None
        self.payload: Any = None
        self.payload_file: Any = None
        self.payload_schema: pa.Schema | None = None
        self.summary: DeltaSummary | None = None
        self.info: StateInfo | None = None
        self.staged: Snapshot | None = None
        self.reset_reason: str | None = None
        self._ahead: deque[tuple[pa.RecordBatch, Future[Fingerprints]]] = deque()
        self._loading: Future[Differ] | None = None
        self._full = True

    @property
    def full(self) -> bool:
        return self._full

    def load(self) -> None:
        """Read the state's pointer; its entries arrive on a thread of their own while the source
        starts streaming (the first `classify` waits for them)."""
        snapshot = self.store.peek(self.activation.id)
        comparable = snapshot.info is not None
        if comparable and snapshot.info.meta.get("signature") != self.signature:  # type: ignore[union-attr]
            self.reset_reason = (
                "the primary key, the mapping or the sync mode changed since the state was "
                "saved, so this run compares against nothing and sends every row"
            )
            comparable = False
        self.snapshot, self._full = snapshot, not comparable
        if comparable and snapshot.info.rows <= self.spill_from:  # type: ignore[union-attr]
            self._loading = _LOADER.submit(lambda: self._differ_of(self.store.read_entries(snapshot)))
        else:
            payload = self.mode == "difference" and not self.preview  # its rows and keys, replayed into it
            self.spilled = SpilledDiffer(
                (lambda: self.store.iter_entries(snapshot)) if comparable else None,
                self.mode,  # type: ignore[arg-type]
                pending=comparable and snapshot.pending,
                key_columns=self.model.primary_key,
                on_duplicate_key=self.activation.on_duplicate_key,  # type: ignore[arg-type]
                values=payload,
                keys=payload,
            )
        if not self.preview and self.mode == "difference":  # its payload streams into the new generation
            self.generation = self.store.begin(self.activation.id)

    def _differ_of(self, previous: Entries) -> Differ:
        pending = self.snapshot is not None and self.snapshot.pending
        return Differ(
            previous,
            self.mode,  # type: ignore[arg-type]
            pending=pending,
            key_columns=self.model.primary_key,
            on_duplicate_key=self.activation.on_duplicate_key,  # type: ignore[arg-type]
        )

    def _ready(self) -> Differ:
        """The differ, once the previous entries have arrived (a failed read raises here)."""
        if self.differ is None:
            assert self._loading is not None
            self.differ = self._loading.result()
        return self.differ

    def open_payload(self, schema: pa.Schema) -> None:
        """DIFFERENCE: start the last-delivered-values stream of the new generation."""
        if self.mode != "difference" or self.preview:
            return
        assert self.generation is not None
        self.payload_file = self.store.open_payload(self.activation.id, self.generation)
        self.payload_schema = schema.append(pa.field(KEY_COLUMN, pa.binary(16)))
        self.payload = pa.ipc.new_stream(self.payload_file, self.payload_schema, options=PAYLOAD_OPTIONS)

    def ahead(self, batches: Iterable[pa.RecordBatch], value_columns: list[str]) -> Iterator[pa.RecordBatch]:
        """The source's batches, unchanged, while the next ones are fingerprinted in parallel
        (`fingerprint_ahead`); `classify` then takes each batch's fingerprints from here."""
        values = None if self.mode == "insert" else value_columns
        for batch, future in fingerprint_ahead(batches, self.model.primary_key, values):
            self._ahead.append((batch, future))
            yield batch

    def classify(self, batch: pa.RecordBatch, mapped: pa.RecordBatch, value_columns: list[str]) -> Routed:
        values = None if self.mode == "insert" else value_columns
        if self._ahead and self._ahead[0][0] is batch:
            fp = self._ahead.popleft()[1].result()
        else:
            fp = fingerprint_batch(batch, self.model.primary_key, values)
        if self.spilled is not None:  # routed at `replay`, except a full run's rows: all exported
            self.spilled.add(fp, batch, mapped)
            every, none = np.ones(len(fp), dtype=bool), np.zeros(len(fp), dtype=bool)
            return Routed(every, every, none) if self.spilled.full else Routed(none, none, none)
        delta = self._ready().classify(fp, batch)
        self._keep(mapped, delta.tracked, fp.key_array() if self.payload is not None else None)
        added = delta.export if delta.full else delta.added
        return Routed(delta.export, added, delta.updated & ~added)

    def _keep(self, mapped: pa.RecordBatch, tracked: np.ndarray, keys: pa.Array | None) -> None:
        """DIFFERENCE: the tracked rows' values into the new payload, with their key fingerprints
        (computed, or spilled, only when there is a payload)."""
        if self.payload is not None and tracked.any():
            assert keys is not None
            self.payload.write_batch(
                pa.RecordBatch.from_arrays(
                    [*mapped.filter(pa.array(tracked)).columns, keys.filter(pa.array(tracked))],
                    schema=self.payload_schema,
                )
            )

    def finish(self) -> DeltaSummary:
        self.summary = self.spilled.finish() if self.spilled is not None else self._ready().finish()
        return self.summary

    def replay(self) -> Iterator[tuple[pa.RecordBatch, Routed]]:
        """After `finish`, a run diffed on disk: its spilled rows in source order, routed (a full
        run's are already exported, so only its payload is written here). A run that changed
        nothing reads none back: it sends no row, and keeps the current generation, payload and all."""
        if self.spilled is None or self.unchanged:
            return
        full = self.spilled.full
        for rows in self.spilled.replay():
            self._keep(rows.mapped, rows.added | rows.updated | rows.unchanged, rows.keys)
            if not full:
                yield rows.mapped, Routed(rows.added | rows.updated, rows.added, rows.updated)

    def removed(self) -> Iterator[pa.RecordBatch]:
        """DIFFERENCE: the last delivered values of the rows gone from the source (the previous
        payload is read only when some are gone)."""
        snapshot, summary = self.snapshot, self.summary
        if snapshot is None or snapshot.info is None or summary is None or summary.full or not snapshot.info.payload:
            return
        if not summary.counts.get("removed"):
            return
        with self.store.read_payload(snapshot.info) as raw:
            yield from filter_removed(pa.ipc.open_stream(raw), summary, KEY_COLUMN, keep=self._keep_removed)

    def _keep_removed(self, batch: pa.RecordBatch) -> None:
        """A removed row's last delivered values stay in the new payload, beside its tombstone."""
        if self.payload is None or self.payload_schema is None:
            return
        if not batch.schema.equals(self.payload_schema):
            batch = pa.Table.from_batches([batch]).cast(self.payload_schema).combine_chunks().to_batches()[0]
        self.payload.write_batch(batch)

    def write_state(self) -> None:
        """Store the new generation (not current yet); nothing in a preview."""
        if self.preview:
            return
        assert self.summary is not None
        if self.payload is not None:
            self.payload.close()
            self.payload_file.close()
            self.payload = None
        try:
            self._write_state()
        finally:
            if self.spilled is not None:
                self.spilled.close()

    def _write_state(self) -> None:
        assert self.summary is not None
        if self.unchanged:  # the committed state already is the new one: commit it again, write nothing
            assert self.snapshot is not None
            self.info = self.snapshot.info
            return
        if self.generation is None:
            self.generation = self.store.begin(self.activation.id)
        self.info = self.store.write(
            self.activation.id,
            self.generation,
            self.summary.new_state(),
            meta={"signature": self.signature, "mode": self.mode},
            payload=self.mode == "difference",
        )

    @property
    def unchanged(self) -> bool:
        """Nothing to send and nothing removed against a committed state: the new state equals it
        (certain entries, no bit set), so the run keeps the current generation (DESIGN.md §5: a run
        with no change costs no state write)."""
        snapshot, summary = self.snapshot, self.summary
        if summary is None or summary.full or snapshot is None or snapshot.info is None or snapshot.pending:
            return False
        return not any(summary.counts.get(k, 0) for k in ("added", "updated", "removed"))

    def discard(self) -> None:
        if self.spilled is not None:
            self.spilled.close()
        if self.payload is not None:
            with contextlib.suppress(Exception):
                self.payload.close()
                self.payload_file.close()
            self.payload = None

    def stage(self) -> None:
        """Just before publishing: the new generation is in flight (or `StateConflict`: another run
        or a reset changed the state, and nothing may be published)."""
        if self.preview or self.info is None or self.unchanged:  # nothing sent: nothing in flight
            return
        assert self.snapshot is not None
        self.staged = self.store.stage(self.info, self.snapshot)

    def commit(self) -> None:
        """After every file is published: the new state becomes current (or `StateConflict`); an
        unchanged run commits the current generation again, so a racing commit is still detected
        and cleanup still runs."""
        if self.preview or self.info is None:
            return
        assert self.snapshot is not None
        self.store.commit(self.info, self.staged or self.snapshot)
        try:
            self.store.cleanup(self.activation.id)
        except Exception as exc:  # old generations are removed by a later run
            log.warning("could not remove old state generations of %s: %s", self.activation.id, exc)
