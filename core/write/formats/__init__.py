"""The closed registry of file formats."""

from __future__ import annotations

from ...errors import CatalogError
from .base import FormatSpec, Writer
from .csv import CsvWriter
from .json import JsonWriter
from .ndjson import NdjsonWriter
from .parquet import ParquetWriter
from .xml import XmlWriter

ALL_WRITERS: tuple[type[Writer], ...] = (CsvWriter, JsonWriter, NdjsonWriter, XmlWriter, ParquetWriter)
WRITERS: dict[str, type[Writer]] = {w.spec.name: w for w in ALL_WRITERS}


def writer_for(name: str) -> type[Writer]:
    try:
        return WRITERS[name]
    except KeyError:
        known = ", ".join(sorted(WRITERS))
        raise CatalogError(f"unknown format `{name}`; known formats are: {known}") from None


__all__ = ["ALL_WRITERS", "WRITERS", "FormatSpec", "Writer", "writer_for"]
