"""pyarrow's implicit pandas import stays out of a run (core/write/arrow_memory.py).

Each check runs in a fresh interpreter: whether pandas is imported is process state. pandas is a
development dependency only; without it there is nothing to keep out.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers import fresh_python

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")


def test_a_csv_encoding_does_not_import_pandas_and_an_explicit_import_still_works() -> None:
    out = fresh_python("""
        import sys
        import pyarrow as pa
        import pyarrow.compute as pc
        from core.write.arrow_memory import use_lean_pool
        from core.write.formats.csv import CsvWriter
        from core.write.formats.ndjson import NdjsonWriter
        use_lean_pool()
        batch = pa.record_batch({"n": pa.array([1.5, None]), "s": pa.array(['a"b', None])})
        csv = CsvWriter(batch.schema)
        body = csv.begin() + csv.write(batch) + NdjsonWriter(batch.schema).write(batch)
        pa.scalar(1); pc.fill_null(batch.column(0), 0.0); pa.schema([("x", pa.int8())]).empty_table()
        print("pandas" in sys.modules, body)
        import pandas
        print("pandas" in sys.modules, pa.table({"x": [1, 2]}).to_pandas()["x"].tolist())
    """)
    assert out.splitlines() == [
        "False " + repr(b'"n","s"\n1.5,"a""b"\n,\n{"n":1.5,"s":"a\\"b"}\n{"n":null,"s":null}\n'),
        "True [1, 2]",
    ]


def test_pandas_imported_before_the_run_is_used_as_before() -> None:
    out = fresh_python("""
        import sys
        import pandas
        import pyarrow as pa
        from core.write.arrow_memory import use_lean_pool
        use_lean_pool()
        print(pa.array(pandas.Series([1, 2])).to_pylist(), type(pa.table({"x": [1]}).to_pandas()).__name__)
    """)
    assert out == "[1, 2] DataFrame"
