"""FULL THEN DELTA end to end: INSERT, UPSERT and DIFFERENCE through the CLI, state in Azurite,
files on Azurite, on FTP and on SFTP (OpenSSH's sshd); failure safety and racing commits through the engine."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from core.catalog.parse import parse_catalog
from core.destinations.memory import MemoryDestination
from core.errors import StateConflict
from core.run.engine import Run
from core.run.records import RunRecord
from core.settings import Settings
from core.state.memory import MemoryStateStore
from devtools.services import Azurite, FtpServer
from tests.helpers import Target, mutate, people_catalog, rows_of

pytest_plugins = ["tests.integration.conftest_sftp"]

INITIAL = [(1, "Ann", 30, "a"), (2, "Bob", 40, "b"), (3, "Cid", 50, "c"), (4, "Dee", 60, "d")]


def make_db(path: Path) -> Path:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE people (id INTEGER, name VARCHAR, age INTEGER, unmapped VARCHAR)")
        con.executemany("INSERT INTO people VALUES (?, ?, ?, ?)", INITIAL)
    return path


# Between run 1 and 2: a new row, a mapped change, an unmapped change, a delete.
CHANGES = (
    "INSERT INTO people VALUES (5, 'Eve', 20, 'e')",
    "UPDATE people SET age = 41 WHERE id = 2",
    "UPDATE people SET unmapped = 'zzz' WHERE id = 3",
    "DELETE FROM people WHERE id = 4",
)


@pytest.fixture(params=["azure", "ftp", "sftp", "azure-on-disk"])
def target(request: pytest.FixtureRequest, azurite: Azurite, ftp_server: FtpServer, tmp_path: Path) -> Target:
    sftp = request.getfixturevalue("sftp_server") if request.param == "sftp" else None
    return Target(request.param, azurite, ftp_server, tmp_path, sftp)


def files(target: Target, record: dict[str, Any]) -> dict[str, list[tuple[str, ...]]]:
    return {f["path"].rsplit("/", 1)[-1]: rows_of(target.read(f["path"])) for f in record["files"]}


def test_upsert_sends_new_rows_and_mapped_changes(target: Target, tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    first = target.run(db, "upsert", 1)
    assert first["full"] is True and first["rows"]["exported"] == 4
    assert files(target, first) == {
        "people_20250401.csv": [("1", "Ann", "30"), ("2", "Bob", "40"), ("3", "Cid", "50"), ("4", "Dee", "60")]
    }
    mutate(db, *CHANGES)
    second = target.run(db, "upsert", 2)
    assert second["full"] is False
    assert {k: second["rows"][k] for k in ("read", "added", "updated", "removed", "unchanged", "exported")} == {
        "read": 4,
        "added": 1,
        "updated": 1,
        "removed": 1,
        "unchanged": 2,
        "exported": 2,
    }
    assert files(target, second) == {"people_20250402.csv": [("2", "Bob", "41"), ("5", "Eve", "20")]}
    third = target.run(db, "upsert", 3)  # nothing changed: an empty (header-only) file
    assert third["rows"]["exported"] == 0 and files(target, third) == {"people_20250403.csv": []}


def test_insert_sends_only_new_keys(target: Target, tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    target.run(db, "insert", 1)
    mutate(db, *CHANGES)
    second = target.run(db, "insert", 2)
    assert files(target, second) == {"people_20250402.csv": [("5", "Eve", "20")]}
    # README's worked example, day 3: key 4 was removed on day 2 and comes back, so it is new again
    # (INSERT compares with the previous run's keys); the removal of key 2 sends nothing.
    mutate(db, "INSERT INTO people VALUES (4, 'Dee', 61, 'd')", "DELETE FROM people WHERE id = 2")
    third = target.run(db, "insert", 3)
    assert files(target, third) == {"people_20250403.csv": [("4", "Dee", "61")]}
    assert third["rows"]["added"] == 1 and third["rows"]["removed"] == 1 and third["rows"]["exported"] == 1


def test_difference_writes_added_updated_removed(target: Target, tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    first = target.run(db, "difference", 1)
    assert files(target, first) == {
        "people_20250401_added.csv": [("1", "Ann", "30"), ("2", "Bob", "40"), ("3", "Cid", "50"), ("4", "Dee", "60")],
        "people_20250401_updated.csv": [],
        "people_20250401_removed.csv": [],
    }
    mutate(db, *CHANGES, "UPDATE people SET name = 'Robert' WHERE id = 2")
    second = target.run(db, "difference", 2)
    assert files(target, second) == {
        "people_20250402_added.csv": [("5", "Eve", "20")],
        "people_20250402_updated.csv": [("2", "Robert", "41")],
        "people_20250402_removed.csv": [("4", "Dee", "60")],  # the last delivered values
    }
    # A removed row re-inserted with other values is added again; the removed file then carries
    # the values delivered by the latest run, not the first.
    mutate(db, "INSERT INTO people VALUES (4, 'Dee', 61, 'd')", "DELETE FROM people WHERE id = 2")
    third = target.run(db, "difference", 3)
    assert files(target, third) == {
        "people_20250403_added.csv": [("4", "Dee", "61")],
        "people_20250403_updated.csv": [],
        "people_20250403_removed.csv": [("2", "Robert", "41")],
    }


def test_reset_and_preview(target: Target, tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    target.run(db, "upsert", 1)
    mutate(db, *CHANGES)
    preview = target.run(db, "upsert", 2, "preview", "sync")
    assert preview["files"] == [
        {
            "path": f"{target.folder}/people_20250402.csv",
            "rows": 2,
            "bytes": len('"id","name","age"\n2,"Bob",41\n5,"Eve",20\n'),
        }
    ]
    assert preview["rows"]["added"] == 1 and preview["rows"]["updated"] == 1
    # The preview neither uploaded nor moved the state: the real run sees the same changes.
    with pytest.raises(Exception):  # noqa: B017 - not there, whatever the destination's error
        target.read(f"{target.folder}/people_20250402.csv")
    assert target.run(db, "upsert", 2)["rows"]["exported"] == 2
    target.run(db, "upsert", 3, "reset", "sync")
    after_reset = target.run(db, "upsert", 4)
    assert after_reset["full"] is True and after_reset["rows"]["exported"] == 4


# --- failure safety and races, in-process on the memory fakes ---------------------------------


def engine_run(catalog: Any, destination: MemoryDestination, state: MemoryStateStore, day: int) -> Any:
    record = RunRecord(f"r{day}", "sync", "manual", datetime(2025, 4, day, 6, tzinfo=UTC))
    run = Run(catalog, "sync", Settings({}), record, destination=destination, state=state, retries=0)
    return asyncio.run(run.execute())


def memory_catalog(db: Path) -> Any:
    return parse_catalog(
        people_catalog(db, {"type": "azure_blob", "container": "xyz", "connection_setting": "X"}, "difference"),
        db.parent,
    )


def test_a_failed_publish_keeps_the_state_and_the_next_run_sends_both_runs_changes(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    catalog, state = memory_catalog(db), MemoryStateStore()
    assert engine_run(catalog, MemoryDestination(), state, 1).exception is None
    mutate(db, *CHANGES)
    failing = MemoryDestination(fail_on={("publish", "_updated")})
    result = engine_run(catalog, failing, state, 2)
    assert result.record.status == "failed" and "_updated" in result.exception.message
    mutate(db, "INSERT INTO people VALUES (6, 'Fay', 70, 'f')")
    good = MemoryDestination()
    result = engine_run(catalog, good, state, 3)
    assert result.exception is None
    got = {path.rsplit("_", 1)[-1]: rows_of(data) for path, data in good.files.items()}
    assert got == {
        "added.csv": [("5", "Eve", "20"), ("6", "Fay", "70")],
        "updated.csv": [("2", "Bob", "41")],
        "removed.csv": [("4", "Dee", "60")],
    }


def test_a_crash_between_publish_and_commit_resends_the_changes(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    catalog, state = memory_catalog(db), MemoryStateStore()
    engine_run(catalog, MemoryDestination(), state, 1)
    mutate(db, *CHANGES)
    state.fail_on = {"commit"}
    published = MemoryDestination()
    assert engine_run(catalog, published, state, 2).record.status == "failed"
    assert len(published.files) == 3  # the files went out, the state did not move
    state.fail_on = set()
    again = MemoryDestination()
    assert engine_run(catalog, again, state, 3).exception is None
    resent: Callable[[MemoryDestination], dict[str, Any]] = lambda d: {  # noqa: E731
        p.rsplit("_", 1)[-1]: rows_of(b) for p, b in d.files.items()
    }
    assert resent(again) == resent(published)


def test_two_runs_racing_to_commit_one_wins(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    catalog, state = memory_catalog(db), MemoryStateStore()
    engine_run(catalog, MemoryDestination(), state, 1)
    mutate(db, *CHANGES)
    real_commit = state.commit
    results: list[Any] = []

    def commit_after_the_other(info: Any, snapshot: Any) -> None:
        if not results:  # the first run to get here lets a second full run commit first
            state.commit = real_commit  # type: ignore[method-assign]
            results.append(engine_run(catalog, MemoryDestination(), state, 3))
        real_commit(info, snapshot)

    state.commit = commit_after_the_other  # type: ignore[method-assign]
    loser = engine_run(catalog, MemoryDestination(), state, 2)
    assert results[0].exception is None
    assert isinstance(loser.exception, StateConflict) and loser.record.status == "failed"
    # The state is the winner's: nothing is pending, so a next run sends nothing new.
    check = MemoryDestination()
    engine_run(catalog, check, state, 4)
    assert all(rows_of(b) == [] for b in check.files.values())


def test_duplicate_and_null_keys_are_warned_or_fail(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    mutate(db, "INSERT INTO people VALUES (2, 'Bob again', 41, 'x')", "INSERT INTO people VALUES (NULL, 'Nul', 1, 'n')")
    catalog, state = memory_catalog(db), MemoryStateStore()
    result = engine_run(catalog, MemoryDestination(), state, 1)
    assert result.exception is None
    codes = {w["code"]: w["message"] for w in result.record.warnings}
    assert sorted(codes) == ["duplicate_key", "null_key"]
    assert codes["duplicate_key"].startswith("1 rows repeat a primary key (id) seen earlier in the run, e.g. ")
    assert "id=2" in codes["duplicate_key"] and codes["null_key"].startswith("1 rows have a NULL in the primary key")
    strict = parse_catalog(
        people_catalog(
            db,
            {"type": "azure_blob", "container": "xyz", "connection_setting": "X"},
            "difference",
            on_duplicate_key="fail",
        ),
        db.parent,
    )
    failing = MemoryDestination()
    result = engine_run(strict, failing, MemoryStateStore(), 1)
    assert result.record.status == "failed" and result.record.error["code"] == "invalid_primary_key"
    assert failing.files == {}


# --- runs that change nothing, and a state that arrives while the source streams -------------


def mode_catalog(db: Path, mode: str) -> Any:
    destination = {"type": "azure_blob", "container": "xyz", "connection_setting": "X"}
    return parse_catalog(people_catalog(db, destination, mode), db.parent)


def sent(destination: MemoryDestination) -> dict[str, list[tuple[str, ...]]]:
    return {path.rsplit("_", 1)[-1]: rows_of(data) for path, data in destination.files.items()}


@pytest.mark.parametrize("mode", ["insert", "upsert", "difference"])
def test_a_run_with_no_change_writes_no_state_and_commits_the_current_generation(tmp_path: Path, mode: str) -> None:
    db = make_db(tmp_path / "people.duckdb")
    catalog, state = mode_catalog(db, mode), MemoryStateStore()
    assert engine_run(catalog, MemoryDestination(), state, 1).exception is None
    [generation] = state.generations("sync")
    token = state.load("sync").token
    mutate(db, "UPDATE people SET unmapped = 'zzz' WHERE id = 3")  # not mapped: no change to send
    state.calls.clear()
    quiet = MemoryDestination()
    result = engine_run(catalog, quiet, state, 2)
    assert result.exception is None and result.record.full is False
    assert result.record.rows.exported == 0 and result.record.rows.unchanged == 4
    assert all(rows == [] for rows in sent(quiet).values())  # the empty files of the run
    assert "write" not in state.calls and "stage" not in state.calls and "commit" in state.calls
    assert state.generations("sync") == [generation]  # DIFFERENCE's begun generation was cleaned up
    snapshot = state.load("sync")
    assert snapshot.info is not None and snapshot.info.generation == generation and snapshot.token != token
    # The state is still right: the next changes are sent, against the rows delivered by run 1.
    mutate(db, *CHANGES)
    after = MemoryDestination()
    assert engine_run(catalog, after, state, 3).exception is None
    expected = {
        "insert": {"20250403.csv": [("5", "Eve", "20")]},
        "upsert": {"20250403.csv": [("2", "Bob", "41"), ("5", "Eve", "20")]},
        "difference": {
            "added.csv": [("5", "Eve", "20")],
            "updated.csv": [("2", "Bob", "41")],
            "removed.csv": [("4", "Dee", "60")],
        },
    }[mode]
    assert sent(after) == expected


def test_a_run_with_no_change_still_loses_a_race_to_commit(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    catalog, state = mode_catalog(db, "upsert"), MemoryStateStore()
    engine_run(catalog, MemoryDestination(), state, 1)
    changed = tmp_path / "changed.duckdb"  # the same activation over a copy of the source, changed
    shutil.copyfile(db, changed)
    mutate(changed, *CHANGES)
    real_commit = state.commit
    results: list[Any] = []

    def commit_after_the_other(info: Any, snapshot: Any) -> None:
        if not results:  # a run that did change something commits first
            state.commit = real_commit  # type: ignore[method-assign]
            results.append(engine_run(mode_catalog(changed, "upsert"), MemoryDestination(), state, 3))
        real_commit(info, snapshot)

    state.commit = commit_after_the_other  # type: ignore[method-assign]
    loser = engine_run(catalog, MemoryDestination(), state, 2)
    assert results[0].exception is None and results[0].record.rows.exported == 2
    assert isinstance(loser.exception, StateConflict)
    check = MemoryDestination()  # the winner's state stands: its changes are not sent again
    assert engine_run(mode_catalog(changed, "upsert"), check, state, 4).exception is None
    assert sent(check) == {"20250404.csv": []}


def test_a_state_that_cannot_be_read_fails_the_run_before_anything_is_published(tmp_path: Path) -> None:
    db = make_db(tmp_path / "people.duckdb")
    catalog, state = mode_catalog(db, "upsert"), MemoryStateStore()
    engine_run(catalog, MemoryDestination(), state, 1)
    mutate(db, *CHANGES)
    state.fail_on = {"read_entries"}  # the entries are read on their own thread while the source streams
    failing = MemoryDestination()
    result = engine_run(catalog, failing, state, 2)
    assert result.record.status == "failed" and failing.files == {}
    assert result.exception is not None and result.exception.message == "injected failure in `read_entries`"
    again = MemoryDestination()
    assert engine_run(catalog, again, state, 3).exception is None
    assert sent(again) == {"20250403.csv": [("2", "Bob", "41"), ("5", "Eve", "20")]}
