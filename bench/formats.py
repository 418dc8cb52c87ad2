"""Benchmark of the Filecast format writers against native writers, measured in the same run.

    python bench/formats.py [--rows 1000000] [--batch-rows 50000] [--repeat N] [--formats csv,json]
                            [--check] [--workdir DIR]

The data set (DESIGN.md §5) has 12 columns, generated deterministically (seeded per batch, so a
prefix of a 10 M-row set equals the 1 M-row set) and streamed to an Arrow IPC file once:

    id           int64             row number, never NULL
    account_id   int32             random, 10 % NULL
    quantity     int16             random in [-1000, 30000)
    price        float64           random with two decimals, 5 % NULL
    weight       float32           random in [0, 100)
    amount       decimal128(12,2)  random in ±1e9
    name         string            first + last name; ~10 % need CSV quoting or JSON/XML escaping
                                   (comma, quote, newline, `<&>`), many non-ASCII (é, ü, 田中)
    email        string            ASCII, lower case
    country      string            two letters, 5 % NULL
    signup_date  date32            2020-01-01 + up to 2000 days
    updated_at   timestamp[us,UTC] 2020–2025
    active       bool              10 % NULL

Each measurement runs in a fresh child process. The Filecast child reads the IPC file batch by
batch (plain reads, not a memory map, so its peak RSS is the writer's), feeds the writer and
writes its bytes to a file; its time covers the writer calls and the file writes, not the reads.
Its peak RSS is `ru_maxrss`. The reference child memory-maps the same file (zero-copy) and runs:

    csv      pyarrow.csv.CSVWriter, batch by batch
    parquet  DuckDB COPY … (FORMAT PARQUET, COMPRESSION zstd): the same codec as Filecast's default
    json     DuckDB COPY … (FORMAT JSON, ARRAY true)
    ndjson   DuckDB COPY … (FORMAT JSON)
    xml      DuckDB building the same XML text in SQL (concat skips NULL elements, replace escapes),
             streamed out as Arrow batches and written

Both children hide pandas, as the Function App does not ship it: pyarrow imports it lazily on the
first Python-to-Arrow scalar conversion when it is installed (about 0.2 s and 60 MB once per
process), which would bill a development-only dependency to whichever side touches it first.

`--check` exits 1 when a budget of DESIGN.md §5 is exceeded: time and size ratios, peak RSS
≤ 300 MB, and, when more than 1 M rows are written, RSS growth ≤ 30 MB over a 1 M-row run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("csv", "parquet", "json", "ndjson", "xml")
TIME_BUDGET = {"csv": 1.5, "parquet": 1.75, "json": 1.3, "ndjson": 1.3, "xml": 1.3}
SIZE_BUDGET = {"parquet": 1.1}
RSS_BUDGET_MB, RSS_GROWTH_MB = 300, 30  # DESIGN.md §5
REFERENCE = {
    "csv": "pyarrow CSVWriter",
    "parquet": "DuckDB COPY PARQUET zstd",
    "json": "DuckDB COPY JSON ARRAY",
    "ndjson": "DuckDB COPY JSON",
    "xml": "DuckDB SQL XML text",
}
FIRST = [
    "Anna",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Émile",
    "Fatima",
    "Gao",
    "Hélène",
    "Ines",
    "José",
    "Kai",
    "Léa",
    "Mohammed",
    "Nora",
    "Oscar",
    "Pierre",
    "Quentin",
    "Rosa",
    "Søren",
    "Tomás",
    "Uma",
    "Victor",
    "Wei",
    "Yuki",
]
LAST = [
    "Martin",
    "Bernard",
    "O'Brien",
    "Dubois",
    "Smith, Jr.",
    "Müller",
    "Nguyen",
    "García",
    "Rossi",
    "Kowalski",
    "Li",
    "Johansson",
    'Said "The Hawk"',
    "Dupont\nLine2",
    "Tom & Jerry <co>",
    "Ivanov",
    "Lopez",
    "Schmidt",
    "田中",
    "Moreau",
    "Ali",
    "Petit",
    "Roux",
    "Fournier",
    "Girard",
    "Bonnet",
    "Lambert",
    "Fontaine",
    "Rousseau",
]
COUNTRIES = ["FR", "DE", "ES", "IT", "GB", "US", "NL", "BE", "PL", "SE"]


def hide_pandas() -> None:
    """Make `import pandas` fail in this process (see the module docstring)."""
    import importlib.abc

    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> None:
            if name.partition(".")[0] == "pandas":
                raise ImportError("pandas is hidden: the Function App does not ship it")

    sys.meta_path.insert(0, _Hide())


# -- data -------------------------------------------------------------------------------------------
def make_batch(start: int, rows: int, seed: int) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng([seed, start])

    def nulls(share: float) -> Any:
        return rng.random(rows) < share

    ids = np.arange(start, start + rows, dtype=np.int64)
    cents = rng.integers(-(10**11), 10**11, rows, dtype=np.int64)
    words = np.empty(2 * rows, dtype=np.int64)
    words[0::2], words[1::2] = cents, np.where(cents < 0, -1, 0)  # little-endian 128-bit integers
    first = pa.array(FIRST).take(pa.array(rng.integers(0, len(FIRST), rows)))
    last = pa.array(LAST).take(pa.array(rng.integers(0, len(LAST), rows)))
    country = pa.array(COUNTRIES).take(pa.array(rng.integers(0, len(COUNTRIES), rows)))
    micros = 1_577_836_800_000_000 + rng.integers(0, 5 * 365 * 86_400 * 10**6, rows)
    columns = {
        "id": pa.array(ids),
        "account_id": pa.array(rng.integers(1, 2_000_000_000, rows, dtype=np.int32), mask=nulls(0.1)),
        "quantity": pa.array(rng.integers(-1000, 30000, rows, dtype=np.int16)),
        "price": pa.array(np.round(rng.random(rows) * 1000, 2), mask=nulls(0.05)),
        "weight": pa.array(rng.random(rows).astype(np.float32) * 100),
        "amount": pa.Array.from_buffers(pa.decimal128(12, 2), rows, [None, pa.py_buffer(words.tobytes())]),
        "name": pc.binary_join_element_wise(first, last, " "),
        "email": pc.binary_join_element_wise(
            pc.utf8_lower(first), pc.cast(pa.array(ids), pa.string()), "@example.com", ""
        ),
        "country": pc.if_else(pa.array(nulls(0.05)), pa.scalar(None, pa.string()), country),
        "signup_date": pa.array((18262 + rng.integers(0, 2000, rows)).astype(np.int32)).cast(pa.date32()),
        "updated_at": pa.array(micros, pa.int64()).cast(pa.timestamp("us", "UTC")),
        "active": pa.array(rng.random(rows) < 0.5, mask=nulls(0.1)),
    }
    return pa.record_batch(columns)


def generate(path: Path, rows: int, batch_rows: int, seed: int) -> None:
    import pyarrow as pa

    first = make_batch(0, min(batch_rows, rows), seed)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, first.schema) as out:
        out.write_batch(first)
        for start in range(batch_rows, rows, batch_rows):
            out.write_batch(make_batch(start, min(batch_rows, rows - start), seed))


def read_batches(path: Path, limit: int | None) -> Iterator[Any]:
    import pyarrow as pa

    reader = pa.ipc.open_file(pa.OSFile(str(path)))
    left = limit if limit is not None else sys.maxsize
    for i in range(reader.num_record_batches):
        if left <= 0:
            return
        batch = reader.get_batch(i)
        batch = batch.slice(0, left) if batch.num_rows > left else batch
        left -= batch.num_rows
        yield batch


# -- children ---------------------------------------------------------------------------------------
def text_bytes(column: Any) -> bytes:
    """The characters of a string column, back to back (each XML row already ends with `\\n`)."""
    import pyarrow as pa

    column = column.cast(pa.string())
    _, offsets, data = column.buffers()
    bounds = pa.Array.from_buffers(pa.int32(), len(column) + 1, [None, offsets], offset=column.offset)
    return data[bounds[0].as_py() : bounds[len(column)].as_py()].to_pybytes() if len(column) else b""


def xml_sql(schema: Any) -> str:
    """DuckDB SQL that builds the Filecast XML text of each row (NULL elements skipped by concat)."""
    import pyarrow.types as pat

    parts = []
    for field in schema:
        column = f'"{field.name}"'
        if pat.is_string(field.type):
            value = (
                f"replace(replace(replace(replace({column}, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), "
                "chr(13), '&#13;')"
            )
        elif pat.is_timestamp(field.type):
            value = f"strftime({column}::TIMESTAMP, '%Y-%m-%dT%H:%M:%S.%fZ')"
        else:
            value = f"CAST({column} AS VARCHAR)"
        parts.append(f"'<{field.name}>' || {value} || '</{field.name}>'")
    return f"SELECT concat('<row>', {', '.join(parts)}, '</row>' || chr(10)) AS x FROM data"


def run_reference(fmt: str, data: Path, out: Path, limit: int | None) -> dict[str, Any]:
    import duckdb
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.ipc.open_file(pa.memory_map(str(data))).read_all()
    if limit is not None:
        table = table.slice(0, limit)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("data", table)
    started = time.perf_counter()
    if fmt == "csv":
        with pacsv.CSVWriter(str(out), table.schema) as writer:
            for batch in table.to_batches():
                writer.write_batch(batch)
    elif fmt == "parquet":
        con.execute(f"COPY (SELECT * FROM data) TO '{out}' (FORMAT PARQUET, COMPRESSION zstd)")
    elif fmt in ("json", "ndjson"):
        array = "true" if fmt == "json" else "false"
        con.execute(f"COPY (SELECT * FROM data) TO '{out}' (FORMAT JSON, ARRAY {array})")
    else:
        with open(out, "wb") as sink:
            sink.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<rows>\n')
            for batch in con.sql(xml_sql(table.schema)).to_arrow_reader(100_000):
                sink.write(text_bytes(batch.column(0)))
            sink.write(b"</rows>\n")
    return {"seconds": time.perf_counter() - started, "bytes": out.stat().st_size}


def run_filecast(fmt: str, data: Path, out: Path, limit: int | None) -> dict[str, Any]:
    import resource

    sys.path.insert(0, str(ROOT))
    from core.write.formats import writer_for

    batches = read_batches(data, limit)
    first = next(batches)
    writer_class = writer_for(fmt)
    with open(out, "wb") as sink:
        started = time.perf_counter()
        writer = writer_class(first.schema, {})
        sink.write(writer.begin())
        sink.write(writer.write(first))
        elapsed = time.perf_counter() - started
        for batch in batches:
            started = time.perf_counter()
            sink.write(writer.write(batch))
            elapsed += time.perf_counter() - started
        started = time.perf_counter()
        sink.write(writer.end())
        elapsed += time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": elapsed, "bytes": out.stat().st_size, "rss_mb": rss_mb}


def child(kind: str, fmt: str, data: Path, out: Path, limit: int | None) -> dict[str, Any]:
    """Runs one measurement in a fresh interpreter and returns what it printed."""
    command = [sys.executable, __file__, "--child", kind, "--formats", fmt, "--data", str(data), "--out", str(out)]
    if limit is not None:
        command += ["--limit", str(limit)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} child for {fmt} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    return result


# -- main -------------------------------------------------------------------------------------------
def measure(fmt: str, data: Path, workdir: Path, rows: int, repeat: int, check: bool) -> dict[str, Any]:
    best_ref: dict[str, Any] | None = None
    best_fc: dict[str, Any] | None = None
    for _ in range(repeat):  # interleaved, so load from other processes hits both sides alike
        ref = child("reference", fmt, data, workdir / f"reference.{fmt}", None)
        fc = child("filecast", fmt, data, workdir / f"filecast.{fmt}", None)
        best_ref = ref if best_ref is None or ref["seconds"] < best_ref["seconds"] else best_ref
        peak = max(fc["rss_mb"], best_fc["rss_mb"]) if best_fc else fc["rss_mb"]
        best_fc = fc if best_fc is None or fc["seconds"] < best_fc["seconds"] else best_fc
        best_fc["rss_mb"] = peak
    assert best_ref is not None and best_fc is not None
    result = {
        "format": fmt,
        "rows": rows,
        "filecast_s": best_fc["seconds"],
        "reference": REFERENCE[fmt],
        "reference_s": best_ref["seconds"],
        "ratio": best_fc["seconds"] / best_ref["seconds"],
        "size_ratio": best_fc["bytes"] / best_ref["bytes"],
        "rss_mb": best_fc["rss_mb"],
        "filecast_bytes": best_fc["bytes"],
        "reference_bytes": best_ref["bytes"],
    }
    if check and rows > 1_000_000:
        result["rss_1m_mb"] = child("filecast", fmt, data, workdir / f"filecast.{fmt}", 1_000_000)["rss_mb"]
    return result


def verdicts(result: dict[str, Any]) -> list[str]:
    fmt, failures = result["format"], []
    if result["ratio"] > TIME_BUDGET[fmt]:
        failures.append(f"time ratio {result['ratio']:.2f} > {TIME_BUDGET[fmt]}")
    if fmt in SIZE_BUDGET and result["size_ratio"] > SIZE_BUDGET[fmt]:
        failures.append(f"size ratio {result['size_ratio']:.2f} > {SIZE_BUDGET[fmt]}")
    if result["rss_mb"] > RSS_BUDGET_MB:
        failures.append(f"peak RSS {result['rss_mb']:.0f} MB > {RSS_BUDGET_MB} MB")
    if "rss_1m_mb" in result and result["rss_mb"] - result["rss_1m_mb"] > RSS_GROWTH_MB:
        failures.append(f"RSS grew {result['rss_mb'] - result['rss_1m_mb']:.0f} MB from 1 M rows")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=None, help="runs per side, best kept (default 3, 1 above 2 M)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--check", action="store_true", help="exit 1 if a budget is exceeded")
    parser.add_argument("--workdir", type=Path, help="keep the generated data here (reused when present)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", choices=["reference", "filecast"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        hide_pandas()
        run = run_reference if args.child == "reference" else run_filecast
        print(json.dumps(run(args.formats, args.data, args.out, args.limit)))
        return 0

    formats = [f for f in args.formats.split(",") if f]
    repeat = args.repeat or (3 if args.rows <= 2_000_000 else 1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="filecast-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"data-{args.rows}-{args.batch_rows}-{args.seed}.arrow"
    if not data.exists():
        started = time.perf_counter()
        generate(data, args.rows, args.batch_rows, args.seed)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s: {data}", file=sys.stderr)

    results, failed = [], False
    header = (
        f"{'format':8} {'rows':>11} {'filecast s':>10} {'reference s':>11} {'ratio':>6} {'budget':>6} "
        f"{'size':>6} {'RSS MB':>7}  reference"
    )
    print(header)
    for fmt in formats:
        result = measure(fmt, data, workdir, args.rows, repeat, args.check)
        failures = verdicts(result)
        failed = failed or bool(failures)
        results.append({**result, "failures": failures})
        rss = f"{result['rss_mb']:.0f}" + (f" ({result['rss_1m_mb']:.0f} at 1 M)" if "rss_1m_mb" in result else "")
        print(
            f"{fmt:8} {args.rows:>11,} {result['filecast_s']:>10.2f} {result['reference_s']:>11.2f} "
            f"{result['ratio']:>6.2f} {TIME_BUDGET[fmt]:>6} {result['size_ratio']:>6.2f} {rss:>7}  "
            f"{result['reference']}" + (f"  FAIL: {'; '.join(failures)}" if failures else ""),
            flush=True,
        )
    if args.json:
        print(json.dumps(results, indent=2))
    if not args.workdir:
        data.unlink(missing_ok=True)
        os.rmdir(workdir)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
