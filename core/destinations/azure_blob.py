"""Azure Blob Storage: blocks staged while the file streams, committed once when the run publishes.

Nothing is visible under the blob name until `commit_block_list`: a reader sees the old blob (or
none) until the commit, then the whole new one. A failed run commits nothing; its staged blocks
stay uncommitted, which no reader can see, and the service drops them at the next commit of the
same name or after a week. Block ids carry a per-upload token, so two runs never mix blocks.

Memory is bounded: a block in flight takes one of `MAX_IN_FLIGHT` slots per whole `BLOCK_SIZE`
it holds (all of them at most), and writes over two blocks are split, so under 48 MiB is in
flight (24 MiB in the usual 8 MiB blocks) and under 48 MiB fills. Three in flight, not four:
against Azurite, whose ingest is CPU-bound, a fourth adds no speed and 8 MiB to a run's peak,
which is what kept NDJSON at 10 M rows over 300 MB; on a high-latency link it is a quarter less
data in flight. A blob holds at most 50,000 blocks, so blocks grow as that budget is spent (8,
then 16, then 32 MiB, fewer of them in flight): about 780 GiB per file.

Authentication, from the catalog's destination:

| field | credential |
|---|---|
| `connection_setting` | a storage connection string (account key or SAS inside) |
| `sas_url_setting` | a container SAS URL: checked for expiry (`se`), start (`st`) and permissions (`sp`) first |
| `account_url` | `DefaultAzureCredential`: the app's managed identity (`AZURE_CLIENT_ID` picks a user-assigned one) |

Throttling (429, 503 `ServerBusy`), 408, other 5xx and network faults are retried with capped
exponential backoff and jitter (`ExportRetry`, in core/azure/retry.py); what is left is mapped by
`map_azure_errors` (core/azure/errors.py, the one Azure error boundary).
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp.payload
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobClient, ContainerClient

from ..azure.errors import Access, map_azure_errors
from ..azure.retry import TIMEOUT_SETTING, ExportRetry, timeouts
from ..catalog.model import Destination as DestinationConfig
from ..error_codes import ErrorCode
from ..errors import DestinationError
from ..settings import Settings

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 * 1024 * 1024  # first block size; staged while the next one fills
MAX_IN_FLIGHT = 3  # blocks of BLOCK_SIZE being sent at once
MAX_BLOCKS = 50_000  # the service's limit of committed blocks per blob
SAS_WARNING_WINDOW = timedelta(days=7)
SAS_CLOCK_SKEW = timedelta(minutes=5)

_SAS_PERMISSIONS = {
    "r": "read",
    "a": "add",
    "c": "create",
    "w": "write",
    "d": "delete",
    "x": "delete version",
    "y": "permanent delete",
    "l": "list",
    "t": "tags",
    "f": "find",
    "m": "move",
    "e": "execute",
    "o": "ownership",
    "p": "permissions",
    "i": "set immutability policy",
}


def block_size(index: int) -> int:
    """Size of block `index` (0-based): doubled at half and at three quarters of the block budget."""
    if index < MAX_BLOCKS // 2:
        return BLOCK_SIZE
    if index < MAX_BLOCKS * 3 // 4:
        return BLOCK_SIZE * 2
    return BLOCK_SIZE * 4


def max_blob_size() -> int:
    """The largest file one upload can hold with the block schedule of `block_size`."""
    half, quarter = MAX_BLOCKS // 2, MAX_BLOCKS * 3 // 4 - MAX_BLOCKS // 2
    return BLOCK_SIZE * (half + 2 * quarter + 4 * (MAX_BLOCKS - half - quarter))


def _human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.0f} {unit}"
    return f"{size / 2**10:.0f} KiB"


def _sas_time(values: dict[str, list[str]], key: str) -> datetime | None:
    if not values.get(key):
        return None
    text = values[key][0].strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sas_expiry(sas_url: str) -> datetime | None:
    """The `se` (signed expiry) of a SAS URL, if it has one."""
    return _sas_time(parse_qs(urlsplit(sas_url).query), "se")


SEND_PIECE = 256 * 1024  # bytes handed to the socket at a time, as the connection drains


class _Body(io.RawIOBase):
    """A block as a seekable stream over the writes it is made of, never joined into one buffer.

    Joining the writes of an 8 MiB block cost a fresh allocation and a copy of every byte on
    the event loop (about 0.8 s per 140 MB measured here: page faults dominate on these VMs), and
    aiohttp reads a file-like body in 256 KiB pieces through the default thread pool (two thread
    handoffs per piece). `_BodyPayload` sends the pieces straight from the writes instead. The
    stream side (`tell`, `seek`, `readinto`) is what the SDK's retry policy uses to rewind a
    block, and what any other reader falls back to. aiohttp closes a body once it is sent; this
    one ignores that, so a retry can resend it.
    """

    def __init__(self, chunks: list[bytes | memoryview]):
        super().__init__()
        self.chunks = chunks
        self.size = sum(len(chunk) for chunk in chunks)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = min(max(base + offset, 0), self.size)
        return self.position

    def pieces(self, limit: int | None = None) -> Iterator[memoryview]:
        """The bytes from the current position on (at most `limit`), in pieces of at most
        SEND_PIECE, without copying; the position moves past each piece as it is taken."""
        start, left = 0, self.size - self.position if limit is None else min(limit, self.size - self.position)
        for chunk in self.chunks:
            view = memoryview(chunk)
            end = start + len(view)
            if end > self.position and left > 0:
                offset = self.position - start
                while offset < len(view) and left > 0:
                    piece = view[offset : offset + min(SEND_PIECE, left)]
                    offset += len(piece)
                    left -= len(piece)
                    self.position += len(piece)
                    yield piece
            start = end

    def readinto(self, buffer: Any) -> int:
        target, filled = memoryview(buffer).cast("B"), 0
        for piece in self.pieces(len(buffer)):
            target[filled : filled + len(piece)] = piece
            filled += len(piece)
        return filled

    def close(self) -> None:
        return None


class _BodyPayload(aiohttp.payload.Payload):
    """aiohttp's payload for a `_Body`: its pieces go to the connection from the event loop."""

    _value: _Body

    def __init__(self, value: _Body, *args: Any, **kwargs: Any):
        super().__init__(value, *args, **kwargs)
        self._size = value.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        self._value.seek(0)
        return b"".join(self._value.pieces()).decode(encoding, errors)

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        # Every request sends the whole block: a retry after a dropped connection starts over
        # (the SDK's retry policy does not rewind a stream; aiohttp's own file payloads do).
        self._value.seek(0)
        for piece in self._value.pieces(content_length):
            await writer.write(piece)


aiohttp.payload.PAYLOAD_REGISTRY.register(_BodyPayload, _Body, order=aiohttp.payload.Order.try_first)


class BlobUpload:
    """One file: bytes buffered into blocks, staged concurrently, committed by `publish`."""

    def __init__(self, blob: BlobClient, path: str, content_type: str, where: str, access: Access):
        self.blob = blob
        self.path = path
        self.content_type = content_type
        self.where = where
        self.access = access
        self.token = secrets.token_hex(8)
        self.block_ids: list[str] = []
        self.size = 0  # bytes written
        self.md5: bytes | None = None
        self._chunks: list[bytes | memoryview] = []  # the writes of the block filling, sent as they are
        self._pending = 0
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)  # bytes in flight stay bounded
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self._started = time.monotonic()

    async def write(self, data: bytes | memoryview) -> None:
        """Buffer `data`; a block goes out once a block's worth is buffered.

        Blocks need not be equal: a write is only split when it is over two blocks. Nothing is
        copied: a block is the list of the writes it holds (or views of a split one).
        """
        self._check()
        if len(data) > 2 * BLOCK_SIZE:
            view = memoryview(data)
            for offset in range(0, len(data), BLOCK_SIZE):
                await self.write(view[offset : offset + BLOCK_SIZE])
            return
        target = block_size(len(self.block_ids))
        self.size += len(data)
        self._chunks.append(data)
        self._pending += len(data)
        if self._pending >= target:
            await self._stage(self._take())

    def _take(self) -> list[bytes | memoryview]:
        """The buffered writes, which make one block."""
        chunks, self._chunks, self._pending = self._chunks, [], 0
        return chunks

    async def _stage(self, chunks: list[bytes | memoryview]) -> None:
        if len(self.block_ids) >= MAX_BLOCKS:
            raise DestinationError(
                f"`{self.path}` is larger than one blob can hold when uploaded in blocks ({MAX_BLOCKS} blocks, "
                f"{_human(max_blob_size())}): set `max_file_size` on the activation to split it into parts",
                code=ErrorCode.FILE_TOO_LARGE,
            )
        block_id = f"filecast-{self.token}-{len(self.block_ids):06d}"  # fixed length, as the service requires
        self.block_ids.append(block_id)
        size = sum(len(chunk) for chunk in chunks)
        units = min(max(1, size // BLOCK_SIZE), MAX_IN_FLIGHT)  # bigger blocks take more slots
        for _ in range(units):
            await self._slots.acquire()
        self._check()
        task = asyncio.create_task(self._put(block_id, chunks, units))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _put(self, block_id: str, chunks: list[bytes | memoryview], units: int) -> None:
        try:
            body = _Body(chunks)
            with map_azure_errors(f"write `{self.path}`", self.where, self.access):
                await self.blob.stage_block(block_id, body, length=body.size)
        finally:
            for _ in range(units):
                self._slots.release()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def finish(self, size: int, md5: bytes) -> None:
        """Stage what is left and wait for every block; the blob is still not visible."""
        self._check()
        if self._chunks:
            await self._stage(self._take())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._check()
        if size != self.size:
            raise DestinationError(
                f"size mismatch for `{self.path}`: the writer produced {size} bytes, {self.size} were staged",
                code=ErrorCode.SIZE_MISMATCH,
            )
        self.md5 = md5

    async def publish(self) -> None:
        """Commit the block list: the blob appears (or is replaced) whole, with its type and MD5."""
        settings = ContentSettings(
            content_type=self.content_type, content_md5=bytearray(self.md5) if self.md5 is not None else None
        )
        with map_azure_errors(f"commit `{self.path}`", self.where, self.access):
            await self.blob.commit_block_list(
                [BlobBlock(block_id=b) for b in self.block_ids], content_settings=settings
            )
        elapsed = time.monotonic() - self._started
        log.info(
            "committed `%s` in %s: %d bytes in %d blocks, %.1f s",
            self.path,
            self.where,
            self.size,
            len(self.block_ids),
            elapsed,
        )

    async def discard(self) -> None:
        """Stop sending; staged blocks stay uncommitted (invisible) until the service drops them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._chunks, self._pending = [], 0
        if self.block_ids:
            log.info("discarded `%s`: %d staged blocks left uncommitted, never visible", self.path, len(self.block_ids))


class AzureBlobDestination:
    """Files are blobs `folder/name` in one container.

    Everything that can be checked without a request is checked on construction. The client is
    made there too (it opens no connection until used) and again on each later `async with`, so
    a run's retry can enter the same destination twice.

    `credential` replaces `DefaultAzureCredential` for `account_url` (tests pass their own);
    `client_options` go to the `ContainerClient` (a transport, `connection_verify`, a retry policy).
    """

    def __init__(
        self,
        config: DestinationConfig,
        settings: Settings,
        *,
        credential: Any = None,
        client_options: Mapping[str, Any] | None = None,
    ):
        if config.container is None:
            raise DestinationError(f"destination `{config.id}` has no `container`", code=ErrorCode.INVALID_CATALOG)
        self.config = config
        self.warnings: list[dict[str, str]] = []
        self.where = f"container `{config.container}`"
        self._own_credential: Any = None
        self._closed = False
        self._connect, self.access = self._connector(config, settings, credential, dict(client_options or {}))
        self.client = self._connect()
        self.description = f"azure_blob {self.client.account_name}/{config.container}"
        self.where = f"container `{config.container}` of storage account `{self.client.account_name}`"

    def _connector(
        self,
        config: DestinationConfig,
        settings: Settings,
        credential: Any,
        client_options: dict[str, Any],
    ) -> tuple[Callable[[], ContainerClient], Access]:
        """How to make the client, checked once: bad settings fail here, before any work."""
        container = config.container
        assert container is not None

        limits = timeouts(settings.get(TIMEOUT_SETTING))

        def options() -> dict[str, Any]:  # a pipeline chains its policies in place: one retry policy per client
            return {"retry_policy": ExportRetry(), **limits, **client_options}

        if config.connection_setting:
            setting = config.connection_setting
            conn = settings.secret(setting, purpose=f"connection string of destination `{config.id}`")
            try:
                ContainerClient.from_connection_string(conn, container, **options())
            except (ValueError, TypeError):
                raise DestinationError(
                    f"app setting `{setting}` is not a valid storage connection string: it "
                    "should look like `DefaultEndpointsProtocol=https;AccountName=…;"
                    "AccountKey=…`",
                    code=ErrorCode.BAD_CREDENTIALS,
                ) from None
            return (lambda: ContainerClient.from_connection_string(conn, container, **options())), Access(
                "connection_string", setting
            )
        if config.sas_url_setting:
            setting = config.sas_url_setting
            url = settings.secret(setting, purpose=f"container SAS URL of destination `{config.id}`")
            if not parse_qs(urlsplit(url).query).get("sig"):
                raise DestinationError(
                    f"app setting `{setting}` has no SAS token: it must be the container URL followed by `?sv=…&sig=…`",
                    code=ErrorCode.BAD_CREDENTIALS,
                )
            try:
                client = ContainerClient.from_container_url(url, **options())
            except (ValueError, TypeError):
                raise DestinationError(
                    f"app setting `{setting}` is not a container SAS URL: it should look like "
                    "`https://<account>.blob.core.windows.net/<container>?sv=…&sig=…`",
                    code=ErrorCode.BAD_CREDENTIALS,
                ) from None
            if client.container_name != container:
                raise DestinationError(
                    f"the SAS URL in app setting `{setting}` is for container `{client.container_name}`, but "
                    f"destination `{config.id}` writes to container `{container}`: use a SAS URL of `{container}`",
                    code=ErrorCode.BAD_CREDENTIALS,
                )
            self.where = f"container `{container}` of storage account `{client.account_name}`"
            self._check_sas(url, setting)
            return (lambda: ContainerClient.from_container_url(url, **options())), Access("sas", setting)
        account_url = config.account_url
        if not account_url:
            raise DestinationError(
                f"destination `{config.id}` needs one of `connection_setting`, `sas_url_setting` or `account_url`",
                code=ErrorCode.INVALID_CATALOG,
            )
        if urlsplit(account_url).scheme != "https":
            raise DestinationError(
                f"`account_url` of destination `{config.id}` must start with https://: a managed "
                "identity's token is only ever sent over HTTPS",
                code=ErrorCode.BAD_CREDENTIALS,
            )

        def connect() -> ContainerClient:
            token_credential = credential
            if token_credential is None:
                from azure.identity.aio import DefaultAzureCredential

                token_credential = self._own_credential = DefaultAzureCredential()
            return ContainerClient(account_url, container, credential=token_credential, **options())

        return connect, Access("identity", account_url)

    def _check_sas(self, url: str, setting: str) -> None:
        """Refuse a SAS URL that cannot work before any work starts; warn when it expires soon."""
        values = parse_qs(urlsplit(url).query)
        now = datetime.now(UTC)
        expiry, start = _sas_time(values, "se"), _sas_time(values, "st")
        if expiry is not None and expiry <= now:
            raise DestinationError(
                f"the SAS token in app setting `{setting}` expired at {expiry:%Y-%m-%dT%H:%M:%SZ}: generate a new one "
                "with write (`w`) and create (`c`) permissions and update the setting",
                code=ErrorCode.SAS_EXPIRED,
            )
        if start is not None and start > now + SAS_CLOCK_SKEW:
            raise DestinationError(
                f"the SAS token in app setting `{setting}` is not valid before {start:%Y-%m-%dT%H:%M:%SZ}: wait, or "
                "generate one whose start time has passed",
                code=ErrorCode.BAD_CREDENTIALS,
            )
        granted = values.get("sp", [None])[0]
        if granted is not None and not {"w", "c"} & set(granted):
            names = ", ".join(_SAS_PERMISSIONS.get(p, p) for p in granted) or "none"
            raise DestinationError(
                f"permission denied to write in {self.where}: the SAS token in app setting `{setting}` grants "
                f"`{granted}` ({names}); it needs write (`w`) and create (`c`) permissions",
                code=ErrorCode.PERMISSION_DENIED,
            )
        if expiry is not None and expiry - now <= SAS_WARNING_WINDOW:
            days = (expiry - now).total_seconds() / 86400
            self.warnings.append(
                {
                    "code": "sas_expiring",
                    "message": f"the SAS token in app setting `{setting}` expires at {expiry:%Y-%m-%dT%H:%M:%SZ} "
                    f"(in {days:.1f} days): generate a new one and update the setting before then",
                }
            )

    async def __aenter__(self) -> AzureBlobDestination:
        if self._closed:
            self.client, self._closed = self._connect(), False
        try:
            if self.config.create_container and self.access.mode != "sas":  # a container SAS cannot create one
                with map_azure_errors("create the container", self.where, self.access), suppress(ResourceExistsError):
                    await self.client.create_container()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        self._closed = True
        await self.client.close()
        if self._own_credential is not None:
            await self._own_credential.close()
            self._own_credential = None

    async def open(self, path: str, *, content_type: str) -> BlobUpload:
        name = path.lstrip("/")
        return BlobUpload(self.client.get_blob_client(name), name, content_type, self.where, self.access)
