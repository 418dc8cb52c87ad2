"""The engine over fakes: a memory destination, the memory state store and a manual clock (no service).

Files are read back with independent readers (gzip, csv, json, hashlib), and every outcome is the
one a partner or an operator would check: what was published, what was discarded, the run record.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.catalog.parse import parse_catalog
from core.clock import ManualClock
from core.destinations.memory import MemoryDestination
from core.run.engine import Run, RunResult
from core.run.records import RunRecord
from core.settings import Settings
from core.state.memory import MemoryStateStore

from .control_helpers import BrokenState, catalog_doc, people_db

AT = datetime(2025, 4, 1, 10, 0, tzinfo=UTC)


def run(
    tmp_path: Path,
    rows: int = 10,
    *,
    destination: MemoryDestination | None = None,
    state: MemoryStateStore | None = None,
    clock: ManualClock | None = None,
    preview: bool = False,
    retries: int = 0,
    **activation: Any,
) -> RunResult:
    db = people_db(tmp_path / "people.duckdb", rows)
    catalog = parse_catalog(catalog_doc(db, **activation))
    record = RunRecord("r1", "sync", "manual", AT)
    return asyncio.run(
        Run(
            catalog,
            "sync",
            Settings({}),
            record,
            destination=destination,
            state=state,
            clock=clock or ManualClock(AT),
            preview=preview,
            retries=retries,
            backoff=0,
        ).execute()
    )


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_the_manifest_lists_every_file_with_the_checksum_of_its_bytes_as_delivered(tmp_path: Path) -> None:
    destination = MemoryDestination()
    result = run(tmp_path, 10, destination=destination, manifest=True, compression="gzip", max_file_rows=4)
    assert result.exception is None and result.record.status == "succeeded"
    *data, last = destination.files
    assert last == "people.manifest.json"  # published after every data file
    assert destination.content_types[last] == "application/json"
    parts = [read_csv(gzip.decompress(destination.files[path])) for path in data]
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(int(row["id"]) for part in parts for row in part) == list(range(10))
    files = [
        {
            "path": path,
            "rows": len(part),
            "bytes": len(destination.files[path]),
            "md5": hashlib.md5(destination.files[path]).hexdigest(),
        }
        for path, part in zip(data, parts, strict=True)
    ]
    assert json.loads(destination.files[last]) == {
        "activation": "sync",
        "run_id": "r1",
        "logical_time": "2025-04-01T10:00:00.000Z",
        "files": files,
    }
    assert result.record.files == files  # the record lists the data files, not the manifest


def test_no_manifest_unless_asked(tmp_path: Path) -> None:
    destination = MemoryDestination()
    assert run(tmp_path, 3, destination=destination).exception is None
    assert list(destination.files) == ["people.csv"]


def test_the_run_record_takes_its_times_from_the_clock(tmp_path: Path) -> None:
    class Ticking(ManualClock):
        def now(self) -> datetime:
            return self.advance(timedelta(seconds=5))

    result = run(tmp_path, 3, destination=MemoryDestination(), clock=Ticking(AT))
    assert result.record.started_at == AT + timedelta(seconds=5)
    assert result.record.finished_at == AT + timedelta(seconds=10)


def test_a_failed_publish_discards_what_is_not_live_and_the_record_keeps_what_is(tmp_path: Path) -> None:
    destination, state = MemoryDestination(fail_on={("publish", "_updated")}), MemoryStateStore()
    result = run(
        tmp_path,
        5,
        destination=destination,
        state=state,
        run_type="full_then_delta",
        sync_mode="difference",
        manifest=True,
    )
    assert list(destination.files) == ["people_added.csv"]
    assert destination.discarded == ["people_updated.csv", "people_removed.csv", "people.manifest.json"]
    assert [f["path"] for f in result.record.files] == ["people_added.csv"]
    assert result.record.error == {
        "code": "destination_error",
        "message": (
            "injected failure: publish `people_updated.csv`; 1 file (`people_added.csv`) was published before this "
            "failure without the delta state advancing: the next run sends their changes again"
        ),
    }
    assert state.load("sync").pending  # staged in flight, never committed


def test_a_failed_upload_discards_every_file_of_the_attempt(tmp_path: Path) -> None:
    destination = MemoryDestination(fail_on={("write", "_updated")})
    result = run(
        tmp_path,
        5,
        destination=destination,
        state=MemoryStateStore(),
        run_type="full_then_delta",
        sync_mode="difference",
    )
    assert destination.files == {}
    assert sorted(destination.discarded) == ["people_added.csv", "people_updated.csv"]
    assert result.record.files == [] and result.record.status == "failed"
    assert result.record.error == {
        "code": "destination_error",
        "message": "injected failure: write `people_updated.csv`",
    }


def test_a_warning_in_fail_on_discards_everything_before_publishing(tmp_path: Path) -> None:
    destination = MemoryDestination()
    result = run(tmp_path, 0, destination=destination, fail_on=["zero_rows"], manifest=True)
    assert destination.files == {}
    assert destination.discarded == ["people.csv"]  # checked before the manifest is written
    assert result.record.files == []
    assert result.record.error == {
        "code": "failed_on_warning",
        "message": "warning `zero_rows` fails this "
        "activation (fail_on): the model returned no rows; nothing was published",
    }


def test_a_preview_builds_no_destination(tmp_path: Path) -> None:
    # `OUT_STORAGE` is not set: building the Azure Blob destination would fail, a preview never does.
    preview = run(tmp_path, 7, preview=True)
    assert preview.exception is None
    assert [(f["path"], f["rows"]) for f in preview.record.files] == [("people.csv", 7)]
    real = run(tmp_path, 7)
    assert real.exception is not None and real.exception.code == "missing_setting"
    assert "`OUT_STORAGE`" in real.exception.message


def test_a_transient_state_error_is_retried_within_the_run(tmp_path: Path) -> None:
    state = MemoryStateStore()
    state.fail_on = {"load"}  # once
    destination = MemoryDestination()
    result = run(
        tmp_path, 4, destination=destination, state=state, retries=1, run_type="full_then_delta", sync_mode="upsert"
    )
    assert result.exception is None and result.record.status == "succeeded"
    assert state.calls[:2] == ["load", "load"]
    assert len(read_csv(destination.files["people.csv"])) == 4
    assert not state.load("sync").pending and state.load("sync").info is not None  # committed


def test_a_terminal_state_error_fails_the_run_without_retrying(tmp_path: Path) -> None:
    state, destination = BrokenState(transient=False), MemoryDestination()
    result = run(
        tmp_path, 4, destination=destination, state=state, retries=2, run_type="full_then_delta", sync_mode="upsert"
    )
    assert state.calls == ["load"]
    assert result.record.status == "failed" and not result.transient
    assert result.record.error == {"code": "state_error", "message": "the state store is unreachable"}
    assert destination.files == {}
