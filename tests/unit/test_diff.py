"""Delta classification: hand-made cases, and a property test against a plain-dict oracle."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.delta.diff import Differ, Mode, filter_removed
from core.delta.fingerprint import Fingerprints, fingerprint_batch
from core.errors import InvalidKeys
from core.state.base import ADDED, CONTENT_BITS, GONE, SENT, Entries, settle
from core.state.memory import MemoryStateStore
from tests.helpers import examples

KEY = "__filecast_key"


def fps(keys: list[int | None], contents: list[int] | None = None, lo: list[int] | None = None) -> Fingerprints:
    """Hand-made fingerprints: key k -> (hi=k, lo=k or given), None -> NULL key."""
    hi = np.array([k if k is not None else 0 for k in keys], np.uint64)
    low = np.array(lo if lo is not None else [k if k is not None else 0 for k in keys], np.uint64)
    content = np.array(contents if contents is not None else [0] * len(keys), np.uint64)
    return Fingerprints(hi, low, content, np.array([k is None for k in keys]))


def state(pairs: dict[int, int]) -> Entries:
    keys = sorted(pairs)
    return Entries(np.array(keys, np.uint64), np.array(keys, np.uint64), np.array([pairs[k] for k in keys], np.uint64))


def as_dict(entries: Iterable[Entries]) -> dict[int, int]:
    """A new state as it reads once committed (`settle`: no tombstones, no `SENT` bits)."""
    merged = Entries.concat(entries)
    assert merged.is_sorted_unique()
    merged = settle(merged)
    return {int(h): int(c) for h, c in zip(merged.hi, merged.content, strict=True)}


def rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_full_run_exports_everything_and_tracks_first_occurrences() -> None:
    differ = Differ(None, "upsert", key_columns=["id"])
    delta = differ.classify(fps([1, 2, None, 1], [10, 20, 30, 11]), pa.table({"id": [1, 2, None, 1]}))
    assert delta.full and rows(delta.export) == [0, 1, 2, 3]
    assert rows(delta.added) == [0, 1] and rows(delta.duplicate) == [3] and rows(delta.null_key) == [2]
    summary = differ.finish()
    assert as_dict(summary.new_state()) == {1: 10, 2: 20}
    assert summary.counts == {
        "read": 4,
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "duplicate": 1,
        "null_key": 1,
        "exported": 4,
        "removed": 0,
    }
    assert [w.code for w in summary.warnings] == ["duplicate_key", "null_key"]
    assert summary.warnings[0].examples == [{"id": 1}]
    assert "1 rows repeat a primary key (id) seen earlier in the run, e.g. `id=1`" in summary.warnings[0].message


def test_upsert_and_difference_classify_against_the_state() -> None:
    for mode in ("upsert", "difference"):
        differ = Differ(state({1: 10, 2: 20, 3: 30}), mode)
        first = differ.classify(fps([2, 4], [21, 40]))
        second = differ.classify(fps([1], [10]))
        assert rows(first.updated) == [0] and rows(first.added) == [1] and rows(second.unchanged) == [0]
        assert rows(first.export) == [0, 1] and rows(second.export) == []
        summary = differ.finish()
        assert summary.counts["removed"] == 1 and summary.counts["exported"] == 2
        assert as_dict([summary.removed_keys()]) == {3: 30}
        assert as_dict(summary.new_state()) == {1: 10, 2: 21, 4: 40}
        assert summary.removed_mask(np.array([3, 1, 9], np.uint64), np.array([3, 1, 9], np.uint64)).tolist() == [
            True,
            False,
            False,
        ]


def test_insert_compares_with_the_previous_runs_keys_and_ignores_content() -> None:
    differ = Differ(state({1: 10, 2: 20}), "insert")
    delta = differ.classify(fps([1, 3], [99, 30]))
    assert rows(delta.unchanged) == [0] and rows(delta.added) == [1] and rows(delta.export) == [1]
    summary = differ.finish()
    assert summary.counts["removed"] == 1 and as_dict([summary.removed_keys()]) == {2: 20}
    assert as_dict(summary.new_state()) == {1: 10, 3: 30}  # bounded by the source; 1 keeps its content
    # Key 2 comes back: it is not in the previous run's keys, so it is sent again.
    again = Differ(state({1: 10, 3: 30}), "insert")
    assert rows(again.classify(fps([1, 2, 3], [10, 20, 30])).export) == [1]


def test_new_state_marks_what_the_run_sends_and_tombstones_removals() -> None:
    differ = Differ(state({1: 10, 2: 20, 3: 30}), "difference")
    differ.classify(fps([1, 2, 4], [10, 21, 40]))
    merged = Entries.concat(differ.finish().new_state())
    assert merged.hi.tolist() == [1, 2, 3, 4]
    assert merged.content.tolist() == [10, 21 | int(SENT), int(GONE), 40 | int(SENT | ADDED)]


@pytest.mark.parametrize("mode", ["upsert", "difference"])
def test_an_in_flight_state_resends_every_uncertain_row(mode: Mode) -> None:
    # In flight: 1 certain, 2 sent (maybe not delivered), 3 a sent removal, 4 sent.
    prev = Entries(
        np.array([1, 2, 3, 4], np.uint64),
        np.array([1, 2, 3, 4], np.uint64),
        np.array([10, 20 | int(SENT), int(GONE), 40 | int(SENT)], np.uint64),
    )
    differ = Differ(
        prev if mode == "difference" else Entries(prev.hi[[0, 1, 3]], prev.lo[[0, 1, 3]], prev.content[[0, 1, 3]]),
        mode,
        pending=True,
    )
    delta = differ.classify(fps([1, 2, 3], [10, 20, 30]))  # 2 unchanged, 3 back, 4 gone
    assert rows(delta.unchanged) == [0] and rows(delta.export) == [1, 2]
    if mode == "difference":
        assert rows(delta.updated) == [1] and rows(delta.added) == [2]
    summary = differ.finish()
    assert summary.counts["removed"] == 1
    assert summary.removed_mask(np.array([4, 3], np.uint64), np.array([4, 3], np.uint64)).tolist() == [True, False]
    assert as_dict(summary.new_state()) == {1: 10, 2: 20, 3: 30}


def test_insert_against_an_in_flight_state_resends_uncertain_keys() -> None:
    prev = Entries(
        np.array([1, 2], np.uint64), np.array([1, 2], np.uint64), np.array([0, int(SENT | ADDED)], np.uint64)
    )
    delta = Differ(prev, "insert", pending=True).classify(fps([1, 2, 3]))
    assert rows(delta.added) == [1, 2] and rows(delta.unchanged) == [0]


def test_contents_never_collide_with_the_flags() -> None:
    differ = Differ(None, "upsert")
    differ.classify(fps([1, 2], [int(GONE), int(SENT) | 5]))
    merged = Entries.concat(differ.finish().new_state())
    assert merged.content.tolist() == [int(CONTENT_BITS - np.uint64(1) | SENT | ADDED), 5 | int(SENT | ADDED)]


def test_duplicates_across_batches_and_against_the_state() -> None:
    differ = Differ(state({1: 10}), "upsert", key_columns=["id"])
    a = differ.classify(fps([1, 5, 5], [11, 50, 51]), pa.table({"id": [1, 5, 5]}))
    b = differ.classify(fps([5, 1, 6], [52, 12, 60]), pa.table({"id": [5, 1, 6]}))
    assert rows(a.updated) == [0] and rows(a.added) == [1] and rows(a.duplicate) == [2]
    assert rows(b.duplicate) == [0, 1] and rows(b.added) == [2] and rows(b.export) == [2]
    summary = differ.finish()
    assert as_dict(summary.new_state()) == {1: 11, 5: 50, 6: 60}
    assert summary.warnings[0].count == 3 and summary.warnings[0].examples == [
        {"id": 5},
        {"id": 5},
        {"id": 1},
    ]


def test_examples_are_capped_at_five() -> None:
    differ = Differ(None, "upsert", key_columns=["id"])
    keys: list[int | None] = [None] * 8
    differ.classify(fps(keys), pa.table({"id": pa.array(keys, pa.int64())}))
    (warning,) = differ.finish().warnings
    assert warning.code == "null_key" and warning.count == 8 and len(warning.examples) == 5


@pytest.mark.parametrize(("keys", "what"), [([1, 1], "a duplicate primary key"), ([None], "a NULL in the primary key")])
def test_fail_on_invalid_keys(keys: list[int | None], what: str) -> None:
    differ = Differ(None, "difference", key_columns=["id"], on_duplicate_key="fail")
    with pytest.raises(InvalidKeys, match=f"the source has {what} \\(id\\), e.g. `id=") as caught:
        differ.classify(fps(keys), pa.table({"id": pa.array(keys, pa.int64())}))
    assert caught.value.code == "invalid_primary_key" and not caught.value.transient


def test_keys_sharing_their_high_64_bits() -> None:
    prev = Entries(np.array([7, 7, 7], np.uint64), np.array([1, 5, 9], np.uint64), np.array([1, 2, 3], np.uint64))
    differ = Differ(prev, "upsert")
    delta = differ.classify(fps([7, 7, 7, 7], [3, 2, 4, 0], lo=[9, 5, 6, 9]))
    assert rows(delta.unchanged) == [0, 1] and rows(delta.added) == [2] and rows(delta.duplicate) == [3]
    summary = differ.finish()
    merged = settle(Entries.concat(summary.new_state()))
    assert merged.lo.tolist() == [5, 6, 9] and merged.content.tolist() == [2, 4, 3]


def test_many_batches_and_chunked_new_state() -> None:
    rng = np.random.default_rng(3)
    hi = rng.integers(0, 2**63, 600_000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    content = rng.integers(0, 2**63, len(hi), dtype=np.uint64)
    differ = Differ(None, "difference")
    for start in range(0, len(hi), 50_000):
        part = slice(start, start + 50_000)
        differ.classify(Fingerprints(hi[part], hi[part], content[part], np.zeros(50_000, bool)))
    summary = differ.finish()
    chunks = list(summary.new_state())
    assert len(chunks) > 1 and sum(map(len, chunks)) == summary.new_rows == len(np.unique(hi))
    merged = settle(Entries.concat(chunks))
    assert merged.is_sorted_unique()
    order = np.argsort(hi, kind="stable")
    assert np.array_equal(merged.hi, hi[order]) and np.array_equal(merged.content, content[order] & CONTENT_BITS)


def test_duplicates_found_once_the_added_keys_filter_is_on() -> None:
    rng = np.random.default_rng(11)
    hi = rng.integers(0, 2**64 - 1, 400_000, dtype=np.uint64, endpoint=True)
    lo = rng.integers(0, 2**64 - 1, 400_000, dtype=np.uint64, endpoint=True)
    differ = Differ(None, "upsert")
    for start in range(0, 400_000, 100_000):
        part = slice(start, start + 100_000)
        differ.classify(Fingerprints(hi[part], lo[part], lo[part], np.zeros(100_000, bool)))
    assert differ.filter is not None
    again = np.array([5, 399_999, 123_456])
    twin_lo = lo[again].copy()
    twin_lo[2] ^= np.uint64(1)  # same high bits, another key: not a duplicate
    delta = differ.classify(Fingerprints(hi[again], twin_lo, lo[again], np.zeros(3, bool)))
    assert rows(delta.duplicate) == [0, 1] and rows(delta.added) == [2]
    assert differ.finish().new_rows == 400_001


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown delta mode `snapshot`"):
        Differ(None, "snapshot")  # type: ignore[arg-type]


# --- property test: random source mutations over several runs, against a plain-dict oracle ---

Row = tuple[int | None, int | None, str | None, int]  # id, a (mapped), b (mapped), c (unmapped)
MAPPED = ["id", "a", "b"]


class Oracle:
    """The rules of DESIGN.md §2 written with dicts, independently of the array code."""

    def __init__(self, mode: Mode):
        self.mode = mode
        self.delivered: dict[int, tuple[Any, ...]] | None = None  # key -> last delivered mapped values

    def run(self, source: list[Row]) -> tuple[list[Row], list[tuple[Any, ...]]]:
        first: dict[int, Row] = {}
        for row in source:
            if row[0] is not None and row[0] not in first:
                first[row[0]] = row
        if self.delivered is None:
            self.delivered = {k: r[:3] for k, r in first.items()}
            return list(source), []
        old = self.delivered
        if self.mode == "insert":
            exported = [r for k, r in first.items() if k not in old]
            self.delivered = {k: old.get(k, r[:3]) for k, r in first.items()}
            return exported, []
        exported = [r for k, r in first.items() if k not in old or old[k] != r[:3]]
        removed = [v for k, v in old.items() if k not in first] if self.mode == "difference" else []
        self.delivered = {k: r[:3] for k, r in first.items()}
        return exported, removed


def run_engine(store: MemoryStateStore, mode: Mode, source: list[Row], batch_rows: int) -> tuple[list[Row], list]:
    """What the engine will do with these primitives: load, classify, write payload and state, commit."""
    snapshot = store.load("act")
    differ = Differ(snapshot.entries if snapshot.info else None, mode, key_columns=["id"])
    generation = store.begin("act")
    table = pa.table(
        {
            "id": pa.array([r[0] for r in source], pa.int64()),
            "a": pa.array([r[1] for r in source], pa.int64()),
            "b": pa.array([r[2] for r in source], pa.string()),
            "c": pa.array([r[3] for r in source], pa.int64()),
        }
    )
    exported: list[Row] = []
    sink = store.open_payload("act", generation)
    schema = table.select(MAPPED).schema.append(pa.field(KEY, pa.binary(16)))
    with pa.ipc.new_stream(sink, schema) as payload:
        for batch in table.to_batches(max_chunksize=batch_rows):
            fp = fingerprint_batch(batch, ["id"], MAPPED)
            delta = differ.classify(fp, batch)
            exported += [tuple(r.values()) for r in batch.filter(pa.array(delta.export)).to_pylist()]
            tracked = pa.array(delta.tracked)
            payload.write_batch(batch.select(MAPPED).append_column(KEY, fp.key_array()).filter(tracked))
    sink.close()
    summary = differ.finish()
    removed: list = []
    if mode == "difference" and snapshot.info is not None and snapshot.info.payload:  # as the engine
        with pa.ipc.open_stream(store.read_payload(snapshot.info)) as reader:
            removed = [tuple(r.values()) for b in filter_removed(reader, summary, KEY) for r in b.to_pylist()]
    info = store.write("act", generation, summary.new_state(), payload=True, meta={"mode": mode})
    store.commit(info, snapshot)
    store.cleanup("act")
    return exported, removed


keys = st.integers(0, 12)
values = st.tuples(st.one_of(st.none(), st.integers(-3, 3)), st.one_of(st.none(), st.sampled_from(["", "x", "xy"])))
mutation = st.one_of(
    st.tuples(st.just("insert"), keys, values, st.integers(0, 5)),
    st.tuples(st.just("update_mapped"), st.integers(0, 99), values),
    st.tuples(st.just("update_unmapped"), st.integers(0, 99), st.integers(0, 5)),
    st.tuples(st.just("delete"), st.integers(0, 99)),
    st.tuples(st.just("reinsert"), st.integers(0, 99)),
    st.tuples(st.just("duplicate"), st.integers(0, 99), values),
    st.tuples(st.just("null_key"), values),
)


def mutate(source: list[Row], deleted: list[Row], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "insert":
        if all(r[0] != op[1] for r in source):
            source.append((op[1], *op[2], op[3]))
    elif kind == "null_key":
        source.append((None, *op[1], 0))
    elif kind == "reinsert":
        if deleted:
            row = deleted.pop(op[1] % len(deleted))
            if all(r[0] != row[0] for r in source):
                source.append(row)
    elif source:
        i = op[1] % len(source)
        row = source[i]
        if kind == "update_mapped":
            source[i] = (row[0], *op[2], row[3])
        elif kind == "update_unmapped":
            source[i] = (row[0], row[1], row[2], op[2])
        elif kind == "delete":
            deleted.append(source.pop(i))
        elif kind == "duplicate" and row[0] is not None:
            source.insert(i + 1, (row[0], *op[2], 9))


@pytest.mark.parametrize("mode", ["insert", "upsert", "difference"])
@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(st.tuples(st.lists(mutation, max_size=12), st.integers(1, 6)), min_size=1, max_size=5))
def test_semantics_match_the_oracle(mode: Mode, runs: list[tuple[list[tuple[Any, ...]], int]]) -> None:
    store, oracle = MemoryStateStore(), Oracle(mode)
    source: list[Row] = []
    deleted: list[Row] = []
    for ops, batch_rows in runs:
        for op in ops:
            mutate(source, deleted, op)
        exported, removed = run_engine(store, mode, source, batch_rows)
        want_exported, want_removed = oracle.run(source)
        assert sorted(exported, key=repr) == sorted(want_exported, key=repr)
        assert sorted(removed, key=repr) == sorted(want_removed, key=repr)
        assert len(store.generations("act")) <= 2


def test_payload_round_trip_through_memory_store() -> None:
    store = MemoryStateStore()
    generation = store.begin("a")
    with store.open_payload("a", generation) as sink:
        sink.write(b"last values")
    info = store.write("a", generation, [], payload=True)
    assert store.read_payload(info).read() == b"last values"
    assert isinstance(store.read_payload(info), io.BytesIO)


def test_a_run_that_never_commits_leaves_every_change_for_the_next() -> None:
    """Failure safety at the primitives' level: write without commit (a crash after publishing)."""
    store = MemoryStateStore()
    base: list[Row] = [(1, 1, "a", 0), (2, 2, "b", 0), (3, 3, "c", 0)]
    run_engine(store, "difference", base, 2)
    second: list[Row] = [(1, 9, "a", 0), (2, 2, "b", 0), (4, 4, "d", 0)]  # update 1, remove 3, add 4
    snapshot = store.load("act")
    differ = Differ(snapshot.entries, "difference", key_columns=["id"])
    table = pa.table({k: [r[i] for r in second] for i, k in enumerate(["id", "a", "b", "c"])})
    for batch in table.to_batches():
        differ.classify(fingerprint_batch(batch, ["id"], MAPPED), batch)
    summary = differ.finish()
    store.write("act", store.begin("act"), summary.new_state())  # never committed
    third: list[Row] = [(1, 9, "a", 0), (2, 7, "b", 0), (4, 4, "d", 0)]  # and now 2 changes too
    exported, removed = run_engine(store, "difference", third, 2)
    assert sorted(exported) == [(1, 9, "a", 0), (2, 7, "b", 0), (4, 4, "d", 0)]
    assert removed == [(3, 3, "c")]
