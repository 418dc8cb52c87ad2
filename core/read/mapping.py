"""Mapping: select and rename columns of record batches (Arrow column selection, no row loop)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from ..catalog.columns import mapping_problems, require
from ..catalog.model import MappedColumn


class Mapper:
    """Applies an activation's mapping to batches of one source schema; a mapped column the schema
    lacks raises `SchemaMismatch`."""

    def __init__(self, schema: pa.Schema, mapping: Sequence[MappedColumn] | None, *, where: str = "mapping"):
        columns = schema.names
        if mapping is None:
            mapping = [MappedColumn(name, name) for name in columns]
        require(mapping_problems(mapping, columns, where))
        self.indices = [columns.index(c.source) for c in mapping]
        self.source_names = [c.source for c in mapping]
        self.schema = pa.schema(
            [schema.field(i).with_name(c.target) for i, c in zip(self.indices, mapping, strict=True)],
            metadata=None,
        )

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([batch.column(i) for i in self.indices], schema=self.schema)
