"""Interruptions from outside the process: the CLI in its own process, state in Azurite, files on
Azurite and on a real FTP server (issue 13's "Why", run records, one run at a time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from core.control.stores import Leases, Tables
from core.settings import Settings
from devtools.services import Azurite, FtpServer
from tests.helpers import REPO, Target, cli, mutate, people_catalog, rows_of, run_record, write_catalog

RUN_1 = ("INSERT INTO people VALUES (1, 'Ann', 30, 'a'), (2, 'Bob', 40, 'b'), (3, 'Cid', 50, 'c')",)
RUN_2 = (
    "UPDATE people SET age = 41 WHERE id = 2",
    "INSERT INTO people VALUES (4, 'Dee', 60, 'd')",
    "DELETE FROM people WHERE id = 3",
)
BACK_TO_RUN_1 = ("DELETE FROM people", *RUN_1)


def new_db(path: Path) -> Path:
    mutate(path, "CREATE TABLE people (id INTEGER, name VARCHAR, age INTEGER, unmapped VARCHAR)", *RUN_1)
    return path


def env_of(target: Target) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "FTP_", "EXPORT_"))}
    return {**full, **target.env, "PYTHONPATH": str(REPO), "FILECAST_LOCAL_SETTINGS": os.devnull}


def fault_cli(target: Target, fault: str, *args: str, **extra: str) -> subprocess.Popen[str]:
    """The CLI in a fresh process with a fault (tests/integration/fault_cli.py)."""
    env = {**env_of(target), "FILECAST_TEST_FAULT": fault, **extra}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.fault_cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def catalog(target: Target, db: Path, mode: str) -> str:
    doc = people_catalog(db, target.destination(), mode, folder=target.folder)
    return str(write_catalog(target.tmp_path / "catalog.yaml", doc))


def partner_view(target: Target, records: list[dict[str, Any]], mode: str) -> dict[str, tuple[str, ...]]:
    """Every file the runs published, read back from the destination and applied in order."""
    view: dict[str, tuple[str, ...]] = {}
    for record in records:
        for f in record["files"]:
            for row in rows_of(target.read(f["path"])):
                if f["path"].endswith("_removed.csv"):
                    view.pop(row[0], None)
                else:
                    view[row[0]] = row
    return view


@pytest.fixture(params=["azure", "ftp", "azure-on-disk"])
def target(request: pytest.FixtureRequest, azurite: Azurite, ftp_server: FtpServer, tmp_path: Path) -> Target:
    return Target(request.param, azurite, ftp_server, tmp_path)


@pytest.mark.parametrize("mode", ["upsert", "difference"])
def test_the_partner_converges_after_the_state_was_unreachable_right_after_publish(
    target: Target, tmp_path: Path, mode: str
) -> None:
    db = new_db(tmp_path / "people.duckdb")
    path = catalog(target, db, mode)
    first = target.run(db, mode, 1)
    mutate(db, *RUN_2)
    broken = fault_cli(
        target, "state_unreachable_after_publish", "run", "sync", "--catalog", path, "--at", "2025-04-02T06:00:00Z"
    )
    out, err = broken.communicate(timeout=300)
    second = json.loads(out)
    assert broken.returncode == 1, err
    names = ["_added.csv", "_updated.csv", "_removed.csv"] if mode == "difference" else [".csv"]
    assert [f["path"] for f in second["files"]] == [f"{target.folder}/people_20250402{n}" for n in names]
    assert second["status"] == "failed" and second["error"]["code"] == "state_error"
    message = second["error"]["message"]
    assert message.startswith("committing the delta state of `sync`: the storage account could not be reached")
    assert message.endswith(
        "published before this failure without the delta state advancing: the next run sends their changes again"
    )
    # The files are live: the partner already has Bob at 41 (and, with DIFFERENCE, lost Cid).
    assert partner_view(target, [first, second], mode)["2"] == ("2", "Bob", "41")
    # The history keeps that record, files included.
    history = cli("runs", "sync", env=target.env)
    assert history.returncode == 0, history.stderr
    assert [(r["status"], r["files"]) for r in json.loads(history.stdout)][:2] == [
        ("failed", second["files"]),
        ("succeeded", first["files"]),
    ]

    mutate(db, *BACK_TO_RUN_1)  # the source goes back to run 1's content
    third = target.run(db, mode, 3)
    source = {"1": ("1", "Ann", "30"), "2": ("2", "Bob", "40"), "3": ("3", "Cid", "50")}
    view = partner_view(target, [first, second, third], mode)
    if mode == "difference":
        assert view == source
        got = {f["path"].rsplit("_", 1)[-1]: rows_of(target.read(f["path"])) for f in third["files"]}
        assert got == {
            "added.csv": [("3", "Cid", "50")],
            "updated.csv": [("2", "Bob", "40")],
            "removed.csv": [("4", "Dee", "60")],
        }
    else:  # UPSERT sends no removals: the partner keeps Dee, and has every source row as it is
        assert {k: view[k] for k in source} == source and view["4"] == ("4", "Dee", "60")
    fourth = target.run(db, mode, 4)  # converged and committed: nothing more to send
    assert fourth["rows"]["exported"] == 0


def blobs_under(target: Target) -> list[str]:
    service = BlobServiceClient.from_connection_string(target.azurite.connection_string)
    container = service.get_container_client("delta")
    return (
        sorted(b.name for b in container.list_blobs(name_starts_with=target.folder + "/")) if container.exists() else []
    )


@pytest.fixture
def azure_target(azurite: Azurite, ftp_server: FtpServer, tmp_path: Path) -> Target:
    return Target("azure", azurite, ftp_server, tmp_path)


def test_a_run_refused_by_the_lease_publishes_nothing(azure_target: Target, tmp_path: Path) -> None:
    db = new_db(tmp_path / "people.duckdb")
    path = catalog(azure_target, db, "upsert")
    leases = Leases(
        Tables(
            Settings(
                {
                    "AzureWebJobsStorage": azure_target.azurite.connection_string,
                    "FILECAST_TABLE_PREFIX": azure_target.env["FILECAST_TABLE_PREFIX"],
                }
            )
        )
    )
    leases.acquire("sync", "another-run")
    refused = cli("run", "sync", "--catalog", path, "--at", "2025-04-01T06:00:00Z", env=azure_target.env)
    record = run_record(refused)
    assert refused.returncode == 1 and record["status"] == "failed" and record["files"] == []
    assert record["error"] == {
        "code": "run_in_progress",
        "message": (
            "activation `sync` is already running (run `another-run`), and two runs of one activation never overlap: "
            "this run published nothing; try again when it ends"
        ),
    }
    assert blobs_under(azure_target) == []
    leases.release("sync", "another-run")
    assert azure_target.run(db, "upsert", 1)["status"] == "succeeded"
    assert blobs_under(azure_target) == [f"{azure_target.folder}/people_20250401.csv"]


def test_two_concurrent_cli_runs_publish_once(azure_target: Target, tmp_path: Path) -> None:
    db = new_db(tmp_path / "people.duckdb")
    path = catalog(azure_target, db, "difference")
    leases = Leases(
        Tables(
            Settings(
                {
                    "AzureWebJobsStorage": azure_target.azurite.connection_string,
                    "FILECAST_TABLE_PREFIX": azure_target.env["FILECAST_TABLE_PREFIX"],
                }
            )
        )
    )
    slow = fault_cli(
        azure_target,
        "slow_publish",
        "run",
        "sync",
        "--catalog",
        path,
        "--at",
        "2025-04-01T06:00:00Z",
        FILECAST_TEST_DELAY="6",
    )
    deadline = time.monotonic() + 120
    while leases.holder("sync") is None:  # the first run has started and holds the lease
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
        time.sleep(0.1)
    second = cli("run", "sync", "--catalog", path, "--at", "2025-04-02T06:00:00Z", env=azure_target.env)
    out, err = slow.communicate(timeout=300)
    assert slow.returncode == 0, err
    assert second.returncode == 1 and run_record(second)["error"]["code"] == "run_in_progress"
    assert run_record(second)["files"] == []
    first = json.loads(out)
    assert first["status"] == "succeeded" and len(first["files"]) == 3
    assert blobs_under(azure_target) == sorted(f["path"] for f in first["files"])


def test_a_source_failing_mid_stream_keeps_its_code_and_message(tmp_path: Path) -> None:
    """DuckDB's `error()` on a late row surfaces through pyarrow's reader as an OSError: it must
    still read as the source's error, every time (it was `internal: unexpected OSError`)."""
    import asyncio
    from datetime import UTC, datetime

    import duckdb

    from core.catalog.parse import parse_catalog
    from core.destinations.memory import MemoryDestination
    from core.run.engine import Run
    from core.run.records import RunRecord

    db = tmp_path / "late.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS id, 'x' || range AS name FROM range(200000)")
    cat = parse_catalog(
        {
            "sources": {"db": {"type": "duckdb", "database": str(db)}},
            "models": {
                "m": {
                    "source": "db",
                    "primary_key": ["id"],
                    "sql": "select id, case when id = 150000 then error('boom') else name end as name from t",
                }
            },
            "destinations": {"d": {"type": "azure_blob", "container": "xyz", "connection_setting": "X"}},
            "activations": {"a": {"model": "m", "destination": "d", "file_name": "f", "format": "csv"}},
        },
        tmp_path,
    )
    errors = []
    for i in range(6):
        destination = MemoryDestination()
        record = RunRecord(f"r{i}", "a", "manual", datetime(2025, 4, 1, tzinfo=UTC))
        result = asyncio.run(Run(cat, "a", Settings({}), record, destination=destination, retries=0).execute())
        errors.append(result.record.error)
        assert destination.files == {} and result.record.files == []
    assert (
        errors == [{"code": "source_error", "message": f"DuckDB database `{db}` failed: Invalid Input Error: boom"}] * 6
    )
