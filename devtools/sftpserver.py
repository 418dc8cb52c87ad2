"""An in-process SFTP server (asyncssh's server classes) that misbehaves on request, for fault tests.

It runs on its own event loop in a thread of the calling process, on a free loopback port, with
a fresh ed25519 host key and one password user; `/` is `root` on disk. `Faults` are what real
servers do wrong, each injected where the real server would fail:

- `refuse_rename`: every rename is answered `permission denied` (a folder the user may write
  files into but not rename in, as some hosted SFTP services set up).
- `posix_rename=False`: the `posix-rename@openssh.com` extension is not advertised (servers other
  than OpenSSH's); a plain rename over an existing file is refused, as SFTP v3 specifies.
- `space`: the disk holds that many bytes in all: a write past it is answered with a bare
  `Failure`, as OpenSSH's server answers ENOSPC, and statvfs reports what is left.
- `drop_after`: the connection is cut (no goodbye) once that many bytes were written in it.
- `rate`: bytes per second each connection may write (a slow server or link).

The extension list is asyncssh's class attribute: a server without `posix_rename` swaps it for
its lifetime, so only one such server should run at a time (tests run one after the other).
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh import sftp as asyncssh_sftp

from .services import free_port


@dataclass
class Faults:
    refuse_rename: bool = False
    posix_rename: bool = True
    space: int | None = None
    drop_after: int | None = None
    rate: int | None = None


@dataclass
class Disk:
    """Bytes written to the server so far, for `Faults.space`."""

    used: int = 0
    drops: int = 0  # connections cut by `drop_after`
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Auth(asyncssh.SSHServer):
    def __init__(self, users: dict[str, str]):
        self.users = users

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return self.users.get(username) == password


class FaultySftpServer(asyncssh.SFTPServer):
    """asyncssh's local-file SFTP server, with `Faults` injected."""

    def __init__(self, chan: asyncssh.SSHServerChannel, root: Path, faults: Faults, disk: Disk):
        super().__init__(chan, chroot=str(root).encode())
        self.faults, self.disk = faults, disk
        self.written = 0
        self.dropped = False

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        faults = self.faults
        if faults.rate:
            await asyncio.sleep(len(data) / faults.rate)
        if faults.drop_after is not None and self.written + len(data) > faults.drop_after:
            if not self.dropped:  # writes already in flight land here too
                self.dropped = True
                self.disk.drops += 1
                self.connection.abort()
            raise asyncssh.SFTPConnectionLost("cut off by the test server")
        if faults.space is not None:
            with self.disk.lock:
                if self.disk.used + len(data) > faults.space:
                    raise asyncssh.SFTPFailure("Failure")
                self.disk.used += len(data)
        self.written += len(data)
        return int(super().write(file_obj, offset, data))  # type: ignore[arg-type]

    def statvfs(self, path: bytes) -> Any:
        if self.faults.space is None:
            return super().statvfs(path)
        free = max(0, self.faults.space - self.disk.used)
        return asyncssh.SFTPVFSAttrs(
            bsize=4096, frsize=1, blocks=self.faults.space, bfree=free, bavail=free, namemax=255
        )

    def remove(self, path: bytes) -> None:
        if self.faults.space is not None:
            with self.disk.lock, open(self.map_path(path), "rb") as handle:
                self.disk.used = max(0, self.disk.used - os.fstat(handle.fileno()).st_size)
        super().remove(path)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        if self.faults.refuse_rename:
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        if os.path.exists(self.map_path(newpath)):
            raise asyncssh.SFTPFailure("Failure")  # SFTP v3: a rename never replaces
        super().rename(oldpath, newpath)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        if self.faults.refuse_rename:
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        if not self.faults.posix_rename:
            raise asyncssh.SFTPOpUnsupported("posix-rename not supported")
        super().posix_rename(oldpath, newpath)


class SftpTestServer:
    """`start()` listens; `stop()` closes the listener and every connection, then the loop."""

    def __init__(self, root: Path, users: dict[str, str], faults: Faults | None = None):
        self.root = root
        self.users = users
        self.faults = faults or Faults()
        self.disk = Disk()
        self.port = free_port()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.acceptor: Any = None
        self.saved_extensions: list[tuple[bytes, bytes]] | None = None

    @property
    def fingerprint(self) -> str:
        return str(self.host_key.get_fingerprint("sha256")).rstrip("=")

    def start(self) -> SftpTestServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.faults.posix_rename:
            handler = asyncssh_sftp.SFTPServerHandler
            self.saved_extensions = list(handler._extensions)
            handler._extensions = [e for e in handler._extensions if e[0] != b"posix-rename@openssh.com"]
        self.thread.start()

        async def listen() -> Any:
            return await asyncssh.listen(
                "127.0.0.1",
                self.port,
                server_host_keys=[self.host_key],
                server_factory=lambda: _Auth(self.users),
                sftp_factory=lambda chan: FaultySftpServer(chan, self.root, self.faults, self.disk),
                allow_scp=False,
                encryption_algs=("aes128-gcm@openssh.com",),
            )

        self.acceptor = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(30)
        return self

    def stop(self) -> None:
        if self.acceptor is not None:

            async def close() -> None:
                self.acceptor.close()
                await self.acceptor.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
            self.acceptor = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if self.saved_extensions is not None:
            asyncssh_sftp.SFTPServerHandler._extensions = self.saved_extensions
            self.saved_extensions = None

    def __enter__(self) -> SftpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
