"""An incremental FULL THEN DELTA run against the full export it follows (issue 5's budget: ≤ 50 %).

Builds the demo customers model (`--rows`, default 1 M) in a DuckDB file, starts Azurite, runs an
UPSERT activation to Azure Blob Storage once (the full first run), changes 1 % of the rows (0.5 %
updated, 0.25 % added, 0.25 % removed), and runs it again. Prints both wall times, their ratio and
the rows each run exported. Run: `python -m bench.incremental [--rows N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from core.catalog.parse import parse_catalog
from core.run.engine import Run
from core.run.records import RunRecord
from core.settings import Settings
from devtools.services import Azurite
from examples.make_demo import build


def run_once(catalog: object, settings: Settings, day: int) -> tuple[float, RunRecord]:
    record = RunRecord(f"bench-{day}", "sync", "manual", datetime(2025, 4, 1, tzinfo=UTC) + timedelta(days=day))
    started = time.perf_counter()
    result = asyncio.run(Run(catalog, "sync", settings, record, retries=0).execute())  # type: ignore[arg-type]
    if result.exception is not None:
        raise SystemExit(f"run failed: {result.exception.message}")
    return time.perf_counter() - started, result.record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filecast-bench-"))
    database = build(work / "customers.duckdb", args.rows)
    with Azurite.start(work / "azurite") as azurite:
        settings = Settings({"AzureWebJobsStorage": azurite.connection_string, "OUT": azurite.connection_string})
        catalog = parse_catalog(
            {
                "sources": {"db": {"type": "duckdb", "database": str(database)}},
                "models": {"customers": {"source": "db", "table": "customers", "primary_key": ["customer_id"]}},
                "destinations": {
                    "out": {
                        "type": "azure_blob",
                        "container": "bench",
                        "connection_setting": "OUT",
                        "create_container": True,
                    }
                },
                "activations": {
                    "sync": {
                        "model": "customers",
                        "destination": "out",
                        "file_name": "c_{run_id}",
                        "format": "csv",
                        "run_type": "full_then_delta",
                        "sync_mode": "upsert",
                    }
                },
            },
            work,
        )
        full, first = run_once(catalog, settings, 0)
        n = args.rows
        with duckdb.connect(str(database)) as con:
            con.execute("UPDATE customers SET age = age + 1 WHERE customer_id % 200 = 0")  # 0.5 %
            con.execute("DELETE FROM customers WHERE customer_id % 400 = 1")  # 0.25 %
            con.execute(
                f"INSERT INTO customers SELECT * REPLACE (customer_id + {n} AS customer_id) "
                f"FROM customers WHERE customer_id % 400 = 2"
            )  # 0.25 %
        incremental, second = run_once(catalog, settings, 1)
    print(f"rows: {n:,}")
    print(f"full export      : {full:6.2f} s, {first.rows.exported:,} rows exported")
    print(
        f"incremental (1 %): {incremental:6.2f} s, {second.rows.exported:,} rows exported "
        f"(added {second.rows.added:,}, updated {second.rows.updated:,}, removed {second.rows.removed:,})"
    )
    print(f"ratio            : {incremental / full:.2f} (budget ≤ 0.50)")


if __name__ == "__main__":
    main()
