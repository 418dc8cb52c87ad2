"""Failure messages FTP and SFTP share word for word but for the protocol's name (`kind`).

`context` is an `FtpContext` or `SftpContext`: it knows the host, the user, the login directory
and how to mask secrets (`error`)."""

from __future__ import annotations

import socket
from pathlib import PurePosixPath
from typing import Any

from ..errors import DestinationError


def permission_denied(context: Any, kind: str, action: str, path: str | None, said: str, *,
                      transient: bool = False) -> DestinationError:
    """Naming the path, and the folder as the server sees it, so the fix is one chmod away."""
    target = f" `{path}`" if path else ""
    folder = str(PurePosixPath(path).parent) if path and action != "create folder" else path or "."
    where = context.absolute(folder)
    if action == "create folder":
        parent = str(PurePosixPath(where).parent)
        return context.error(
            f"permission denied to create folder{target} on {context.host}{said}: the {kind} user `{context.user}` "
            f"needs write access to `{parent}`, or create `{where}` for it", "permission_denied", transient=transient)
    return context.error(
        f"permission denied to {action}{target} on {context.host}{said}: the {kind} user `{context.user}` needs "
        f"write access to the folder and the file (the folder is `{where}` on the server)", "permission_denied",
        transient=transient)


def unknown_host(context: Any, kind: str, exc: socket.gaierror) -> DestinationError:
    if exc.errno == socket.EAI_AGAIN:
        return context.error(f"could not resolve the {kind} host `{context.hostname}` (DNS did not answer)",
                             "unknown_host", transient=True)
    return context.error(f"unknown {kind} host `{context.hostname}`: check the destination's `host`", "unknown_host")


def refused(context: Any, kind: str) -> DestinationError:
    return context.error(f"connection refused by {context.host}: check `host`, `port` and that the {kind} server is "
                         "running", "connection_refused", transient=True)


def broken(context: Any, kind: str, action: str, path: str | None, exc: BaseException) -> DestinationError:
    target = f" `{path}`" if path else ""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return context.error(f"the {kind} connection to {context.host} broke during {action}{target}: {reason}",
                         "connection_lost", transient=True)
