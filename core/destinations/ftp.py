"""FTP and FTPS: upload to a hidden temporary name in the target folder, then rename over the target.

Folders follow the seed docs: a folder starting with `/` is absolute, anything else is relative
to the login directory (`.` is the login directory, `..` its parent). Missing folders are
created. Each file being written at the same time gets its own control connection; connections
are reused for the next file and for publishing.

Publishing: every file goes to `.<name>.<random>.filecast-tmp` in its folder (hidden from the
usual pollers), its size is checked with SIZE, and only when the whole run is staged is it
renamed over the target. A server that refuses to rename over an existing file gets the old file
moved aside first (and deleted after), which is logged. Temporary files of a failed upload are
deleted; those a crashed server or run left behind are deleted by the next run that writes the
same file, and any older than a day by any run writing to the folder.

TLS (`tls: explicit`, AUTH TLS on the plain port; `tls: implicit`, TLS from the first byte,
port 990) verifies the server certificate against the system trust store plus the destination's
`ca_file`, and protects the data connections too (PBSZ 0, PROT P).

The client (`ftp_client.py`) fixes aioftp's FTPS data connections and passive mode; the messages
for every failure are in `ftp_errors.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any

import aioftp

from ..catalog.model import Destination as DestinationConfig
from ..error_codes import ErrorCode
from ..errors import DestinationError, DestinationUnavailable
from ..settings import Settings
from .ftp_client import REPLY_GRACE, FtpClient, reply_text
from .ftp_errors import FtpContext, map_ftp_errors

log = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds; app setting FILECAST_FTP_TIMEOUT overrides
TIMEOUT_SETTING = "FILECAST_FTP_TIMEOUT"
WRITE_SIZE = 256 * 1024  # smallest data-connection write (aioftp's 8 KiB halves throughput)
STALE_AFTER = timedelta(hours=24)  # a leftover temporary file this old belongs to no live run
IDLE_CHECK = 30.0  # a pooled connection idle this long is checked (NOOP) before reuse
TEMP = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{8}\.filecast-(?:tmp|old)$")


class FtpUpload:
    """One file: streamed to a temporary name while the run writes it, renamed over the target on publish."""

    def __init__(self, owner: FtpDestination, client: FtpClient, path: str):
        self.owner = owner
        self.context = owner.context
        self.client: FtpClient | None = client
        self.path = path
        target = PurePosixPath(path)
        self.folder = str(target.parent)
        self.temp = str(target.with_name(f".{target.name}.{secrets.token_hex(4)}.filecast-tmp"))
        self.stream: Any = None
        self.buffer = bytearray()
        self.created = False

    async def start(self) -> None:
        assert self.client is not None
        with map_ftp_errors(self.context, "write", self.path):
            self.stream = await self.client.upload_stream(self.temp)
        self.created = True

    async def write(self, data: bytes) -> None:
        if self.buffer or len(data) < WRITE_SIZE:
            self.buffer += data
            if len(self.buffer) < WRITE_SIZE:
                return
            data, self.buffer = self.buffer, bytearray()  # type: ignore[assignment]
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        with map_ftp_errors(self.context, "write", self.path):
            try:
                await self.stream.write(data)
            except (OSError, ConnectionError, TimeoutError) as exc:
                reply = await self._explanation()
                if reply is not None:
                    raise reply from exc
                raise

    async def _explanation(self) -> aioftp.StatusCodeError | None:
        """After a data connection broke, the server's reply says why (`426 No space left on device`…)."""
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()
        if self.client is None:
            return None
        try:
            await asyncio.wait_for(self.client.command(None, "2xx", "1xx"), REPLY_GRACE)
        except aioftp.StatusCodeError as exc:
            return exc
        except Exception:
            return None
        return None

    async def finish(self, size: int, md5: bytes) -> None:
        assert self.client is not None
        if self.buffer:
            data, self.buffer = self.buffer, bytearray()
            await self._send(bytes(data))
        with map_ftp_errors(self.context, "write", self.path):
            stream, self.stream = self.stream, None
            await stream.finish()
            stored = await self.client.size(self.temp)
        self.owner.release(self.client)
        self.client = None
        if stored is not None and stored != size:
            raise self.context.error(
                f"the FTP server {self.context.host} stored {stored} bytes of `{self.path}` instead of {size}",
                ErrorCode.SIZE_MISMATCH,
                DestinationUnavailable,
            )

    async def publish(self) -> None:
        client = await self.owner.acquire()
        try:
            await self._rename(client)
        except BaseException:
            self.owner.drop(client)
            raise
        self.created = False
        self.owner.release(client)

    async def _rename(self, client: FtpClient) -> None:
        try:
            with map_ftp_errors(self.context, "rename", self.path):
                await client.rename(self.temp, self.path)
            return
        except DestinationError as exc:
            with map_ftp_errors(self.context, "rename", self.path):
                if exc.transient or not await client.exists(self.path):
                    raise
        # Some servers (IIS, some NAS) refuse to rename over an existing file. Move the old one aside
        # rather than delete it, so it can be put back if the second rename fails too.
        aside = self.temp.removesuffix("tmp") + "old"
        message = (
            f"{self.context.host} refused to rename over the existing `{self.path}`; moving the old file "
            "aside first, so the name is briefly absent"
        )
        log.warning("%s", message)
        if not any(w["code"] == "ftp_replace_in_two_steps" for w in self.owner.warnings):
            self.owner.warnings.append({"code": "ftp_replace_in_two_steps", "message": message})
        with map_ftp_errors(self.context, "replace", self.path):
            await client.rename(self.path, aside)
        try:
            with map_ftp_errors(self.context, "rename", self.path):
                await client.rename(self.temp, self.path)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.rename(aside, self.path)
            raise
        try:
            await client.remove_file(aside)
        except Exception as exc:
            log.warning("could not delete `%s` (the replaced `%s`) on %s: %s", aside, self.path, self.context.host, exc)

    async def discard(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            if self.stream is not None:
                self.stream.close()
                self.stream = None
                # Let the server finish the aborted STOR before the file is deleted.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.command(None, ("2xx", "4xx", "5xx"), "1xx"), REPLY_GRACE)
            self.owner.drop(client)  # a connection with an aborted transfer is not reused
        if self.created:
            self.created = False
            await self.owner.remove_quietly(self.temp)


class FtpDestination:
    def __init__(self, config: DestinationConfig, settings: Settings, *, timeout: float | None = None):
        assert config.host is not None and config.username is not None
        self.config = config
        self.password = (
            settings.secret(config.password_setting, purpose=f"FTP password of {config.id}")
            if config.password_setting
            else ""
        )
        self.timeout = timeout or _timeout_setting(settings)
        self.context = FtpContext(config, self.password, self.timeout)
        self.description = f"ftp {config.host}:{config.port}"
        self.warnings: list[dict[str, str]] = []
        self.tls = _tls_context(config, self.context) if config.tls != "none" else None
        self.idle: list[FtpClient] = []
        self.idle_since: dict[int, float] = {}
        self.clients: list[FtpClient] = []
        self.folders: set[str] = set()
        self.listed: dict[str, list[tuple[str, str | None]]] = {}

    async def _connect(self) -> FtpClient:
        config, context = self.config, self.context
        if not config.passive:
            raise context.error(
                f"destinations.{config.id}.passive: active mode (`passive: false`) is not supported: an Azure "
                "Function cannot accept the server's data connections; use passive mode (the default)",
                ErrorCode.UNSUPPORTED,
            )
        client = FtpClient(tls=self.tls, implicit=config.tls == "implicit", timeout=self.timeout)
        try:
            with map_ftp_errors(context, "connect"):
                await client.connect(config.host or "", config.port or 21)
            if config.tls == "explicit":
                with map_ftp_errors(context, "start TLS"):
                    await client.start_explicit_tls()
            with map_ftp_errors(context, "log in"):
                await client.login(config.username or "", self.password)
            with map_ftp_errors(context, "set up the session"):
                if self.tls is not None:
                    await client.protect_data()
                await client.command("TYPE I", "200")  # binary, always
                with contextlib.suppress(aioftp.StatusCodeError):
                    await client.command("OPTS UTF8 ON", "2xx")
                if context.home is None:
                    context.home = str(await client.get_current_directory())
        except BaseException:
            client.close()
            raise
        self.clients.append(client)
        return client

    async def acquire(self) -> FtpClient:
        """A logged-in connection: an idle one (checked if idle for a while: servers close idle ones) or a new one."""
        while self.idle:
            client = self.idle.pop()
            if time.monotonic() - self.idle_since.pop(id(client), 0.0) < IDLE_CHECK:
                return client
            try:
                await asyncio.wait_for(client.command("NOOP", "2xx"), REPLY_GRACE)
                return client
            except Exception:
                self.drop(client)
        return await self._connect()

    def release(self, client: FtpClient) -> None:
        self.idle.append(client)
        self.idle_since[id(client)] = time.monotonic()

    def drop(self, client: FtpClient) -> None:
        client.close()
        self.idle_since.pop(id(client), None)
        with contextlib.suppress(ValueError):
            self.idle.remove(client)

    async def __aenter__(self) -> FtpDestination:
        self.release(await self._connect())  # fail fast on host, TLS and credentials
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for client in self.clients:
            if client in self.idle:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.quit(), REPLY_GRACE)
            client.close()
        self.idle.clear()
        self.clients.clear()

    async def open(self, path: str, *, content_type: str) -> FtpUpload:
        client = await self.acquire()
        upload = FtpUpload(self, client, path)
        try:
            await self._ensure_folder(client, upload.folder)
            if not await self._sweep(client, upload.folder, PurePosixPath(path).name):
                self.drop(client)  # the listing broke it; the upload gets a fresh one (and the real error)
                upload.client = client = await self.acquire()
            await upload.start()
        except BaseException:
            await upload.discard()
            raise
        return upload

    async def _ensure_folder(self, client: FtpClient, folder: str) -> None:
        if folder in ("", ".", "/") or folder in self.folders:
            return
        home = self.context.home or "/"
        with map_ftp_errors(self.context, "create folder", folder):
            exists = await client.is_folder(folder, home)
        if not exists:
            parts = PurePosixPath(folder).parts
            for depth in range(1, len(parts) + 1):
                prefix = str(PurePosixPath(*parts[:depth]))
                with map_ftp_errors(self.context, "create folder", prefix):
                    if parts[depth - 1] in (".", "..", "/") or (
                        depth < len(parts) and await client.is_folder(prefix, home)
                    ):
                        continue
                    await client.command("MKD " + prefix, "257")
        self.folders.add(folder)

    async def _sweep(self, client: FtpClient, folder: str, name: str) -> bool:
        """Delete temporary files a crashed run or server left for this target (or any, after a day).

        Best effort: a listing that fails is logged, never fatal. Returns whether `client` is still usable.
        """
        if folder not in self.listed:
            self.listed[folder] = []
            try:
                self.listed[folder] = await asyncio.wait_for(client.entries(folder), self.timeout)
            except Exception as exc:
                log.info(
                    "could not list `%s` on %s to clean up old temporary files: %s", folder, self.context.host, exc
                )
                try:
                    await asyncio.wait_for(client.command("NOOP", "2xx"), REPLY_GRACE)
                except Exception:
                    return False
        cutoff = (datetime.now(UTC) - STALE_AFTER).strftime("%Y%m%d%H%M%S")
        keep: list[tuple[str, str | None]] = []
        for entry, modified in self.listed[folder]:
            match = TEMP.match(entry)
            if match and (match["target"] == name or (modified is not None and modified[:14] < cutoff)):
                stale = entry if folder in ("", ".") else f"{folder.rstrip('/')}/{entry}"
                try:
                    await client.remove_file(stale)
                    log.info("removed `%s`, left on %s by an earlier failed run", stale, self.context.host)
                except aioftp.StatusCodeError as exc:
                    log.info(
                        "could not remove the old temporary file `%s` on %s: %s",
                        stale,
                        self.context.host,
                        " ".join(reply_text(exc)),
                    )
            else:
                keep.append((entry, modified))
        self.listed[folder] = keep
        return True

    async def remove_quietly(self, path: str) -> None:
        """Delete a temporary file, on a fresh connection if need be; never raises."""
        try:
            client = await self.acquire()
        except Exception as exc:
            log.warning(
                "could not remove the temporary file `%s` on %s (%s); the next run writing that file removes it",
                path,
                self.context.host,
                exc,
            )
            return
        try:
            await asyncio.wait_for(client.remove_file(path), self.timeout)
            self.release(client)
        except Exception as exc:
            self.drop(client)
            log.warning(
                "could not remove the temporary file `%s` on %s (%s); the next run writing that file removes it",
                path,
                self.context.host,
                exc,
            )


def _timeout_setting(settings: Settings, name: str = TIMEOUT_SETTING) -> float:
    raw = settings.get(name)
    if raw is None:
        return TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise DestinationError(
            f"app setting `{name}` must be a number of seconds between 0 and 3600, not `{raw}`",
            code=ErrorCode.INVALID_SETTING,
        )
    return value


def _tls_context(config: DestinationConfig, context: FtpContext) -> ssl.SSLContext:
    """Verification on (system trust store), plus the CA certificates in `ca_file` when given."""
    tls = ssl.create_default_context()
    if context.ca_file:
        try:
            tls.load_verify_locations(cafile=context.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise DestinationError(
                f"destinations.{config.id}.ca_file: cannot load CA certificates from `{context.ca_file}`: "
                f"{getattr(exc, 'strerror', None) or exc}; it must be a readable PEM file",
                code=ErrorCode.INVALID_CA_FILE,
            ) from exc
    return tls
