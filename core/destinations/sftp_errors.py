"""SFTP failures in words a user can act on: `map_sftp_errors()` translates asyncssh, socket and
key errors at the boundary. Network faults, a full disk and timeouts are transient; a host key
that does not match, refused credentials, denied permissions and bad keys are terminal.

No message carries the password, the private key or its passphrase: `SftpContext.error` masks
any of them that would slip in through a server's reply.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath

import asyncssh

from ..catalog import Destination as DestinationConfig
from ..errors import DestinationError
from .messages import broken, permission_denied, refused, unknown_host

SPACE_WORDS = re.compile(r"no space|disk full|quota|storage|insufficient", re.IGNORECASE)
WRITE_ACTIONS = ("write", "create folder", "rename", "replace", "delete")


class SftpContext:
    """What a message needs to say where things went wrong (never a secret itself)."""

    def __init__(self, config: DestinationConfig, secrets: list[str], timeout: float):
        self.id = config.id
        self.hostname = config.host or ""
        self.host = f"{config.host}:{config.port}"
        self.user = config.username
        self.password_setting = config.password_setting
        self.key_setting = config.private_key_setting
        self.passphrase_setting = config.passphrase_setting
        self.timeout = timeout
        self.home: str | None = None        # the login directory, once known
        self.pinned: tuple[str, ...] = ()   # fingerprints of the pinned keys, for messages
        self.seen: str | None = None        # the server's key, when it was not a pinned one
        self.seen_type = ""
        self._secrets = [s for s in secrets if s and len(s) >= 3]

    def absolute(self, folder: str) -> str:
        if folder.startswith("/") or self.home is None:
            return folder
        return str(PurePosixPath(self.home) / folder) if folder not in ("", ".") else self.home

    def error(self, message: str, code: str, *, transient: bool = False) -> DestinationError:
        for secret in self._secrets:
            message = message.replace(secret, "***")
            for line in secret.splitlines():  # a key's lines, one by one
                if len(line.strip()) >= 16:
                    message = message.replace(line.strip(), "***")
        return DestinationError(message, code=code, transient=transient)

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
            action == "write" and SPACE_WORDS.search(str(exc.reason or ""))):
        return context.error(
            f"the SFTP server {host} could not store{target}{said}: its disk is full or the user's quota is "
            "exhausted; free space on the server or raise the quota", "disk_full", transient=True)
    if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect) and action in WRITE_ACTIONS:
        return permission_denied(context, "SFTP", action, path, said)
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return context.error(f"SFTP {action}{target} failed on {host}: no such file or folder{said}",
                             "not_found")
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return context.error(f"the SFTP connection to {host} broke during {action}{target}{said}",
                             "connection_lost", transient=True)
    return context.error(f"SFTP {action}{target} failed on {host}{said}", "sftp_error")


def host_key_error(context: SftpContext) -> DestinationError:
    pinned = ", ".join(f"`{p}`" for p in context.pinned) or "none"
    return context.error(
        f"the host key of {context.host} is `{context.seen}` ({context.seen_type}), not the pinned {pinned}: "
        f"nothing was sent to it. If the server's key changed on purpose, set `host_key` of destination "
        f"`{context.id}` to `{context.seen}` (`filecast validate --probe` prints it); otherwise the "
        "connection may be intercepted",
        "host_key_mismatch")


@contextmanager
def map_sftp_errors(context: SftpContext, action: str, path: str | None = None) -> Iterator[None]:
    """Translate asyncssh and socket errors: network faults transient, refusals terminal."""
    target = f" `{path}`" if path else ""
    host = context.host
    try:
        yield
    except DestinationError:
        raise
    except asyncssh.SFTPError as exc:
        raise sftp_reply_error(context, action, path, exc) from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        if context.seen is None:
            raise context.error(f"the host key of {host} could not be checked ({exc.reason})",
                                "host_key_mismatch") from exc
        raise host_key_error(context) from exc
    except asyncssh.PermissionDenied as exc:
        raise context.error(
            f"authentication failed for user `{context.user}` on {host}: the server refused {context.methods()}; "
            "check the username and " + ("that the key's public half is in the user's `authorized_keys`"
                                         if context.key_setting else "the password"),
            "authentication_failed") from exc
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise context.error(
            f"app setting `{context.key_setting}` of destination `{context.id}` does not hold a usable private key "
            f"({exc}): paste the whole key, BEGIN and END lines included, in OpenSSH or PEM format"
            + (f", and check the passphrase in app setting `{context.passphrase_setting}`"
               if context.passphrase_setting else "; an encrypted key needs `passphrase_setting`"),
            "invalid_private_key") from exc
    except socket.gaierror as exc:
        raise unknown_host(context, "SFTP", exc) from exc
    except ConnectionRefusedError as exc:
        raise refused(context, "SFTP") from exc
    except TimeoutError as exc:
        hint = ("check `host`, `port` and the firewall" if action == "connect"
                else "the server or the network stopped answering")
        raise context.error(f"no answer from {host} within {context.timeout:g} s during {action}{target}: {hint}",
                            "timeout", transient=True) from exc
    except asyncssh.KeyExchangeFailed as exc:
        raise context.error(f"{host} and Filecast share no SSH algorithm ({exc.reason}): the server needs a "
                            "current key exchange, cipher and host key type", "ssh_negotiation_failed") from exc
    except (asyncssh.DisconnectError, asyncssh.ChannelOpenError) as exc:
        raise context.error(f"the SFTP connection to {host} broke during {action}{target}: {exc.reason}",
                            "connection_lost", transient=True) from exc
    except (OSError, EOFError, ConnectionError) as exc:
        raise broken(context, "SFTP", action, path, exc) from exc
