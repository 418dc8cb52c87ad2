"""Classify source rows against the last delivered state, batch by batch, on sorted arrays.

A `Differ` receives each batch's fingerprints (`core.delta.fingerprint`) and answers with masks: which
rows are added, updated, unchanged, duplicates, or have a NULL key, and which to export. At the
end, `finish()` gives the counts, the warnings, the removed keys and the new state to write.

Rules (DESIGN.md §2):

* No previous state (first run, or after a reset) is a **full run**: every row is exported.
* INSERT: a row is added when its key is not in the state, i.e. not in the previous run's rows (a
  key that was removed and comes back is new again); the state is the source's keys.
  UPSERT / DIFFERENCE: added = key not in the state, updated = key in the state with a different
  content fingerprint (any mapped column changed), removed = state keys not seen in the source.
* Against an **in-flight** state (`pending=True`: a run wrote it, then may or may not have
  delivered its files, see `core.state.base`), an entry with the `SENT` bit is uncertain: its row
  is sent again whatever its content (INSERT too), as added when it was sent as added or was a
  `GONE` tombstone (the partner may lack it), as updated otherwise; a tombstone not in the source
  is removed again.
  Certain entries classify as above. So every row on which the partner may differ from the
  source is sent, and the run converges (README, "How the state works").
* The new state has the source's keys with their current contents, the `SENT` bit on every row
  this run sends (and `ADDED` on those it sends as added), and (DIFFERENCE) a `GONE` tombstone per
  removed key: if the run's files may not have arrived, the next run knows what to send again.
* Duplicate keys: the **first occurrence in source order** is the row of record (classified,
  tracked in the state); later ones are flagged `duplicate`, never touch the state, and are not
  exported by delta runs (a full run exports every row as read).
* NULL keys (a NULL in any key column): never enter the state; exported by full runs only.
* Both are counted and reported as warnings with up to 5 example keys; with
  `on_duplicate_key="fail"` the first one raises `InvalidKeys` instead.

Memory: the previous state's arrays (24 bytes/row) are updated in place (`seen` flags, new
contents), keys added in this run go to sorted runs merged LSM-style, and the new state is
produced lazily in sorted chunks, so a run holds about 25 bytes per state row plus 24 per new key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from ..errors import InvalidKeys
from ..state.base import ADDED, CHUNK_ROWS, CONTENT_BITS, GONE, SENT, Entries, settle
from .fingerprint import Fingerprints, split_key_array

Mode = Literal["insert", "upsert", "difference"]
OnDuplicateKey = Literal["warn", "fail"]
MAX_EXAMPLES = 5
_MAX_RUN = 1 << 18  # rows; bounds the extra memory of an LSM merge (2 × 6 MB)
_FILTER_BITS = 26  # a 2**26-bit (8 MB) filter of added keys, once they pass _FILTER_FROM
_FILTER_FROM = 1 << 18


@dataclass(frozen=True)
class BatchDelta:
    """Disjoint masks over one batch's rows; `export` is what this run writes."""

    added: np.ndarray
    updated: np.ndarray
    unchanged: np.ndarray
    duplicate: np.ndarray
    null_key: np.ndarray
    full: bool

    @property
    def export(self) -> np.ndarray:
        if self.full:
            return np.ones(len(self.added), dtype=bool)
        return np.asarray(self.added | self.updated)

    @property
    def tracked(self) -> np.ndarray:
        """Rows whose fingerprints are in the new state (e.g. the rows of a last-values payload)."""
        return np.asarray(self.added | self.updated | self.unchanged)


@dataclass
class KeyWarning:
    """Duplicate or NULL primary keys met in the run, for the run record's warnings."""

    code: str  # "duplicate_key" | "null_key"
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    def describe(self, key_columns: Sequence[str], full: bool) -> str:
        shown = ", ".join(_render(e) for e in self.examples) or "no example recorded"
        columns = ", ".join(key_columns) or "the primary key"
        if self.code == "duplicate_key":
            fate = "exported as read by this full run" if full else "not exported"
            return (
                f"{self.count} rows repeat a primary key ({columns}) seen earlier in the run, e.g. {shown}; "
                f"the first occurrence is tracked, later ones are {fate}; make the key unique or set "
                "`on_duplicate_key: fail`"
            )
        fate = "exported by this full run" if full else "not exported by delta runs"
        return (
            f"{self.count} rows have a NULL in the primary key ({columns}), e.g. {shown}; they are {fate} "
            "and never tracked in the state"
        )


class Outcome(Protocol):
    """What a finished classification (`Differ`, `core.delta.spilled.SpilledDiffer`) answers."""

    def new_state(self) -> Iterator[Entries]: ...
    def removed_mask(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray: ...
    def removed_keys(self) -> Entries: ...


@dataclass
class DeltaSummary:
    """The outcome of a run's classification; `new_state()` may be consumed once."""

    mode: Mode
    full: bool
    counts: dict[str, int]
    warnings: list[KeyWarning]
    new_rows: int
    _outcome: Outcome

    def new_state(self) -> Iterator[Entries]:
        """The new state as sorted, consecutive chunks, for `StateStore.write`."""
        return self._outcome.new_state()

    def removed_mask(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Which of these key fingerprints were removed from the source (for `_removed` files)."""
        return self._outcome.removed_mask(hi, lo)

    def removed_keys(self) -> Entries:
        """The removed entries (key, last delivered content), sorted; call before `new_state`."""
        return self._outcome.removed_keys()


def filter_removed(
    batches: Iterable[pa.RecordBatch],
    summary: DeltaSummary,
    key_column: str = "__filecast_key",
    keep: Callable[[pa.RecordBatch], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """From last-values payload batches (with a `fixed_size_binary(16)` key column, see
    `Fingerprints.key_array`), keep the removed rows, without the key column; `keep` also gets
    them with it (the new payload keeps its tombstones' last delivered values)."""
    for batch in batches:
        hi, lo = split_key_array(batch.column(key_column))
        mask = summary.removed_mask(hi, lo)
        if mask.any():
            kept = batch.filter(pa.array(mask))
            if keep is not None:
                keep(kept)
            yield kept.drop_columns([key_column])


class Differ:
    """Streams one run's classification; `previous=None` means there is no state (a full run).

    `pending`: `previous` is an in-flight generation (its `SENT` bits and tombstones count);
    else a committed one (`settle`d). The previous entries' arrays are owned and modified in place.
    """

    def __init__(
        self,
        previous: Entries | None,
        mode: Mode,
        *,
        pending: bool = False,
        key_columns: Sequence[str] = (),
        on_duplicate_key: OnDuplicateKey = "warn",
    ):
        if mode not in ("insert", "upsert", "difference"):
            raise ValueError(f"unknown delta mode `{mode}`; modes are: insert, upsert, difference")
        self.mode: Mode = mode
        self.full = previous is None
        prev = previous if previous is not None else Entries.empty()
        self.uncertain: np.ndarray | None = None  # in flight: sent, delivery unknown (tombstones too)
        self.fresh: np.ndarray | None = None  # in flight: sent as added or removed; the partner may lack it
        if pending:
            uncertain = (prev.content & SENT) != 0
            fresh = uncertain & ((prev.content & ADDED) != 0)
            self.uncertain = uncertain if uncertain.any() else None
            self.fresh = fresh if fresh.any() else None
            np.bitwise_and(prev.content, CONTENT_BITS, out=prev.content)
        else:
            prev = settle(prev)
        self.prev = prev
        self.seen = np.zeros(len(self.prev), dtype=bool)
        self.runs: list[Entries] = []  # keys added in this run: sorted runs, merged LSM-style
        self.added = 0
        self.filter: np.ndarray | None = None
        self.key_columns = list(key_columns)
        self.fail = on_duplicate_key == "fail"
        self.counts = dict.fromkeys(("read", "added", "updated", "unchanged", "duplicate", "null_key", "exported"), 0)
        self.problems = {code: KeyWarning(code) for code in ("duplicate_key", "null_key")}

    def classify(self, fp: Fingerprints, batch: pa.RecordBatch | pa.Table | None = None) -> BatchDelta:
        """Masks for one batch; `batch` (with the key columns) only serves warning examples."""
        n = len(fp)
        masks = {name: np.zeros(n, dtype=bool) for name in ("added", "updated", "unchanged", "duplicate")}
        null_key = fp.null_key.copy()
        rows = np.flatnonzero(~null_key)
        hi, lo, content = fp.key_hi[rows], fp.key_lo[rows], _content(fp.content[rows])
        order = _order(hi, lo)
        rows, hi, lo, content = rows[order], hi[order], lo[order], content[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])  # a stable sort keeps source order in ties
        masks["duplicate"][rows[~first]] = True
        rows, hi, lo, content = rows[first], hi[first], lo[first], content[first]

        where = _find(self.prev, hi, lo)
        matched = where >= 0
        at = where[matched]
        repeat = self.seen[at]
        masks["duplicate"][rows[matched][repeat]] = True
        at, m_rows, m_content = at[~repeat], rows[matched][~repeat], content[matched][~repeat]
        self.seen[at] = True
        again = self.uncertain[at] if self.uncertain is not None else np.zeros(len(at), dtype=bool)
        back = self.fresh[at] if self.fresh is not None else np.zeros(len(at), dtype=bool)
        if self.mode == "insert":
            masks["added"][m_rows[again]] = True
            sent = back = again
        else:
            sent = (self.prev.content[at] != m_content) | again
            masks["added"][m_rows[back]] = True
            masks["updated"][m_rows[sent & ~back]] = True
        self.prev.content[at[sent]] = m_content[sent] | SENT | np.where(back[sent], ADDED, np.uint64(0))
        masks["unchanged"][m_rows[~sent]] = True

        fresh = ~matched
        known = self._in_runs(hi[fresh], lo[fresh])
        masks["duplicate"][rows[fresh][known]] = True
        new = np.flatnonzero(fresh)[~known]
        masks["added"][rows[new]] = True
        if len(new):
            self._add_run(Entries(hi[new], lo[new], content[new] | SENT | ADDED))

        delta = BatchDelta(
            masks["added"], masks["updated"], masks["unchanged"], masks["duplicate"], null_key, self.full
        )
        self._account(delta, batch)
        return delta

    def finish(self) -> DeltaSummary:
        """Counts, warnings and the new state; call after the last batch, before publishing."""
        counts = dict(self.counts)
        seen = int(self.seen.sum())
        counts["removed"] = len(self.prev) - seen
        kept = len(self.prev) if self.mode == "difference" else seen  # DIFFERENCE keeps tombstones
        warnings = [
            KeyWarning(w.code, w.count, list(w.examples), w.describe(self.key_columns, self.full))
            for w in self.problems.values()
            if w.count
        ]
        added = sum(len(r) for r in self.runs)
        return DeltaSummary(self.mode, self.full, counts, warnings, kept + added, self)

    # --- internals ---

    def _account(self, delta: BatchDelta, batch: pa.RecordBatch | pa.Table | None) -> None:
        c = self.counts
        c["read"] += len(delta.added)
        for name in ("added", "updated", "unchanged", "duplicate", "null_key"):
            c[name] += int(getattr(delta, name).sum())
        c["exported"] += int(delta.export.sum())
        for code, mask in (("duplicate_key", delta.duplicate), ("null_key", delta.null_key)):
            problem = self.problems[code]
            hits = np.flatnonzero(mask)
            if not len(hits):
                continue
            problem.count += len(hits)
            room = MAX_EXAMPLES - len(problem.examples)
            if room > 0 and batch is not None and self.key_columns:
                picked = batch.select(self.key_columns).take(pa.array(hits[:room]))
                problem.examples += picked.to_pylist()
            if self.fail:
                what = "a duplicate primary key" if code == "duplicate_key" else "a NULL in the primary key"
                raise key_error(what, self.key_columns, problem.examples)

    def _in_runs(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Which keys were already added in this run. A bitmap over the keys' top bits answers
        "certainly not" for most keys, so only the rest are searched in the (many) sorted runs."""
        found = np.zeros(len(hi), dtype=bool)
        if not self.runs or not len(hi):
            return found
        maybe = np.arange(len(hi))
        if self.filter is not None:
            slots = hi >> np.uint64(64 - _FILTER_BITS)
            bits = self.filter[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)
            maybe = np.flatnonzero(bits & 1)
        for run in self.runs:
            found[maybe] |= _find(run, hi[maybe], lo[maybe]) >= 0
        return found

    def _add_run(self, entries: Entries) -> None:
        self.runs.append(entries)
        self.added += len(entries)
        if self.filter is None and self.added >= _FILTER_FROM:
            self.filter = np.zeros(1 << (_FILTER_BITS - 3), dtype=np.uint8)
            for run in self.runs:
                self._mark(run.hi)
        elif self.filter is not None:
            self._mark(entries.hi)
        while (
            len(self.runs) > 1
            and len(self.runs[-2]) <= 2 * len(self.runs[-1])
            and len(self.runs[-2]) + len(self.runs[-1]) <= _MAX_RUN
        ):
            right, left = self.runs.pop(), self.runs.pop()
            self.runs.append(_sorted(Entries.concat([left, right])))

    def _mark(self, hi: np.ndarray) -> None:
        assert self.filter is not None
        slots = hi >> np.uint64(64 - _FILTER_BITS)
        bits = np.left_shift(1, (slots & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
        np.bitwise_or.at(self.filter, slots >> np.uint64(3), bits)

    def new_state(self) -> Iterator[Entries]:
        """The new state, lazily, in sorted chunks (after `finish`)."""
        prev, keep_all = self.prev, self.mode == "difference"
        if keep_all:
            prev.content[~self.seen] = GONE  # removals sent: tombstones until the run is committed
        total = (len(prev) if keep_all else int(self.seen.sum())) + sum(len(r) for r in self.runs)
        parts = max(1, -(-total // CHUNK_ROWS))
        bounds = [np.uint64(min((1 << 64) * j // parts, (1 << 64) - 1)) for j in range(parts)]
        for j in range(parts):
            pieces = []
            for source, mask in [(prev, None if keep_all else self.seen), *((r, None) for r in self.runs)]:
                start = int(np.searchsorted(source.hi, bounds[j], "left")) if j else 0
                stop = int(np.searchsorted(source.hi, bounds[j + 1], "left")) if j + 1 < parts else len(source)
                piece = source.slice(start, stop)
                if mask is not None:
                    m = mask[start:stop]
                    piece = Entries(piece.hi[m], piece.lo[m], piece.content[m])
                pieces.append(piece)
            chunk = _sorted(Entries.concat(pieces))
            if len(chunk):
                yield chunk

    def removed_keys(self) -> Entries:
        keep = ~self.seen
        return Entries(self.prev.hi[keep], self.prev.lo[keep], self.prev.content[keep])

    def removed_mask(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        where = _find(self.prev, hi, lo)
        found = where >= 0
        removed = np.zeros(len(hi), dtype=bool)
        removed[found] = ~self.seen[where[found]]
        return removed


def _content(content: np.ndarray) -> np.ndarray:
    """Source content fingerprints as stored: 63 bits (the 64th is `SENT`), never all ones (`GONE`)."""
    content = content & CONTENT_BITS
    content[content == CONTENT_BITS] -= np.uint64(1)
    return content


def _order(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """A stable sort order by (hi, lo); sorting on hi alone suffices unless two keys share hi."""
    order = np.argsort(hi, kind="stable")
    sorted_hi = hi[order]
    if len(hi) > 1 and np.any(sorted_hi[1:] == sorted_hi[:-1]):
        order = np.lexsort((lo, hi))  # lexsort is stable too
    return order


def _sorted(entries: Entries) -> Entries:
    order = _order(entries.hi, entries.lo)
    return Entries(entries.hi[order], entries.lo[order], entries.content[order])


def _find(table: Entries, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Index of each (hi, lo) in the sorted `table`, or -1."""
    out = np.full(len(hi), -1, dtype=np.int64)
    if not len(table) or not len(hi):
        return out
    pos = np.searchsorted(table.hi, hi, "left")
    at = np.minimum(pos, len(table) - 1)
    same_hi = table.hi[at] == hi
    hit = same_hi & (table.lo[at] == lo)
    out[hit] = at[hit]
    # Two different keys sharing their first 64 bits (about 1 in 10^7 at 10 M rows): look further.
    for i in np.flatnonzero(same_hi & ~hit):
        stop = int(np.searchsorted(table.hi, hi[i], "right"))
        j = int(pos[i]) + int(np.searchsorted(table.lo[pos[i] : stop], lo[i], "left"))
        if j < stop and table.lo[j] == lo[i]:
            out[i] = j
    return out


def key_error(what: str, key_columns: Sequence[str], examples: list[dict[str, Any]]) -> InvalidKeys:
    """`on_duplicate_key: fail` met `what` (a duplicate key, a NULL in it)."""
    shown = ", ".join(_render(e) for e in examples) or "no example recorded"
    return InvalidKeys(
        f"the source has {what} ({', '.join(key_columns) or 'key'}), e.g. {shown}; the run "
        "stops because `on_duplicate_key` is `fail`: fix the model's primary key or set "
        "`on_duplicate_key: warn`"
    )


def _render(example: dict[str, Any]) -> str:
    return "`" + ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in example.items()) + "`"
