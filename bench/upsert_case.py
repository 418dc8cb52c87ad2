"""The UPSERT case: a delta run after 1 % of the rows changed, and one after no change, against a
full export of the same data. All through the CLI, each run a fresh process, one Azurite for the
whole case (the delta state lives in its Table service between the runs).

Changes, on a working copy of the table: 0.5 % updated (`quantity`), 0.25 % removed, 0.25 % added.

Each sample also says how many requests the run sent to the state table (`state_requests`: the
`filecaststate` table and entity-group transactions, counted in Azurite's access log; DESIGN.md
§5's budget is ≤ 30 at 1 M rows) and to Table Storage in all (`table_requests`: run records and
leases too).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import duckdb

from bench.cases import (
    AZURE_DESTINATION,
    Sample,
    VerifyError,
    azure_env,
    filecast_catalog,
    filecast_run,
    run_seconds,
    sync_activation,
    verify_blobs,
)
from bench.data import TABLE, working_copy
from devtools.services import Azurite

SIDES = ("full", "upsert-first", "upsert-1%", "upsert-none")


def change_one_percent(database: Path, rows: int) -> dict[str, int]:
    """Applies the changes; returns how many rows of each kind a delta run must export."""
    with duckdb.connect(str(database)) as con:

        def count(where: str) -> int:
            found = con.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}").fetchone()
            return int(found[0]) if found else 0

        expected = {"updated": count("id % 200 = 0"), "removed": count("id % 400 = 1"), "added": count("id % 400 = 2")}
        con.execute(f"UPDATE {TABLE} SET quantity = quantity + 1 WHERE id % 200 = 0")
        con.execute(f"DELETE FROM {TABLE} WHERE id % 400 = 1")
        con.execute(f"INSERT INTO {TABLE} SELECT * REPLACE (id + {rows} AS id) FROM {TABLE} WHERE id % 400 = 2")
    return expected


_TABLE_REQUEST = re.compile(r'"[A-Z]+ /devstoreaccount1/(\$batch|filecast\w*|Tables)')


def count_requests(log: Path, start: int) -> tuple[dict[str, int], int]:
    """Table requests in Azurite's access log after byte `start`: state ones and all; and the new end."""
    with log.open("rb") as access:
        access.seek(start)
        text = access.read()
    found = {"state_requests": 0, "table_requests": 0}
    for match in _TABLE_REQUEST.finditer(text.decode("utf-8", "replace")):
        found["table_requests"] += 1
        found["state_requests"] += match.group(1) in ("$batch", "filecaststate")
    return found, start + len(text)


def run_upsert_case(rows: int, source: Path, work: Path) -> list[Sample]:
    """The four runs of the case, in order; a failure ends the case with an error on its sample."""
    database = working_copy(source, work / "db")
    samples = {side: Sample("upsert", side, rows) for side in SIDES}
    with Azurite.start(work / "azurite") as azurite:
        env = {**azure_env(azurite), "AzureWebJobsStorage": azurite.connection_string}
        log = azurite.log_path
        assert log is not None
        catalog = filecast_catalog(
            work,
            database,
            "csv",
            AZURE_DESTINATION,
            {
                "export": {"model": "bench", "destination": "out", "file_name": "full", "format": "csv"},
                "sync": sync_activation("upsert"),
            },
        )
        plan = [
            ("full", "export", None),
            ("upsert-first", "sync", "2025-04-01T06:00:00Z"),
            ("upsert-1%", "sync", "2025-04-02T06:00:00Z"),
            ("upsert-none", "sync", "2025-04-03T06:00:00Z"),
        ]
        expected: dict[str, int] = {}
        for side, activation, at in plan:
            sample = samples[side]
            try:
                if side == "upsert-1%":
                    expected = change_one_percent(database, rows)
                mark = log.stat().st_size
                done, record = filecast_run(catalog, activation, env, at)
                time.sleep(0.3)  # off the clock: Azurite logs a request just after answering it
                requests, _ = count_requests(log, mark)
                sample.detail.update(requests)
                print(
                    f"  {side}: {requests['state_requests']} state table requests, "
                    f"{requests['table_requests']} Table requests in all",
                    file=sys.stderr,
                    flush=True,
                )
                sample.seconds, sample.rss_mb = done.seconds, done.rss_mb
                sample.detail["run_s"] = run_seconds(record)
                exported = record["rows"]["exported"]
                # UPSERT exports new and changed rows; removals are DIFFERENCE's (README "sync modes")
                want = {"upsert-1%": expected.get("updated", 0) + expected.get("added", 0), "upsert-none": 0}.get(
                    side, rows
                )
                if exported != want:
                    raise VerifyError(f"the run exported {exported:,} rows, {want:,} expected ({record['rows']})")
                sample.detail["exported"] = exported
                for file in record["files"]:
                    verify_blobs(azurite.connection_string, file["path"], "csv", file["rows"], work)
            except VerifyError as exc:
                sample.error = str(exc)
                break
    return list(samples.values())
