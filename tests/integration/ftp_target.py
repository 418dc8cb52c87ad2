"""The FTP servers the integration tests run against, and how a catalog points at them (the
fixtures in tests/integration/conftest.py start them; test modules import these names from here).

System users are this session's only (`_TAG`): parallel sessions never share an account, and
`FtpServers.close()` removes them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.catalog.model import Destination
from devtools.certs import LocalCA, ServerCert
from devtools.services import FtpServer, FtpUser, Service, ServiceUnavailable
from devtools.vsftpd import Vsftpd, VsftpdSite
from tests.helpers import unavailable

# System users of this session only (parallel sessions never share an account); removed at the end.
_TAG = secrets.token_hex(3)
WRITER, READER = f"fc{_TAG}-alex", f"fc{_TAG}-reader"
SETTINGS = {WRITER: "FTP_WRITER_PASSWORD", READER: "FTP_READER_PASSWORD"}


@dataclass
class FtpTarget:
    """One running server, and how a catalog points at it."""

    kind: str  # pyftpdlib | vsftpd
    tls: str  # none | explicit | implicit
    server: FtpServer | Vsftpd
    ca: LocalCA
    passwords: dict[str, str]

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def root(self) -> Path:
        return self.server.root

    def destination(self, user: str = WRITER, *, trust: bool = True, **extra: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "ftp",
            "host": "127.0.0.1",
            "port": self.port,
            "username": user,
            "password_setting": SETTINGS[user],
            "tls": self.tls,
        }
        if self.tls != "none" and trust:
            doc["ca_file"] = str(self.ca.cert)
        doc.update(extra)
        return doc

    def env(self) -> dict[str, str]:
        return {SETTINGS[name]: password for name, password in self.passwords.items()}

    def config(self, user: str = WRITER, **extra: Any) -> Destination:
        """The catalog's destination, for in-process tests."""
        doc = self.destination(user, **extra)
        ca_file = doc.pop("ca_file", str(self.ca.cert) if self.tls != "none" else None)
        doc.pop("type")
        return Destination("target", "ftp", ca_file=ca_file, **doc)


@dataclass
class FtpServers:
    """Starts servers on demand; shared ones are cached, `start()` ones are the test's own."""

    workdir: Path
    ca: LocalCA
    passwords: dict[str, str]
    shared: dict[tuple[Any, ...], FtpTarget] = field(default_factory=dict)
    owned: list[Service] = field(default_factory=list)
    site: VsftpdSite | None = None
    certs: dict[str, ServerCert] = field(default_factory=dict)

    @property
    def users(self) -> list[FtpUser]:
        return [
            FtpUser(WRITER, self.passwords[WRITER], home="/home/alex"),
            FtpUser(READER, self.passwords[READER], home="/home/reader", perm="elr"),
        ]

    def get(self, kind: str, tls: str = "none", **options: Any) -> FtpTarget:
        key = (kind, tls, *sorted(options.items()))
        if key not in self.shared:
            self.shared[key] = self.start(kind, tls, **options)
        return self.shared[key]

    def certificate(self, name: str) -> ServerCert:
        """`server` (for 127.0.0.1 and localhost) or `wrong-host` (for ftp.example.com), issued once."""
        if name not in self.certs:
            hosts = ("ftp.example.com",) if name == "wrong-host" else ("127.0.0.1", "localhost")
            self.certs[name] = self.ca.issue(self.workdir / "certs", name, hosts)
        return self.certs[name]

    def start(self, kind: str, tls: str = "none", *, cert: str = "server", **options: Any) -> FtpTarget:
        pem = self.certificate(cert)
        server: FtpServer | Vsftpd
        try:
            if kind == "pyftpdlib":
                server = FtpServer.start(
                    self.workdir / "pyftpdlib" / "root",
                    self.users,
                    tls=tls,
                    certfile=pem.cert,
                    keyfile=pem.key,
                    **options,
                )
            else:
                if self.site is None:
                    self.site = VsftpdSite.create(self.users)
                server = Vsftpd.start(self.site, tls=tls, certfile=pem.cert, keyfile=pem.key, **options)
        except ServiceUnavailable as exc:
            unavailable(kind, exc)
        self.owned.append(server)
        return FtpTarget(kind, tls, server, self.ca, self.passwords)

    def close(self) -> None:
        for service in self.owned:
            service.stop()
        if self.site is not None:
            self.site.remove()
