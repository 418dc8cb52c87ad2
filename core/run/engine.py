"""One run: source → mapping → writers → parts → destination (atomic publish) → run record.

The CPU side (reading the source, mapping, encoding, gzip) runs in one worker thread, helped by
the text writers' slice pool and a per-file MD5 thread (`spool._Md5`); the network side (staging
blocks, FTP data connections) runs on the event loop. A bounded queue between them keeps memory
flat and lets serialisation overlap the upload. Files are staged while they stream and published
only when every file of the run is complete; a failure discards them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..azure.clients import state_store
from ..catalog.columns import format_problems, key_problems, require, segment_problems
from ..catalog.model import Activation, Catalog
from ..clock import SYSTEM, Clock
from ..delta.delta_pass import DeltaPass, Routed
from ..delta.spilled import SPILL_SETTING, spill_from
from ..destinations import Destination, Upload, open_destination
from ..destinations.memory import PreviewDestination
from ..error_codes import ErrorCode
from ..errors import CatalogInvalid, FilecastError
from ..read.mapping import Mapper
from ..read.sources import model_sql, open_source
from ..read.sources.base import Source as SourceReader
from ..read.textcheck import TextGuard
from ..settings import Settings
from ..state.base import StateStore
from ..write import encryption, naming
from ..write.formats import writer_for
from ..write.spool import FileInfo, Limits, Spool
from .records import Rows, RunRecord, iso

log = logging.getLogger(__name__)

RETRIES = 2  # further attempts after a transient failure, within one run
BACKOFF = 2.0  # seconds before the first retry; doubles each time, at most 60 s
QUEUE_DEPTH = 4  # file events between the encoder thread and the uploader (a data chunk is ≥ 1 MiB,
#                  at most one encoded batch)
QUEUE_BYTES = 4 * 1024 * 1024  # and at most this many bytes of data chunks queued (one larger chunk passes alone)
PROGRESS_EVERY = 10.0  # seconds between progress log lines
CHANGE_TYPES = ("added", "updated", "removed")  # DIFFERENCE's files, in this order


class _Stopped(Exception):
    """The uploader gave up; the encoder thread stops quietly."""


@dataclass
class RunResult:
    record: RunRecord
    exception: FilecastError | None = None

    @property
    def transient(self) -> bool:
        return self.exception is not None and self.exception.transient


@dataclass(frozen=True)
class _Open:
    """The encoder starts file `index` at `path`."""

    index: int
    path: str
    content_type: str


@dataclass(frozen=True)
class _Data:
    """The next bytes of file `index`."""

    index: int
    chunk: bytes


@dataclass(frozen=True)
class _Close:
    """File `index` is complete: its size and checksum."""

    index: int
    info: FileInfo


class _Done:
    """The encoder ended (whether it succeeded is what its future says)."""


_Event = _Open | _Data | _Close | _Done


class _Bridge:
    """Hands file events from the encoder thread to the event loop, with back-pressure."""

    DONE = _Done()

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[_Event] = asyncio.Queue(QUEUE_DEPTH)
        self.stop = threading.Event()
        self.queued = 0  # bytes of data chunks in the queue; bounds memory, not just the item count
        self.room = threading.Condition()

    async def get(self) -> _Event:
        item = await self.queue.get()
        if isinstance(item, _Data):
            with self.room:
                self.queued -= len(item.chunk)
                self.room.notify()
        return item

    def put(self, item: _Event) -> None:
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            if self.stop.is_set():
                future.cancel()
                raise _Stopped
            try:
                future.result(timeout=0.2)
                return
            except concurrent.futures.TimeoutError:
                continue

    def open(self, index: int, path: str, content_type: str) -> None:
        self.put(_Open(index, path, content_type))

    def data(self, index: int, chunk: bytes) -> None:
        with self.room:
            while self.queued and self.queued + len(chunk) > QUEUE_BYTES:
                if self.stop.is_set():
                    raise _Stopped
                self.room.wait(0.2)
            self.queued += len(chunk)
        self.put(_Data(index, chunk))

    def close(self, index: int, info: FileInfo) -> None:
        self.put(_Close(index, info))


class _Staged:
    """An attempt's uploads not yet published: the finished ones in publishing order, the open ones by
    index. A failure anywhere before the last publish discards every one of them, in one place."""

    def __init__(self) -> None:
        self.open: dict[int, Upload] = {}
        self.finished: list[Upload] = []
        self.published = 0  # how many of the attempt's uploads went live, in order

    async def discard(self) -> None:
        for upload in [*self.open.values(), *self.finished]:
            await upload.discard()
        self.open.clear()
        self.finished.clear()


@dataclass
class Plan:
    """What a run will read and how it names its files."""

    catalog: Catalog
    activation: Activation
    sql: str  # the model query
    where: Mapping[str, Any] | None  # the segment's filter, compiled by the source in its dialect
    context: naming.NameContext

    @classmethod
    def build(cls, catalog: Catalog, activation_id: str, record: RunRecord) -> Plan:
        activation = catalog.activation(activation_id)
        model = catalog.model_of(activation)
        where = catalog.segments[activation.segment].where if activation.segment is not None else None
        context = naming.NameContext(record.logical_time, activation.id, record.run_id)
        return cls(catalog, activation, model_sql(model), where, context)

    def namer(self, suffix: str = "") -> Callable[[int | None], str]:
        a = self.activation
        writer = writer_for(a.format)
        kind = self.catalog.destinations[a.destination].type

        def name(part: int | None) -> str:
            return naming.file_name(
                a.file_name,
                a.folder,
                self.context,
                extension=writer.spec.extension,
                suffix=suffix,
                part=part,
                gzip=a.compression == "gzip",
                destination_type=kind,
                envelope=a.encryption.extension if a.encryption else "",
            )

        return name


def _close(store: StateStore) -> None:
    """Close a state store the run opened itself (its clients and threads)."""
    close = getattr(store, "close", None)
    if close is not None:
        close()


def published_unsettled(paths: list[str], delta: bool) -> str:
    """What a failed run's error adds when some of its files went out (DESIGN.md §2)."""
    shown = ", ".join(f"`{p}`" for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    files, were = (f"{len(paths)} files", "were") if len(paths) != 1 else ("1 file", "was")
    told = f"; {files} ({shown}) {were} published before this failure"
    return told + (" without the delta state advancing: the next run sends their changes again" if delta else "")


def interrupted(published: list[dict[str, Any]]) -> dict[str, str]:
    """The error of a run stopped from outside (Ctrl-C, a host shutdown): what is live, what is not."""
    code = ErrorCode.INTERRUPTED.value
    if not published:
        return {
            "code": code,
            "message": "the run was interrupted before anything was published: the "
            "destination is unchanged and the delta state did not advance",
        }
    paths = ", ".join(f"`{f['path']}`" for f in published)
    return {
        "code": code,
        "message": f"the run was interrupted after publishing {len(published)} file(s) "
        f"({paths}); the delta state did not advance, so the next run sends those rows again",
    }


class Run:
    """Executes one activation; `execute()` never raises, it returns the record.

    A transient failure (network, throttling, a 4xx FTP reply) is retried within the run with
    bounded exponential backoff: nothing is published before every file is complete, so an attempt
    that failed left nothing behind and the next one starts from the source again.
    """

    def __init__(
        self,
        catalog: Catalog,
        activation_id: str,
        settings: Settings,
        record: RunRecord,
        *,
        destination: Destination | None = None,
        state: StateStore | None = None,
        preview: bool = False,
        previous_read: int | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        clock: Clock = SYSTEM,
    ):
        self.catalog = catalog
        self.activation_id = activation_id
        self.settings = settings
        self.record = record
        self.destination = destination  # None: the catalog's, built per attempt (a preview builds none)
        self.state = state  # None: Filecast's own store, opened for a delta run and closed after it
        self.clock = clock
        self.opened_state: StateStore | None = None  # the store this run opened itself
        self.preview = preview
        self.previous_read = previous_read
        self.retries = RETRIES if retries is None else retries
        self.backoff = BACKOFF if backoff is None else backoff
        self.progress = progress
        self.source: SourceReader | None = None
        self.keys: encryption.Keys | None = None
        self.published: dict[str, dict[str, Any]] = {}  # path → file, live at its final name (any attempt)

    async def execute(self) -> RunResult:
        record = self.record
        record.status, record.started_at = "running", self.clock.now()
        exception: FilecastError | None = None
        try:
            for attempt in range(self.retries + 1):
                record.rows, record.files, record.warnings, record.error = Rows(), [], [], None
                exception = await self._attempt()
                if exception is None or not exception.transient or attempt == self.retries:
                    break
                delay = min(self.backoff * 2**attempt, 60.0)
                log.warning(
                    "run %s of %s: attempt %d failed (%s); retrying in %.0f s",
                    record.run_id,
                    self.activation_id,
                    attempt + 1,
                    exception.message,
                    delay,
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:  # Ctrl-C, or the host shutting down: say what was published
            record.files = list(self.published.values())
            record.status, record.error = "failed", interrupted(record.files)
            record.finished_at = self.clock.now()
            raise
        if self.published:  # what partners can read, whichever attempt published it
            record.files = list(self.published.values())
        if exception is None:
            record.status = "succeeded"
        else:
            if self.published:
                delta = self.catalog.activation(self.activation_id).run_type == "full_then_delta"
                exception.message += published_unsettled(list(self.published), delta)
            record.status, record.error = "failed", exception.as_dict()
            log.warning("run %s of %s failed: %s", record.run_id, self.activation_id, exception.message)
        record.finished_at = self.clock.now()
        return RunResult(record, exception)

    async def _attempt(self) -> FilecastError | None:
        try:
            await self._run()
            return None
        except FilecastError as exc:
            return exc
        except Exception as exc:
            log.exception("run %s of %s failed unexpectedly", self.record.run_id, self.activation_id)
            return FilecastError(f"unexpected {type(exc).__name__}; see the function logs", code=ErrorCode.INTERNAL)
        finally:
            if self.source is not None:
                self.source.close()
                self.source = None
            if self.opened_state is not None:
                _close(self.opened_state)
                self.opened_state = None

    async def _run(self) -> None:
        plan = Plan.build(self.catalog, self.activation_id, self.record)
        activation = plan.activation
        model = self.catalog.model_of(activation)
        self.keys = encryption.prepare(activation, self.settings, self.record.warn)  # bad keys fail before reading
        if self.preview:  # a dry run builds no destination: nothing can reach it
            destination: Destination = PreviewDestination()
        else:  # built first: a missing setting or an expired SAS token fails before the warehouse is queried
            destination = self.destination or open_destination(
                self.catalog.destinations[activation.destination], self.settings
            )
        source_config = self.catalog.sources[model.source]
        self.source = await asyncio.to_thread(open_source, source_config, self.settings)
        if activation.segment is not None:
            await asyncio.to_thread(self._check_segment, activation.segment, plan.sql)
        schema, batches = await asyncio.to_thread(self.source.batches, plan.sql, plan.where)
        mapper = Mapper(schema, activation.mapping, where=f"activations.{activation.id}.mapping")
        require(format_problems(activation, mapper.schema))
        if activation.run_type == "full_then_delta":
            require(key_problems(model, schema.names))
        delta = await self._delta(activation, model)
        try:
            async with destination:
                staged = _Staged()
                try:
                    bridge = _Bridge(asyncio.get_running_loop())
                    encoder = asyncio.get_running_loop().run_in_executor(
                        None, self._encode, plan, mapper, batches, bridge, delta
                    )
                    await self._upload(destination, bridge, encoder, staged)
                    seen = len(destination.warnings)
                    self.record.warnings.extend(destination.warnings)  # e.g. a SAS token expiring soon
                    self._check_warnings(plan)
                    if activation.manifest:
                        await self._manifest(destination, plan, staged)
                    if delta is not None:  # in flight: the next run knows these files may have arrived
                        await asyncio.to_thread(delta.stage)
                    await self._publish(staged)
                except BaseException:  # the one discard path: what is not live goes, the record keeps what is
                    await staged.discard()
                    self.record.files = self.record.files[: staged.published]
                    raise
                self.record.warnings.extend(destination.warnings[seen:])  # e.g. a two-step FTP replace
            if delta is not None:
                # Only now, with every file published, does the new state become current.
                await asyncio.to_thread(delta.commit)
        finally:
            if delta is not None:
                delta.discard()

    def _check_segment(self, segment_id: str, model_sql: str) -> None:
        """A segment's columns and value types against the model's real schema, before reading."""
        assert self.source is not None
        problems = segment_problems(self.catalog, segment_id, self.source.schema(model_sql))
        if problems:
            raise CatalogInvalid(problems)

    async def _delta(self, activation: Activation, model: Any) -> DeltaPass | None:
        """FULL THEN DELTA: load the state to compare against (FULL ONLY keeps none)."""
        self.record.full = True
        if activation.run_type != "full_then_delta":
            return None
        if self.state is not None:
            store = self.state
        else:  # closed when the attempt ends (`_attempt`)
            store = await asyncio.to_thread(state_store, self.settings)
            self.opened_state = store
        limit = spill_from(self.settings.get(SPILL_SETTING))
        delta = DeltaPass(store, activation, model, preview=self.preview, spill_from=limit)
        await asyncio.to_thread(delta.load)
        if delta.reset_reason:
            self.record.warn("state_reset", delta.reset_reason)
        self.record.full = delta.full
        return delta

    def _check_warnings(self, plan: Plan) -> None:
        """Sync warnings (DESIGN.md §3), checked before anything is published so `fail_on` loses nothing."""
        activation, rows, record = plan.activation, self.record.rows, self.record
        if rows.exported == 0 and rows.read == 0:
            what = "segment" if activation.segment else "model"
            record.warn(
                "zero_rows",
                f"the {what} returned no rows" + ("; no file was written (on_empty: skip)" if not record.files else ""),
            )
        if self.previous_read and rows.read < self.previous_read * (1 - activation.row_drop_percent / 100):
            drop = 100 * (1 - rows.read / self.previous_read)
            record.warn(
                "row_drop",
                f"{rows.read} rows read, {drop:.0f}% fewer than the {self.previous_read} of the "
                f"last successful run (threshold {activation.row_drop_percent}%)",
            )
        if len(record.files) > activation.max_parts:
            record.warn(
                "too_many_parts",
                f"{len(record.files)} files written, more than {activation.max_parts}; "
                "raise max_file_size or warnings.max_parts",
            )
        risk = naming.overwrite_risk(activation)
        if risk:
            record.warn("overwrite_risk", risk)
        failing = [w for w in record.warnings if w["code"] in activation.fail_on]
        if failing:
            first = failing[0]
            raise FilecastError(
                f"warning `{first['code']}` fails this activation (fail_on): {first['message']}; nothing was published",
                code=ErrorCode.FAILED_ON_WARNING,
            )

    async def _manifest(self, destination: Destination, plan: Plan, staged: _Staged) -> None:
        """`<name>.manifest.json`, published after the data files: a partner's poller knows the run is complete."""
        a = plan.activation
        path = naming.file_name(
            a.file_name,
            a.folder,
            plan.context,
            extension="manifest.json",
            envelope=a.encryption.extension if a.encryption else "",
            destination_type=self.catalog.destinations[a.destination].type,
        )
        body = json.dumps(
            {
                "activation": a.id,
                "run_id": self.record.run_id,
                "logical_time": iso(self.record.logical_time),
                "files": list(self.record.files),
            },
            indent=2,
        ).encode()
        if self.keys is not None:
            body = await asyncio.to_thread(self.keys.encrypt, body)
        upload = await destination.open(path, content_type="application/json")
        staged.finished.append(upload)  # published last: after the data files
        await upload.write(body)
        await upload.finish(len(body), hashlib.md5(body).digest())

    def _encode(self, plan: Plan, mapper: Mapper, batches: Any, bridge: _Bridge, delta: DeltaPass | None) -> None:
        """Worker thread: read, map, classify, encode, split into parts; then the new state."""
        activation = plan.activation
        indices = itertools.count()

        def spool(suffix: str) -> Spool:
            return Spool(
                writer_for(activation.format),
                mapper.schema,
                activation.format_options,
                plan.namer(suffix),
                bridge,
                limits=Limits(activation.max_file_size, activation.max_file_rows),
                gzip=activation.compression == "gzip",
                indices=indices,
                warn=self.record.warn,
                encryption=self.keys,
            )

        difference = delta is not None and activation.sync_mode == "difference"
        outputs = {name: spool(f"_{name}") for name in CHANGE_TYPES} if difference else {"export": spool("")}
        rows = self.record.rows

        def send(name: str, mapped: pa.RecordBatch, mask: Any = None) -> None:
            if mask is not None:
                if not mask.any():
                    return
                mapped = mapped.filter(pa.array(mask))
            outputs[name].write(mapped)
            rows.exported += mapped.num_rows

        def route(mapped: pa.RecordBatch, routed: Routed) -> None:
            if difference:
                send("added", mapped, routed.added)
                send("updated", mapped, routed.updated)
            else:
                send("export", mapped, routed.export)

        value_columns = [mapper.source_names[i] for i in range(len(mapper.indices))]
        guard = TextGuard(
            activation.id,
            replace=activation.on_invalid_text == "replace",
            key_columns=self.catalog.model_of(activation).primary_key,
            warn=self.record.warn,
        )
        started = last_log = last_tick = time.monotonic()
        try:
            if delta is not None:
                delta.open_payload(mapper.schema)
                batches = delta.ahead(batches, value_columns)  # fingerprints the next batches meanwhile
            for batch in batches:
                mapped: pa.RecordBatch = guard.check(mapper.apply(batch), batch)
                rows.read += batch.num_rows
                if delta is None:
                    send("export", mapped)
                else:
                    route(mapped, delta.classify(batch, mapped, value_columns))
                now = time.monotonic()
                if now - last_tick >= 0.5 or now - last_log >= PROGRESS_EVERY:
                    written = sum(o.bytes_written for o in outputs.values())
                    if self.progress is not None and now - last_tick >= 0.5:
                        last_tick = now
                        self.progress(rows.read, written)
                    if now - last_log >= PROGRESS_EVERY:
                        last_log = now
                        log.info(
                            "run %s: %d rows, %d bytes in %.0f s", self.record.run_id, rows.read, written, now - started
                        )
            if delta is not None:
                summary = delta.finish()
                for mapped, routed in delta.replay():  # a state diffed on disk routes its rows now
                    route(mapped, routed)
                for removed in delta.removed() if difference else ():
                    send("removed", removed)
                for key in ("added", "updated", "unchanged", "removed"):
                    setattr(rows, key, summary.counts.get(key, 0))
                for warning in summary.warnings:
                    self.record.warn(warning.code, warning.message)
            guard.report()
            for output in outputs.values():
                output.close(write_empty=activation.on_empty == "write")
            if delta is not None:
                delta.write_state()
        finally:
            with contextlib.suppress(_Stopped):
                bridge.put(bridge.DONE)

    async def _publish(self, staged: _Staged) -> None:
        """Publish the finished uploads in order; what fails and what follows it stay staged."""
        while staged.finished:
            upload = staged.finished[0]
            await upload.publish()
            staged.finished.pop(0)
            if staged.published < len(self.record.files):  # a data file (the manifest is not one)
                self.published[upload.path] = self.record.files[staged.published]
            staged.published += 1

    async def _upload(
        self, destination: Destination, bridge: _Bridge, encoder: asyncio.Future[Any], staged: _Staged
    ) -> None:
        """Event loop: open, write and finish uploads as the encoder produces them (into `staged`)."""
        try:
            while True:
                item = await bridge.get()
                if isinstance(item, _Done):
                    break
                if isinstance(item, _Open):
                    staged.open[item.index] = await destination.open(item.path, content_type=item.content_type)
                elif isinstance(item, _Data):
                    await staged.open[item.index].write(item.chunk)
                else:
                    upload = staged.open.pop(item.index)
                    staged.finished.append(upload)
                    await upload.finish(item.info.bytes, bytes.fromhex(item.info.md5))
                    self.record.files.append(item.info.as_dict())
            await encoder  # re-raises what the encoder raised
        except BaseException:  # stop the encoder; the caller discards what was staged
            bridge.stop.set()
            await asyncio.gather(encoder, return_exceptions=True)
            raise
