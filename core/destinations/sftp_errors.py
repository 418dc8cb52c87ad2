"""SFTP failures in words a user can act on: `map_sftp_errors()` translates asyncssh, socket and
key errors at the boundary. Network faults, a full disk and timeouts are transient; a host key
that does not match, refused credentials, denied permissions and bad keys are terminal.

No message carries the password, the private key or its passphrase: `SftpContext.error` masks
any of them that would slip in through a server's reply (core/scrub.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import asyncssh

from ..catalog.model import Destination as DestinationConfig
from ..error_codes import ErrorCode
from ..errors import DestinationError, DestinationUnavailable
from .messages import (
    SPACE_WORDS,
    WRITE_ACTIONS,
    RemoteContext,
    disk_full,
    map_remote_errors,
    permission_denied,
)


class SftpContext(RemoteContext):
    """What a message needs to say where things went wrong (never a secret itself)."""

    kind = "SFTP"

    def __init__(self, config: DestinationConfig, secrets: list[str], timeout: float):
        super().__init__(config, secrets, timeout)
        self.key_setting = config.private_key_setting
        self.passphrase_setting = config.passphrase_setting
        self.pinned: tuple[str, ...] = ()  # fingerprints of the pinned keys, for messages
        self.seen: str | None = None  # the server's key, when it was not a pinned one
        self.seen_type = ""

    def timeout_hint(self, action: str) -> str:
        if action == "connect":
            return "check `host`, `port` and the firewall"
        return "the server or the network stopped answering"

    def methods(self) -> str:
        """The authentication methods configured, as a message names them."""
        tried = []
        if self.key_setting:
            passphrase = f" (passphrase in `{self.passphrase_setting}`)" if self.passphrase_setting else ""
            tried.append(f"the private key in app setting `{self.key_setting}`{passphrase}")
        if self.password_setting:
            tried.append(f"the password in app setting `{self.password_setting}`")
        return " and ".join(tried) or "no credentials"


def _said(exc: asyncssh.Error) -> str:
    reason = str(getattr(exc, "reason", "") or "").strip()
    return f" (server said: {reason})" if reason else ""


def sftp_reply_error(context: SftpContext, action: str, path: str | None, exc: asyncssh.SFTPError) -> DestinationError:
    """An SFTP status reply as a user reads it; `FX_FAILURE` on a write is checked for space by the caller."""
    said, host = _said(exc), context.host
    target = f" `{path}`" if path else ""
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded) or (
        action == "write" and SPACE_WORDS.search(str(exc.reason or ""))
    ):
        return disk_full(context, target, said, DestinationUnavailable)
    if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect) and action in WRITE_ACTIONS:
        return permission_denied(context, action, path, said)
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return context.error(
            f"SFTP {action}{target} failed on {host}: no such file or folder{said}", ErrorCode.NOT_FOUND
        )
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return context.error(
            f"the SFTP connection to {host} broke during {action}{target}{said}",
            ErrorCode.CONNECTION_LOST,
            DestinationUnavailable,
        )
    return context.error(f"SFTP {action}{target} failed on {host}{said}", ErrorCode.SFTP_ERROR)


def host_key_error(context: SftpContext) -> DestinationError:
    pinned = ", ".join(f"`{p}`" for p in context.pinned) or "none"
    return context.error(
        f"the host key of {context.host} is `{context.seen}` ({context.seen_type}), not the pinned {pinned}: "
        f"nothing was sent to it. If the server's key changed on purpose, set `host_key` of destination "
        f"`{context.id}` to `{context.seen}` (`filecast validate --probe` prints it); otherwise the "
        "connection may be intercepted",
        ErrorCode.HOST_KEY_MISMATCH,
    )


def _translate(context: SftpContext, action: str, path: str | None, exc: BaseException) -> DestinationError | None:
    """asyncssh's replies, host keys, credentials and keys; the network's are left to `map_remote_errors`."""
    target = f" `{path}`" if path else ""
    host = context.host
    if isinstance(exc, asyncssh.SFTPError):
        return sftp_reply_error(context, action, path, exc)
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if context.seen is None:
            return context.error(
                f"the host key of {host} could not be checked ({exc.reason})", ErrorCode.HOST_KEY_MISMATCH
            )
        return host_key_error(context)
    if isinstance(exc, asyncssh.PermissionDenied):
        return context.error(
            f"authentication failed for user `{context.user}` on {host}: the server refused {context.methods()}; "
            "check the username and "
            + (
                "that the key's public half is in the user's `authorized_keys`"
                if context.key_setting
                else "the password"
            ),
            ErrorCode.AUTHENTICATION_FAILED,
        )
    if isinstance(exc, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
        return context.error(
            f"app setting `{context.key_setting}` of destination `{context.id}` does not hold a usable private key "
            f"({exc}): paste the whole key, BEGIN and END lines included, in OpenSSH or PEM format"
            + (
                f", and check the passphrase in app setting `{context.passphrase_setting}`"
                if context.passphrase_setting
                else "; an encrypted key needs `passphrase_setting`"
            ),
            ErrorCode.INVALID_PRIVATE_KEY,
        )
    if isinstance(exc, asyncssh.KeyExchangeFailed):
        return context.error(
            f"{host} and Filecast share no SSH algorithm ({exc.reason}): the server needs a "
            "current key exchange, cipher and host key type",
            ErrorCode.SSH_NEGOTIATION_FAILED,
        )
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError):
        return context.error(
            f"the SFTP connection to {host} broke during {action}{target}: {exc.reason}",
            ErrorCode.CONNECTION_LOST,
            DestinationUnavailable,
        )
    return None


def map_sftp_errors(context: SftpContext, action: str, path: str | None = None) -> AbstractContextManager[None]:
    """Translate asyncssh and socket errors: network faults transient, refusals terminal."""
    return map_remote_errors(context, action, path, lambda exc: _translate(context, action, path, exc))
