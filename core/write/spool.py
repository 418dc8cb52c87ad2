"""Rotation into parts, optional gzip, and per-file metrics (rows, bytes, MD5).

A `Spool` turns the record batches of one output (the plain file, or `_added`…) into files. It
calls a `FileSink` with `open` / `data` / `close` events; the engine forwards those to the
destination. Parts: `max_file_size` bounds each file as stored (compressed, with gzip) and
`max_file_rows` its rows. A text batch that would overflow the part is cut: the rows that fit
(estimated from the batch's own bytes per row, then checked) fill the part, the rest start the
next one, so parts come out within a few percent of the limit. With gzip the check is exact: the
batch is compressed on a copy of the part's compressor, which is then finished on a second copy
to learn what the file would weigh if it ended there; an accepted batch keeps that compressed
output, so nothing is compressed twice except at a part boundary. A single row larger than the
limit is written alone, with a warning.

Naming: a run that needs one file keeps the plain name, and whether there will be a second part
is only known when the first one fills up. So with a size or row limit the first part is held in a
temporary file until then: named plain if the output ends first, `-00001` (or `{part}`) otherwise.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import pyarrow as pa

from .formats.base import Writer

CHUNK = 1024 * 1024
GZIP_LEVEL = 6
MD5_BEHIND = 4  # chunks the MD5 thread may lag behind the writer (each at most one encoded batch)
MD5_INLINE = 64 * 1024  # smaller chunks, with nothing queued, are hashed on the spot
FILL = 0.97  # share of a part's remaining room a cut batch aims at (the estimate's margin)
GZIP_MEDIA_TYPE = "application/gzip"  # a .gz file is served as stored: no Content-Encoding to undo


@dataclass
class FileInfo:
    path: str
    rows: int = 0
    bytes: int = 0
    md5: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "md5": self.md5}


class FileSink(Protocol):
    def open(self, index: int, path: str, content_type: str) -> None: ...

    def data(self, index: int, chunk: bytes) -> None: ...

    def close(self, index: int, info: FileInfo) -> None: ...


@dataclass(frozen=True)
class Limits:
    max_bytes: int | None = None
    max_rows: int | None = None

    @property
    def any(self) -> bool:
        return self.max_bytes is not None or self.max_rows is not None


def _gzip() -> Any:
    return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)


@dataclass
class _Part:
    writer: Writer
    prefix: bytes  # begin() bytes, emitted with the first accepted rows
    suffix_size: int  # len(end()) is not known before the end; estimated
    rows: int = 0
    size: int = 0  # uncompressed bytes accepted so far, prefix included
    emitted: bool = False


@dataclass
class _Trial:
    """Encoded rows weighed against a part: the part's stored size if they ended it, and (gzip)
    the compressor that has taken them with its output, adopted if the rows are accepted."""

    encoded: bytes
    stored: int
    compressor: Any = None
    compressed: bytes = b""


class _Md5:
    """A file's MD5, computed on a thread of its own a few chunks behind the writer: hashlib
    releases the GIL, so hashing one batch overlaps encoding the next (MD5 is about a quarter of
    a CSV export's CPU, and serial). Chunks are `bytes`, never changed once written."""

    def __init__(self) -> None:
        self.hash = hashlib.md5()
        self.worker: ThreadPoolExecutor | None = None
        self.pending: deque[Future[None]] = deque()

    def update(self, data: bytes) -> None:
        if not self.pending and len(data) < MD5_INLINE:
            self.hash.update(data)
            return
        if self.worker is None:
            self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filecast-md5")
        self.pending.append(self.worker.submit(self.hash.update, data))
        while len(self.pending) > MD5_BEHIND:
            self.pending.popleft().result()

    def hexdigest(self) -> str:
        while self.pending:
            self.pending.popleft().result()
        if self.worker is not None:
            self.worker.shutdown()
            self.worker = None
        return self.hash.hexdigest()


@dataclass
class _File:
    """Bytes of one file on their way out: gzip, hashing, chunking; held back while unnamed."""

    gzip: bool
    hold: bool
    md5: _Md5 = field(default_factory=_Md5)
    size: int = 0  # bytes as stored (encrypted, when there is a stage)
    plain: int = 0  # bytes before the OpenPGP stage (compressed, with gzip)
    buffer: bytearray = field(default_factory=bytearray)
    held: BinaryIO | None = None
    compressor: Any = None
    encrypt: Any = None  # an encryption.Stage: update(bytes) yields bytes, finish() -> bytes

    def __post_init__(self) -> None:
        if self.gzip:
            self.compressor = _gzip()
        if self.hold:
            self.held = tempfile.TemporaryFile()  # noqa: SIM115 - lives until the part is named

    def feed(self, data: bytes, out: Callable[[bytes], None]) -> None:
        if self.compressor is not None:
            data = self.compressor.compress(data)
        self._out(data, out, final=False)

    def adopt(self, trial: _Trial, out: Callable[[bytes], None]) -> None:
        """Take a trial's compressor, which has already compressed the trial's bytes."""
        self.compressor = trial.compressor
        self._out(trial.compressed, out, final=False)

    def _out(self, data: bytes, out: Callable[[bytes], None], *, final: bool) -> None:
        """Every byte of the file goes out here: through the OpenPGP stage when there is one."""
        self.plain += len(data)
        if self.encrypt is None:
            self._store(data, out, final=final)
            return
        for piece in self.encrypt.update(data):
            self._store(piece, out, final=False)
        self._store(self.encrypt.finish() if final else b"", out, final=final)

    def _store(self, data: bytes, out: Callable[[bytes], None], *, final: bool) -> None:
        if data:
            self.md5.update(data)
            self.size += len(data)
            if not self.buffer and len(data) >= CHUNK:
                self._send(data, out)  # a whole encoded batch: no copy through the buffer
                return
            self.buffer += data
        if self.buffer and (final or len(self.buffer) >= CHUNK):
            chunk = bytes(self.buffer)
            self.buffer.clear()
            self._send(chunk, out)

    def _send(self, chunk: bytes, out: Callable[[bytes], None]) -> None:
        if self.held is not None:
            self.held.write(chunk)
        else:
            out(chunk)

    def flush(self, out: Callable[[bytes], None]) -> None:
        tail = self.compressor.flush() if self.compressor is not None else b""
        self._out(tail, out, final=True)

    def release(self, out: Callable[[bytes], None]) -> None:
        """Send what was held back, now that the file has its name."""
        if self.held is None:
            return
        self.held.seek(0)
        while chunk := self.held.read(CHUNK):
            out(chunk)
        self.held.close()
        self.held = None


class Spool:
    """Writes the batches of one output as one file or as numbered parts."""

    def __init__(
        self,
        writer_class: type[Writer],
        schema: pa.Schema,
        options: Mapping[str, Any],
        name: Callable[[int | None], str],
        sink: FileSink,
        *,
        limits: Limits = Limits(),
        gzip: bool = False,
        indices: Iterator[int] | None = None,
        warn: Callable[[str, str], None] | None = None,
        encryption: Any = None,
    ):
        self.encryption = encryption  # encryption.Keys: a Stage per file, after gzip
        self.stored_limit = limits.max_bytes
        if encryption is not None and limits.max_bytes is not None:  # the limit is of the file as stored
            limits = Limits(encryption.bound(limits.max_bytes), limits.max_rows)
        self.writer_class = writer_class
        self.schema = schema
        self.options = options
        self.name = name
        self.sink = sink
        self.limits = limits
        self.gzip = gzip
        self.indices = indices if indices is not None else itertools.count()  # shared by a run's spools
        self.warn = warn or (lambda code, message: None)
        self.max_bytes = limits.max_bytes
        spec = writer_class.spec
        self.media_type = GZIP_MEDIA_TYPE if gzip else spec.media_type
        self.part: _Part | None = None
        self.file: _File | None = None
        # Bytes `end()` adds to a text file (`]`, `</rows>`); Parquet's footer is in pending_bytes().
        self.suffix_size = len(writer_class(schema, options).end()) if writer_class.retractable else 0
        self.index = -1
        self.held_file: _File | None = None
        self.held_index = -1
        self.parts = 0
        self.files: list[FileInfo] = []

    @property
    def bytes_written(self) -> int:
        """Bytes of the files so far, as published (compressed when gzip), for progress."""
        done = sum(info.bytes for info in self.files)
        return done + (self.file.size if self.file is not None else 0)

    # -- parts -------------------------------------------------------------------------------
    def _new_part(self) -> _Part:
        writer = self.writer_class(self.schema, self.options)
        prefix = writer.begin()
        return _Part(writer, prefix, suffix_size=self.suffix_size, size=len(prefix))

    def _weigh(self, encoded: bytes) -> _Trial:
        """What the part would weigh as stored if `encoded` were its last rows."""
        part = self.part
        assert part is not None
        if not self.gzip:
            return _Trial(encoded, part.size + len(encoded) + part.suffix_size)
        data = encoded if part.emitted else part.prefix + encoded
        if part.emitted:
            assert self.file is not None
            base, stored = self.file.compressor, self.file.plain
        else:
            base, stored = _gzip(), 0
        trial = base.copy()
        compressed = trial.compress(data)
        closing = trial.copy()  # finish a second copy: the real compressor goes on
        tail = len(closing.compress(b" " * part.suffix_size)) + len(closing.flush())
        return _Trial(encoded, stored + len(compressed) + tail, trial, compressed)

    def _fits(self, trial: _Trial) -> bool:
        return self.max_bytes is None or trial.stored <= self.max_bytes

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        max_rows = self.limits.max_rows
        if max_rows is not None and batch.num_rows > max_rows:
            for start in range(0, batch.num_rows, max_rows):
                self.write(batch.slice(start, max_rows))
            return
        if self.part is None:
            self.part = self._new_part()
        if max_rows is not None and self.part.rows + batch.num_rows > max_rows:
            room = max_rows - self.part.rows
            if room > 0:  # fill this part to exactly max_rows, the rest starts the next one
                self.write(batch.slice(0, room))
                self.write(batch.slice(room))
                return
            self._close_part()
            self.part = self._new_part()
        if self.max_bytes is None:
            self._accept(_Trial(self.part.writer.write(batch), 0), batch.num_rows)
        elif self.writer_class.retractable:
            self._write_retractable(batch)
        else:
            self._write_estimated(batch)

    def _write_retractable(self, batch: pa.RecordBatch) -> None:
        """Text formats: encode and weigh. A batch that overflows the part is cut: the rows that
        fit, estimated from the bytes per row seen and then weighed, fill the part in one or two
        steps; the rest start the next part."""
        assert self.part is not None and self.max_bytes is not None
        trial = self._weigh(self._encode(batch))
        if self._fits(trial):
            self._accept(trial, batch.num_rows)
            return
        weight = trial.stored  # of the whole batch in this part, known or estimated
        while True:
            total = batch.num_rows
            floor = self._weigh(b"").stored  # the part as it stands, closed
            room = (self.max_bytes - floor) * FILL
            rows = min(int(room * total / max(weight - floor, 1)), total)
            head = None
            while rows > 0:
                head = self._weigh(self._encode(batch.slice(0, rows)))
                if self._fits(head):
                    break
                rows, head = min(int(room * rows / max(head.stored - floor, 1)), rows - 1), None
            if head is None and not self.part.rows:  # not one row by the estimate: try the first alone
                rows, head = 1, self._weigh(self._encode(batch.slice(0, 1)))
                if not self._fits(head):
                    self._too_large(head.stored)
                    self._accept(head, 1)
                    head = None
            if head is None:  # the part is full
                self._close_part()
                self.part = self._new_part()
                self.write(batch.slice(rows))
                return
            self._accept(head, rows)
            if rows == total:
                return
            weight = head.stored + (head.stored - floor) * (total - rows) / rows
            batch = batch.slice(rows)

    def _encode(self, batch: pa.RecordBatch) -> bytes:
        """The part's writer encodes `batch`; bytes that are then dropped leave a writer that has
        counted rows it never wrote, so an empty part gets a fresh writer for each attempt."""
        assert self.part is not None
        if not self.part.rows:
            self.part = self._new_part()
        return self.part.writer.write(batch)

    def _write_estimated(self, batch: pa.RecordBatch) -> None:
        """Parquet can't take a row group back: choose the part boundary before writing, from the
        writer's estimate of what the batch and what it already holds will take."""
        assert self.part is not None and self.max_bytes is not None

        def projected(part: _Part) -> int:
            return part.size + part.writer.pending_bytes() + part.writer.estimate(batch)

        if projected(self.part) > self.max_bytes and self.part.rows:
            self._close_part()
            self.part = self._new_part()
        if projected(self.part) > self.max_bytes:
            if batch.num_rows > 1:
                half = batch.num_rows // 2
                self.write(batch.slice(0, half))
                self.write(batch.slice(half))
                return
            self._too_large(projected(self.part))
        self._accept(self._weigh(self.part.writer.write(batch)), batch.num_rows)

    def _too_large(self, size: int) -> None:
        self.warn(
            "row_larger_than_limit",
            f"a single row of about {size} bytes is larger than max_file_size; it was written alone in its part",
        )

    def _accept(self, trial: _Trial, rows: int) -> None:
        part = self.part
        assert part is not None
        if not part.emitted:
            self._open_file()
            part.emitted = True
            if trial.compressor is None:
                self._feed(part.prefix)
        if trial.compressor is not None:
            assert self.file is not None
            index = self.index
            self.file.adopt(trial, lambda chunk: self.sink.data(index, chunk))
        else:
            self._feed(trial.encoded)
        part.rows += rows
        part.size += len(trial.encoded)

    # -- files -------------------------------------------------------------------------------
    def _open_file(self) -> None:
        self.parts += 1
        if self.held_file is not None:
            self._name_held_first_part(1)
        hold = self.limits.any and self.parts == 1
        self.index = next(self.indices)
        self.file = _File(self.gzip, hold, encrypt=self.encryption.stage() if self.encryption else None)
        path = None if hold else self.name(self.parts if self.limits.any else None)
        if path is not None:
            self.sink.open(self.index, path, self.media_type)
            self.files.append(FileInfo(path))
        else:
            self.files.append(FileInfo(""))

    def _name_held_first_part(self, part: int | None) -> None:
        """The first part was held back; now that its name is known, send it out."""
        first, held_index = self.files[0], self.held_index
        first.path = self.name(part)
        self.sink.open(held_index, first.path, self.media_type)
        assert self.held_file is not None
        self.held_file.release(lambda chunk: self.sink.data(held_index, chunk))
        self.sink.close(held_index, first)
        self.held_file = None

    def _feed(self, data: bytes) -> None:
        assert self.file is not None
        index = self.index
        self.file.feed(data, lambda chunk: self.sink.data(index, chunk))

    def _close_part(self) -> None:
        part, file = self.part, self.file
        assert part is not None and file is not None
        tail = part.writer.end()
        for code, message in part.writer.warnings():
            self.warn(code, f"{message} (file {self.parts} of this output)")
        self._feed(tail)
        part.size += len(tail)
        index = self.index
        file.flush(lambda chunk: self.sink.data(index, chunk))
        if self.stored_limit is not None and file.size > self.stored_limit and part.rows > 1:
            self.warn(
                "part_over_limit",
                f"a part came out at {file.size} bytes, over max_file_size "
                f"({self.stored_limit} bytes): the {self.writer_class.spec.name} size estimate was short",
            )
        info = self.files[-1]
        info.rows, info.bytes, info.md5 = part.rows, file.size, file.md5.hexdigest()
        if file.held is not None:
            self.held_file, self.held_index = file, index  # named when part 2 starts or the output ends
        else:
            self.sink.close(index, info)
        self.part, self.file = None, None

    def close(self, *, write_empty: bool = True) -> list[FileInfo]:
        """Finish the last part; an output with no rows gets an empty file unless `write_empty` is off."""
        if self.part is not None and self.part.rows:
            self._close_part()
        elif not self.files and write_empty:
            self.part = self._new_part()
            self._accept(_Trial(b"", 0), 0)
            self._close_part()
        if self.held_file is not None:
            self._name_held_first_part(None)
        return self.files
