"""NDJSON (newline-delimited JSON): one JSON object per line, `\\n` after every line.

Values follow the JSON-family rules of `json.py`; strings never contain a raw line break (it is
escaped), so every line is exactly one row. An empty result is an empty file.
"""

from __future__ import annotations

import pyarrow as pa

from .base import FormatSpec
from .json import JsonWriter
from .text import run_sliced


class NdjsonWriter(JsonWriter):
    spec = FormatSpec(
        name="ndjson",
        extension="ndjson",
        media_type="application/x-ndjson",
        text=True,
        options=frozenset({"decimals_as_strings"}),
    )
    row_before = ""
    row_after = "\n"

    def begin(self) -> bytes:
        return b""

    def write(self, batch: pa.RecordBatch) -> bytes:
        if batch.num_rows == 0:
            return b""
        return run_sliced(batch, self._encode)

    def end(self) -> bytes:
        return b""
