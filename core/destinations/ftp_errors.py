"""FTP failures in words a user can act on: `map_ftp_errors()` translates aioftp, socket and TLS
errors at the boundary; 4xx replies and network faults are transient, 5xx terminal."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath

import aioftp

from ..catalog import Destination as DestinationConfig
from ..errors import DestinationError
from .ftp_client import DataTlsError, reply_text
from .messages import broken, permission_denied, refused, unknown_host

TLS_WORDS = re.compile(r"\b(TLS|SSL|encrypt\w*|AUTH|secure)\b", re.IGNORECASE)
SPACE_WORDS = re.compile(r"no space|disk full|quota|storage|insufficient", re.IGNORECASE)


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
    code, text = reply_text(exc)
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
        return permission_denied(context, "FTP", action, path, said, transient=transient)
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
        raise unknown_host(context, "FTP", exc) from exc
    except ConnectionRefusedError as exc:
        raise refused(context, "FTP") from exc
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
        raise broken(context, "FTP", action, path, exc) from exc
