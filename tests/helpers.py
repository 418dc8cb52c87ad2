"""Helpers shared by the test tiers: catalogs on the fly, the CLI as a user runs it, service skips,
example counts, and what the export, delta and Functions tests share.

Test modules import these and never each other (tests/unit/test_test_imports.py checks it); shared
fixtures live in a conftest. Heavy imports (DuckDB, the Azure SDK, the Functions app) are made where
a helper needs them, so a unit test importing this module loads none of them.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("FILECAST_QUICK_TESTS") == "1"  # `make test-unit`: the edit-test loop
REQUIRE_SERVICES = os.environ.get("FILECAST_REQUIRE_SERVICES") == "1"
UNAVAILABLE = " is not available: "

Result = tuple[subprocess.CompletedProcess[str], dict[str, Any]]


# --- catalogs and the CLI -------------------------------------------------------------------------


def write_catalog(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _cli_env(env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment without the demo's and the tests' own settings, plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "FTP_", "EXPORT_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    full_env.setdefault("FILECAST_LOCAL_SETTINGS", os.devnull)
    return full_env


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m core …` in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        capture_output=True,
        text=True,
        env=_cli_env(env),
        cwd=cwd or REPO,
        timeout=600,
    )


def background_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`python -m core …` started, not awaited, with the environment `cli` builds; see `finished`."""
    return subprocess.Popen(
        [sys.executable, "-m", "core", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(env),
        cwd=REPO,
    )


def run_record(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), f"no run record on stdout; stderr:\n{result.stderr}"
    return json.loads(result.stdout)


def finished(process: subprocess.Popen[str]) -> Result:
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return result, run_record(result)


def failed(result: subprocess.CompletedProcess[str], record: dict[str, Any], code: str) -> str:
    """The message of a run that failed with `code` and published nothing."""
    assert result.returncode == 1, result.stderr
    assert record["status"] == "failed" and record["files"] == []
    assert record["error"]["code"] == code, record["error"]
    return str(record["error"]["message"])


# --- services and property tests ------------------------------------------------------------------


def unavailable(what: str, exc: Exception) -> None:
    """Skip the test for want of a service, or fail it under FILECAST_REQUIRE_SERVICES=1 (CI)."""
    message = f"{what}{UNAVAILABLE}{exc}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (FILECAST_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(message)


def fresh_python(code: str, env: dict[str, str] | None = None) -> str:
    """Runs `code` (dedented) in a fresh interpreter at the repository root and returns its stdout;
    for what is process state, such as which modules an import loads."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def examples(full: int) -> int:
    """How many examples a property test tries: `full` (CI, `make test`), or a fifth of it, at least
    10, under FILECAST_QUICK_TESTS=1, which `make test-unit` sets to stay under a minute."""
    return max(10, full // 5) if QUICK else full


# --- exports of the demo's customers (FTP and SFTP destinations) ----------------------------------

AT = "2025-04-14T06:00:00Z"
# The demo database's `customers` table (examples/make_demo.py): its columns and DuckDB types, in order.
CUSTOMER_COLUMNS = {
    "customer_id": "INTEGER",
    "first_name": "VARCHAR",
    "last_name": "VARCHAR",
    "email": "VARCHAR",
    "phone": "VARCHAR",
    "age": "SMALLINT",
    "country": "VARCHAR",
    "plan": "VARCHAR",
    "vip": "BOOLEAN",
    "lifetime_value": "DECIMAL(12,2)",
    "signup_date": "DATE",
    "last_seen_at": "TIMESTAMPTZ",
    "notes": "VARCHAR",
    "is_active": "BOOLEAN",
}
SMALL = "select * from customers where customer_id <= 3000"


def customers_catalog(
    demo_db: Path, destination: dict[str, Any], *, sql: str | None = None, **activation: Any
) -> dict[str, Any]:
    """Activation `export`: the demo's customers (or `sql`) as `;`-separated CSV to `destination`."""
    model: dict[str, Any] = {"source": "warehouse", "primary_key": ["customer_id"]}
    model.update({"sql": sql} if sql else {"table": "customers"})
    return {
        "sources": {"warehouse": {"type": "duckdb", "database": str(demo_db)}},
        "models": {"customers": model},
        "destinations": {"target": destination},
        "activations": {
            "export": {
                "model": "customers",
                "destination": "target",
                "format": "csv",
                "file_name": "export",
                "csv": {"delimiter": ";"},
                **activation,
            }
        },
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".filecast-" in p.name) if folder.exists() else []


def csv_rows(path: Path) -> int:
    import duckdb

    with duckdb.connect() as con:
        query = "SELECT count(*) FROM read_csv(?, delim=';', header=true)"
        return int(con.execute(query, [str(path)]).fetchall()[0][0])


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def wait_for_temp(folder: Path, process: subprocess.Popen[str], min_bytes: int, timeout: float = 60) -> Path | None:
    """The upload's temporary file once it holds `min_bytes`; None if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        for candidate in folder.glob(".*.filecast-tmp") if folder.exists() else []:
            with contextlib.suppress(FileNotFoundError):
                if candidate.stat().st_size >= min_bytes:
                    return candidate
        time.sleep(0.01)
    raise AssertionError("the upload never started")


class Watcher:
    """A reader polling the target (and its folder's temporary files) in a thread while a run writes it."""

    def __init__(self, stored: Path):
        self.stored = stored
        self.seen: dict[str, int] = {}  # md5 of what the reader read → how often
        self.temps: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch)

    def watch(self) -> None:
        while not self.stop.is_set():
            try:
                content = self.stored.read_bytes()
            except FileNotFoundError:
                content = b"<absent>"
            digest = hashlib.md5(content).hexdigest()
            self.seen[digest] = self.seen.get(digest, 0) + 1
            self.temps.update(p.name for p in self.stored.parent.glob(".*.filecast-tmp"))

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# --- FULL THEN DELTA runs of a small `people` table -----------------------------------------------


def mutate(path: Path, *statements: str) -> None:
    import duckdb

    with duckdb.connect(str(path)) as con:
        for statement in statements:
            con.execute(statement)


def people_catalog(db: Path, destination: dict[str, Any], mode: str, **extra: Any) -> dict[str, Any]:
    """Activation `sync`: table `people` (id, name, age mapped; `unmapped` not), FULL THEN DELTA in `mode`."""
    return {
        "sources": {"db": {"type": "duckdb", "database": str(db)}},
        "models": {"people": {"source": "db", "table": "people", "primary_key": ["id"]}},
        "destinations": {"target": destination},
        "activations": {
            "sync": {
                "model": "people",
                "destination": "target",
                "file_name": "people_{YYYY}{MM}{DD}",
                "format": "csv",
                "mapping": [{"from": "id", "to": "id"}, {"from": "name", "to": "name"}, {"from": "age", "to": "age"}],
                "run_type": "full_then_delta",
                "sync_mode": mode,
                **extra,
            }
        },
    }


def rows_of(data: bytes) -> list[tuple[str, ...]]:
    return [tuple(r) for r in csv.reader(io.StringIO(data.decode(), newline=""))][1:]


class Target:
    """Runs the CLI against one destination (`azure`, `ftp` or `sftp`) and reads the files back.
    A kind ending in `-on-disk` (`azure-on-disk`) diffs every state on disk
    (`FILECAST_DELTA_MEMORY_ROWS=0`, what a state of more than 2 M rows gets)."""

    def __init__(self, kind: str, azurite: Any, ftp_server: Any, tmp_path: Path, sftp: Any = None):
        on_disk = kind.endswith("-on-disk")
        kind = kind.removesuffix("-on-disk")
        self.kind, self.azurite, self.ftp_server, self.tmp_path = kind, azurite, ftp_server, tmp_path
        self.sftp = sftp  # tests.integration.sftp_target.SftpTarget, for kind "sftp"
        self.folder = f"delta-{tmp_path.name}"[:60].lower().replace("_", "-")
        self.env = {
            "AzureWebJobsStorage": azurite.connection_string,
            "OUT": azurite.connection_string,
            "FTP_PW": "alex-secret-pw",
            "FILECAST_TABLE_PREFIX": "d" + self.folder.replace("-", "")[-20:],
        }
        if sftp is not None:
            self.env.update(sftp.env())
        if on_disk:
            self.env["FILECAST_DELTA_MEMORY_ROWS"] = "0"

    def destination(self) -> dict[str, Any]:
        if self.kind == "sftp":
            return dict(self.sftp.destination())
        if self.kind == "ftp":
            return {
                "type": "ftp",
                "host": "127.0.0.1",
                "port": self.ftp_server.port,
                "username": "alex",
                "password_setting": "FTP_PW",
            }
        return {"type": "azure_blob", "container": "delta", "connection_setting": "OUT", "create_container": True}

    def run(self, db: Path, mode: str, day: int, *args: str) -> dict[str, Any]:
        doc = people_catalog(db, self.destination(), mode, folder=self.folder)
        path = write_catalog(self.tmp_path / "catalog.yaml", doc)
        at = () if args and args[0] == "reset" else ("--at", f"2025-04-{day:02d}T06:00:00Z")
        result = cli(*(args or ("run", "sync")), "--catalog", str(path), *at, env=self.env)
        if args and args[0] == "reset":
            assert result.returncode == 0, result.stderr
            return {}
        record = run_record(result)
        assert result.returncode == 0, (record, result.stderr)
        return record

    def read(self, path: str) -> bytes:
        if self.kind == "sftp":
            return (self.sftp.root / "home/alex" / path).read_bytes()
        if self.kind == "ftp":
            return (self.ftp_server.root / "home/alex" / path).read_bytes()
        from azure.storage.blob import BlobServiceClient

        blobs = BlobServiceClient.from_connection_string(self.azurite.connection_string)
        return blobs.get_blob_client("delta", path).download_blob().readall()


# --- the Functions app, called as the host calls it -----------------------------------------------

T0 = datetime(2025, 4, 14, 6, 0, 30, tzinfo=UTC)


@cache
def functions() -> dict[str, Any]:
    """The app's functions by name (function_app imported on first use)."""
    import function_app

    return {str(f.get_function_name()): f for f in function_app.app.get_functions()}


def call(name: str, *args: Any) -> Any:
    return functions()[name].get_user_function()(*args)


def http(name: str, method: str, url: str, route: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, Any]:
    import azure.functions as func

    request = func.HttpRequest(method=method, url=url, headers={}, params={}, route_params=route or {}, body=body)
    response: func.HttpResponse = call(name, request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def functions_catalog(demo_db: Path, azurite: Any) -> dict[str, Any]:
    """Activation `small`: 500 customers as CSV to an Azurite container, daily at 06:00."""
    return {
        "sources": {"warehouse": {"type": "duckdb", "database": str(demo_db)}},
        "models": {
            "customers": {
                "source": "warehouse",
                "sql": "select * from customers where customer_id <= 500",
                "primary_key": ["customer_id"],
            }
        },
        "destinations": {
            "lake": {
                "type": "azure_blob",
                "container": "fn-exports",
                "connection_setting": "FN_EXPORT_STORAGE",
                "create_container": True,
            }
        },
        "activations": {
            "small": {
                "model": "customers",
                "destination": "lake",
                "file_name": "small_{run_id}",
                "format": "csv",
                "schedule": "0 6 * * *",
            }
        },
    }


def apply(
    env: dict[str, Any],
    demo_db: Path,
    activations: dict[str, Any],
    sql: str | None = None,
    destinations: dict[str, Any] | None = None,
) -> None:
    """PUT a catalog of the demo's customers with `activations` (CSV to `env`'s container by default)."""
    doc = {
        "sources": {"warehouse": {"type": "duckdb", "database": str(demo_db)}},
        "models": {
            "customers": {
                "source": "warehouse",
                "sql": sql or "select * from customers where customer_id <= 500",
                "primary_key": ["customer_id"],
            }
        },
        "destinations": destinations
        or {
            "out": {
                "type": "azure_blob",
                "container": env["container"],
                "connection_setting": "OUT_STORAGE",
                "create_container": True,
            }
        },
        "activations": {
            name: {"model": "customers", "destination": "out", "format": "csv", **spec}
            for name, spec in activations.items()
        },
    }
    status, body = http("put_catalog", "PUT", "/api/catalog", body=yaml.safe_dump(doc).encode())
    assert status == 200, body


def tick(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    """The scheduler's timer fires at `now`."""
    from azure.functions.timer import TimerRequest

    import core.control.service

    monkeypatch.setattr(core.control.service, "utcnow", lambda: now)
    call("scheduler", TimerRequest(past_due=False))


def messages(env: dict[str, Any]) -> list[dict[str, Any]]:
    """Take every message off the queue, as the host would."""
    found = []
    for message in env["queue"].receive_messages(messages_per_page=32, visibility_timeout=1):
        found.append(json.loads(base64.b64decode(message.content)))
        env["queue"].delete_message(message)
    return found


def deliver(message: dict[str, Any], dequeue_count: int = 1) -> None:
    from azure.functions.queue import QueueMessage

    call("runner", QueueMessage(id="m", body=json.dumps(message).encode(), dequeue_count=dequeue_count))


def get_run(run_id: str) -> dict[str, Any]:
    status, record = http("get_run", "GET", f"/api/runs/{run_id}", {"run_id": run_id})
    assert status == 200, record
    return record
