"""The benchmark table: the 12 mixed columns of `bench/formats.py` (DESIGN.md §5) in a DuckDB file.

Generated once per row count and kept under `.bench/data/` (gitignored): the generator is
deterministic (seeded per batch), so a cached file is the same data. The table is called `bench`;
`updated_at` is a TIMESTAMPTZ (UTC), `amount` a DECIMAL(12,2).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench" / "data"
TABLE = "bench"
SEED = 42
BATCH_ROWS = 100_000
VERSION = 1  # bump when the generator changes, so cached files are rebuilt


def _batches(rows: int) -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    from bench.formats import make_batch

    for start in range(0, rows, BATCH_ROWS):
        yield make_batch(start, min(BATCH_ROWS, rows - start), SEED)


def database(rows: int, cache: Path = CACHE) -> Path:
    """The path of a DuckDB file holding `rows` rows of the benchmark table (built when missing)."""
    import pyarrow as pa

    path = cache / f"bench-v{VERSION}-{rows}.duckdb"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    first = next(_batches(min(rows, BATCH_ROWS)))
    reader = pa.RecordBatchReader.from_batches(first.schema, _batches(rows))
    with duckdb.connect(str(partial)) as con:
        con.execute("SET TimeZone='UTC'")
        con.register("source", reader)
        con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM source")
        count = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    assert count is not None and count[0] == rows, f"generated {count} rows, wanted {rows}"
    partial.rename(path)
    print(
        f"generated {rows:,} rows of the benchmark table in {time.perf_counter() - started:.1f} s: {path}",
        file=sys.stderr,
        flush=True,
    )
    return path


def working_copy(source: Path, folder: Path) -> Path:
    """A copy a case may change (the UPSERT case updates 1 % of the rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copyfile(source, target)
    return target
