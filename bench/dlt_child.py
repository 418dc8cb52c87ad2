"""The dlt side of the benchmark, run by `.bench/dlt/bin/python` (dlt lives in a venv of its own).

    python bench/dlt_child.py --database X --format csv|parquet|jsonl --container C --settings best|defaults

Reads the benchmark table out of DuckDB as Arrow batches (the same reader Filecast uses) and loads
it with dlt's `filesystem` destination into Azurite. The connection string arrives in
BENCH_AZURE_CONNECTION (not on the command line); dlt is given it through
`DESTINATION__FILESYSTEM__KWARGS`, as `azure_account_host` does not work with Azurite's plain
HTTP (FINDINGS.md).

- `best`: no compression (`disable_compression`), adlfs `max_concurrency` 4, naive timestamps
  (`timezone: False` hints: aware ones cost dlt about 3.5x on CSV), finished packages deleted.
- `defaults`: dlt as installed (gzip for CSV and JSONL), the same connection.

Prints one JSON line: rows dlt reports having normalised.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--format", required=True, choices=["csv", "parquet", "jsonl"])
    parser.add_argument("--container", required=True)
    parser.add_argument("--settings", required=True, choices=["best", "defaults"])
    args = parser.parse_args()
    connection = os.environ["BENCH_AZURE_CONNECTION"]
    work = tempfile.mkdtemp(prefix="filecast-bench-dlt-")
    kwargs: dict[str, object] = {"connection_string": connection}
    os.environ["DESTINATION__FILESYSTEM__BUCKET_URL"] = f"az://{args.container}"
    os.environ["DESTINATION__FILESYSTEM__CREDENTIALS__AZURE_STORAGE_ACCOUNT_NAME"] = "devstoreaccount1"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    if args.settings == "best":
        kwargs["max_concurrency"] = 4
        os.environ["NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION"] = "true"
        os.environ["LOAD__DELETE_COMPLETED_JOBS"] = "true"
    os.environ["DESTINATION__FILESYSTEM__KWARGS"] = json.dumps(kwargs)

    import dlt
    import duckdb

    con = duckdb.connect(args.database, read_only=True)
    con.execute("SET TimeZone='UTC'")
    columns = None
    if args.settings == "best":
        columns = {"updated_at": {"data_type": "timestamp", "timezone": False}}

    @dlt.resource(name="bench", columns=columns)
    def table():  # type: ignore[no-untyped-def]
        reader = con.sql("SELECT * FROM bench").to_arrow_reader(100_000)
        yield from reader

    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination="filesystem",
        dataset_name="bench",
        pipelines_dir=os.path.join(work, "pipelines"),
    )
    pipeline.run(table(), loader_file_format=args.format)
    counts = pipeline.last_trace.last_normalize_info.row_counts
    print(json.dumps({"rows": int(counts.get("bench", 0))}))


if __name__ == "__main__":
    main()
