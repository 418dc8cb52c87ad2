"""Session fixtures: real Azurite and a real FTP server on free loopback ports.

When FILECAST_REQUIRE_SERVICES=1 (CI sets it), a service that cannot start fails the tests
instead of skipping them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.services import Azurite, FtpServer, FtpUser, ServiceUnavailable
from tests.helpers import UNAVAILABLE, unavailable

FTP_USERS = [
    FtpUser("alex", "alex-secret-pw", home="/home/alex"),
    FtpUser("reader", "reader-secret-pw", home="/home/reader", perm="elr"),
]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A loud closing summary when tests were skipped for want of a service, and how to get it."""
    missing: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if UNAVAILABLE in reason:
            what = reason.removeprefix("Skipped: ").split(UNAVAILABLE, 1)[0]
            missing[what] = missing.get(what, 0) + 1
    if not missing:
        return
    terminalreporter.write_sep("!", "TESTS SKIPPED: services missing on this machine", red=True, bold=True)
    for what, count in sorted(missing.items()):
        terminalreporter.write_line(f"  {count:4d} skipped: {what} is not available")
    terminalreporter.write_line("  Install what they need with `sudo make system-packages` (Debian), then `make test`;")
    terminalreporter.write_line("  CI sets FILECAST_REQUIRE_SERVICES=1, which turns these skips into failures.")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    try:
        service = Azurite.start(tmp_path_factory.mktemp("azurite"))
    except ServiceUnavailable as exc:
        unavailable("Azurite", exc)
    with service:
        yield service


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    try:
        service = FtpServer.start(tmp_path_factory.mktemp("ftp") / "root", FTP_USERS)
    except ServiceUnavailable as exc:
        unavailable("the FTP server", exc)
    with service:
        yield service


@pytest.fixture
def storage_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """App settings pointing Filecast's own storage at Azurite."""
    values = {"AzureWebJobsStorage": azurite.connection_string}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo DuckDB file (100,000 customers), built once per session."""
    from examples.make_demo import build

    return build(tmp_path_factory.mktemp("demo") / "demo.duckdb")
