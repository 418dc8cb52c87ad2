"""Benchmark of the PostgreSQL source: rows/s and peak RSS streaming a model out of a real server.

    python bench/sources.py [--rows 1000000] [--repeat 3] [--uri postgresql://…]

Without `--uri` it starts a throwaway server (devtools/postgres.py) and loads the demo's
customers (14 columns: integers, text with quotes and accents, numeric(12,2), date, timestamptz,
booleans, NULLs) at the given size. Each measurement runs in a fresh child process, which reads
every batch and throws it away, so the time is the source's and `ru_maxrss` its peak memory:

    filecast           PostgresSource.batches(model): COPY binary → Arrow batches of ~8 MiB
    filecast-segment   the same model with a segment filter every row passes: bound parameters,
                       a server-side cursor fetched in ~8 MiB steps
    adbc               the driver alone: cursor.execute + fetch_record_batch (reference)
    psycopg            a psycopg 3 server-side cursor, row by row (only when psycopg is installed)

The best of `--repeat` runs is reported, as JSON lines and a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "SELECT * FROM customers"
SEGMENT = {"all": [{"column": "customer_id", "op": ">=", "value": 0}, {"column": "age", "op": "not_null"}]}


def child(mode: str, uri: str) -> dict[str, Any]:
    """Read the whole model once; returns rows, seconds and peak RSS."""
    started = time.perf_counter()
    rows = 0
    if mode in ("filecast", "filecast-segment"):
        from core.read.sources.postgresql import PostgresSource

        source = PostgresSource(uri, source_id="bench")
        _, batches = source.batches(MODEL, SEGMENT if mode == "filecast-segment" else None)
        for batch in batches:
            rows += batch.num_rows
        source.close()
    elif mode == "adbc":
        import adbc_driver_postgresql.dbapi

        with adbc_driver_postgresql.dbapi.connect(uri) as connection, connection.cursor() as cursor:
            cursor.execute(MODEL)
            for batch in cursor.fetch_record_batch():
                rows += batch.num_rows
    elif mode == "psycopg":
        import psycopg

        with psycopg.connect(uri) as connection, connection.cursor(name="bench") as cursor:
            cursor.itersize = 10_000
            cursor.execute(MODEL)
            for _ in cursor:
                rows += 1
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(rss_mb),
    }


def measure(mode: str, uri: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode],
        env={**os.environ, "BENCH_PG_URI": uri},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uri", help="an existing server with a `customers` table (default: start one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, os.environ["BENCH_PG_URI"])))
        return

    modes = ["filecast", "filecast-segment", "adbc"]
    if importlib.util.find_spec("psycopg") is not None:
        modes.append("psycopg")
    server = None
    uri = args.uri
    if uri is None:
        from devtools.postgres import PostgresServer, create_customers

        server = PostgresServer.start()
        uri = server.uri()
        started = time.perf_counter()
        create_customers(server, "customers", args.rows)
        print(f"loaded {args.rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for mode in modes:
                result = measure(mode, uri)
                print(json.dumps(result), flush=True)
                if mode not in best or result["seconds"] < best[mode]["seconds"]:
                    best[mode] = result
    finally:
        if server is not None:
            server.stop()
    print(f"\n{'mode':<18} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}", file=sys.stderr)
    for mode, r in best.items():
        print(
            f"{mode:<18} {r['rows']:>10,} {r['seconds']:>8.2f} {r['rows_per_s']:>10,} {r['peak_rss_mb']:>12}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
