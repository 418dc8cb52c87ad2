"""Delta classification in bounded memory: fingerprints sorted on disk, merged with the state by key range.

An in-memory `Differ` holds the previous state (24 bytes a row) and every key the run adds, so its
memory grows with the table (about 250 MB more at 10 M rows). A `SpilledDiffer` holds neither:

1. While the source streams (`add`), each batch's fingerprints go to sorted runs in a temporary
   file (32 bytes a row: key, content, position in the source), and the batch's rows to a
   temporary Arrow IPC stream (LZ4): the mapped columns when they can only be routed once every
   key is known, and always the key columns (for duplicate-key examples). The previous generation
   streams from the store into a temporary file meanwhile (`StateStore.iter_entries`).
2. `finish()` classifies key range by key range (keys are MD5 digests, so the 4,096 ranges of
   their top 12 bits are even): the runs' slices and the state's slice of a few ranges go to an
   ordinary `Differ`. That gives what one `Differ` over everything gives, because every rule
   applies key by key and a stable sort keeps source order among a key's repeats. Each row's
   outcome is one byte (`codes`); the new state goes to a temporary file, sorted.
3. `replay()` reads the spilled rows back in source order with their outcome.

A full run (no state to compare with) routes every row as it streams, as all are exported; only
DIFFERENCE replays its rows, for its last-values payload. Memory: a run buffer (4 MB, twice that
while it is sorted), one merge step (a few MB) and one byte per source row. Disk: 32 bytes per
source row, 24 per state row, and the compressed rows. Temporary files are unlinked from the start,
so nothing outlives the process.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from ..error_codes import ErrorCode
from ..errors import SettingError, StateError
from ..read.spill import temp_directory
from ..state.base import CHUNK_ROWS, Entries
from .diff import MAX_EXAMPLES, DeltaSummary, Differ, KeyWarning, Mode, OnDuplicateKey, _find, _order, key_error
from .fingerprint import Fingerprints

SPILL_FROM_ROWS = 2_000_000  # a previous state larger than this (48 MB in memory) is diffed on disk
SPILL_SETTING = "FILECAST_DELTA_MEMORY_ROWS"
RUN_ROWS = 1 << 17  # rows per sorted run (4 MB buffered)
MERGE_ROWS = 1 << 16  # rows (source + state) per merge step, at least one key range
RANGE_BITS = 12
RANGES = 1 << RANGE_BITS

ADDED, UPDATED, UNCHANGED, DUPLICATE = 1, 2, 3, 4  # `codes`; 0: a NULL key, never tracked
RUN = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("content", "<u8"), ("seq", "<i8")])
ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("content", "<u8")])
_SHIFT = np.uint64(64 - RANGE_BITS)


def spill_from(raw: str | None) -> int:
    """The app setting `FILECAST_DELTA_MEMORY_ROWS`: the largest previous state diffed in memory."""
    if raw is None:
        return SPILL_FROM_ROWS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise SettingError(
            f"app setting `{SPILL_SETTING}` must be a whole number of state entries (0 or more; "
            f"{SPILL_FROM_ROWS:,} by default), not `{raw}`",
            code=ErrorCode.INVALID_SETTING,
        )
    return value


@contextlib.contextmanager
def _local_disk() -> Iterator[None]:
    """A failing temporary file (no space, no folder) as a clear, terminal error."""
    try:
        yield
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise StateError(
            f"the delta state is diffed on disk (it has more than `{SPILL_SETTING}` entries) and the "
            f"temporary folder `{tempfile.gettempdir()}` failed: {exc.strerror or exc}; "
            + (
                "free space there (a run needs about 60 bytes per row plus the rows compressed), or "
                if full
                else "make it writable (the `TMPDIR` environment variable moves it), or "
            )
            + f"raise `{SPILL_SETTING}` to diff in memory",
            code=ErrorCode.DISK_FULL if full else ErrorCode.STATE_ERROR,
        ) from None


class _Records:
    """Fixed-width records appended to an unlinked temporary file and read back by position."""

    def __init__(self, dtype: np.dtype[Any]):
        self.dtype = dtype
        self.file: BinaryIO = tempfile.TemporaryFile(dir=temp_directory(), buffering=0)  # noqa: SIM115
        self.rows = 0

    def append(self, records: np.ndarray) -> None:
        view = np.ascontiguousarray(records, self.dtype).data.cast("B")
        while view:
            view = view[self.file.write(view) or 0 :]
        self.rows += len(records)

    def read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.zeros(0, self.dtype)
        size = self.dtype.itemsize
        data = os.pread(self.file.fileno(), (stop - start) * size, start * size)
        return np.frombuffer(data, self.dtype)

    def close(self) -> None:
        self.file.close()


def _records(entries: Entries) -> np.ndarray:
    """Entries as `ENTRY` records, for a temporary file."""
    records = np.empty(len(entries), ENTRY)
    records["hi"], records["lo"], records["content"] = entries.hi, entries.lo, entries.content
    return records


def _entries(records: np.ndarray) -> Entries:
    """Records read back (read-only buffers) as owned, writable entries."""
    return Entries(records["hi"].copy(), records["lo"].copy(), records["content"].copy())


def _range_offsets(hi: np.ndarray) -> np.ndarray:
    """For sorted key fingerprints: where each of the `RANGES` key ranges starts (and the end)."""
    return np.searchsorted(hi >> _SHIFT, np.arange(RANGES + 1, dtype=np.uint64), "left").astype(np.int64)


@dataclass(frozen=True)
class Replayed:
    """One spilled batch, in source order, with its rows' outcomes."""

    mapped: pa.RecordBatch
    added: np.ndarray
    updated: np.ndarray
    unchanged: np.ndarray
    keys: pa.Array | None  # the key fingerprints (`Fingerprints.key_array`), when asked for


class SpilledDiffer:
    """One run's classification on disk; `previous` streams the state (None: a full run).

    `values`: spill the mapped rows (a delta run routes them at `replay`; DIFFERENCE needs them for
    its payload even on a full run); `keys`: spill the key fingerprints too (DIFFERENCE's payload).
    """

    def __init__(
        self,
        previous: Callable[[], Iterable[Entries]] | None,
        mode: Mode,
        *,
        pending: bool = False,
        key_columns: Sequence[str] = (),
        on_duplicate_key: OnDuplicateKey = "warn",
        values: bool = False,
        keys: bool = False,
    ):
        self.mode = mode
        self.full = previous is None
        self.pending = pending
        self.key_columns = list(key_columns)
        self.fail = on_duplicate_key == "fail"
        self.values, self.keys = values or not self.full, keys
        self.rows = 0
        self.run_offsets: list[tuple[int, np.ndarray]] = []  # per run: its first record, its ranges
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.writer: pa.RecordBatchStreamWriter | None = None
        self.mapped_schema: pa.Schema | None = None
        self.null_rows = 0
        self.null_examples: list[dict[str, Any]] = []
        self.codes: np.ndarray | None = None
        self.state_offsets: np.ndarray | None = None
        self.state_error: BaseException | None = None
        self.new_state_file: _Records | None = None
        self.removed = Entries.empty()  # sorted, set by `finish`
        with _local_disk():
            self.runs = _Records(RUN)
            self.spill = tempfile.TemporaryFile(dir=temp_directory())  # noqa: SIM115
            self.state = _Records(ENTRY) if previous is not None else None
        self.loader: threading.Thread | None = None
        if previous is not None:
            self.loader = threading.Thread(target=self._load, args=(previous,), name="state-spill", daemon=True)
            self.loader.start()

    # --- 1. while the source streams ---

    def _load(self, previous: Callable[[], Iterable[Entries]]) -> None:
        """Loader thread: the previous state into a temporary file, with its range counts."""
        assert self.state is not None
        counts = np.zeros(RANGES, np.int64)
        try:
            for chunk in previous():
                self.state.append(_records(chunk))
                counts += np.bincount((chunk.hi >> _SHIFT).astype(np.int64), minlength=RANGES)
        except BaseException as exc:  # raised by `finish`
            self.state_error = exc
            return
        self.state_offsets = np.concatenate([[0], np.cumsum(counts)])

    def add(self, fp: Fingerprints, batch: pa.RecordBatch, mapped: pa.RecordBatch) -> None:
        """One source batch: its fingerprints to the current run, its rows to the spill."""
        with _local_disk():
            self._add(fp, batch, mapped)

    def _add(self, fp: Fingerprints, batch: pa.RecordBatch, mapped: pa.RecordBatch) -> None:
        start, n = self.rows, len(fp)
        self.rows += n
        keep = np.flatnonzero(~fp.null_key)
        if len(keep) < n:
            self._null_keys(batch, np.flatnonzero(fp.null_key))
        records = np.empty(len(keep), RUN)
        records["hi"], records["lo"], records["content"] = fp.key_hi[keep], fp.key_lo[keep], fp.content[keep]
        records["seq"] = keep + start
        self.buffer.append(records)
        self.buffered += len(records)
        if self.buffered >= RUN_ROWS:
            self._flush_run()
        columns = [batch.column(name) for name in self.key_columns]
        names = [f"k{i}" for i in range(len(columns))]
        if self.values:
            self.mapped_schema = mapped.schema
            columns += mapped.columns
            names += [f"c{i}" for i in range(mapped.num_columns)]
        if self.keys:
            columns.append(fp.key_array())
            names.append("key")
        spilled = pa.RecordBatch.from_arrays(columns, names=names)
        if self.writer is None:
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self.writer = pa.ipc.new_stream(self.spill, spilled.schema, options=options)
        self.writer.write_batch(spilled)

    def _null_keys(self, batch: pa.RecordBatch, rows: np.ndarray) -> None:
        self.null_rows += len(rows)
        room = MAX_EXAMPLES - len(self.null_examples)
        if room > 0 and self.key_columns:
            self.null_examples += batch.select(self.key_columns).take(pa.array(rows[:room])).to_pylist()
        if self.fail:
            raise key_error("a NULL in the primary key", self.key_columns, self.null_examples)

    def _flush_run(self) -> None:
        if not self.buffer:
            return
        records = np.concatenate(self.buffer)
        self.buffer, self.buffered = [], 0
        records = records[_order(records["hi"], records["lo"])]  # stable: source order among repeats
        self.run_offsets.append((self.runs.rows, _range_offsets(records["hi"])))
        self.runs.append(records)

    # --- 2. once the source is read ---

    def finish(self) -> DeltaSummary:
        with _local_disk():
            return self._finish()

    def _finish(self) -> DeltaSummary:
        self._flush_run()
        if self.writer is not None:
            self.writer.close()
            self.spill.flush()
        if self.loader is not None:
            self.loader.join()
            if self.state_error is not None:
                raise self.state_error
        state_offsets = self.state_offsets if self.state_offsets is not None else np.zeros(RANGES + 1, np.int64)
        self.codes = np.zeros(self.rows, np.uint8) if self.values else None
        self.new_state_file = _Records(ENTRY)
        counts = dict.fromkeys(("read", "added", "updated", "unchanged", "duplicate"), 0)
        counts["removed"] = 0
        duplicates: list[int] = []  # the first few duplicates' positions, for examples
        removed: list[Entries] = []
        for first, stop in self._steps(state_offsets):
            parts = [self.runs.read(at + int(off[first]), at + int(off[stop])) for at, off in self.run_offsets]
            src = np.concatenate(parts) if parts else np.zeros(0, RUN)
            prev = None
            if self.state is not None:
                prev = _entries(self.state.read(int(state_offsets[first]), int(state_offsets[stop])))
            differ = Differ(prev, self.mode, pending=self.pending, key_columns=self.key_columns)
            fp = Fingerprints(src["hi"].copy(), src["lo"].copy(), src["content"].copy(), np.zeros(len(src), bool))
            delta = differ.classify(fp)
            seq = src["seq"]
            if self.codes is not None:
                for code, mask in ((ADDED, delta.added), (UPDATED, delta.updated), (UNCHANGED, delta.unchanged)):
                    self.codes[seq[mask]] = code
                self.codes[seq[delta.duplicate]] = DUPLICATE
            repeats = np.sort(seq[delta.duplicate])[:MAX_EXAMPLES].tolist()
            duplicates = heapq.nsmallest(MAX_EXAMPLES, [*duplicates, *repeats])
            summary = differ.finish()
            for name in counts:
                counts[name] += summary.counts[name]
            if not self.full:
                removed.append(summary.removed_keys())  # before `new_state` marks tombstones
            for chunk in summary.new_state():
                self.new_state_file.append(_records(chunk))
        self.removed = Entries.concat(removed)
        self.runs.close()
        counts["read"] += self.null_rows
        counts["null_key"] = self.null_rows
        counts["exported"] = self.rows if self.full else counts["added"] + counts["updated"]
        warnings = self._warnings(counts, duplicates)
        assert self.new_state_file is not None
        return DeltaSummary(self.mode, self.full, counts, warnings, self.new_state_file.rows, self)

    def _steps(self, state_offsets: np.ndarray) -> Iterator[tuple[int, int]]:
        """Consecutive groups of key ranges holding about `MERGE_ROWS` rows (source and state)."""
        sizes = np.diff(state_offsets).astype(np.int64)
        for _, off in self.run_offsets:
            sizes += np.diff(off)
        first, total = 0, 0
        for i, size in enumerate(sizes.tolist()):
            total += size
            if total >= MERGE_ROWS or i == RANGES - 1:
                yield first, i + 1
                first, total = i + 1, 0

    def _warnings(self, counts: dict[str, int], duplicates: list[int]) -> list[KeyWarning]:
        out = []
        if counts["duplicate"]:
            examples = self._examples(duplicates)
            if self.fail:
                raise key_error("a duplicate primary key", self.key_columns, examples)
            out.append(KeyWarning("duplicate_key", counts["duplicate"], examples))
        if self.null_rows:
            out.append(KeyWarning("null_key", self.null_rows, list(self.null_examples)))
        for warning in out:
            warning.message = warning.describe(self.key_columns, self.full)
        return out

    def _examples(self, positions: list[int]) -> list[dict[str, Any]]:
        """The key values of the spilled rows at these source positions, in source order."""
        if not positions or not self.key_columns or self.writer is None:
            return []
        wanted, found, start = np.array(sorted(positions)), [], 0
        self.spill.seek(0)
        for batch in pa.ipc.open_stream(self.spill):
            hits = wanted[(wanted >= start) & (wanted < start + batch.num_rows)] - start
            if len(hits):
                keys = batch.select([f"k{i}" for i in range(len(self.key_columns))]).take(pa.array(hits))
                found += keys.rename_columns(self.key_columns).to_pylist()
            start += batch.num_rows
            if start > wanted[-1]:
                break
        return found

    # --- what `DeltaSummary` asks of its differ ---

    def new_state(self) -> Iterator[Entries]:
        assert self.new_state_file is not None
        with _local_disk():
            yield from self._new_state(self.new_state_file)

    def _new_state(self, file: _Records) -> Iterator[Entries]:
        for start in range(0, file.rows, CHUNK_ROWS):
            yield _entries(file.read(start, min(start + CHUNK_ROWS, file.rows)))

    def removed_mask(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return np.asarray(_find(self.removed, hi, lo) >= 0)

    def removed_keys(self) -> Entries:
        return self.removed

    # --- 3. the spilled rows, routed ---

    def replay(self) -> Iterator[Replayed]:
        """The spilled batches in source order with their outcomes (after `finish`)."""
        if not self.values or self.writer is None:
            return
        with _local_disk():
            yield from self._replay()

    def _replay(self) -> Iterator[Replayed]:
        assert self.codes is not None and self.mapped_schema is not None
        offset, k, m = 0, len(self.key_columns), len(self.mapped_schema)
        self.spill.seek(0)
        for batch in pa.ipc.open_stream(self.spill):
            codes = self.codes[offset : offset + batch.num_rows]
            offset += batch.num_rows
            mapped = pa.RecordBatch.from_arrays(batch.columns[k : k + m], schema=self.mapped_schema)
            keys = batch.column(k + m) if self.keys else None
            yield Replayed(mapped, codes == ADDED, codes == UPDATED, codes == UNCHANGED, keys)

    def close(self) -> None:
        """Remove the temporary files (also done at garbage collection and exit: they are unlinked)."""
        for records in (self.runs, self.state, self.new_state_file):
            if records is not None:
                records.close()
        self.spill.close()
