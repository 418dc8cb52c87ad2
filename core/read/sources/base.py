"""The source seam: a model query becomes a stream of Arrow record batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import pyarrow as pa

BATCH_ROWS = 65_536
Where = Mapping[str, Any] | None  # a segment's filter tree (core.read.segments), or None for the whole model


class Source(Protocol):
    """A warehouse connection. `sql` is the model query; `where`, when given, narrows it to a segment,
    compiled by the source in its own dialect with bound parameters."""

    def schema(self, sql: str, where: Where = None) -> pa.Schema:
        """The result schema, without reading the rows (a segment narrows rows, never columns, so
        `where` does not change it). Check a segment against it with `core.catalog.columns.segment_problems`."""

    def batches(self, sql: str, where: Where = None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Stream the result in record batches (blocking: the engine calls it from a thread).
        Raises `CatalogInvalid` when `where` names unknown columns or values of the wrong type."""

    def close(self) -> None: ...
