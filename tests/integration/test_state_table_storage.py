"""Packed delta state in Azure Table Storage, against Azurite: the store contract, entity-size
edges, racing commits, cleanup and request counts."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from azure.data.tables import TableServiceClient

from core.azure.table_requests import binary, query_entities, upsert_transaction
from core.errors import StateConflict, StateError
from core.state.table_storage import (
    PROPERTY_BYTES,
    ROWS_PER_SHARD,
    SHARDS_PER_PAGE,
    RequestCounter,
    TableStorageStateStore,
    map_azure_errors,
)
from devtools.services import AZURITE_KEY, Azurite
from tests.state_contract import StoreContract, chunks, commit, entries, same

pytestmark = pytest.mark.integration


def make_store(azurite: Azurite, counter: RequestCounter | None = None, **kwargs: object) -> TableStorageStateStore:
    suffix = uuid.uuid4().hex[:10]
    return TableStorageStateStore.from_connection_string(
        azurite.connection_string,
        table_name=f"state{suffix}",
        container_name=f"state-{suffix}",
        table_hook=counter,
        **kwargs,
    )


@pytest.fixture
def counter() -> RequestCounter:
    return RequestCounter()


@pytest.fixture
def store(azurite: Azurite, counter: RequestCounter) -> Iterator[TableStorageStateStore]:
    with make_store(azurite, counter) as s:
        yield s


class TestTableStorageStore(StoreContract):
    """The same contract as the in-memory store."""


def partition(store: TableStorageStateStore, activation: str, generation: str) -> list[dict]:
    return list(store.table.query_entities(f"PartitionKey eq '{activation}@{generation}'"))


@pytest.mark.parametrize(
    "rows",
    [
        0,
        1,
        ROWS_PER_SHARD - 1,
        ROWS_PER_SHARD,
        ROWS_PER_SHARD + 1,
        4 * ROWS_PER_SHARD,
        4 * ROWS_PER_SHARD + 1,
        9 * ROWS_PER_SHARD + 7,
    ],
)
def test_round_trip_at_entity_size_edges(store: TableStorageStateStore, counter: RequestCounter, rows: int) -> None:
    data = entries(rows, seed=rows)
    snapshot = store.load("edge")
    generation = store.begin("edge")
    before = counter.count
    info = store.write("edge", generation, chunks(data, 10_007))
    shards = -(-rows // ROWS_PER_SHARD)
    assert counter.count - before == -(-shards // 4)  # 4 shards per entity-group transaction
    store.commit(info, snapshot)
    before = counter.count
    loaded = store.load("edge")
    assert counter.count - before == 1 + -(-shards // SHARDS_PER_PAGE)  # the pointer, then the pages
    assert loaded.info is not None and loaded.info.rows == rows and same(loaded.entries, data)
    stored = [e for e in partition(store, "edge", generation) if e["RowKey"] != "meta"]
    assert len(stored) == shards
    for entity in stored:
        props = [k for k in entity if k.startswith("d")]
        assert len(props) <= 10 and all(len(entity[k]) <= PROPERTY_BYTES for k in props)
        assert sum(len(entity[k]) for k in props) == 24 * entity["rows"]


def test_racing_commits_from_threads(store: TableStorageStateStore) -> None:
    commit(store, "race", entries(10))
    barrier = threading.Barrier(2)
    outcome: dict[int, str] = {}

    def run(n: int) -> None:
        snapshot = store.load("race")
        info = store.write("race", store.begin("race"), [entries(100 + n, seed=n)])
        barrier.wait()
        try:
            store.commit(info, snapshot)
            outcome[n] = "won"
        except StateConflict:
            outcome[n] = "conflict"

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome.values()) == ["conflict", "won"]
    winner = next(n for n, r in outcome.items() if r == "won")
    assert same(store.load("race").entries, entries(100 + winner, seed=winner))


def test_cleanup_and_reset_remove_entities_and_blobs(store: TableStorageStateStore) -> None:
    snapshot = store.load("tidy")
    old = store.begin("tidy")
    with store.open_payload("tidy", old) as sink:
        sink.write(b"x" * 10)
    store.commit(store.write("tidy", old, [entries(ROWS_PER_SHARD + 5)], payload=True), snapshot)
    commit(store, "tidy", entries(3))
    assert len(partition(store, "tidy", old)) == 3  # meta + 2 shards
    assert store.cleanup("tidy") == 1
    assert partition(store, "tidy", old) == []
    assert [b.name for b in store.container.list_blobs(name_starts_with="tidy/")] == []
    current = store.load("tidy").info
    assert current is not None
    store.reset("tidy")
    assert partition(store, "tidy", current.generation) == []
    assert store.load("tidy").info is None


def test_incomplete_generation_is_detected(store: TableStorageStateStore) -> None:
    commit(store, "hole", entries(2 * ROWS_PER_SHARD))
    info = store.load("hole").info
    assert info is not None
    store.table.delete_entity(f"hole@{info.generation}", "s000001")
    with pytest.raises(StateError, match="is incomplete: 1 of 2 shards found; reset the activation"):
        store.load("hole")


def test_request_budget_for_a_million_rows(store: TableStorageStateStore, counter: RequestCounter) -> None:
    commit(store, "million", entries(1_000_000, seed=42))
    start = counter.count
    snapshot = store.load("million")
    generation = store.begin("million")
    new = entries(1_000_000, seed=43)
    info = store.write("million", generation, chunks(new, 262_144))
    store.commit(info, snapshot)
    assert store.cleanup("million") == 1
    # load 1 + 8 pages, begin 1, write 10 transactions, commit 1, cleanup 1 + 1 + 1 (+ a blob delete)
    assert counter.count - start <= 30
    assert same(store.load("million").entries, new)


def test_unreachable_account_is_transient(azurite: Azurite) -> None:
    dead = azurite.connection_string.replace(str(azurite.table_port), "1").replace(str(azurite.blob_port), "1")
    store = TableStorageStateStore.from_connection_string(
        dead, table_name="statex", container_name="statex", retry_total=0
    )
    with pytest.raises(StateError, match="could not be reached") as caught:
        store.load("x")
    assert caught.value.transient


def test_wrong_key_is_terminal_and_secret_free(azurite: Azurite) -> None:
    wrong = azurite.connection_string.replace(AZURITE_KEY, "d3Jvbmc=")
    store = TableStorageStateStore.from_connection_string(
        wrong, table_name="statey", container_name="statey", retry_total=0
    )
    with pytest.raises(StateError) as caught:
        store.load("y")
    assert not caught.value.transient and "d3Jvbmc" not in caught.value.message


def test_state_table_is_shared_by_activations(azurite: Azurite) -> None:
    with make_store(azurite) as store:
        commit(store, "one", entries(5, seed=1))
        commit(store, "one-two", entries(6, seed=2))
        store.reset("one")
        assert store.load("one-two").info.rows == 6  # type: ignore[union-attr]
        names = {t.name for t in TableServiceClient.from_connection_string(azurite.connection_string).list_tables()}
        assert store.table.table_name in names
        assert np.array_equal(store.load("one-two").entries.hi, entries(6, seed=2).hi)


class _PublicOnly:
    """A table client without the pipeline attribute: the public `submit_transaction` path."""

    def __init__(self, table: object):
        self._table = table

    def __getattr__(self, name: str) -> object:
        if name == "_client":
            raise AttributeError(name)
        return getattr(self._table, name)


def shard(pk: str, row: str, props: int) -> dict[str, object]:
    return {
        "PartitionKey": pk,
        "RowKey": row,
        "rows": 1,
        **{f"d{i}": bytes([i]) * PROPERTY_BYTES for i in range(props)},
    }


@pytest.mark.parametrize("public", [False, True], ids=["own-batch", "sdk-batch"])
def test_transaction_paths(store: TableStorageStateStore, public: bool) -> None:
    store.begin("tx")  # creates the table
    table = _PublicOnly(store.table) if public else store.table
    upsert_transaction(table, [shard("p'q", "r1", 10), shard("p'q", "r2", 1)])  # type: ignore[arg-type]
    got = store.table.get_entity("p'q", "r1")
    assert got["d9"] == bytes([9]) * PROPERTY_BYTES and got["rows"] == 1
    upsert_transaction(table, [shard("many", f"r{i:02d}", 1) for i in range(12)])  # type: ignore[arg-type]
    found = list(query_entities(table, "PartitionKey eq 'many'", SHARDS_PER_PAGE))  # type: ignore[arg-type]
    assert [e["RowKey"] for e in found] == [f"r{i:02d}" for i in range(12)]  # 3 pages of 5
    assert all(binary(e["d0"]) == bytes([0]) * PROPERTY_BYTES for e in found)
    with pytest.raises(StateError, match="storage answered"), map_azure_errors("writing"):
        upsert_transaction(table, [shard("p", "big", 40)])  # type: ignore[arg-type]


def test_write_rejects_unsorted_entries(store: TableStorageStateStore) -> None:
    e = entries(4)
    with pytest.raises(ValueError, match="sorted"):
        store.write("bad", store.begin("bad"), [e.slice(2, 4), e.slice(0, 2)])
