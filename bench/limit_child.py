"""The limit of the benchmark: DuckDB COPY to a local file, then a raw upload of the same bytes.

    python -m bench.limit_child --database X --format csv|parquet|ndjson --target azure|ftp --name NAME

Two sequential steps, each the fastest plain tool for its half: `COPY … TO` (DuckDB writes the
file with all its threads), then `upload_blob` (azure-storage-blob, 8 MiB blocks, 4 in flight,
connection string in BENCH_AZURE_CONNECTION) or `curl -T` (URL in BENCH_FTP_URL, a loopback
pyftpdlib server). Prints one JSON line with each step's seconds, the bytes and the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

COPY_OPTIONS = {
    "csv": "FORMAT CSV, HEADER true",
    "parquet": "FORMAT PARQUET, COMPRESSION zstd",
    "ndjson": "FORMAT JSON",
}
BLOCK = 8 * 2**20


async def upload_azure(path: Path, container: str, name: str) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient.from_connection_string(
        os.environ["BENCH_AZURE_CONNECTION"], max_block_size=BLOCK, max_single_put_size=BLOCK
    ) as service:
        with path.open("rb") as data:
            await service.get_blob_client(container, name).upload_blob(
                data, overwrite=True, max_concurrency=4, length=path.stat().st_size
            )


def upload_ftp(path: Path, name: str) -> None:
    url = os.environ["BENCH_FTP_URL"].rstrip("/") + "/" + name
    subprocess.run(["curl", "--silent", "--show-error", "--fail", "-T", str(path), url], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--format", required=True, choices=sorted(COPY_OPTIONS))
    parser.add_argument("--target", required=True, choices=["azure", "ftp"])
    parser.add_argument("--container", default="bench")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    import duckdb

    with tempfile.TemporaryDirectory(prefix="filecast-bench-limit-") as tmp:
        path = Path(tmp) / args.name
        started = time.perf_counter()
        with duckdb.connect(args.database, read_only=True) as con:
            con.execute("SET TimeZone='UTC'")
            done = con.execute(f"COPY bench TO '{path}' ({COPY_OPTIONS[args.format]})").fetchone()
        copied = time.perf_counter()
        if args.target == "azure":
            asyncio.run(upload_azure(path, args.container, args.name))
        else:
            upload_ftp(path, args.name)
        uploaded = time.perf_counter()
        print(
            json.dumps(
                {
                    "copy_s": round(copied - started, 3),
                    "upload_s": round(uploaded - copied, 3),
                    "bytes": path.stat().st_size,
                    "rows": int(done[0]) if done else None,
                }
            )
        )


if __name__ == "__main__":
    main()
