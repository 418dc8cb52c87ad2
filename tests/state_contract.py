"""The `StateStore` contract: semantics every state store must have, run by
`tests/unit/test_state_memory.py` on the in-memory store and by
`tests/integration/test_state_table_storage.py` on Azure Table Storage (Azurite).

A test class subclasses `StoreContract` and provides the `store` fixture; the class's name does not
start with `Test`, so pytest collects it only through its subclasses."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from core.errors import StateConflict, StateError
from core.state.base import Entries, StateStore


def entries(n: int, seed: int = 0) -> Entries:
    """`n` sorted, unique random entries."""
    rng = np.random.default_rng(seed)
    hi = np.unique(rng.integers(0, 2**64 - 1, n + n // 10 + 8, dtype=np.uint64))[:n]
    rng.shuffle(hi)
    hi = np.sort(hi[:n])
    return Entries(hi, rng.integers(0, 2**64 - 1, n, dtype=np.uint64), rng.integers(0, 2**64 - 1, n, dtype=np.uint64))


def chunks(e: Entries, size: int) -> Iterator[Entries]:
    for start in range(0, len(e), size):
        yield e.slice(start, start + size)


def same(a: Entries, b: Entries) -> bool:
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("hi", "lo", "content"))


def commit(store: StateStore, activation: str, e: Entries, **meta: str) -> None:
    snapshot = store.load(activation)
    generation = store.begin(activation)
    info = store.write(activation, generation, chunks(e, 1000), meta=meta)
    store.commit(info, snapshot)


def _generations(store: StateStore, activation: str) -> list[str]:
    """Generation ids a store holds (both stores can list them)."""
    listing = getattr(store, "generations", None)
    if listing is not None:
        return list(listing(activation))
    return [g for g, _ in store._generations(activation)]  # type: ignore[attr-defined]


class StoreContract:
    """Semantics every store must have; subclasses provide the `store` fixture."""

    def test_no_state_then_round_trip(self, store: StateStore) -> None:
        empty = store.load("a1")
        assert empty.info is None and len(empty.entries) == 0
        data = entries(2500, seed=1)
        commit(store, "a1", data, mode="upsert")
        loaded = store.load("a1")
        assert loaded.info is not None and loaded.info.rows == 2500 and dict(loaded.info.meta) == {"mode": "upsert"}
        assert same(loaded.entries, data)

    def test_empty_state_is_not_no_state(self, store: StateStore) -> None:
        commit(store, "a2", Entries.empty())
        loaded = store.load("a2")
        assert loaded.info is not None and loaded.info.rows == 0 and len(loaded.entries) == 0

    def test_loaded_entries_are_a_private_copy(self, store: StateStore) -> None:
        commit(store, "a3", entries(10, seed=3))
        first = store.load("a3")
        first.entries.content[:] = 0
        assert store.load("a3").entries.content.any()

    def test_uncommitted_generation_is_invisible(self, store: StateStore) -> None:
        commit(store, "a4", entries(5, seed=4))
        generation = store.begin("a4")
        store.write("a4", generation, [entries(7, seed=5)])
        assert store.load("a4").info is not None
        assert store.load("a4").info.rows == 5  # type: ignore[union-attr]

    def test_racing_commits_one_wins(self, store: StateStore) -> None:
        commit(store, "a5", entries(3, seed=6))
        first, second = store.load("a5"), store.load("a5")
        g1, g2 = store.begin("a5"), store.begin("a5")
        i1 = store.write("a5", g1, [entries(11, seed=7)])
        i2 = store.write("a5", g2, [entries(12, seed=8)])
        store.commit(i1, first)
        with pytest.raises(StateConflict, match="changed while this run was in progress"):
            store.commit(i2, second)
        assert store.load("a5").info.rows == 11  # type: ignore[union-attr]

    def test_racing_first_runs_one_wins(self, store: StateStore) -> None:
        first, second = store.load("a6"), store.load("a6")
        i1 = store.write("a6", store.begin("a6"), [entries(2, seed=9)])
        i2 = store.write("a6", store.begin("a6"), [entries(4, seed=10)])
        store.commit(i2, second)
        with pytest.raises(StateConflict):
            store.commit(i1, first)
        assert store.load("a6").info.rows == 4  # type: ignore[union-attr]

    def test_reset_clears_and_blocks_runs_in_flight(self, store: StateStore) -> None:
        commit(store, "a7", entries(9, seed=11))
        in_flight = store.load("a7")
        info = store.write("a7", store.begin("a7"), [entries(3, seed=12)])
        store.reset("a7")
        after = store.load("a7")
        assert after.info is None and len(after.entries) == 0
        with pytest.raises(StateConflict):
            store.commit(info, in_flight)
        commit(store, "a7", entries(4, seed=13))  # the next run starts afresh
        assert store.load("a7").info.rows == 4  # type: ignore[union-attr]

    def test_peek_then_read_entries_is_load(self, store: StateStore) -> None:
        nothing = store.peek("p1")
        assert nothing.info is None and nothing.token is None and len(store.read_entries(nothing)) == 0
        data = entries(3000, seed=31)
        commit(store, "p1", data, mode="upsert")
        peeked, loaded = store.peek("p1"), store.load("p1")
        assert peeked.info is not None and loaded.info is not None
        assert (peeked.info.generation, peeked.info.rows, dict(peeked.info.meta), peeked.token, peeked.pending) == (
            loaded.info.generation,
            3000,
            {"mode": "upsert"},
            loaded.token,
            False,
        )
        assert same(store.read_entries(peeked), data)
        staged = store.write("p1", store.begin("p1"), [entries(7, seed=32)])
        store.stage(staged, loaded)
        pending = store.peek("p1")
        assert pending.pending and pending.info is not None and pending.info.generation == staged.generation
        assert same(store.read_entries(pending), entries(7, seed=32))

    def test_iter_entries_streams_what_read_entries_reads(self, store: StateStore) -> None:
        """In order, in chunks, nothing missing: 300 k entries span several Table Storage pages."""
        nothing = store.peek("i1")
        assert list(store.iter_entries(nothing)) == []
        data = entries(300_000, seed=41)
        commit(store, "i1", data, mode="upsert")
        chunked = list(store.iter_entries(store.peek("i1")))
        assert len(chunked) > 1 and all(len(c) for c in chunked)
        assert same(Entries.concat(chunked), data)

    def test_committing_the_current_generation_again(self, store: StateStore) -> None:
        """What a run that changed nothing does: same entries, a new token, cleanup runs as usual."""
        data = entries(40, seed=33)
        commit(store, "p2", data)
        before = store.load("p2")
        assert before.info is not None
        abandoned = store.begin("p2")  # a run that died after `begin`
        store.commit(before.info, before)
        after = store.load("p2")
        assert after.info is not None and after.info.generation == before.info.generation
        assert after.token != before.token and same(after.entries, data)
        with pytest.raises(StateConflict):  # a run that loaded the old token can no longer commit
            store.commit(before.info, before)
        assert store.cleanup("p2") == 1 and abandoned not in _generations(store, "p2")
        assert same(store.load("p2").entries, data)

    def test_reset_without_state(self, store: StateStore) -> None:
        store.reset("a8")
        assert store.load("a8").info is None

    def test_cleanup_keeps_current_and_in_flight(self, store: StateStore) -> None:
        commit(store, "a9", entries(5, seed=14))
        abandoned = store.begin("a9")
        store.write("a9", abandoned, [entries(5, seed=15)])
        commit(store, "a9", entries(6, seed=16))
        in_flight = store.begin("a9")  # started after the last commit: may still commit
        assert store.cleanup("a9") == 2  # the first generation and the abandoned one
        assert store.cleanup("a9") == 0
        snapshot = store.load("a9")
        assert snapshot.info is not None and snapshot.info.rows == 6
        store.commit(store.write("a9", in_flight, [entries(8, seed=17)]), snapshot)
        assert store.cleanup("a9") == 1
        assert store.load("a9").info.rows == 8  # type: ignore[union-attr]

    def test_a_staged_generation_is_loaded_until_committed(self, store: StateStore) -> None:
        commit(store, "c1", entries(5, seed=21))
        before = store.load("c1")
        staged_entries = entries(7, seed=22)
        info = store.write("c1", store.begin("c1"), [staged_entries], meta={"mode": "upsert"})
        staged = store.stage(info, before)
        # In flight (the run's files are being published): the next run compares against it.
        loaded = store.load("c1")
        assert loaded.pending and loaded.info is not None and loaded.info.generation == info.generation
        assert loaded.info.rows == 7 and dict(loaded.info.meta) == {"mode": "upsert"}
        assert same(loaded.entries, staged_entries)
        with pytest.raises(StateConflict):  # the stage moved the token: an older snapshot can't commit
            store.commit(info, before)
        assert store.cleanup("c1") == 0  # keeps both the current and the in-flight generation
        store.commit(info, staged)
        after = store.load("c1")
        assert not after.pending and after.info is not None and after.info.generation == info.generation
        assert store.cleanup("c1") == 1

    def test_a_second_run_cannot_stage_over_the_first(self, store: StateStore) -> None:
        first, second = store.load("c2"), store.load("c2")  # no state yet: two first runs
        i1 = store.write("c2", store.begin("c2"), [entries(3, seed=23)])
        i2 = store.write("c2", store.begin("c2"), [entries(4, seed=24)])
        store.stage(i1, first)
        with pytest.raises(StateConflict):  # refused before it publishes anything
            store.stage(i2, second)
        loaded = store.load("c2")
        assert loaded.pending and loaded.info is not None and loaded.info.rows == 3

    def test_a_stage_after_an_interrupted_one_and_a_reset(self, store: StateStore) -> None:
        commit(store, "c3", entries(5, seed=25))
        i1 = store.write("c3", store.begin("c3"), [entries(6, seed=26)])
        store.stage(i1, store.load("c3"))  # the run dies after publishing: never committed
        again = store.load("c3")
        assert again.pending and again.info is not None and again.info.rows == 6
        i2 = store.write("c3", store.begin("c3"), [entries(8, seed=27)])
        store.commit(i2, store.stage(i2, again))
        assert not store.load("c3").pending and store.load("c3").info.rows == 8  # type: ignore[union-attr]
        assert store.cleanup("c3") == 2  # the first generation and the interrupted one
        i3 = store.write("c3", store.begin("c3"), [entries(2, seed=28)])
        store.stage(i3, store.load("c3"))
        store.reset("c3")
        assert store.load("c3").info is None and not store.load("c3").pending

    def test_payload_round_trip(self, store: StateStore) -> None:
        snapshot = store.load("b1")
        generation = store.begin("b1")
        table = pa.table({"id": list(range(5000)), "name": [f"n{i}" for i in range(5000)]})
        sink = store.open_payload("b1", generation)
        with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
            writer.write_table(table, max_chunksize=700)
        sink.close()
        info = store.write("b1", generation, [entries(1)], payload=True)
        store.commit(info, snapshot)
        current = store.load("b1").info
        assert current is not None and current.payload
        with pa.ipc.open_stream(store.read_payload(current)) as reader:
            assert reader.read_all().equals(table)

    def test_no_payload(self, store: StateStore) -> None:
        commit(store, "b2", entries(1))
        info = store.load("b2").info
        assert info is not None
        with pytest.raises(StateError, match="has no payload"):
            store.read_payload(info)
