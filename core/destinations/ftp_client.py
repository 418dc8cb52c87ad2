"""The FTP client a destination uses: aioftp's, with FTPS data connections and passive mode fixed.

Why `FtpClient` overrides aioftp 0.28's `_open_connection` and `get_stream` (rather than forking
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
import socket
import ssl
from pathlib import PurePosixPath
from typing import Any

import aioftp
from aioftp.common import SSLSessionBoundContext, async_enterable

log = logging.getLogger(__name__)

REPLY_GRACE = 5.0  # seconds to wait for a server to explain a broken transfer
KEEPALIVE = 60  # seconds between TCP keep-alives on idle connections


class DataTlsError(Exception):
    """TLS on a data connection failed; `reply` is what the server said about it, if it did."""

    def __init__(self, reason: str, reply: aioftp.StatusCodeError | None):
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def reply_text(exc: aioftp.StatusCodeError) -> tuple[str, str]:
    code = str(exc.received_codes[-1]) if exc.received_codes else "???"
    lines = [exc.info] if isinstance(exc.info, str) else list(exc.info or [])
    return code, " ".join(line.strip(" -") for line in lines if line.strip(" -"))


class FtpClient(aioftp.Client):
    """aioftp's client with FTPS data connections in the order servers expect (see the module docstring)."""

    def __init__(self, *, tls: ssl.SSLContext | None, implicit: bool, timeout: float):
        super().__init__(
            socket_timeout=timeout,
            connection_timeout=timeout,
            path_timeout=timeout,
            encoding="utf-8",
            passive_commands=("epsv", "pasv"),
        )
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
            asyncio.open_connection(
                host,
                port,
                ssl=tls,
                server_hostname=host if tls else None,
                ssl_handshake_timeout=self.timeout if tls else None,
            ),
            self.timeout,
        )
        keep_alive(writer)
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
            log.info(
                "%s answered PASV with %s, not reachable from here; using %s instead",
                self.server_host,
                address,
                self.server_host,
            )
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
        self,
        command: str | None = None,
        expected_codes: str | tuple[str, ...] = (),
        wait_codes: str | tuple[str, ...] = (),
        censor_after: int | None = None,
        conn_type: str = "I",
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
        return aioftp.DataConnectionThrottleStreamIO(
            self, reader, writer, throttles={"_": self.throttle}, timeout=self.socket_timeout
        )

    async def _command_then_tls(
        self,
        writer: asyncio.StreamWriter,
        command: str,
        expected_codes: str | tuple[str, ...],
        wait_codes: str | tuple[str, ...],
    ) -> None:
        await self.command(command)
        handshake = asyncio.ensure_future(
            writer.start_tls(self._data_tls(), server_hostname=self.server_host, ssl_handshake_timeout=self.timeout)
        )
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


def keep_alive(writer: asyncio.StreamWriter) -> None:
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
