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

Why `_Client` overrides aioftp 0.28's `_open_connection` and `get_stream` (rather than forking
aioftp): aioftp opens a data connection with TLS already on, so the handshake must finish before
it sends the transfer command (STOR, LIST). vsftpd accepts the data connection, and starts its
side of the handshake, only after it receives that command: each side waits for the other until
a timeout. Here a data connection is opened as plain TCP, the transfer command is sent, and the
handshake runs while the reply is awaited, which suits servers that answer 150 before the
handshake (vsftpd, as ftplib and curl expect) and any that answer only after it. Each data
connection resumes the control connection's TLS session (aioftp's `SSLSessionBoundContext`,
TLS 1.3 included): vsftpd with `require_ssl_reuse` (its default) refuses one that does not
(`522 SSL connection failed: session reuse required`), since resumption proves the data
connection comes from the client that logged in.

Passive mode only (EPSV, then PASV): an Azure Function cannot accept the connections active mode
needs. A PASV reply naming a private or otherwise unroutable address other than the control
connection's peer (a server behind NAT that advertises its inside address) is ignored and the
control connection's host is used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any

import aioftp
from aioftp.common import SSLSessionBoundContext, async_enterable

from ..catalog import Destination as DestinationConfig
from ..errors import DestinationError
from ..settings import Settings

log = logging.getLogger(__name__)

TIMEOUT = 30.0                          # seconds; app setting FILECAST_FTP_TIMEOUT overrides
TIMEOUT_SETTING = "FILECAST_FTP_TIMEOUT"
WRITE_SIZE = 256 * 1024                 # smallest data-connection write (aioftp's 8 KiB halves throughput)
REPLY_GRACE = 5.0                       # seconds to wait for a server to explain a broken transfer
STALE_AFTER = timedelta(hours=24)       # a leftover temporary file this old belongs to no live run
KEEPALIVE = 60                          # seconds between TCP keep-alives on idle connections
IDLE_CHECK = 30.0                       # a pooled connection idle this long is checked (NOOP) before reuse
TEMP = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{8}\.filecast-(?:tmp|old)$")
TLS_WORDS = re.compile(r"\b(TLS|SSL|encrypt\w*|AUTH|secure)\b", re.IGNORECASE)
SPACE_WORDS = re.compile(r"no space|disk full|quota|storage|insufficient", re.IGNORECASE)


class DataTlsError(Exception):
    """TLS on a data connection failed; `reply` is what the server said about it, if it did."""

    def __init__(self, reason: str, reply: aioftp.StatusCodeError | None):
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def _reply_text(exc: aioftp.StatusCodeError) -> tuple[str, str]:
    code = str(exc.received_codes[-1]) if exc.received_codes else "???"
    lines = [exc.info] if isinstance(exc.info, str) else list(exc.info or [])
    return code, " ".join(line.strip(" -") for line in lines if line.strip(" -"))


class _Client(aioftp.Client):
    """aioftp's client with FTPS data connections in the order servers expect (see the module docstring)."""

    def __init__(self, *, tls: ssl.SSLContext | None, implicit: bool, timeout: float):
        super().__init__(socket_timeout=timeout, connection_timeout=timeout, path_timeout=timeout,
                         encoding="utf-8", passive_commands=("epsv", "pasv"))
        self.tls = tls
        self.implicit = implicit and tls is not None
        self.timeout = timeout
        self.pasv_noted = False
        self.mlsd = True  # until the server says it doesn't know MLSD

    async def _open_connection(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # The control connection is TLS from the first byte when implicit; a data connection is
        # plain TCP here and gets TLS in get_stream, after its transfer command.
        tls = self.tls if self._stream is None and self.implicit else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None,
                                    ssl_handshake_timeout=self.timeout if tls else None),
            self.timeout)
        _keep_alive(writer)
        return reader, writer

    async def start_explicit_tls(self) -> None:
        assert self.tls is not None
        await self.command("AUTH TLS", "234")
        await self.stream.start_tls(self.tls, server_hostname=self.server_host)

    async def protect_data(self) -> None:
        await self.command("PBSZ 0", "200")
        await self.command("PROT P", "200")

    async def _do_pasv(self) -> tuple[str | None, int]:
        _, info = await self.command("PASV", "227")
        address, port = self.parse_pasv_response(info[-1])
        peer = self.stream.writer.get_extra_info("peername")
        if peer and address == peer[0]:
            return None, port  # None: aioftp connects to the control connection's host
        try:
            routable = ipaddress.ip_address(address).is_global
        except ValueError:
            routable = False
        if routable:
            return address, port
        if not self.pasv_noted:
            self.pasv_noted = True
            log.info("%s answered PASV with %s, not reachable from here; using %s instead",
                     self.server_host, address, self.server_host)
        return None, port

    def _data_tls(self) -> ssl.SSLContext:
        assert self.tls is not None
        # Always the control connection's session (its newest ticket under TLS 1.3), as FileZilla and
        # curl do: servers check the data connection resumes *that* session.
        control = self.stream.writer.get_extra_info("ssl_object")
        if control is None or control.session is None:
            return self.tls
        return SSLSessionBoundContext(ssl.PROTOCOL_TLS_CLIENT, context=self.tls, session=control.session)

    @async_enterable
    async def get_stream(
        self, command: str | None = None, expected_codes: str | tuple[str, ...] = (),
        wait_codes: str | tuple[str, ...] = (), censor_after: int | None = None, conn_type: str = "I",
        offset: int = 0,
    ) -> aioftp.DataConnectionThrottleStreamIO:
        reader, writer = await self.get_passive_connection(conn_type)  # type: ignore[arg-type]
        try:
            if offset:
                await self.command("REST " + str(offset), "350")
            if self.tls is None:
                await self.command(command, expected_codes, wait_codes, censor_after)
            else:
                await self._command_then_tls(writer, command or "", expected_codes, wait_codes)
        except BaseException:
            writer.close()
            raise
        return aioftp.DataConnectionThrottleStreamIO(self, reader, writer, throttles={"_": self.throttle},
                                                     timeout=self.socket_timeout)

    async def _command_then_tls(self, writer: asyncio.StreamWriter, command: str,
                                expected_codes: str | tuple[str, ...], wait_codes: str | tuple[str, ...]) -> None:
        await self.command(command)
        handshake = asyncio.ensure_future(writer.start_tls(
            self._data_tls(), server_hostname=self.server_host, ssl_handshake_timeout=self.timeout))
        try:
            await self.command(None, expected_codes, wait_codes)
        except BaseException:
            handshake.cancel()
            await asyncio.gather(handshake, return_exceptions=True)
            raise
        try:
            await handshake
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            # The server says why on the control connection (`522 … session reuse required`).
            reply: aioftp.StatusCodeError | None = None
            try:
                await asyncio.wait_for(self.command(None, "2xx", "1xx"), REPLY_GRACE)
            except aioftp.StatusCodeError as status:
                reply = status
            except Exception:
                pass
            raise DataTlsError(getattr(exc, "reason", None) or str(exc) or type(exc).__name__, reply) from exc

    async def size(self, path: str) -> int | None:
        """The size the server reports for `path` (SIZE, else MLST/LIST); None when it can't tell."""
        try:
            _, info = await self.command("SIZE " + path, "213")
            return int(info[-1].strip())
        except aioftp.StatusCodeError as exc:
            if not exc.received_codes[-1].matches("50x"):
                raise
        except ValueError:
            pass
        stat = await self.stat(path)
        return int(stat["size"]) if "size" in stat else None

    async def exists(self, path: Any) -> bool:
        try:
            await self.command("SIZE " + str(path), "213")
            return True
        except aioftp.StatusCodeError as exc:
            if exc.received_codes[-1].matches("550"):
                return False
            if not exc.received_codes[-1].matches("50x"):
                raise
        return await super().exists(path)

    async def is_folder(self, folder: str, home: str) -> bool:
        """Whether `folder` exists: CWD into it, then back to the login directory `home`."""
        try:
            await self.command("CWD " + folder, "2xx")
        except aioftp.StatusCodeError as exc:
            if exc.received_codes[-1].matches("5xx"):
                return False
            raise
        await self.command("CWD " + home, "2xx")
        return True

    async def entries(self, folder: str) -> list[tuple[str, str | None]]:
        """Names in `folder`, hidden ones included, with their `modify` time (YYYYMMDDHHMMSS) when known."""
        result: list[tuple[str, str | None]] = []
        for command, parse in (("MLSD", self.parse_mlsx_line), ("LIST -a", self.parse_list_line)):
            if command == "MLSD" and not self.mlsd:
                continue
            try:
                stream = await self.get_stream(f"{command} {folder}", "1xx")
            except aioftp.StatusCodeError as exc:
                if exc.received_codes[-1].matches("50x"):
                    self.mlsd = self.mlsd and command != "MLSD"
                    continue
                raise
            async with stream:
                async for line in stream.iter_by_line():
                    with contextlib.suppress(Exception):
                        name, info = parse(line)
                        result.append((PurePosixPath(name).name, str(info.get("modify") or "") or None))
            return result
        return result


class FtpContext:
    """What a message needs to say where things went wrong (never the password itself)."""

    def __init__(self, config: DestinationConfig, password: str, timeout: float):
        self.id = config.id
        self.hostname = config.host
        self.host = f"{config.host}:{config.port}"
        self.user = config.username
        self.password_setting = config.password_setting
        self.tls = config.tls
        self.ca_file: str | None = getattr(config, "ca_file", None)
        self.timeout = timeout
        self.home: str | None = None  # the login directory, once known
        self._password = password

    def absolute(self, folder: str) -> str:
        if folder.startswith("/") or self.home is None:
            return folder
        return str(PurePosixPath(self.home) / folder) if folder not in ("", ".") else self.home

    def error(self, message: str, code: str, *, transient: bool = False) -> DestinationError:
        if self._password and len(self._password) >= 3:
            message = message.replace(self._password, "***")
        return DestinationError(message, code=code, transient=transient)


WRITE_ACTIONS = ("write", "create folder", "rename", "replace", "delete")


def _reply_error(context: FtpContext, action: str, path: str | None, exc: aioftp.StatusCodeError) -> DestinationError:
    code, text = _reply_text(exc)
    said = f" (server said: {code} {text})" if text else f" (server said: {code})"
    target = f" `{path}`" if path else ""
    transient = code.startswith("4")
    host = context.host
    if action == "start TLS":
        return context.error(
            f"the FTP server {host} does not offer explicit TLS (AUTH TLS){said}: if it expects TLS from the "
            "first byte use `tls: implicit` (usually port 990), otherwise ask for FTPS or use `tls: none`",
            "tls_failed")
    if context.tls == "none" and TLS_WORDS.search(text) and action in ("connect", "log in"):
        return context.error(
            f"the FTP server {host} requires TLS{said}: set `tls: explicit` (AUTH TLS, usually port 21) or "
            f"`tls: implicit` (usually port 990) on destination `{context.id}`", "tls_required")
    if code == "522" or (context.tls != "none" and code in ("521", "534", "535")):
        return context.error(f"TLS on the data connection to {host} failed during {action}{target}{said}: check "
                             "the server's FTPS settings", "tls_failed")
    if code == "530" or (action == "log in" and code.startswith("5")):
        setting = f"app setting `{context.password_setting}`" if context.password_setting else "the password"
        return context.error(f"login failed for user `{context.user}` on {host}{said}: check the username and "
                             f"{setting}", "authentication_failed")
    if code in ("452", "552") or (action == "write" and SPACE_WORDS.search(text)):
        return context.error(
            f"the FTP server {host} could not store{target}{said}: its disk is full or the user's quota is "
            "exhausted; free space on the server or raise the quota", "disk_full", transient=transient)
    if code == "451" and action == "write":  # vsftpd's answer to a full disk, among other local failures
        return context.error(
            f"the FTP server {host} could not store{target}{said}: writing on its side failed, most often because "
            "its disk is full or the user's quota is exhausted; free space on the server or raise the quota",
            "disk_full", transient=transient)
    if code in ("550", "553", "532") and action in WRITE_ACTIONS:
        folder = str(PurePosixPath(path).parent) if path and action != "create folder" else path or "."
        where = context.absolute(folder)
        if action == "create folder":
            parent = str(PurePosixPath(where).parent)
            return context.error(
                f"permission denied to create folder{target} on {host}{said}: the FTP user `{context.user}` "
                f"needs write access to `{parent}`, or create `{where}` for it", "permission_denied",
                transient=transient)
        return context.error(
            f"permission denied to {action}{target} on {host}{said}: the FTP user `{context.user}` needs write "
            f"access to the folder and the file (the folder is `{where}` on the server)", "permission_denied",
            transient=transient)
    if code == "421":
        return context.error(f"the FTP server {host} closed the connection during {action}{target}{said}",
                             "connection_lost", transient=True)
    return context.error(f"FTP {action}{target} failed on {host}{said}", "ftp_error", transient=transient)


@contextmanager
def map_ftp_errors(context: FtpContext, action: str, path: str | None = None) -> Iterator[None]:
    """Translate aioftp, socket and TLS errors: 4xx replies and network faults are transient, 5xx terminal."""
    target = f" `{path}`" if path else ""
    host = context.host
    try:
        yield
    except DestinationError:
        raise
    except aioftp.StatusCodeError as exc:
        raise _reply_error(context, action, path, exc) from exc
    except DataTlsError as exc:
        if exc.reply is not None:
            raise _reply_error(context, action, path, exc.reply) from exc
        raise context.error(f"TLS on the data connection to {host} failed during {action}{target} ({exc.reason}): "
                            "check the server's FTPS settings", "tls_failed") from exc
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise context.error(f"could not resolve the FTP host `{context.hostname}` (DNS did not answer)",
                                "unknown_host", transient=True) from exc
        raise context.error(f"unknown FTP host `{context.hostname}`: check the destination's `host`",
                            "unknown_host") from exc
    except ConnectionRefusedError as exc:
        raise context.error(f"connection refused by {host}: check `host`, `port` and that the FTP server is "
                            "running", "connection_refused", transient=True) from exc
    except ssl.SSLCertVerificationError as exc:
        detail = exc.verify_message or exc.reason or str(exc)
        hint = (f"`ca_file` (`{context.ca_file}`) does not hold the CA that signed it" if context.ca_file
                else "if the server uses a private or self-signed certificate, set `ca_file` to its CA certificate")
        if "mismatch" in str(detail).lower():
            hint = "the destination's `host` must be a name the certificate lists"
        raise context.error(f"the TLS certificate of {host} is not trusted ({detail}): {hint}",
                            "tls_certificate") from exc
    except ssl.SSLError as exc:
        raise context.error(
            f"TLS with {host} failed during {action}{target} ({exc.reason or exc}): check `tls` (`implicit` speaks "
            "TLS from the first byte, usually on port 990; `explicit` upgrades a plain connection with AUTH TLS, "
            "usually on port 21)", "tls_failed") from exc
    except TimeoutError as exc:
        hint = ("check `host`, `port`, `tls` and the firewall" if action in ("connect", "start TLS", "log in")
                else "the server or a firewall (passive data ports included) stopped answering")
        raise context.error(f"no answer from {host} within {context.timeout:g} s during {action}{target}: {hint}",
                            "timeout", transient=True) from exc
    except (OSError, EOFError, ConnectionError) as exc:
        raise context.error(f"the FTP connection to {host} broke during {action}{target}: "
                            f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__}",
                            "connection_lost", transient=True) from exc


class FtpUpload:
    """One file: streamed to a temporary name while the run writes it, renamed over the target on publish."""

    def __init__(self, owner: FtpDestination, client: _Client, path: str):
        self.owner = owner
        self.context = owner.context
        self.client: _Client | None = client
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
            raise self.context.error(f"the FTP server {self.context.host} stored {stored} bytes of `{self.path}` "
                                     f"instead of {size}", "size_mismatch", transient=True)

    async def publish(self) -> None:
        client = await self.owner.acquire()
        try:
            await self._rename(client)
        except BaseException:
            self.owner.drop(client)
            raise
        self.created = False
        self.owner.release(client)

    async def _rename(self, client: _Client) -> None:
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
        message = (f"{self.context.host} refused to rename over the existing `{self.path}`; moving the old file "
                   "aside first, so the name is briefly absent")
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
            log.warning("could not delete `%s` (the replaced `%s`) on %s: %s", aside, self.path, self.context.host,
                        exc)

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
            if config.password_setting else ""
        )
        self.timeout = timeout or _timeout_setting(settings)
        self.context = FtpContext(config, self.password, self.timeout)
        self.description = f"ftp {config.host}:{config.port}"
        self.warnings: list[dict[str, str]] = []
        self.tls = _tls_context(config, self.context) if config.tls != "none" else None
        self.idle: list[_Client] = []
        self.idle_since: dict[int, float] = {}
        self.clients: list[_Client] = []
        self.folders: set[str] = set()
        self.listed: dict[str, list[tuple[str, str | None]]] = {}

    async def _connect(self) -> _Client:
        config, context = self.config, self.context
        if not config.passive:
            raise context.error(
                f"destinations.{config.id}.passive: active mode (`passive: false`) is not supported: an Azure "
                "Function cannot accept the server's data connections; use passive mode (the default)", "unsupported")
        client = _Client(tls=self.tls, implicit=config.tls == "implicit", timeout=self.timeout)
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

    async def acquire(self) -> _Client:
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

    def release(self, client: _Client) -> None:
        self.idle.append(client)
        self.idle_since[id(client)] = time.monotonic()

    def drop(self, client: _Client) -> None:
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

    async def _ensure_folder(self, client: _Client, folder: str) -> None:
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
                            depth < len(parts) and await client.is_folder(prefix, home)):
                        continue
                    await client.command("MKD " + prefix, "257")
        self.folders.add(folder)

    async def _sweep(self, client: _Client, folder: str, name: str) -> bool:
        """Delete temporary files a crashed run or server left for this target (or any, after a day).

        Best effort: a listing that fails is logged, never fatal. Returns whether `client` is still usable.
        """
        if folder not in self.listed:
            self.listed[folder] = []
            try:
                self.listed[folder] = await asyncio.wait_for(client.entries(folder), self.timeout)
            except Exception as exc:
                log.info("could not list `%s` on %s to clean up old temporary files: %s", folder,
                         self.context.host, exc)
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
                    log.info("could not remove the old temporary file `%s` on %s: %s", stale, self.context.host,
                             " ".join(_reply_text(exc)))
            else:
                keep.append((entry, modified))
        self.listed[folder] = keep
        return True

    async def remove_quietly(self, path: str) -> None:
        """Delete a temporary file, on a fresh connection if need be; never raises."""
        try:
            client = await self.acquire()
        except Exception as exc:
            log.warning("could not remove the temporary file `%s` on %s (%s); the next run writing that file "
                        "removes it", path, self.context.host, exc)
            return
        try:
            await asyncio.wait_for(client.remove_file(path), self.timeout)
            self.release(client)
        except Exception as exc:
            self.drop(client)
            log.warning("could not remove the temporary file `%s` on %s (%s); the next run writing that file "
                        "removes it", path, self.context.host, exc)


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    """TCP keep-alives every minute: the control connection sits idle while a large file transfers,
    and NAT devices (Azure's SNAT among them, after 4 minutes) silently drop idle connections."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)


def _timeout_setting(settings: Settings) -> float:
    raw = settings.get(TIMEOUT_SETTING)
    if raw is None:
        return TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise DestinationError(f"app setting `{TIMEOUT_SETTING}` must be a number of seconds between 0 and 3600, "
                               f"not `{raw}`", code="invalid_setting")
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
                f"{getattr(exc, 'strerror', None) or exc}; it must be a readable PEM file", code="invalid_ca_file",
            ) from exc
    return tls
