"""Benchmark of delta detection: fingerprints + diff + packed state in Table Storage (Azurite).

    python bench/delta.py --rows 1000000 [--mode upsert|insert|difference] [--batch-rows 65536]

Starts Azurite, then runs fresh processes so each peak RSS is its own: `full` (the first run:
every row added, state written, staged and committed), `delta` (the measured run: 1 % of the rows
updated in a mapped column, 0.5 % added, 0.5 % removed), `inflight` (another 1 % updated; its
generation is staged, as before publishing, and never committed, as when the process dies after
publishing) and `after` (the source back to `delta`'s: the run that follows an in-flight
generation, comparing against it and sending its uncertain rows again). Each run does what the
engine does: load, classify, write, stage, commit, cleanup. Data is a 12-column mixed table
generated batch by batch (never whole). Prints hash, diff, state read and write times, Table
requests, total and peak RSS per phase; budgets at 1 M rows: ≤ 3 s and ≤ 30 Table requests;
≤ 25 s at 10 M; peak RSS ≤ 512 MB at 10 M.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class _NoPandas(importlib.abc.MetaPathFinder):
    """pandas is a dev-only dependency (not in requirements.txt), but pyarrow imports it lazily when
    installed (~40 MB of RSS): the measured processes hide it, so peak RSS is the Function App's."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by bench/delta.py)")


if "--phase" in sys.argv and "--allow-pandas" not in sys.argv:
    sys.meta_path.insert(0, _NoPandas())

from core.delta.diff import Differ  # noqa: E402
from core.delta.fingerprint import fingerprint_batch  # noqa: E402
from core.state.table_storage import RequestCounter, TableStorageStateStore  # noqa: E402

COLUMNS = [
    "id",
    "name",
    "email",
    "country",
    "age",
    "score",
    "balance",
    "active",
    "created_at",
    "birth_date",
    "plan",
    "notes",
]
COUNTRIES = pa.array(["FR", "DE", "ES", "IT", "US", "GB", "BE", "NL"])
PLANS = pa.array(["free", "pro", "team"])


def make_batch(ids: np.ndarray, version: np.ndarray) -> pa.RecordBatch:
    """Deterministic rows for `ids`; `version` changes the mapped values of a row (an update)."""
    mix = (ids * 2654435761 + version * 97) & 0xFFFFFFFF
    text_id = pc.cast(pa.array(ids), pa.string())
    cents = (mix % 1_000_000) - 500_000
    raw = np.empty((len(ids), 2), np.int64)
    raw[:, 0], raw[:, 1] = cents, np.where(cents < 0, -1, 0)
    notes = pc.binary_join_element_wise(
        "note about this customer, version ", pc.cast(pa.array(version), pa.string()), ""
    )
    return pa.record_batch(
        {
            "id": pa.array(ids),
            "name": pc.binary_join_element_wise("customer-", text_id, ""),
            "email": pc.binary_join_element_wise("user", text_id, "@example.com", ""),
            "country": COUNTRIES.take(pa.array(mix % 8)),
            "age": pa.array((18 + mix % 70).astype(np.int32), mask=(mix % 23 == 0)),
            "score": pa.array((mix % 10_000) / 7.0),
            "balance": pa.Array.from_buffers(pa.decimal128(12, 2), len(ids), [None, pa.py_buffer(raw)]),
            "active": pa.array(mix % 2 == 0),
            "created_at": pa.array(1_600_000_000_000_000 + ids * 1_000_003, pa.timestamp("us", tz="UTC")),
            "birth_date": pa.array((mix % 20_000).astype(np.int32), pa.date32()),
            "plan": PLANS.take(pa.array(mix % 3)),
            "notes": pc.if_else(pa.array(mix % 5 == 0), pa.scalar(None, pa.string()), notes),
        }
    )


def source(rows: int, phase: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The full run sees ids 0..rows-1; the delta run (and `after`) drops 0.5 %, updates 1 %, adds
    0.5 %; `inflight` updates another 1 %."""
    spread = lambda ids: (ids * 0x9E3779B1) % 1000  # noqa: E731 - a fixed scatter of the changes
    changed = phase != "full"
    for start in range(0, rows + (rows // 200 if changed else 0), batch_rows):
        ids = np.arange(start, min(start + batch_rows, rows + (rows // 200 if changed else 0)), dtype=np.int64)
        version = np.zeros(len(ids), np.int64)
        if changed:
            bucket = spread(ids)
            ids, version = ids[(bucket >= 5) | (ids >= rows)], version[(bucket >= 5) | (ids >= rows)]
            version[(spread(ids) >= 10) & (spread(ids) < 20) & (ids < rows)] = 1
            if phase == "inflight":
                version[(spread(ids) >= 20) & (spread(ids) < 30) & (ids < rows)] = 1
        yield make_batch(ids, version)


def run_phase(args: argparse.Namespace) -> dict[str, object]:
    counter = RequestCounter()
    store = TableStorageStateStore.from_connection_string(
        args.connection_string, table_name="benchstate", container_name="bench-state", table_hook=counter
    )
    timings = dict.fromkeys(("generate", "hash", "diff", "state_read", "state_write", "cleanup"), 0.0)
    cpu = dict.fromkeys(timings, 0.0)
    marks = {"cpu": 0.0}

    def timed(name: str, start: float) -> None:
        """Wall time per step, and this process's CPU time (all threads; Azurite's not included)."""
        timings[name] += time.perf_counter() - start
        now = time.process_time()
        cpu[name] += now - marks["cpu"]
        marks["cpu"] = now

    marks["cpu"] = time.process_time()

    t = time.perf_counter()
    snapshot = store.load("bench")
    generation = store.begin("bench")
    timed("state_read", t)
    pending = snapshot.pending
    differ = Differ(snapshot.entries if snapshot.info else None, args.mode, pending=pending, key_columns=["id"])
    batches = source(args.rows, args.phase, args.batch_rows)
    value_columns = None if args.mode == "insert" else COLUMNS
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        timed("generate", t)
        if batch is None:
            break
        t = time.perf_counter()
        fp = fingerprint_batch(batch, ["id"], value_columns)
        timed("hash", t)
        t = time.perf_counter()
        differ.classify(fp, batch)
        timed("diff", t)
    t = time.perf_counter()
    summary = differ.finish()
    timed("diff", t)
    t = time.perf_counter()
    info = store.write("bench", generation, summary.new_state(), meta={"mode": args.mode})
    staged = store.stage(info, snapshot)  # in flight: the engine publishes the files now
    if args.phase != "inflight":  # the in-flight run "dies" after publishing: no commit
        store.commit(info, staged)
    timed("state_write", t)  # includes building the new state's sorted chunks, staging and committing
    t = time.perf_counter()
    if args.phase != "inflight":
        store.cleanup("bench")
    timed("cleanup", t)
    store.close()
    total = sum(v for k, v in timings.items() if k != "generate")
    return {
        "phase": args.phase,
        "after_in_flight": pending,
        "rows": args.rows,
        "counts": summary.counts,
        "state_rows": info.rows,
        **{k: round(v, 3) for k, v in timings.items()},
        "total": round(total, 3),
        "cpu_total": round(sum(v for k, v in cpu.items() if k != "generate"), 3),
        "cpu": {k: round(v, 3) for k, v in cpu.items()},
        "load_average": round(os.getloadavg()[0], 1),
        "table_requests": counter.count,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=65_536)  # core.read.sources.base.BATCH_ROWS
    parser.add_argument("--mode", choices=["insert", "upsert", "difference"], default="upsert")
    parser.add_argument("--phase", choices=["full", "delta", "inflight", "after"], help=argparse.SUPPRESS)
    parser.add_argument("--connection-string", help=argparse.SUPPRESS)
    parser.add_argument("--allow-pandas", action="store_true", help="let pyarrow import pandas (dev venv RSS)")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)))
        return

    from devtools.services import Azurite

    with tempfile.TemporaryDirectory() as tmp, Azurite.start(Path(tmp)) as azurite:
        results = []
        for phase in ("full", "delta", "inflight", "after"):
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--phase",
                phase,
                "--rows",
                str(args.rows),
                "--batch-rows",
                str(args.batch_rows),
                "--mode",
                args.mode,
                "--connection-string",
                azurite.connection_string,
                *(["--allow-pandas"] if args.allow_pandas else []),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{phase} phase failed:\n{done.stderr}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"delta detection, {args.rows:,} rows, mode {args.mode}, batches of {args.batch_rows:,}")
    print(
        f"{'phase':<8} {'hash':>7} {'diff':>7} {'read':>7} {'write':>7} {'cleanup':>8} {'total':>7} "
        f"{'cpu':>7} {'requests':>9} {'peak RSS':>9} {'load':>5}  counts"
    )
    for r in results:
        counts = {k: v for k, v in r["counts"].items() if v}
        print(
            f"{r['phase']:<8} {r['hash']:>6.2f}s {r['diff']:>6.2f}s {r['state_read']:>6.2f}s "
            f"{r['state_write']:>6.2f}s {r['cleanup']:>7.2f}s {r['total']:>6.2f}s {r['cpu_total']:>6.2f}s "
            f"{r['table_requests']:>9} {r['peak_rss_mb']:>6} MB {r['load_average']:>5}  {counts}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
