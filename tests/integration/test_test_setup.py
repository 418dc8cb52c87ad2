"""`make test` on a machine that lacks a service says so loudly, and the tests leave no system users."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys

import pytest

from devtools.services import FtpUser, ServiceUnavailable
from devtools.vsftpd import VsftpdSite
from tests.helpers import REPO, unavailable


def test_tests_skipped_for_a_missing_service_end_with_a_loud_summary() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FILECAST_REQUIRE_SERVICES", "AZURITE_BIN")}
    env.update(FILECAST_TOOLS="/nonexistent", PATH="/usr/bin:/bin")  # no Azurite anywhere
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_cli.py::test_azure_errors_carry_the_service_message",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout
    assert "TESTS SKIPPED: services missing on this machine" in result.stdout
    assert "1 skipped: Azurite is not available" in result.stdout
    assert "sudo make system-packages" in result.stdout


def test_a_vsftpd_site_removes_the_system_users_it_created() -> None:
    name = f"fc{secrets.token_hex(3)}-gone"
    try:
        site = VsftpdSite.create([FtpUser(name, "pw-" + secrets.token_hex(8), home="/home/gone")])
    except ServiceUnavailable as exc:
        unavailable("vsftpd", exc)
    assert pwd.getpwnam(name).pw_name == name
    site.remove()
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert not site.base.exists()
