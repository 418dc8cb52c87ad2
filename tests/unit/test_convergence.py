"""Convergence after interruptions (DESIGN.md §2), as a stateful property test.

A hypothesis state machine mutates a DuckDB source at random and runs the real engine against the
memory destination and the memory state store, with faults injected at random points: a state
store that fails or "kills the process" (raises a `BaseException` the engine does not catch, so
nothing after it runs, as after a crash) on load, on reading the entries (a thread of its own
while the source streams), begin, write, stage (just before publishing), commit (after
publishing; a run that changed nothing commits the current generation again) or cleanup, and a
destination that fails or dies while uploading or publishing the n-th file of a run. The
partner's view is every published file applied in order (UPSERT upserts rows by key, INSERT
inserts them, DIFFERENCE applies `_added`/`_updated` as upserts and `_removed` as deletes). After
every successful run, and after a final clean one, that view must equal the source; and every run
record must list exactly the files it published.

Each mode runs twice: with the default diff (in memory for these small states) and with every
state diffed on disk (`FILECAST_DELTA_MEMORY_ROWS=0`, `core.delta.spilled`); the on-disk machines
were also run with 150 examples each.

`FILECAST_CONVERGENCE_EXAMPLES` sets the examples per sync mode (default 40: CI stays within
a minute or two; 10 under `make test-unit`); it was run with 200 and 500 (2,100 examples in all, README).
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from core.catalog.parse import parse_catalog
from core.destinations.memory import MemoryDestination, MemoryUpload
from core.errors import DestinationUnavailable, StateUnavailable
from core.run.engine import Run
from core.run.records import RunRecord
from core.settings import Settings
from core.state.memory import MemoryStateStore
from tests.helpers import examples

EXAMPLES = int(os.environ.get("FILECAST_CONVERGENCE_EXAMPLES") or examples(40))
KEYS = st.integers(0, 11)
NAMES = st.sampled_from(["Ann", "Bob", "Cid", "Dee"])
AGES = st.integers(18, 22)
STATE_POINTS = ("load", "read_entries", "begin", "write", "stage", "commit", "cleanup")
FAULTS = st.one_of(
    st.just(None),
    st.tuples(st.just("state"), st.sampled_from(STATE_POINTS), st.booleans()),
    st.tuples(st.sampled_from(["write", "publish"]), st.integers(0, 3), st.booleans()),
)


class Killed(BaseException):
    """The process dies here: the engine catches `Exception` only, so nothing after this runs."""


def fault(kill: bool, where: str) -> BaseException:
    return Killed(where) if kill else StateUnavailable(f"injected failure in `{where}`")


class FaultyState(MemoryStateStore):
    """The memory state store, failing (or dying) once at a chosen operation."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: tuple[str, bool] | None = None

    def _enter(self, operation: str) -> None:
        super()._enter(operation)
        if self.fault is not None and self.fault[0] == operation:
            _, kill = self.fault
            self.fault = None
            raise fault(kill, operation)


class LoggedUpload(MemoryUpload):
    owner: FaultyDestination

    async def write(self, data: bytes) -> None:
        self.owner.step("write", self.path)
        await super().write(data)

    async def publish(self) -> None:
        self.owner.step("publish", self.path)
        await super().publish()
        self.owner.log.append((self.path, bytes(self.buffer)))


class FaultyDestination(MemoryDestination):
    """Publishes into a shared log (what the partner collects, in order); fails at the n-th write
    or publish of the run when told to."""

    def __init__(self, log: list[tuple[str, bytes]], fault: tuple[str, int, bool] | None):
        super().__init__()
        self.log, self.fault = log, fault
        self.counts = {"write": 0, "publish": 0}

    def step(self, action: str, path: str) -> None:
        if self.fault is not None and self.fault[0] == action:
            if self.counts[action] == self.fault[1]:
                kill, self.fault = self.fault[2], None
                raise Killed(path) if kill else DestinationUnavailable(f"injected: {action} `{path}`")
            self.counts[action] += 1

    async def open(self, path: str, *, content_type: str) -> MemoryUpload:
        return LoggedUpload(self, path, content_type)


def catalog_doc(db: Path, mode: str) -> dict[str, Any]:
    return {
        "sources": {"db": {"type": "duckdb", "database": str(db)}},
        "models": {"people": {"source": "db", "table": "people", "primary_key": ["id"]}},
        "destinations": {"target": {"type": "azure_blob", "container": "xyz", "connection_setting": "X"}},
        "activations": {
            "sync": {
                "model": "people",
                "destination": "target",
                "file_name": "p_{x}",
                "format": "csv",
                "mapping": [{"from": "id", "to": "id"}, {"from": "name", "to": "name"}, {"from": "age", "to": "age"}],
                "run_type": "full_then_delta",
                "sync_mode": mode,
            }
        },
    }


SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("age", pa.int64()), ("note", pa.string())])


class Convergence(RuleBasedStateMachine):
    mode = "difference"
    app_settings: dict[str, str] = {}  # noqa: RUF012 - read only

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.db = Path(self.tmp.name) / "people.duckdb"
        self.catalog = parse_catalog(catalog_doc(self.db, self.mode), self.db.parent)
        self.state = FaultyState()
        self.log: list[tuple[str, bytes]] = []
        self.source: dict[int, tuple[str, int, str]] = {}
        self.clock = itertools.count(1)
        self.converged_checks = 0

    def teardown(self) -> None:
        self.tmp.cleanup()

    @initialize(rows=st.dictionaries(KEYS, st.tuples(NAMES, AGES), max_size=8))
    def start(self, rows: dict[int, tuple[str, int]]) -> None:
        self.source = {k: (n, a, "u") for k, (n, a) in rows.items()}

    @rule(key=KEYS, name=NAMES, age=AGES)
    def upsert_row(self, key: int, name: str, age: int) -> None:
        note = self.source.get(key, ("", 0, "u"))[2]
        self.source[key] = (name, age, note)

    @rule(key=KEYS)
    def delete_row(self, key: int) -> None:
        self.source.pop(key, None)

    @rule(key=KEYS, note=st.sampled_from(["u", "v"]))
    def change_unmapped(self, key: int, note: str) -> None:
        if key in self.source:
            name, age, _ = self.source[key]
            self.source[key] = (name, age, note)

    @rule(injected=FAULTS, retries=st.integers(0, 1))
    def run(self, injected: tuple[Any, ...] | None, retries: int) -> None:
        destination_fault = None
        if injected is not None and injected[0] == "state":
            self.state.fault = (injected[1], injected[2])
        elif injected is not None:
            destination_fault = (injected[0], injected[1], injected[2])
        record, published = self._run(destination_fault, retries)
        self.state.fault = None
        if record is not None:
            # The record lists exactly the files live at their final names, whatever failed after.
            assert [f["path"] for f in record.files] == list(dict.fromkeys(published)), (record.files, published)
            if record.status == "succeeded":
                self.check_converged()
                if injected != ("state", "cleanup", False):  # the commit's cleanup left only the current one
                    assert len(self.state.generations("sync")) == 1, self.state.generations("sync")
            elif published:
                assert record.error is not None
                assert "published before this failure without the delta state advancing" in record.error["message"]

    def _run(self, destination_fault: tuple[str, int, bool] | None, retries: int) -> tuple[RunRecord | None, list[str]]:
        self._write_source()
        before = len(self.log)
        destination = FaultyDestination(self.log, destination_fault)
        moment = datetime(2025, 4, 1, tzinfo=UTC) + timedelta(minutes=next(self.clock))
        record = RunRecord(f"r{moment:%H%M}", "sync", "manual", moment)
        run = Run(
            self.catalog,
            "sync",
            Settings(self.app_settings),
            record,
            destination=destination,
            state=self.state,
            retries=retries,
            backoff=0,
        )
        try:
            result = asyncio.run(run.execute())
        except Killed:
            return None, [p for p, _ in self.log[before:]]
        return result.record, [p for p, _ in self.log[before:]]

    def _write_source(self) -> None:
        keys = sorted(self.source)
        table = pa.table(
            {
                "id": keys,
                "name": [self.source[k][0] for k in keys],
                "age": [self.source[k][1] for k in keys],
                "note": [self.source[k][2] for k in keys],
            },
            schema=SCHEMA,
        )
        with duckdb.connect(str(self.db)) as con:
            con.register("rows", table)
            con.execute("CREATE OR REPLACE TABLE people AS SELECT * FROM rows")

    def partner_view(self) -> dict[int, tuple[str, int]]:
        view: dict[int, tuple[str, int]] = {}
        for path, data in self.log:
            rows = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
            for key, name, age in rows:
                if path.endswith("_removed.csv"):
                    view.pop(int(key), None)
                elif self.mode != "insert" or int(key) not in view:
                    view[int(key)] = (name, int(age))
        return view

    def check_converged(self) -> None:
        view, source = self.partner_view(), {k: (n, a) for k, (n, a, _) in self.source.items()}
        if self.mode == "difference":
            assert view == source
        elif self.mode == "upsert":  # removals are not sent: the partner keeps rows the source lost
            assert {k: view.get(k) for k in source} == source
        else:  # INSERT: every source key arrived (values as first inserted)
            assert set(source) <= set(view), (sorted(source), sorted(view))
        self.converged_checks += 1

    def check_final(self) -> None:
        record, _ = self._run(None, 0)
        assert record is not None and record.status == "succeeded", record and record.error
        self.check_converged()


class FinalRun:
    """Mixin: after the random steps, one clean run must converge."""

    def teardown(self) -> None:
        try:
            self.check_final()  # type: ignore[attr-defined]
        finally:
            super().teardown()  # type: ignore[misc]


class DifferenceMachine(FinalRun, Convergence):
    mode = "difference"


class UpsertMachine(FinalRun, Convergence):
    mode = "upsert"


class InsertMachine(FinalRun, Convergence):
    mode = "insert"


ON_DISK = {"FILECAST_DELTA_MEMORY_ROWS": "0"}  # every state diffed on disk (`core.delta.spilled`)


class DifferenceOnDiskMachine(DifferenceMachine):
    app_settings = ON_DISK


class UpsertOnDiskMachine(UpsertMachine):
    app_settings = ON_DISK


class InsertOnDiskMachine(InsertMachine):
    app_settings = ON_DISK


PROFILE = settings(
    max_examples=EXAMPLES,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestDifference = DifferenceMachine.TestCase
TestUpsert = UpsertMachine.TestCase
TestInsert = InsertMachine.TestCase
TestDifferenceOnDisk = DifferenceOnDiskMachine.TestCase
TestUpsertOnDisk = UpsertOnDiskMachine.TestCase
TestInsertOnDisk = InsertOnDiskMachine.TestCase
for case in (TestDifference, TestUpsert, TestInsert, TestDifferenceOnDisk, TestUpsertOnDisk, TestInsertOnDisk):
    case.settings = PROFILE


def test_the_why_scenario_converges_in_memory() -> None:
    """The issue's example: run 2 published, then the process died before the commit; the source
    went back to run 1's content; run 3 must bring the partner back."""
    machine = DifferenceMachine()
    try:
        machine.source = {1: ("Ann", 30, "u"), 2: ("Bob", 40, "u"), 3: ("Cid", 50, "u")}
        assert machine._run(None, 0)[0].status == "succeeded"  # type: ignore[union-attr]
        first = dict(machine.source)
        machine.source[2] = ("Bob", 41, "u")
        machine.source[4] = ("Dee", 60, "u")
        del machine.source[3]
        machine.state.fault = ("commit", True)
        record, published = machine._run(None, 0)
        assert record is None and len(published) == 3  # died after publishing all three files
        assert machine.partner_view() == {1: ("Ann", 30), 2: ("Bob", 41), 4: ("Dee", 60)}
        machine.source = first
        assert machine._run(None, 0)[0].status == "succeeded"  # type: ignore[union-attr]
        assert machine.partner_view() == {1: ("Ann", 30), 2: ("Bob", 40), 3: ("Cid", 50)}
    finally:
        machine.teardown()


def test_a_run_that_published_then_failed_lists_its_files() -> None:
    machine = UpsertMachine()
    try:
        machine.source = {1: ("Ann", 30, "u")}
        machine._run(None, 0)
        machine.source[1] = ("Ann", 31, "u")
        machine.state.fault = ("commit", False)
        record, published = machine._run(None, 0)
        assert record is not None and record.status == "failed" and len(published) == 1
        assert [f["path"] for f in record.files] == published and record.files[0]["rows"] == 1
        assert record.error == {
            "code": "state_error",
            "message": (
                f"injected failure in `commit`; 1 file (`{published[0]}`) was published before this failure "
                "without the delta state advancing: the next run sends their changes again"
            ),
        }
    finally:
        machine.teardown()


def _watch(monkeypatch: Any, owner: object, name: str) -> list[object]:
    """`owner.name` still works, and each call's first argument is noted in the list returned."""
    calls: list[object] = []
    real = getattr(owner, name)

    def watched(first: object, *args: Any) -> Any:
        calls.append(first)
        return real(first, *args)

    monkeypatch.setattr(owner, name, watched)
    return calls


def test_an_on_disk_run_with_no_change_reads_nothing_back(monkeypatch: Any) -> None:
    """Diffed on disk, a run that changed nothing replays none of its spilled rows and reads no
    payload; the next run's `_removed` still carries the values the first run delivered."""
    from core.delta.spilled import SpilledDiffer

    replays = _watch(monkeypatch, SpilledDiffer, "_replay")
    for machine in (DifferenceOnDiskMachine(), UpsertOnDiskMachine()):
        try:
            payloads = _watch(monkeypatch, machine.state, "read_payload")
            machine.source = {1: ("Ann", 30, "u"), 3: ("Cid", 50, "u")}
            machine._run(None, 0)
            replays.clear()
            record, published = machine._run(None, 0)
            assert record is not None and record.status == "succeeded" and record.rows.exported == 0
            assert replays == [] and payloads == []
            machine.source[1] = ("Ann", 31, "u")
            del machine.source[3]
            record, published = machine._run(None, 0)
            assert record is not None and record.status == "succeeded"
            machine.check_converged()  # the partner's view, by the machine's mode, equals the source
            assert len(replays) == 1
            replays.clear()
            if isinstance(machine, DifferenceMachine):
                assert machine.partner_view() == {1: ("Ann", 31)} and len(payloads) == 1
                removed = dict(machine.log)[published[2]]
                assert published[2].endswith("_removed.csv") and removed.decode().splitlines()[1:] == ['3,"Cid",50']
        finally:
            machine.teardown()


def test_a_removal_sent_again_carries_the_last_delivered_values() -> None:
    """A tombstone keeps its row's values in the in-flight payload, so `_removed` says them again."""
    machine = DifferenceMachine()
    try:
        machine.source = {1: ("Ann", 30, "u"), 3: ("Cid", 50, "u")}
        machine._run(None, 0)
        del machine.source[3]
        machine.state.fault = ("commit", False)
        assert machine._run(None, 0)[0].status == "failed"  # type: ignore[union-attr]
        assert machine._run(("publish", 2, True), 0)[0] is None  # dies before publishing `_removed`
        record, published = machine._run(None, 0)
        assert record is not None and record.status == "succeeded"
        removed = dict(machine.log)[published[2]]
        assert published[2].endswith("_removed.csv") and removed.decode().splitlines()[1:] == ['3,"Cid",50']
    finally:
        machine.teardown()
