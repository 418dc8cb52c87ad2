"""`make bench` / `python -m bench`: Filecast, dlt and the limit side by side, in one run.

    python -m bench [--rows 1000000] [--rounds 3] [--cases csv-azurite,parquet-azurite,...]
                    [--no-dlt] [--ci | --check] [--out bench/out/results.json]

Generates the 12-column benchmark table (bench/data.py) at `--rows` and writes the project's
bytecode (`compile_bytecode`: what an installed app runs from), then, `--rounds` times,
runs every side of every case (bench/cases.py) in a fresh process against a freshly started,
empty Azurite (or pyftpdlib), rotating the order of the sides each round so load from other
processes hits them alike. Each run's wall time and peak RSS (the kernel's VmHWM, through
`wait4`) are recorded and its output is read back. Prints the medians and the ratios against
the budgets of DESIGN.md §5, with the load average, and writes everything as JSON.

dlt runs from a venv of its own, `.bench/dlt`, created on first use (`dlt[az]` 1.31 from the
package index); `--no-dlt` leaves it out.

Exit status: 1 when a run fails or its output is wrong; with `--ci` also when a ratio is more
than 3 x its budget, with `--check` when any is over its budget; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import cases, report
from bench.data import ROOT, database
from bench.upsert_case import run_upsert_case

ALL_CASES = ("csv-azurite", "parquet-azurite", "ndjson-azurite", "csv-ftp", "memory", "upsert")
FORMATS = {"csv-azurite": "csv", "parquet-azurite": "parquet", "ndjson-azurite": "ndjson"}
DLT_REQUIREMENT = "dlt[az]==1.31.*"


def ensure_dlt() -> str | None:
    """Creates `.bench/dlt` when missing; returns why dlt cannot run, or None."""
    python = cases.dlt_python()
    if python.is_file():
        return None
    import duckdb
    import pyarrow

    print(f"creating {cases.DLT_VENV} with {DLT_REQUIREMENT} (once; about a minute)", file=sys.stderr, flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(cases.DLT_VENV)],
        [
            str(cases.DLT_VENV / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            DLT_REQUIREMENT,
            f"duckdb=={duckdb.__version__}",
            f"pyarrow=={pyarrow.__version__}",
        ],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(cases.DLT_VENV, ignore_errors=True)
            return f"`{' '.join(step[:3])}` failed: {done.stderr.strip().splitlines()[-1:]}"
    return None


def compile_bytecode() -> None:
    """Writes the bytecode of the project's own modules once, before anything is timed.

    An installed app runs from cached bytecode (`__pycache__`, written on first import or by the
    installer), and so does every library in the venv. With PYTHONDONTWRITEBYTECODE set, as in
    this sandbox and its CI, Python never writes it for a source checkout, so every fresh process
    would compile `core/` again (about 480 KB of source, 70 ms per run on these machines): a cost
    no deployed run pays more than once, and one the limit's single small module hardly has.
    Python still reads bytecode it finds, whatever that setting says.
    """
    import compileall

    for folder in ("core", "bench", "devtools"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def sides(case: str, rows: int, use_dlt: bool) -> list[tuple[str, int, Callable[[cases.Sample, Path], None]]]:
    """(side, rows, run) for one case; `run` fills the sample in."""
    if case in FORMATS:
        fmt, db = FORMATS[case], database(rows)
        found = [
            ("filecast", rows, lambda s, w: cases.filecast_azure(s, db, fmt, w)),
            ("limit", rows, lambda s, w: cases.limit_azure(s, db, fmt, w)),
        ]
        if use_dlt:
            found += [
                ("dlt-best", rows, lambda s, w: cases.dlt_azure(s, db, fmt, w, "best")),
                ("dlt-defaults", rows, lambda s, w: cases.dlt_azure(s, db, fmt, w, "defaults")),
            ]
        return found
    if case == "csv-ftp":
        db = database(rows)
        return [
            (side, rows, lambda s, w, side=side: cases.ftp_side(s, db, w, side))  # type: ignore[misc]
            for side in ("filecast", "limit")
        ]
    if case == "memory":
        found = []
        for fmt in ("csv", "parquet", "ndjson"):
            for side, n in ((fmt, rows), (f"{fmt}-tenth", max(rows // 10, 1))):
                found.append((side, n, lambda s, w, fmt=fmt, n=n: cases.filecast_azure(s, database(n), fmt, w)))
        for side, n in (("csv-ftp", rows), ("csv-ftp-tenth", max(rows // 10, 1))):
            found.append((side, n, lambda s, w, n=n: cases.ftp_side(s, database(n), w, "filecast")))
        for mode in ("upsert", "difference"):
            for side, n in ((mode, rows), (f"{mode}-tenth", max(rows // 10, 1))):
                found.append(
                    (side, n, lambda s, w, mode=mode, n=n: cases.filecast_sync_memory(s, database(n), mode, w))
                )
        return found
    raise SystemExit(f"unknown case `{case}`; cases are: {', '.join(ALL_CASES)}")


def run_round(index: int, chosen: list[str], rows: int, use_dlt: bool, session: Path) -> list[cases.Sample]:
    samples = []
    for case in chosen:
        work = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=session))
        if case == "upsert":
            found = run_upsert_case(rows, database(rows), work)
            samples += found
            for sample in found:
                _print(index, sample)
            shutil.rmtree(work, ignore_errors=True)
            continue
        order = sides(case, rows, use_dlt)
        shift = index % len(order)
        for side, n, run in order[shift:] + order[:shift]:
            sample = cases.Sample(case, side, n, detail={"load_1m": round(os.getloadavg()[0], 2)})
            side_work = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=work))
            try:
                run(sample, side_work)
            except (cases.VerifyError, Exception) as exc:  # a side that breaks is reported, the others still run
                sample.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, cases.VerifyError) else str(exc)
            shutil.rmtree(side_work, ignore_errors=True)
            samples.append(sample)
            _print(index, sample)
        shutil.rmtree(work, ignore_errors=True)
    return samples


def _print(index: int, sample: cases.Sample) -> None:
    what = (
        f"{sample.seconds:.2f} s, {sample.rss_mb:.0f} MB"
        if sample.error is None and sample.seconds is not None
        else f"FAILED: {sample.error}"
    )
    print(
        f"round {index + 1}: {sample.case} / {sample.side} ({sample.rows:,} rows): {what}", file=sys.stderr, flush=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="medians of this many interleaved rounds")
    parser.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated, of: {', '.join(ALL_CASES)}")
    parser.add_argument("--no-dlt", action="store_true", help="leave dlt out")
    parser.add_argument("--ci", action="store_true", help="fail only when a ratio is more than 3 x its budget")
    parser.add_argument("--check", action="store_true", help="fail when any ratio is over its budget")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "results.json")
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in ALL_CASES]
    if unknown or args.rows < 10 or args.rounds < 1:
        parser.error(
            f"unknown case `{unknown[0]}`; cases are: {', '.join(ALL_CASES)}"
            if unknown
            else "--rows must be at least 10 and --rounds at least 1"
        )
    # A stopped benchmark stops its services too: SIGTERM unwinds through their `with` blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tolerance = 3.0 if args.ci else 1.0
    dlt_note = "left out (--no-dlt)" if args.no_dlt else None
    if dlt_note is None and any(c in FORMATS for c in chosen):
        problem = ensure_dlt()
        if problem:
            dlt_note = f"left out: {problem}"
            print(f"NOTE: dlt {dlt_note}", file=sys.stderr)
    compile_bytecode()
    load_before = os.getloadavg()
    started = time.perf_counter()
    database(args.rows)
    samples: list[cases.Sample] = []
    with tempfile.TemporaryDirectory(prefix="filecast-bench-") as tmp:
        for index in range(args.rounds):
            samples += run_round(index, chosen, args.rows, dlt_note is None, Path(tmp))
    load_after = os.getloadavg()
    rows = [s.as_dict() for s in samples]
    m = report.medians(rows)
    found = report.checks(m)
    load = (
        f"load average {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} before, "
        f"{load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after, on {os.cpu_count()} cores"
    )
    print(f"\n{args.rows:,} rows, medians of {args.rounds} interleaved round(s), {load}\n")
    print(report.measurements_table(m) + "\n")
    print(report.checks_table(found, tolerance))
    if dlt_note:
        print(f"\ndlt: {dlt_note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "rows": args.rows,
                "rounds": args.rounds,
                "cases": chosen,
                "load_before": load_before,
                "load_after": load_after,
                "cores": os.cpu_count(),
                "seconds": round(time.perf_counter() - started, 1),
                "dlt": dlt_note or "ran",
                "samples": rows,
                "checks": [
                    {
                        "case": c.case,
                        "name": c.name,
                        "value": c.value,
                        "budget": c.budget,
                        "unit": c.unit,
                        "verdict": c.verdict(tolerance),
                    }
                    for c in found
                ],
            },
            indent=2,
        )
    )
    print(f"\nwritten: {args.out}")
    errors = [s for s in samples if s.error]
    if errors:
        print(f"{len(errors)} run(s) failed", file=sys.stderr)
        return 1
    if args.ci or args.check:
        bad = (
            report.failed(found, tolerance)
            if args.ci
            else [c for c in found if c.verdict(1.0) != "ok" and c.verdict(1.0) != "info"]
        )
        for check in bad:
            print(f"over budget: {check.case}: {check.name}", file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
