"""FTP servers for the destination tests: pyftpdlib and vsftpd, plain, explicit and implicit FTPS.

Every server runs on a free loopback port, is started by these fixtures (never by hand) and
stopped by its own pid. All instances of one implementation share one root folder, laid out as
in the seed docs (`/home/alex` is the writer's login directory). Passwords are random per
session. A server that cannot start skips its tests, or fails them when
FILECAST_REQUIRE_SERVICES=1 (`unavailable()` in tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.catalog import Destination
from devtools.certs import LocalCA, ServerCert, make_ca
from devtools.services import FtpServer, FtpUser, Service, ServiceUnavailable
from devtools.vsftpd import Vsftpd, VsftpdSite
from tests.conftest import unavailable

# System users of this session only (parallel sessions never share an account); removed at the end.
_TAG = secrets.token_hex(3)
WRITER, READER = f"fc{_TAG}-alex", f"fc{_TAG}-reader"
SETTINGS = {WRITER: "FTP_WRITER_PASSWORD", READER: "FTP_READER_PASSWORD"}
# Until the catalog has `ca_file`, TLS runs through the CLI trust the test CA via OpenSSL's SSL_CERT_FILE.
CATALOG_HAS_CA_FILE = "ca_file" in {f.name for f in dataclasses.fields(Destination)}


@dataclass
class FtpTarget:
    """One running server, and how a catalog points at it."""

    kind: str                       # pyftpdlib | vsftpd
    tls: str                        # none | explicit | implicit
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
        doc: dict[str, Any] = {"type": "ftp", "host": "127.0.0.1", "port": self.port, "username": user,
                               "password_setting": SETTINGS[user], "tls": self.tls}
        if self.tls != "none" and trust and CATALOG_HAS_CA_FILE:
            doc["ca_file"] = str(self.ca.cert)
        doc.update(extra)
        return doc

    def env(self, *, trust: bool = True) -> dict[str, str]:
        values = {SETTINGS[name]: password for name, password in self.passwords.items()}
        if self.tls != "none" and trust and not CATALOG_HAS_CA_FILE:
            values["SSL_CERT_FILE"] = str(self.ca.cert)
        return values

    def config(self, user: str = WRITER, **extra: Any) -> Destination:
        """The catalog's destination, for in-process tests (with `ca_file` even before the catalog has it)."""
        doc = self.destination(user, **extra)
        ca_file = doc.pop("ca_file", str(self.ca.cert) if self.tls != "none" else None)
        doc.pop("type")
        return TrustingDestination("target", "ftp", ca_file=ca_file, **doc)


@dataclass(frozen=True)
class TrustingDestination(Destination):
    ca_file: str | None = None


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
        return [FtpUser(WRITER, self.passwords[WRITER], home="/home/alex"),
                FtpUser(READER, self.passwords[READER], home="/home/reader", perm="elr")]

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
                server = FtpServer.start(self.workdir / "pyftpdlib" / "root", self.users, tls=tls,
                                         certfile=pem.cert, keyfile=pem.key, **options)
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


@pytest.fixture(scope="session")
def ftp_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServers]:
    workdir = tmp_path_factory.mktemp("ftp-servers")
    passwords = {WRITER: "w-" + secrets.token_urlsafe(12), READER: "r-" + secrets.token_urlsafe(12)}
    servers = FtpServers(workdir, make_ca(workdir / "ca"), passwords)
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def small_disk(ftp_servers: FtpServers) -> Iterator[Any]:
    """`mount(folder, (uid, gid))`: a 1 MiB tmpfs mounted at `folder`, unmounted after the test."""
    mounted: list[Path] = []

    def mount(folder: Path, owner: tuple[int, int] = (0, 0)) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        options = f"size=1m,mode=0755,uid={owner[0]},gid={owner[1]}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            unavailable("a 1 MiB tmpfs (mount -t tmpfs, needs root)", RuntimeError(done.stderr.strip()))
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
