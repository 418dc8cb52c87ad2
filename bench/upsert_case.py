"""The UPSERT case: a delta run after 1 % of the rows changed, and one after no change, against a
full export of the same data. All through the CLI, each run a fresh process, one Azurite for the
whole case (the delta state lives in its Table service between the runs).

Changes, on a working copy of the table: 0.5 % updated (`quantity`), 0.25 % removed, 0.25 % added.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from bench.cases import CONTAINER, Sample, VerifyError, azure_env, filecast_catalog, filecast_run, verify_blobs
from bench.data import TABLE, working_copy
from devtools.services import Azurite

SIDES = ("full", "upsert-first", "upsert-1%", "upsert-none")


def change_one_percent(database: Path, rows: int) -> dict[str, int]:
    """Applies the changes; returns how many rows of each kind a delta run must export."""
    with duckdb.connect(str(database)) as con:
        def count(where: str) -> int:
            found = con.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}").fetchone()
            return int(found[0]) if found else 0

        expected = {"updated": count("id % 200 = 0"), "removed": count("id % 400 = 1"),
                    "added": count("id % 400 = 2")}
        con.execute(f"UPDATE {TABLE} SET quantity = quantity + 1 WHERE id % 200 = 0")
        con.execute(f"DELETE FROM {TABLE} WHERE id % 400 = 1")
        con.execute(f"INSERT INTO {TABLE} SELECT * REPLACE (id + {rows} AS id) FROM {TABLE} WHERE id % 400 = 2")
    return expected


def run_upsert_case(rows: int, source: Path, work: Path) -> list[Sample]:
    """The four runs of the case, in order; a failure ends the case with an error on its sample."""
    database = working_copy(source, work / "db")
    samples = {side: Sample("upsert", side, rows) for side in SIDES}
    with Azurite.start(work / "azurite") as azurite:
        env = {**azure_env(azurite), "AzureWebJobsStorage": azurite.connection_string}
        destination = {"type": "azure_blob", "container": CONTAINER, "connection_setting": "BENCH_STORAGE",
                       "create_container": True}
        catalog = filecast_catalog(work, database, "csv", destination, {
            "export": {"model": "bench", "destination": "out", "file_name": "full", "format": "csv"},
            "sync": {"model": "bench", "destination": "out", "file_name": "sync_{run_id}", "format": "csv",
                     "run_type": "full_then_delta", "sync_mode": "upsert"}})
        plan = [("full", "export", None), ("upsert-first", "sync", "2025-04-01T06:00:00Z"),
                ("upsert-1%", "sync", "2025-04-02T06:00:00Z"), ("upsert-none", "sync", "2025-04-03T06:00:00Z")]
        expected: dict[str, int] = {}
        for side, activation, at in plan:
            sample = samples[side]
            try:
                if side == "upsert-1%":
                    expected = change_one_percent(database, rows)
                done, record = filecast_run(catalog, activation, env, at)
                sample.seconds, sample.rss_mb = done.seconds, done.rss_mb
                exported = record["rows"]["exported"]
                # UPSERT exports new and changed rows; removals are DIFFERENCE's (README "sync modes")
                want = {"upsert-1%": expected.get("updated", 0) + expected.get("added", 0),
                        "upsert-none": 0}.get(side, rows)
                if exported != want:
                    raise VerifyError(f"the run exported {exported:,} rows, {want:,} expected ({record['rows']})")
                sample.detail["exported"] = exported
                for file in record["files"]:
                    verify_blobs(azurite.connection_string, file["path"], "csv", file["rows"], work)
            except VerifyError as exc:
                sample.error = str(exc)
                break
    return list(samples.values())
