"""The sides of each benchmark case, each run once in a fresh process against fresh services.

A side builds its command, runs it through `bench.measure`, and checks what it wrote, off the
clock: every file is read back (DuckDB counts its rows) or, for the limit, its bytes compared.

| case | sides |
|---|---|
| csv-azurite, parquet-azurite, ndjson-azurite | filecast, dlt-best, dlt-defaults, limit |
| csv-ftp (pyftpdlib on loopback) | filecast, limit (COPY + `curl -T`) |
| memory | filecast at `--rows` and a tenth of it: CSV, Parquet, NDJSON to Azurite, CSV to FTP, UPSERT and |
|  | DIFFERENCE (a first run, then a delta run after 1 % changed: the larger peak); peak RSS, growth |
| upsert | filecast: a full export, then an UPSERT run after 1 % changed and one with no change |
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from bench import measure
from bench.data import ROOT, TABLE
from devtools.services import Azurite, FtpServer, FtpUser

DLT_VENV = ROOT / ".bench" / "dlt"
DLT_FORMAT = {"csv": "csv", "parquet": "parquet", "ndjson": "jsonl"}
CONTAINER = "bench"
READERS = {"csv": "read_csv", "parquet": "read_parquet", "ndjson": "read_json", "jsonl": "read_json"}


@dataclass
class Sample:
    case: str
    side: str
    rows: int
    seconds: float | None = None
    rss_mb: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "side": self.side,
            "rows": self.rows,
            "seconds": self.seconds,
            "rss_mb": self.rss_mb,
            "error": self.error,
            **self.detail,
        }


class VerifyError(Exception):
    """An output does not hold what it should."""


def count_rows(path: Path, fmt: str) -> int:
    """Rows in a written file, read by DuckDB (gzip detected from the bytes)."""
    with path.open("rb") as head:
        gz = head.read(2) == b"\x1f\x8b"
    options = ", compression='gzip'" if gz else ""
    if fmt == "csv":
        options += ", header=true, all_varchar=true"
    if fmt in ("ndjson", "jsonl"):
        options += ", format='newline_delimited', records=false"
    with duckdb.connect() as con:
        found = con.execute(f"SELECT count(*) FROM {READERS[fmt]}('{path}'{options})").fetchone()
    return int(found[0]) if found else 0


async def _download(connection: str, prefix: str, folder: Path) -> list[tuple[Path, int]]:
    from azure.storage.blob.aio import BlobServiceClient

    files = []
    async with BlobServiceClient.from_connection_string(connection) as service:
        container = service.get_container_client(CONTAINER)
        async for blob in container.list_blobs(name_starts_with=prefix):
            target = folder / blob.name.replace("/", "_")
            with target.open("wb") as sink:
                stream = await container.download_blob(blob.name, max_concurrency=4)
                await stream.readinto(sink)
            files.append((target, int(blob.size)))
    return files


def verify_blobs(connection: str, prefix: str, fmt: str, rows: int, work: Path) -> dict[str, Any]:
    """Downloads the blobs under `prefix` and checks their rows add up to `rows`."""
    folder = Path(tempfile.mkdtemp(prefix="verify-", dir=work))
    files = asyncio.run(_download(connection, prefix, folder))
    if not files:
        raise VerifyError(f"no blob under `{prefix}`")
    found = sum(count_rows(path, fmt) for path, _ in files)
    for path, _ in files:
        path.unlink()
    if found != rows:
        raise VerifyError(f"{found:,} rows read back under `{prefix}`, {rows:,} expected")
    return {"bytes": sum(size for _, size in files), "files": len(files)}


async def _create_container(connection: str) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient.from_connection_string(connection) as service:
        await service.create_container(CONTAINER)


def filecast_catalog(
    work: Path, database: Path, fmt: str, destination: dict[str, Any], activations: dict[str, Any] | None = None
) -> Path:
    doc = {
        "sources": {"db": {"type": "duckdb", "database": str(database)}},
        "models": {"bench": {"source": "db", "table": TABLE, "primary_key": ["id"]}},
        "destinations": {"out": destination},
        "activations": activations
        or {"export": {"model": "bench", "destination": "out", "file_name": "bench", "format": fmt}},
    }
    path = work / f"catalog-{secrets.token_hex(4)}.json"
    path.write_text(json.dumps(doc))  # JSON is YAML: the catalog loader reads both
    return path


def filecast_run(
    catalog: Path, activation: str, env: dict[str, str], at: str | None = None
) -> tuple[measure.Measured, dict[str, Any]]:
    command = [sys.executable, "-m", "core", "run", "--catalog", str(catalog), activation]
    if at:
        command += ["--at", at]
    done = measure.run(command, env, cwd=str(ROOT))
    if not done.ok:
        raise VerifyError(done.failure())
    record: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    return done, record


def run_seconds(record: dict[str, Any]) -> float:
    """The run alone, as its record times it (start to finish, milliseconds): what a warm Functions
    worker spends on it, without the process start-up and imports a CLI run pays first."""
    started, finished = (
        datetime.fromisoformat(record[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at")
    )
    return (finished - started).total_seconds()


AZURE_DESTINATION = {
    "type": "azure_blob",
    "container": CONTAINER,
    "connection_setting": "BENCH_STORAGE",
    "create_container": True,
}


def sync_activation(mode: str) -> dict[str, Any]:
    """A FULL THEN DELTA activation of the bench model in `mode`, to CSV files named per run."""
    return {
        "model": "bench",
        "destination": "out",
        "file_name": "sync_{run_id}",
        "format": "csv",
        "run_type": "full_then_delta",
        "sync_mode": mode,
    }


def limit_run(
    database: Path, fmt: str, target: str, name: str, env: dict[str, str]
) -> tuple[measure.Measured, dict[str, Any]]:
    """The limit's child (`bench.limit_child`: DuckDB COPY, then the raw upload) and the steps it reports."""
    command = [sys.executable, "-m", "bench.limit_child", "--database", str(database), "--format", fmt]
    done = measure.run([*command, "--target", target, "--name", name], env, cwd=str(ROOT))
    if not done.ok:
        raise VerifyError(done.failure())
    steps: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return done, steps


def azure_env(azurite: Azurite) -> dict[str, str]:
    connection = azurite.connection_string
    return {**os.environ, "BENCH_STORAGE": connection, "BENCH_AZURE_CONNECTION": connection, "PYTHONPATH": str(ROOT)}


def filecast_azure(sample: Sample, database: Path, fmt: str, work: Path) -> None:
    with Azurite.start(work / "azurite") as azurite:
        env = azure_env(azurite)
        catalog = filecast_catalog(
            work,
            database,
            fmt,
            AZURE_DESTINATION,
        )
        done, record = filecast_run(catalog, "export", env)
        sample.seconds, sample.rss_mb = done.seconds, done.rss_mb
        sample.detail["run_s"] = run_seconds(record)
        [file] = record["files"]
        sample.detail.update(verify_blobs(azurite.connection_string, file["path"], fmt, sample.rows, work))
        if sample.detail["bytes"] != file["bytes"]:
            raise VerifyError(f"the blob has {sample.detail['bytes']} bytes, the run record says {file['bytes']}")


def dlt_python() -> Path:
    return DLT_VENV / "bin" / "python"


def dlt_azure(sample: Sample, database: Path, fmt: str, work: Path, settings: str) -> None:
    with Azurite.start(work / "azurite") as azurite:
        env = azure_env(azurite)
        asyncio.run(_create_container(azurite.connection_string))
        command = [
            str(dlt_python()),
            str(ROOT / "bench" / "dlt_child.py"),
            "--database",
            str(database),
            "--format",
            DLT_FORMAT[fmt],
            "--container",
            CONTAINER,
            "--settings",
            settings,
        ]
        done = measure.run(command, {**env, "PYTHONPATH": ""}, cwd=str(work))
        if not done.ok:
            raise VerifyError(done.failure())
        sample.seconds, sample.rss_mb = done.seconds, done.rss_mb
        sample.detail.update(
            verify_blobs(azurite.connection_string, "bench/bench/", DLT_FORMAT[fmt], sample.rows, work)
        )


def limit_azure(sample: Sample, database: Path, fmt: str, work: Path) -> None:
    with Azurite.start(work / "azurite") as azurite:
        env = azure_env(azurite)
        asyncio.run(_create_container(azurite.connection_string))
        name = f"limit.{fmt}"
        done, steps = limit_run(database, fmt, "azure", name, env)
        sample.seconds, sample.rss_mb = done.seconds, done.rss_mb
        sample.detail.update(steps)
        if steps["rows"] != sample.rows:
            raise VerifyError(f"COPY wrote {steps['rows']} rows, {sample.rows} expected")
        stored = verify_blobs(azurite.connection_string, name, fmt, sample.rows, work)
        if stored["bytes"] != steps["bytes"]:
            raise VerifyError(f"the blob has {stored['bytes']} bytes, the file had {steps['bytes']}")


def ftp_side(sample: Sample, database: Path, work: Path, side: str) -> None:
    password = "b-" + secrets.token_urlsafe(12)
    root = work / "ftp-root"
    user = FtpUser("bench", password, home="/")
    with FtpServer.start(root, [user]) as server:
        env = {
            **os.environ,
            "BENCH_FTP_PASSWORD": password,
            "PYTHONPATH": str(ROOT),
            "BENCH_FTP_URL": f"ftp://bench:{password}@127.0.0.1:{server.port}/",
        }
        if side == "filecast":
            catalog = filecast_catalog(
                work,
                database,
                "csv",
                {
                    "type": "ftp",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "username": "bench",
                    "password_setting": "BENCH_FTP_PASSWORD",
                },
            )
            done, record = filecast_run(catalog, "export", env)
            sample.detail["run_s"] = run_seconds(record)
            [file] = record["files"]
            path, expected = root / file["path"], file["bytes"]
        else:
            done, steps = limit_run(database, "csv", "ftp", "limit.csv", env)
            sample.detail.update(steps)
            path, expected = root / "limit.csv", steps["bytes"]
        sample.seconds, sample.rss_mb = done.seconds, done.rss_mb
        if not path.is_file() or path.stat().st_size != expected:
            raise VerifyError(
                f"the server holds {path.stat().st_size if path.is_file() else 'no'} bytes at "
                f"`{path.name}`, {expected} expected"
            )
        found = count_rows(path, "csv")
        path.unlink()
        if found != sample.rows:
            raise VerifyError(f"{found:,} rows read back from the FTP server, {sample.rows:,} expected")
        sample.detail["bytes"] = expected


def filecast_sync_memory(sample: Sample, source: Path, mode: str, work: Path) -> None:
    """A FULL THEN DELTA activation (`mode`: upsert or difference): its first run (every row
    exported, the whole state written), then, after 1 % changed, a delta run. Peak RSS is the
    larger of the two runs (each recorded too); the delta run's exported rows are checked."""
    from bench.data import working_copy
    from bench.upsert_case import change_one_percent

    database = working_copy(source, work / "db")
    with Azurite.start(work / "azurite") as azurite:
        env = {**azure_env(azurite), "AzureWebJobsStorage": azurite.connection_string}
        catalog = filecast_catalog(
            work,
            database,
            "csv",
            AZURE_DESTINATION,
            {"sync": sync_activation(mode)},
        )
        first, record = filecast_run(catalog, "sync", env, "2025-04-01T06:00:00Z")
        if record["rows"]["exported"] != sample.rows:
            raise VerifyError(
                f"the first {mode} run exported {record['rows']['exported']:,} rows, {sample.rows:,} expected"
            )
        expected = change_one_percent(database, sample.rows)
        delta, record = filecast_run(catalog, "sync", env, "2025-04-02T06:00:00Z")
        want = expected["updated"] + expected["added"] + (expected["removed"] if mode == "difference" else 0)
        if record["rows"]["exported"] != want:
            raise VerifyError(
                f"the {mode} run after 1 % changed exported {record['rows']['exported']:,} rows, {want:,} expected"
            )
        sample.seconds, sample.rss_mb = first.seconds + delta.seconds, max(first.rss_mb, delta.rss_mb)
        sample.detail.update(
            {
                "first_rss_mb": first.rss_mb,
                "delta_rss_mb": delta.rss_mb,
                "first_s": first.seconds,
                "delta_s": delta.seconds,
            }
        )
