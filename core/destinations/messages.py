"""What FTP and SFTP failures share: the context a message needs, the skeleton of their error
boundaries, and the messages they word alike but for the protocol's name (`context.kind`).

`map_remote_errors` is the one skeleton of `map_ftp_errors` and `map_sftp_errors`: the protocol's
own translation first (`translate`: replies, TLS, keys), then what every TCP client meets alike:
an unknown host, a refused connection, a timeout, a broken connection.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath

from ..catalog.model import Destination as DestinationConfig
from ..error_codes import ErrorCode
from ..errors import DestinationError, DestinationUnavailable
from ..scrub import scrub

WRITE_ACTIONS = ("write", "create folder", "rename", "replace", "delete")
SPACE_WORDS = re.compile(r"no space|disk full|quota|storage|insufficient", re.IGNORECASE)

Translate = Callable[[BaseException], DestinationError | None]


class RemoteContext:
    """What a message needs to say where things went wrong (never a secret itself)."""

    kind = "FTP"  # the protocol, as messages name it

    def __init__(self, config: DestinationConfig, secrets: Iterable[str | None], timeout: float):
        self.id = config.id
        self.hostname = config.host or ""
        self.host = f"{config.host}:{config.port}"
        self.user = config.username
        self.password_setting = config.password_setting
        self.timeout = timeout
        self.home: str | None = None  # the login directory, once known
        self._secrets = [s for s in secrets if s]

    def absolute(self, folder: str) -> str:
        if folder.startswith("/") or self.home is None:
            return folder
        return str(PurePosixPath(self.home) / folder) if folder not in ("", ".") else self.home

    def error(self, message: str, code: ErrorCode, kind: type[DestinationError] = DestinationError) -> DestinationError:
        """A `kind` error (`DestinationUnavailable` to retry) whose message holds none of the secrets."""
        return kind(scrub(message, self._secrets), code=code)

    def timeout_hint(self, action: str) -> str:
        return "check `host`, `port` and the firewall"


def permission_denied(
    context: RemoteContext, action: str, path: str | None, said: str, kind: type[DestinationError] = DestinationError
) -> DestinationError:
    """Naming the path, and the folder as the server sees it, so the fix is one chmod away."""
    target = f" `{path}`" if path else ""
    folder = str(PurePosixPath(path).parent) if path and action != "create folder" else path or "."
    where = context.absolute(folder)
    if action == "create folder":
        parent = str(PurePosixPath(where).parent)
        return context.error(
            f"permission denied to create folder{target} on {context.host}{said}: the {context.kind} user "
            f"`{context.user}` needs write access to `{parent}`, or create `{where}` for it",
            ErrorCode.PERMISSION_DENIED,
            kind,
        )
    return context.error(
        f"permission denied to {action}{target} on {context.host}{said}: the {context.kind} user `{context.user}` "
        f"needs write access to the folder and the file (the folder is `{where}` on the server)",
        ErrorCode.PERMISSION_DENIED,
        kind,
    )


def disk_full(
    context: RemoteContext,
    target: str,
    said: str,
    kind: type[DestinationError],
    cause: str = "its disk is full or the user's quota is exhausted",
) -> DestinationError:
    return context.error(
        f"the {context.kind} server {context.host} could not store{target}{said}: {cause}; free "
        "space on the server or raise the quota",
        ErrorCode.DISK_FULL,
        kind,
    )


def _unknown_host(context: RemoteContext, exc: socket.gaierror) -> DestinationError:
    if exc.errno == socket.EAI_AGAIN:
        return context.error(
            f"could not resolve the {context.kind} host `{context.hostname}` (DNS did not answer)",
            ErrorCode.UNKNOWN_HOST,
            DestinationUnavailable,
        )
    return context.error(
        f"unknown {context.kind} host `{context.hostname}`: check the destination's `host`", ErrorCode.UNKNOWN_HOST
    )


def broken(context: RemoteContext, action: str, path: str | None, exc: BaseException) -> DestinationError:
    target = f" `{path}`" if path else ""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return context.error(
        f"the {context.kind} connection to {context.host} broke during {action}{target}: {reason}",
        ErrorCode.CONNECTION_LOST,
        DestinationUnavailable,
    )


def _network_error(
    context: RemoteContext, action: str, path: str | None, exc: BaseException
) -> DestinationError | None:
    target = f" `{path}`" if path else ""
    if isinstance(exc, socket.gaierror):
        return _unknown_host(context, exc)
    if isinstance(exc, ConnectionRefusedError):
        return context.error(
            f"connection refused by {context.host}: check `host`, `port` and that the {context.kind} server is running",
            ErrorCode.CONNECTION_REFUSED,
            DestinationUnavailable,
        )
    if isinstance(exc, TimeoutError):
        return context.error(
            f"no answer from {context.host} within {context.timeout:g} s during {action}{target}: "
            f"{context.timeout_hint(action)}",
            ErrorCode.TIMEOUT,
            DestinationUnavailable,
        )
    if isinstance(exc, OSError | EOFError | ConnectionError):
        return broken(context, action, path, exc)
    return None


@contextmanager
def map_remote_errors(context: RemoteContext, action: str, path: str | None, translate: Translate) -> Iterator[None]:
    """Translate a protocol client's errors: `translate` knows the protocol's, the rest are the network's;
    anything neither knows propagates unchanged."""
    try:
        yield
    except DestinationError:
        raise
    except Exception as exc:
        mapped = translate(exc) or _network_error(context, action, path, exc)
        if mapped is None:
            raise
        raise mapped from exc
