"""SFTP fixtures, loaded as a plugin (`pytest_plugins = ["tests.integration.conftest_sftp"]`).

`sftp_server`: OpenSSH's sshd for the session (see sftp_target.py); a sshd that cannot start
skips the tests, or fails them when FILECAST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from devtools.services import FtpUser, ServiceUnavailable
from devtools.sshd import Sshd, SshdSite
from tests.helpers import unavailable
from tests.integration.sftp_target import SFTP_READER, SFTP_WRITER, SftpTarget


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpTarget]:
    passwords = {SFTP_WRITER: "s-" + secrets.token_urlsafe(12), SFTP_READER: "t-" + secrets.token_urlsafe(12)}
    users = [
        FtpUser(SFTP_WRITER, passwords[SFTP_WRITER], home="/home/alex"),
        FtpUser(SFTP_READER, passwords[SFTP_READER], home="/home/reader", perm="elr"),
    ]
    site = None
    try:
        site = SshdSite.create(users)
        sshd = Sshd.start(site)
    except ServiceUnavailable as exc:
        if site is not None:
            site.remove()
        unavailable("sshd", exc)
    assert site is not None
    try:
        yield SftpTarget(sshd, site, passwords)
    finally:
        sshd.stop()
        site.remove()
