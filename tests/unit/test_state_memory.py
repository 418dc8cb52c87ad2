"""The `StateStore` contract (tests/state_contract.py) on the in-memory store, and what only it has."""

from __future__ import annotations

import io

import pytest

from core.errors import StateError
from core.state.base import Entries
from core.state.memory import MemoryStateStore
from tests.state_contract import StoreContract, commit, entries, same


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryStateStore:
        return MemoryStateStore()

    def test_write_rejects_unsorted_entries(self, store: MemoryStateStore) -> None:
        e = entries(4)
        with pytest.raises(ValueError, match="sorted"):
            store.write("c", store.begin("c"), [e.slice(2, 4), e.slice(0, 2)])

    def test_injected_failure_leaves_state_unchanged(self, store: MemoryStateStore) -> None:
        commit(store, "c", entries(3, seed=1))
        store.fail_on.add("commit")
        with pytest.raises(StateError, match="injected failure in `commit`") as caught:
            commit(store, "c", entries(5, seed=2))
        assert caught.value.transient
        assert same(store.load("c").entries, entries(3, seed=1))

    def test_payload_writer_is_a_file(self, store: MemoryStateStore) -> None:
        sink = store.open_payload("d", store.begin("d"))
        assert isinstance(sink, io.IOBase) and sink.writable()


def test_pack_round_trip() -> None:
    e = entries(1234, seed=5)
    assert same(Entries.unpack(e.pack()), e)
    assert e.pack()[:16] == int(e.hi[0]).to_bytes(8, "big") + int(e.lo[0]).to_bytes(8, "big")
    with pytest.raises(ValueError, match="whole number of entries"):
        Entries.unpack(b"x" * 25)
