"""SFTP (SSH File Transfer Protocol, asyncssh): pinned host keys, pipelined writes, atomic publish.

Folders follow the FTP rules: a folder starting with `/` is absolute, anything else is relative
to the login directory (`.` is the login directory, `..` its parent). Missing folders are
created. One SSH connection and one SFTP session serve the whole run; files written at the same
time share it (SFTP multiplexes requests).

Host keys: the server's key must be one pinned in `host_key` (`sftp_keys.py`); any other is
refused during the key exchange, before the password or key is offered.

Writes are pipelined: the stream is cut into blocks of up to `BLOCK` bytes (or the server's
`limits@openssh.com` maximum) and up to `IN_FLIGHT` write requests are outstanding at once, so
throughput is not bounded by one round trip per block. A failed write surfaces at the next
`write` or at `finish`.

Publishing: every file goes to `.<name>.<random>.filecast-tmp` in its folder, its size is checked
with a stat, and only when the whole run is staged is it renamed over the target with
`posix-rename@openssh.com` (atomic: a reader sees the old file or the new one). A server without
that extension gets a plain rename, and where the target exists the FTP fallback: the old file is
moved aside, the new one renamed, the old one deleted; that is logged and recorded on the run as
the warning `sftp_replace_in_two_steps`. Temporary files of a failed upload are deleted (on a
fresh connection if the old one broke); those a crash left behind are deleted by the next run
that writes the same file, and any older than a day by any run writing to the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any

import asyncssh

from ..catalog.model import Destination as DestinationConfig
from ..error_codes import ErrorCode
from ..errors import DestinationError, DestinationUnavailable
from ..settings import Settings
from .ftp import STALE_AFTER, TEMP, _timeout_setting
from .sftp_errors import SftpContext, map_sftp_errors
from .sftp_keys import Pins, fingerprint, pins, private_key

log = logging.getLogger(__name__)

TIMEOUT_SETTING = "FILECAST_SFTP_TIMEOUT"  # seconds a connection or request may stall (default 30)
BLOCK = 256 * 1024  # bytes per write request (OpenSSH's server takes up to 255 KiB)
IN_FLIGHT = 16  # write requests outstanding per file
KEEPALIVE = 60  # seconds between SSH keep-alives (NAT drops idle connections)
# AES-GCM first: hardware AES makes it the cheapest cipher for both ends; the rest as asyncssh orders them.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)


class _PinnedHostKey(asyncssh.SSHClient):
    """Accepts the server only if its key is pinned; remembers the key it saw otherwise."""

    def __init__(self, context: SftpContext, pinned: Pins):
        self.context, self.pinned = context, pinned

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        seen = fingerprint(key)
        if seen in self.pinned.fingerprints:
            return True
        self.context.seen, self.context.seen_type = seen, key.get_algorithm()
        return False


class SftpUpload:
    """One file: streamed to a temporary name while the run writes it, renamed over the target on publish."""

    def __init__(self, owner: SftpDestination, path: str):
        self.owner = owner
        self.context = owner.context
        self.path = path
        target = PurePosixPath(path)
        self.folder = str(target.parent)
        self.temp = str(target.with_name(f".{target.name}.{secrets.token_hex(4)}.filecast-tmp"))
        self.file: Any = None
        self.created = False
        self.offset = 0
        self.buffer = bytearray()
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        self.pending: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None

    async def start(self) -> None:
        with map_sftp_errors(self.context, "write", self.path):
            self.file = await self.owner.call(self.owner.sftp.open(self.temp, "wb"))
        self.created = True

    async def write(self, data: bytes) -> None:
        self.buffer += data
        block = self.owner.block
        if len(self.buffer) < block:
            return
        view = memoryview(self.buffer)
        whole = len(view) - len(view) % block
        for start in range(0, whole, block):
            await self._send(bytes(view[start : start + block]))
        view.release()
        del self.buffer[:whole]

    async def _send(self, block: bytes) -> None:
        await self._raise_failure()
        try:
            await asyncio.wait_for(self.slots.acquire(), self.owner.timeout)
        except TimeoutError:
            await self._raise_failure()
            with map_sftp_errors(self.context, "write", self.path):
                raise
        task = asyncio.ensure_future(self._write_at(block, self.offset))
        self.offset += len(block)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _write_at(self, block: bytes, offset: int) -> None:
        try:
            await self.file.write(block, offset)
        except BaseException as exc:
            if self.failure is None:
                self.failure = exc
        finally:
            self.slots.release()

    async def _raise_failure(self) -> None:
        if self.failure is None:
            return
        failure = self.failure
        if isinstance(failure, asyncssh.SFTPFailure):
            await self.owner.check_space(self.folder, self.path, failure)
        with map_sftp_errors(self.context, "write", self.path):
            raise failure

    async def finish(self, size: int, md5: bytes) -> None:
        if self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            await self._send(data)
        if self.pending:
            await asyncio.wait(list(self.pending))
        await self._raise_failure()
        file, self.file = self.file, None
        try:
            with map_sftp_errors(self.context, "write", self.path):
                await self.owner.call(file.close())
        except DestinationError as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPFailure):
                await self.owner.check_space(self.folder, self.path, exc.__cause__)
            raise
        with map_sftp_errors(self.context, "write", self.path):
            stored = (await self.owner.call(self.owner.sftp.stat(self.temp))).size
        if stored is not None and stored != size:
            raise self.context.error(
                f"the SFTP server {self.context.host} stored {stored} bytes of `{self.path}` instead of {size}",
                ErrorCode.SIZE_MISMATCH,
                DestinationUnavailable,
            )

    async def publish(self) -> None:
        sftp = self.owner.sftp
        try:
            with map_sftp_errors(self.context, "rename", self.path):
                await self.owner.call(sftp.posix_rename(self.temp, self.path))
        except DestinationError as exc:
            if not isinstance(exc.__cause__, asyncssh.SFTPOpUnsupported):
                raise
            await self._replace(sftp)
        self.created = False

    async def _replace(self, sftp: asyncssh.SFTPClient) -> None:
        """No posix-rename: a plain rename, and where the target exists, move the old file aside first."""
        with map_sftp_errors(self.context, "rename", self.path):
            if not await self.owner.call(sftp.exists(self.path)):
                await self.owner.call(sftp.rename(self.temp, self.path))
                return
        aside = self.temp.removesuffix("tmp") + "old"
        message = (
            f"{self.context.host} does not offer posix-rename@openssh.com, so `{self.path}` was replaced in "
            "two steps (the old file moved aside first): the name was briefly absent"
        )
        log.warning("%s", message)
        if not any(w["code"] == "sftp_replace_in_two_steps" for w in self.owner.warnings):
            self.owner.warnings.append({"code": "sftp_replace_in_two_steps", "message": message})
        with map_sftp_errors(self.context, "replace", self.path):
            await self.owner.call(sftp.rename(self.path, aside))
        try:
            with map_sftp_errors(self.context, "rename", self.path):
                await self.owner.call(sftp.rename(self.temp, self.path))
        except BaseException:
            with contextlib.suppress(Exception):
                await self.owner.call(sftp.rename(aside, self.path))
            raise
        try:
            await self.owner.call(sftp.remove(aside))
        except Exception as exc:
            log.warning("could not delete `%s` (the replaced `%s`) on %s: %s", aside, self.path, self.context.host, exc)

    async def discard(self) -> None:
        for task in list(self.pending):
            task.cancel()
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        file, self.file = self.file, None
        if file is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(file.close(), self.owner.timeout)
        if self.created:
            self.created = False
            await self.owner.remove_quietly(self.temp)


class SftpDestination:
    def __init__(self, config: DestinationConfig, settings: Settings, *, timeout: float | None = None):
        assert config.host is not None and config.username is not None
        self.config = config
        self.password = (
            settings.secret(config.password_setting, purpose=f"SFTP password of {config.id}")
            if config.password_setting
            else None
        )
        self.key_text = (
            settings.secret(config.private_key_setting, purpose=f"SFTP private key of {config.id}")
            if config.private_key_setting
            else None
        )
        self.passphrase = (
            settings.secret(config.passphrase_setting, purpose=f"passphrase of the SFTP key of {config.id}")
            if config.passphrase_setting
            else None
        )
        self.timeout = timeout or _timeout_setting(settings, TIMEOUT_SETTING)
        self.context = SftpContext(
            config, [s for s in (self.password, self.key_text, self.passphrase) if s], self.timeout
        )
        self.pins = pins(config.host_key)
        self.context.pinned = tuple(sorted(self.pins.fingerprints))
        self.key = None
        if self.key_text is not None:
            with map_sftp_errors(self.context, "read the private key"):
                self.key = private_key(self.key_text, self.passphrase)
        self.description = f"sftp {config.host}:{config.port}"
        self.warnings: list[dict[str, str]] = []
        self.connection: asyncssh.SSHClientConnection | None = None
        self.sftp: asyncssh.SFTPClient = None  # type: ignore[assignment]  # set by connect()
        self.block = BLOCK
        self.folders: set[str] = set()
        self.listed: dict[str, list[Any]] = {}  # folder → its temporary files, listed once per run

    async def call(self, awaitable: Any) -> Any:
        """One SFTP request, bounded by the timeout."""
        return await asyncio.wait_for(awaitable, self.timeout)

    async def connect(self) -> None:
        config, context = self.config, self.context
        methods = [
            m
            for m, on in (("publickey", self.key), ("keyboard-interactive", self.password), ("password", self.password))
            if on is not None
        ]
        options = asyncssh.SSHClientConnectionOptions(
            config=None,
            username=config.username,
            password=self.password,
            client_keys=[self.key] if self.key is not None else None,
            agent_path=None,
            preferred_auth=methods,
            known_hosts=([], [], []),
            server_host_key_algs=self.pins.algorithms or (),
            encryption_algs=CIPHERS,
            compression_algs=None,
            connect_timeout=self.timeout,
            login_timeout=self.timeout,
            keepalive_interval=KEEPALIVE,
        )
        context.seen = None
        with map_sftp_errors(context, "connect"):
            connection = await asyncio.wait_for(
                asyncssh.connect(
                    config.host or "",
                    config.port or 22,
                    options=options,
                    client_factory=lambda: _PinnedHostKey(context, self.pins),
                ),
                self.timeout,
            )
        try:
            with map_sftp_errors(context, "start SFTP"):
                self.sftp = await self.call(connection.start_sftp_client())
                if context.home is None:
                    context.home = await self.call(self.sftp.realpath("."))
        except BaseException:
            connection.close()
            raise
        limit = self.sftp.limits.max_write_len
        self.block = min(BLOCK, limit) if limit else 32 * 1024
        self.connection = connection

    async def __aenter__(self) -> SftpDestination:
        await self.connect()  # fail fast on host, host key and credentials
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                self.sftp.exit()
            connection.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.wait_closed(), 5)

    async def open(self, path: str, *, content_type: str) -> SftpUpload:
        upload = SftpUpload(self, path)
        try:
            await self._ensure_folder(upload.folder)
            await self._sweep(upload.folder, PurePosixPath(path).name)
            await upload.start()
        except BaseException:
            await upload.discard()
            raise
        return upload

    async def _ensure_folder(self, folder: str) -> None:
        if folder in ("", ".", "/") or folder in self.folders:
            return
        with map_sftp_errors(self.context, "create folder", folder):
            exists = await self.call(self.sftp.isdir(folder))
        if not exists:
            parts = PurePosixPath(folder).parts
            for depth in range(1, len(parts) + 1):
                prefix = str(PurePosixPath(*parts[:depth]))
                if parts[depth - 1] in (".", "..", "/"):
                    continue
                with map_sftp_errors(self.context, "create folder", prefix):
                    if depth < len(parts) and await self.call(self.sftp.isdir(prefix)):
                        continue
                    try:
                        await self.call(self.sftp.mkdir(prefix))
                    except asyncssh.SFTPError:
                        if not await self.call(self.sftp.isdir(prefix)):  # created meanwhile is fine
                            raise
        self.folders.add(folder)

    async def _sweep(self, folder: str, name: str) -> None:
        """Delete temporary files a crashed run left for this target (or any, after a day); best effort."""
        if folder not in self.listed:
            self.listed[folder] = []
            try:
                entries = await self.call(self.sftp.readdir(folder or "."))
            except Exception as exc:
                log.info(
                    "could not list `%s` on %s to clean up old temporary files: %s", folder, self.context.host, exc
                )
                return
            self.listed[folder] = [e for e in entries if TEMP.match(str(e.filename))]
        cutoff = (datetime.now(UTC) - STALE_AFTER).timestamp()
        keep = []
        for entry in self.listed[folder]:
            match = TEMP.match(str(entry.filename))
            mtime = entry.attrs.mtime
            if not match or not (match["target"] == name or (mtime is not None and mtime < cutoff)):
                keep.append(entry)
            else:
                stale = str(entry.filename) if folder in ("", ".") else f"{folder.rstrip('/')}/{entry.filename}"
                try:
                    await self.call(self.sftp.remove(stale))
                    log.info("removed `%s`, left on %s by an earlier failed run", stale, self.context.host)
                except Exception as exc:
                    log.info("could not remove the old temporary file `%s` on %s: %s", stale, self.context.host, exc)
        self.listed[folder] = keep

    async def check_space(self, folder: str, path: str, failure: asyncssh.SFTPError) -> None:
        """OpenSSH answers a full disk with a bare `Failure`: ask the file system (statvfs@openssh.com)."""
        try:
            space = await self.call(self.sftp.statvfs(folder or "."))
        except Exception:
            return
        if space.bavail * space.frsize < 2 * self.block:
            raise self.context.error(
                f"the SFTP server {self.context.host} could not store `{path}` (server said: {failure.reason}): its "
                f"disk is full ({space.bavail * space.frsize} bytes free) or the user's quota is exhausted; free "
                "space on the server or raise the quota",
                ErrorCode.DISK_FULL,
                DestinationUnavailable,
            ) from failure

    async def remove_quietly(self, path: str) -> None:
        """Delete a temporary file, on a fresh connection if the old one broke; never raises."""
        for attempt in range(2):
            try:
                if attempt:
                    await self.__aexit__(None, None, None)
                    await self.connect()
                await self.call(self.sftp.remove(path))
                return
            except asyncssh.SFTPNoSuchFile:
                return
            except Exception as exc:
                if attempt:
                    log.warning(
                        "could not remove the temporary file `%s` on %s (%s); the next run writing that "
                        "file removes it",
                        path,
                        self.context.host,
                        getattr(exc, "message", exc),
                    )
