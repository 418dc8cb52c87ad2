"""FTP failures in words a user can act on: `map_ftp_errors()` translates aioftp, socket and TLS
errors at the boundary; 4xx replies and network faults are transient, 5xx terminal."""

from __future__ import annotations

import re
import ssl
from contextlib import AbstractContextManager

import aioftp

from ..catalog.model import Destination as DestinationConfig
from ..error_codes import ErrorCode
from ..errors import DestinationError, DestinationUnavailable
from .ftp_client import DataTlsError, reply_text
from .messages import (
    SPACE_WORDS,
    WRITE_ACTIONS,
    RemoteContext,
    disk_full,
    map_remote_errors,
    permission_denied,
)

TLS_WORDS = re.compile(r"\b(TLS|SSL|encrypt\w*|AUTH|secure)\b", re.IGNORECASE)


class FtpContext(RemoteContext):
    """What a message needs to say where things went wrong (never the password itself)."""

    kind = "FTP"

    def __init__(self, config: DestinationConfig, password: str, timeout: float):
        super().__init__(config, [password], timeout)
        self.tls = config.tls
        self.ca_file: str | None = config.ca_file

    def timeout_hint(self, action: str) -> str:
        if action in ("connect", "start TLS", "log in"):
            return "check `host`, `port`, `tls` and the firewall"
        return "the server or a firewall (passive data ports included) stopped answering"


def _reply_error(context: FtpContext, action: str, path: str | None, exc: aioftp.StatusCodeError) -> DestinationError:
    code, text = reply_text(exc)
    said = f" (server said: {code} {text})" if text else f" (server said: {code})"
    target = f" `{path}`" if path else ""
    kind = DestinationUnavailable if code.startswith("4") else DestinationError
    host = context.host
    if action == "start TLS":
        return context.error(
            f"the FTP server {host} does not offer explicit TLS (AUTH TLS){said}: if it expects TLS from the "
            "first byte use `tls: implicit` (usually port 990), otherwise ask for FTPS or use `tls: none`",
            ErrorCode.TLS_FAILED,
        )
    if context.tls == "none" and TLS_WORDS.search(text) and action in ("connect", "log in"):
        return context.error(
            f"the FTP server {host} requires TLS{said}: set `tls: explicit` (AUTH TLS, usually port 21) or "
            f"`tls: implicit` (usually port 990) on destination `{context.id}`",
            ErrorCode.TLS_REQUIRED,
        )
    if code == "522" or (context.tls != "none" and code in ("521", "534", "535")):
        return context.error(
            f"TLS on the data connection to {host} failed during {action}{target}{said}: check "
            "the server's FTPS settings",
            ErrorCode.TLS_FAILED,
        )
    if code == "530" or (action == "log in" and code.startswith("5")):
        setting = f"app setting `{context.password_setting}`" if context.password_setting else "the password"
        return context.error(
            f"login failed for user `{context.user}` on {host}{said}: check the username and {setting}",
            ErrorCode.AUTHENTICATION_FAILED,
        )
    if code in ("452", "552") or (action == "write" and SPACE_WORDS.search(text)):
        return disk_full(context, target, said, kind)
    if code == "451" and action == "write":  # vsftpd's answer to a full disk, among other local failures
        return disk_full(
            context,
            target,
            said,
            kind,
            "writing on its side failed, most often because its disk is full or the user's quota is exhausted",
        )
    if code in ("550", "553", "532") and action in WRITE_ACTIONS:
        return permission_denied(context, action, path, said, kind)
    if code == "421":
        return context.error(
            f"the FTP server {host} closed the connection during {action}{target}{said}",
            ErrorCode.CONNECTION_LOST,
            DestinationUnavailable,
        )
    return context.error(f"FTP {action}{target} failed on {host}{said}", ErrorCode.FTP_ERROR, kind)


def _translate(context: FtpContext, action: str, path: str | None, exc: BaseException) -> DestinationError | None:
    """aioftp's replies and the TLS failures; the network's are left to `map_remote_errors`."""
    target = f" `{path}`" if path else ""
    host = context.host
    if isinstance(exc, aioftp.StatusCodeError):
        return _reply_error(context, action, path, exc)
    if isinstance(exc, DataTlsError):
        if exc.reply is not None:
            return _reply_error(context, action, path, exc.reply)
        return context.error(
            f"TLS on the data connection to {host} failed during {action}{target} ({exc.reason}): "
            "check the server's FTPS settings",
            ErrorCode.TLS_FAILED,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        hint = (
            f"`ca_file` (`{context.ca_file}`) does not hold the CA that signed it"
            if context.ca_file
            else "if the server uses a private or self-signed certificate, set `ca_file` to its CA certificate"
        )
        if "mismatch" in str(detail).lower():
            hint = "the destination's `host` must be a name the certificate lists"
        return context.error(
            f"the TLS certificate of {host} is not trusted ({detail}): {hint}", ErrorCode.TLS_CERTIFICATE
        )
    if isinstance(exc, ssl.SSLError):
        return context.error(
            f"TLS with {host} failed during {action}{target} ({exc.reason or exc}): check `tls` (`implicit` speaks "
            "TLS from the first byte, usually on port 990; `explicit` upgrades a plain connection with AUTH TLS, "
            "usually on port 21)",
            ErrorCode.TLS_FAILED,
        )
    return None


def map_ftp_errors(context: FtpContext, action: str, path: str | None = None) -> AbstractContextManager[None]:
    """Translate aioftp, socket and TLS errors: 4xx replies and network faults are transient, 5xx terminal."""
    return map_remote_errors(context, action, path, lambda exc: _translate(context, action, path, exc))
