"""The writer interface every file format implements.

A writer turns Arrow record batches into the bytes of one file, as a stream: `begin()` gives the
bytes before the first row (a CSV header, `[`, `<rows>`), `write(batch)` the bytes of those rows,
`end()` the bytes that close the file. A writer object serves exactly one file (one part); the
spool makes a new one per part. Writers are synchronous and CPU-bound; the engine runs them off
the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class FormatSpec:
    name: str  # the catalog's `format` value
    extension: str  # without the dot
    media_type: str  # Content-Type of the published file
    text: bool  # text formats may be gzipped; binary ones have their own codecs
    options: frozenset[str] = frozenset()  # keys allowed in the activation's `<format>:` section


class Writer(ABC):
    """Encodes record batches of one schema into the bytes of one file."""

    spec: ClassVar[FormatSpec]

    #: Whether a caller may drop the bytes one `write()` returned, close the file with `end()`,
    #: and still have a valid file without those rows (the spool does this when a batch does not
    #: fit in a part). True for the text formats, whose rows stand alone. False for Parquet: it
    #: buffers rows into row groups and its footer indexes every group written, so a part
    #: boundary has to be chosen before the batch is written (see `pending_bytes`).
    retractable: ClassVar[bool] = True

    def __init__(self, schema: pa.Schema, options: Mapping[str, Any] | None = None):
        self.schema = schema
        self.options = dict(options or {})

    @classmethod
    def option_problems(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems with the format options, as (option name, message); checked by validation."""
        return [
            (key, f"unknown option `{key}`; {cls.spec.name} options are: {', '.join(sorted(cls.spec.options))}")
            for key in options
            if key not in cls.spec.options
        ]

    @classmethod
    def prepare_schema(cls, schema: pa.Schema, options: Mapping[str, Any]) -> list[str]:
        """Problems the format has with the (mapped) columns, e.g. XML name collisions."""
        return []

    def begin(self) -> bytes:
        return b""

    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> bytes:
        """Encode the rows of `batch`."""

    def end(self) -> bytes:
        return b""

    def warnings(self) -> list[tuple[str, str]]:
        """(code, message) of what the writer changed in the data (XML's replaced characters), for
        the run record; read once the file is complete."""
        return []

    def estimate(self, batch: pa.RecordBatch) -> int:
        """Bytes writing `batch` would add, for writers that are not `retractable`."""
        return int(batch.nbytes)

    def pending_bytes(self) -> int:
        """Estimated bytes this writer holds that later calls (at the latest `end()`) will
        return, so a size limit can count them before they arrive; 0 for writers holding none."""
        return 0
