"""The on-disk differ answers exactly what the in-memory one answers, row by row, in bounded memory."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.delta import spilled
from core.delta.diff import Differ, Mode
from core.delta.fingerprint import Fingerprints
from core.delta.spilled import SpilledDiffer, spill_from
from core.errors import InvalidKeys, SettingError, StateError
from core.state.base import ADDED, GONE, SENT, Entries
from tests.helpers import examples

TOP = 1 << 52  # one key range of the 4,096 (the top 12 bits of `hi`)
# Keys crowd a few ranges and their edges, and two share `hi`, so merge steps cut at every kind of edge.
HIS = [0, 1, TOP - 1, TOP, TOP + 1, 5 * TOP, (1 << 64) - 1, (1 << 64) - 2]


SOURCE = pa.schema([("id", pa.string()), ("value", pa.int64()), ("n", pa.int64())])


@st.composite
def scenario(draw: Any) -> dict[str, Any]:
    keys = st.tuples(st.sampled_from(HIS), st.integers(0, 2))  # (hi, lo)
    prev_keys = draw(st.lists(keys, unique=True, max_size=12))
    previous = None
    pending = False
    if draw(st.booleans()):
        pending = draw(st.booleans())
        contents = []
        for _ in prev_keys:
            content = draw(st.integers(0, 3))
            if pending:
                content |= draw(st.sampled_from([0, int(SENT), int(SENT | ADDED)]))
                content = draw(st.sampled_from([content, content, int(GONE)]))
            contents.append(content)
        order = sorted(range(len(prev_keys)), key=lambda i: prev_keys[i])
        previous = Entries(
            np.array([prev_keys[i][0] for i in order], np.uint64),
            np.array([prev_keys[i][1] for i in order], np.uint64),
            np.array([contents[i] for i in order], np.uint64),
        )
    batches = draw(
        st.lists(
            st.lists(st.tuples(st.one_of(st.none(), keys), st.integers(0, 3)), max_size=9),
            max_size=5,
        )
    )
    return {"previous": previous, "pending": pending, "batches": batches}


def fingerprints(rows: list[tuple[tuple[int, int] | None, int]]) -> Fingerprints:
    return Fingerprints(
        np.array([k[0] if k else 0 for k, _ in rows], np.uint64),
        np.array([k[1] if k else 0 for k, _ in rows], np.uint64),
        np.array([c for _, c in rows], np.uint64),
        np.array([k is None for k, _ in rows], bool),
    )


def source_batch(rows: list[tuple[tuple[int, int] | None, int]], start: int) -> pa.RecordBatch:
    ids = [None if k is None else f"{k[0]}/{k[1]}" for k, _ in rows]
    columns = {"id": ids, "value": [c for _, c in rows], "n": list(range(start, start + len(rows)))}
    return pa.RecordBatch.from_pydict(columns, schema=SOURCE)


def entries_of(chunks: Any) -> list[tuple[int, int, int]]:
    merged = Entries.concat(list(chunks))
    assert merged.is_sorted_unique()
    return list(zip(merged.hi.tolist(), merged.lo.tolist(), merged.content.tolist(), strict=True))


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of 4 rows and merge steps of 3: every scenario spans several of each."""
    monkeypatch.setattr(spilled, "RUN_ROWS", 4)
    monkeypatch.setattr(spilled, "MERGE_ROWS", 3)


@pytest.mark.parametrize("mode", ["insert", "upsert", "difference"])
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=scenario())
def test_the_same_answer_as_in_memory(small_steps: None, mode: Mode, case: dict[str, Any]) -> None:
    previous = case["previous"]
    memory = Differ(
        previous.copy() if previous is not None else None, mode, pending=case["pending"], key_columns=["id"]
    )
    disk = SpilledDiffer(
        (lambda: [previous.slice(i, i + 2) for i in range(0, len(previous), 2)]) if previous is not None else None,
        mode,
        pending=case["pending"],
        key_columns=["id"],
        values=True,
        keys=True,
    )
    expected: dict[str, list[bool]] = {"added": [], "updated": [], "unchanged": []}
    start = 0
    for rows in case["batches"]:
        fp, batch = fingerprints(rows), source_batch(rows, start)
        start += len(rows)
        delta = memory.classify(fp, batch)
        for name in expected:
            expected[name] += getattr(delta, name).tolist()
        disk.add(fp, batch, batch.select(["n", "value"]))
    want, got = memory.finish(), disk.finish()
    assert got.counts == want.counts
    assert [(w.code, w.count, w.examples, w.message) for w in got.warnings] == [
        (w.code, w.count, w.examples, w.message) for w in want.warnings
    ]
    probe = np.array(HIS, np.uint64), np.array([i % 3 for i in range(len(HIS))], np.uint64)
    assert got.removed_mask(*probe).tolist() == want.removed_mask(*probe).tolist()
    assert entries_of([got.removed_keys()]) == entries_of([want.removed_keys()])
    assert entries_of(got.new_state()) == entries_of(want.new_state()) and got.new_rows == want.new_rows
    replayed: dict[str, list[bool]] = {name: [] for name in expected}
    order: list[int] = []
    for part in disk.replay():
        assert part.mapped is not None and part.keys is not None and len(part.keys) == part.mapped.num_rows
        order += part.mapped.column("n").to_pylist()
        for name in replayed:
            replayed[name] += getattr(part, name).tolist()
    assert order == list(range(start))  # source order
    if not want.full:
        assert replayed == expected
    disk.close()


def test_duplicate_keys_fail_with_the_first_examples_in_source_order() -> None:
    disk = SpilledDiffer(None, "upsert", key_columns=["id"], on_duplicate_key="fail")
    rows: list[tuple[tuple[int, int] | None, int]] = [((9, 0), 1), ((3, 0), 1), ((9, 0), 2), ((3, 0), 5)]
    disk.add(fingerprints(rows), source_batch(rows, 0), source_batch(rows, 0))
    with pytest.raises(InvalidKeys, match=r"duplicate primary key \(id\), e\.g\. `id='9/0'`, `id='3/0'`"):
        disk.finish()


def test_a_null_key_fails_as_it_streams() -> None:
    disk = SpilledDiffer(None, "upsert", key_columns=["id"], on_duplicate_key="fail")
    rows: list[tuple[tuple[int, int] | None, int]] = [((1, 0), 1), (None, 1)]
    with pytest.raises(InvalidKeys, match="a NULL in the primary key"):
        disk.add(fingerprints(rows), source_batch(rows, 0), source_batch(rows, 0))


def test_a_full_temporary_disk_is_a_clear_error() -> None:
    """Writes that meet ENOSPC (here /dev/full) fail the run as `disk_full`, saying what to do."""
    disk = SpilledDiffer(None, "upsert", key_columns=["id"])
    disk.runs.file = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - closed by `close`
    rows: list[tuple[tuple[int, int] | None, int]] = [((i, 0), 1) for i in range(10)]
    disk.add(fingerprints(rows), source_batch(rows, 0), source_batch(rows, 0))  # buffered: no write yet
    with pytest.raises(StateError, match="FILECAST_DELTA_MEMORY_ROWS") as caught:
        disk.finish()
    assert caught.value.code == "disk_full" and "No space left on device" in caught.value.message
    assert "free space there" in caught.value.message
    disk.close()


def test_a_missing_temporary_folder_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(spilled, "temp_directory", lambda: tmp_path / "gone")
    with pytest.raises(StateError, match="make it writable") as caught:
        SpilledDiffer(None, "upsert", key_columns=["id"])
    assert caught.value.code == "state_error"


def peak_bytes(n: int) -> int:
    """Peak Python-tracked memory of an UPSERT classification of `n` rows (1 % changed) against `n`
    state entries, the inputs excluded."""
    rng = np.random.default_rng(7)
    hi = np.sort(rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2))
    previous = Entries(hi, np.arange(n, dtype=np.uint64), np.ones(n, np.uint64))
    tracemalloc.start()
    try:
        disk = SpilledDiffer(
            lambda: (previous.slice(i, i + 65_536) for i in range(0, n, 65_536)), "upsert", key_columns=["id"]
        )
        step = min(n, 50_000)
        for start in range(0, n, step):
            part = slice(start, start + step)
            content = np.where(np.arange(start, start + step) % 100 == 0, 2, 1).astype(np.uint64)
            fp = Fingerprints(previous.hi[part], previous.lo[part], content, np.zeros(step, bool))
            batch = pa.RecordBatch.from_pydict({"id": np.arange(start, start + step)})
            disk.add(fp, batch, batch)
        summary = disk.finish()
        assert sum(len(c) for c in summary.new_state()) == n
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.counts["updated"] == n // 100 and summary.counts["unchanged"] == n - n // 100
    disk.close()
    return peak


def test_memory_does_not_grow_with_the_state() -> None:
    """From 250 k to 1 M rows the on-disk differ grows by a few bytes per row (each row's outcome is
    one; measured: 3.1 MB); the in-memory one holds 25 bytes per state entry, 18.75 MB more."""
    peak_bytes(1_000)  # the lazy imports' allocations, out of the way
    small, large = peak_bytes(250_000), peak_bytes(1_000_000)
    assert large - small < 5_000_000, f"{small:,} then {large:,} bytes at peak"


@pytest.mark.parametrize(("raw", "value"), [(None, 2_000_000), ("0", 0), ("5_000_000", 5_000_000)])
def test_the_memory_rows_setting(raw: str | None, value: int) -> None:
    assert spill_from(raw) == value


@pytest.mark.parametrize("raw", ["-1", "lots", "1e6"])
def test_a_bad_memory_rows_setting_says_what_to_write(raw: str) -> None:
    with pytest.raises(SettingError, match=rf"`FILECAST_DELTA_MEMORY_ROWS` must be a whole number .*, not `{raw}`"):
        spill_from(raw)
