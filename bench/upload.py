"""Benchmark: export + upload to Azurite against a plain `upload_blob` of the same bytes.

    python -m bench.upload [--mb 200] [--repeat 3] [--block-mib 8] [--in-flight 4] [--queue-depth 8]
                           [--encode-only]

Builds a DuckDB table of the demo's customers (14 mixed columns: integers, text with quotes and
line breaks, decimals, dates, timestamps with time zone, booleans) sized to about `--mb` MB of
CSV, exports it once to learn the bytes, then, `--repeat` times, each round on a fresh Azurite
(`devtools.services.Azurite`, stopped by its handle) and in alternating order, times:

- plain upload_blob: `BlobClient.upload_blob` of those bytes from memory, 4 and 8 MiB blocks,
  `max_concurrency=4`; the faster one is the reference rate.
- export + upload: the real engine (`Run`): DuckDB record batches -> CSV writer -> MD5 -> blocks
  staged to Azurite while the file streams -> one commit.
- destination alone: `AzureBlobDestination` fed the same bytes from memory in 1 MiB writes: the
  upload path without serialisation.
- serialisation alone (`--encode-only`): the engine into a destination that drops the bytes.

For each it prints the median rate and the CPU seconds of this process (all threads) and of
Azurite: on a 2-core machine the export's serialisation and Azurite compete for the same cores,
and load from other processes shows up there first.

The reference rate depends on Azurite's version, which is printed: 3.37 (the one `make setup`
pins) computes a CRC64 of each staged block in JavaScript, as the service reports one, and
ingests about 4x slower than 3.36, which does not. `AZURITE_BIN` selects another Azurite.

Budget (DESIGN.md §5): export + upload >= 0.8 x the plain upload rate. Exit status 0 within budget, 1 over.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from azure.storage.blob.aio import BlobServiceClient  # noqa: E402

from core.catalog.model import Destination as DestinationConfig  # noqa: E402
from core.catalog.parse import parse_catalog  # noqa: E402
from core.destinations import azure_blob  # noqa: E402
from core.run import engine  # noqa: E402
from core.run.records import RunRecord, new_run_id  # noqa: E402
from core.settings import Settings  # noqa: E402
from devtools.services import Azurite, azurite_command, azurite_version, cpu_seconds  # noqa: E402
from examples.make_demo import build  # noqa: E402

BUDGET = 0.8
CONTAINER = "bench"
MB = 1_000_000


class _Drop:
    """An upload that hashes nothing and keeps nothing: measures serialisation alone."""

    def __init__(self, path: str):
        self.path = path

    async def write(self, data: bytes) -> None:
        return None

    async def finish(self, size: int, md5: bytes) -> None:
        return None

    async def publish(self) -> None:
        return None

    async def discard(self) -> None:
        return None


class DropDestination:
    description = "nowhere"

    def __init__(self) -> None:
        self.warnings: list[dict[str, str]] = []

    async def __aenter__(self) -> DropDestination:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def open(self, path: str, *, content_type: str) -> _Drop:
        return _Drop(path)


def make_database(path: Path, mb: int) -> int:
    """A customers table whose CSV is about `mb` MB; returns its row count."""
    probe = path.with_name("probe.duckdb")
    build(probe, rows=20_000)
    with duckdb.connect(str(probe), read_only=True) as con:
        csv_probe = path.with_name("probe.csv")
        con.execute(f"COPY customers TO '{csv_probe}' (HEADER, DELIMITER ';')")
    rows = int(mb * MB / (csv_probe.stat().st_size / 20_000))
    probe.unlink()
    csv_probe.unlink()
    build(path, rows=rows)
    return rows


def catalog_doc(database: Path) -> dict[str, Any]:
    return {
        "sources": {"warehouse": {"type": "duckdb", "database": str(database)}},
        "models": {"customers": {"source": "warehouse", "table": "customers", "primary_key": ["customer_id"]}},
        "destinations": {
            "lake": {
                "type": "azure_blob",
                "container": CONTAINER,
                "connection_setting": "BENCH_STORAGE",
                "create_container": True,
            }
        },
        "activations": {
            "export": {
                "model": "customers",
                "destination": "lake",
                "file_name": "customers",
                "format": "csv",
                "csv": {"delimiter": ";"},
            }
        },
    }


async def export_once(database: Path, connection_string: str, *, drop: bool = False) -> tuple[float, dict[str, Any]]:
    catalog = parse_catalog(catalog_doc(database))
    settings = Settings({"BENCH_STORAGE": connection_string})
    now = datetime.now(UTC)
    record = RunRecord(new_run_id(now), "export", "manual", now)
    run = engine.Run(catalog, "export", settings, record, retries=0, destination=DropDestination() if drop else None)
    started = time.perf_counter()
    result = await run.execute()
    elapsed = time.perf_counter() - started
    if result.exception is not None:
        raise SystemExit(f"the export failed: {result.exception.message}")
    [file] = result.record.files
    return elapsed, file


async def download(connection_string: str, path: str) -> bytes:
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        stream = await service.get_blob_client(CONTAINER, path).download_blob(max_concurrency=4)
        return await stream.readall()


async def plain_once(connection_string: str, data: bytes, block: int, concurrency: int) -> None:
    async with BlobServiceClient.from_connection_string(
        connection_string, max_block_size=block, max_single_put_size=block
    ) as service:
        await service.get_blob_client(CONTAINER, "plain.csv").upload_blob(
            data, overwrite=True, max_concurrency=concurrency
        )


async def destination_once(connection_string: str, data: bytes, md5: bytes) -> None:
    """The destination alone, fed 1 MiB writes from memory: the upload path without serialisation."""
    config = DestinationConfig("lake", "azure_blob", container=CONTAINER, connection_setting="BENCH_STORAGE")
    destination = azure_blob.AzureBlobDestination(config, Settings({"BENCH_STORAGE": connection_string}))
    async with destination:
        upload = await destination.open("destination.csv", content_type="text/csv")
        view = memoryview(data)
        for offset in range(0, len(data), 2**20):
            await upload.write(bytes(view[offset : offset + 2**20]))
        await upload.finish(len(data), md5)
        await upload.publish()


def azurite_cpu(azurite: Azurite) -> float:
    """CPU seconds used so far by the Azurite process."""
    return cpu_seconds([azurite.process.pid]) if azurite.process is not None else 0.0


@dataclass
class Phase:
    name: str
    run: Callable[[str], Awaitable[Any]]  # given Azurite's connection string
    uses_azurite: bool = True
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process, all threads
    server: list[float] = field(default_factory=list)  # Azurite

    async def measure(self, azurite: Azurite) -> None:
        cpu, server, started = time.process_time(), azurite_cpu(azurite), time.perf_counter()
        await self.run(azurite.connection_string)
        self.wall.append(time.perf_counter() - started)
        self.cpu.append(time.process_time() - cpu)
        self.server.append(azurite_cpu(azurite) - server)


def rate(size: int, seconds: float) -> float:
    return size / MB / seconds


def bench(args: argparse.Namespace, workdir: Path, database: Path) -> int:
    with Azurite.start(workdir / "azurite-warmup") as azurite:  # imports, caches, the bytes to upload plainly
        _, file = asyncio.run(export_once(database, azurite.connection_string))
        data = asyncio.run(download(azurite.connection_string, file["path"]))
    size = file["bytes"]
    md5 = hashlib.md5(data).digest()
    assert md5.hex() == file["md5"], "the blob does not hold what the run wrote"
    print(f"file: {file['path']}, {file['rows']:,} rows, {size / MB:.1f} MB (content MD5 checked)")
    print(f"Azurite {azurite_version()} ({azurite_command()[0]})")
    print(
        f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(the budget assumes an otherwise idle machine)"
    )

    def plain(block: int, concurrency: int) -> Phase:
        return Phase(
            f"plain upload_blob, {block // 2**20} MiB blocks x{concurrency}",
            lambda conn: plain_once(conn, data, block, concurrency),
        )

    plains = [plain(4 * 2**20, 4), plain(8 * 2**20, 4)]
    export = Phase("export + upload (engine)", lambda conn: export_once(database, conn))
    alone = Phase("destination alone (bytes in memory)", lambda conn: destination_once(conn, data, md5))
    phases = [*plains, export, alone]
    if args.encode_only:
        phases.append(
            Phase(
                "serialisation alone (no upload)",
                lambda conn: export_once(database, conn, drop=True),
                uses_azurite=False,
            )
        )

    async def one_round(azurite: Azurite, order: list[Phase]) -> None:
        async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
            await service.create_container(CONTAINER)
        for phase in order:
            await phase.measure(azurite)

    for round_ in range(args.repeat):
        # A fresh Azurite each round: it keeps overwritten blobs in memory for minutes and slows down as it grows.
        with Azurite.start(workdir / f"azurite-{round_}") as azurite:
            asyncio.run(one_round(azurite, phases if round_ % 2 == 0 else phases[::-1]))
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{p.name.split(',')[0].split(' (')[0]} {rate(size, p.wall[-1]):.0f}" for p in phases)
            + " MB/s",
            flush=True,
        )

    print(f"\n{'':38s} {'MB/s':>6s} {'s':>6s} {'CPU s: python':>14s} {'Azurite':>8s}   (medians of {args.repeat})")
    for phase in phases:
        wall = statistics.median(phase.wall)
        server = f"{statistics.median(phase.server):8.2f}" if phase.uses_azurite else f"{'-':>8s}"
        print(f"{phase.name:38s} {rate(size, wall):6.1f} {wall:6.2f} {statistics.median(phase.cpu):14.2f} {server}")
    best = min(plains, key=lambda p: statistics.median(p.wall))
    ratio = statistics.median(best.wall) / statistics.median(export.wall)
    verdict = "within" if ratio >= BUDGET else "OVER"
    print(
        f"\nratio: export + upload = {ratio:.2f} x the plain upload rate ({verdict} budget >= {BUDGET}); "
        f"load average after: {os.getloadavg()[0]:.1f}"
    )
    print(
        f"settings: BLOCK_SIZE={azure_blob.BLOCK_SIZE // 2**20} MiB, MAX_IN_FLIGHT={azure_blob.MAX_IN_FLIGHT}, "
        f"QUEUE_DEPTH={engine.QUEUE_DEPTH}"
    )
    return 0 if ratio >= BUDGET else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="size of the CSV file, in MB (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds (default 3; medians are reported)")
    parser.add_argument("--block-mib", type=int, default=azure_blob.BLOCK_SIZE // 2**20)
    parser.add_argument("--in-flight", type=int, default=azure_blob.MAX_IN_FLIGHT)
    parser.add_argument("--queue-depth", type=int, default=engine.QUEUE_DEPTH)
    parser.add_argument("--encode-only", action="store_true", help="also time serialisation without upload")
    args = parser.parse_args(argv)
    azure_blob.BLOCK_SIZE = args.block_mib * 2**20
    azure_blob.MAX_IN_FLIGHT = args.in_flight
    engine.QUEUE_DEPTH = args.queue_depth

    with tempfile.TemporaryDirectory(prefix="filecast-bench-") as tmp:
        database = Path(tmp) / "bench.duckdb"
        started = time.perf_counter()
        rows = make_database(database, args.mb)
        print(f"built {rows:,} rows in {time.perf_counter() - started:.1f} s")
        return bench(args, Path(tmp), database)


if __name__ == "__main__":
    raise SystemExit(main())
