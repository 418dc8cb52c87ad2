"""FTP servers for the destination tests: pyftpdlib and vsftpd, plain, explicit and implicit FTPS.

Every server runs on a free loopback port, is started by these fixtures (never by hand) and
stopped by its own pid. All instances of one implementation share one root folder, laid out as
in the seed docs (`/home/alex` is the writer's login directory). Passwords are random per
session. A server that cannot start skips its tests, or fails them when
FILECAST_REQUIRE_SERVICES=1 (`unavailable()` in tests/helpers.py).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.certs import make_ca
from tests.helpers import unavailable
from tests.integration.ftp_target import READER, WRITER, FtpServers


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
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            unavailable("a 1 MiB tmpfs (mount -t tmpfs, needs root)", RuntimeError(done.stderr.strip()))
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
