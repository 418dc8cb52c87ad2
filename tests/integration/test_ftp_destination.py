"""The FTP destination against two real servers (pyftpdlib and vsftpd), plain FTP and FTPS.

Runs go through the CLI (`python -m core run …`) as a user runs them; files are checked on the
server's disk. vsftpd's FTPS requires TLS on the control and data connections and TLS session
reuse on every data connection (`require_ssl_reuse=YES`, its default), and negotiates TLS 1.3.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from core.destinations import ftp as ftp_module
from core.destinations.ftp import FtpDestination
from core.destinations.ftp_client import FtpClient
from core.errors import DestinationError
from core.settings import Settings
from devtools.services import FtpServer, free_port
from devtools.vsftpd import Vsftpd
from tests.helpers import (
    AT,
    SMALL,
    Result,
    Watcher,
    background_cli,
    csv_rows,
    customers_catalog,
    failed,
    finished,
    leftovers,
    md5,
    run_record,
    wait_for_temp,
    write_catalog,
)
from tests.helpers import cli as run_cli
from tests.integration.ftp_target import READER, SETTINGS, WRITER, FtpServers, FtpTarget

SERVERS = ("pyftpdlib", "vsftpd")
TLS_MODES = ("none", "explicit", "implicit")
FOLDERS = [  # folder → where it lands, relative to the server root (seed docs: login dir /home/alex)
    ("exports/daily", "home/alex/exports/daily"),
    ("/shared/drop", "shared/drop"),
    ("../outbox", "home/outbox"),
    (".", "home/alex"),
]


def run(
    tmp_path: Path,
    demo_db: Path,
    target: FtpTarget,
    destination: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **activation: Any,
) -> Result:
    doc = customers_catalog(demo_db, destination or target.destination(), **activation)
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = run_cli("run", "export", "--catalog", str(path), "--at", AT, env={**target.env(), **(env or {})})
    record = run_record(result)
    for password in target.passwords.values():
        assert password not in result.stdout + result.stderr
    return result, record


# --- where files land, over every server and TLS mode -------------------------------------------


@pytest.mark.parametrize("folder, on_disk", FOLDERS)
@pytest.mark.parametrize("tls", TLS_MODES)
@pytest.mark.parametrize("kind", SERVERS)
def test_files_land_in_the_folder(
    ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str, tls: str, folder: str, on_disk: str
) -> None:
    # Several parts: several transfers on one control connection, each resuming its TLS session.
    target = ftp_servers.get(kind, tls)
    result, record = run(
        tmp_path, demo_db, target, sql=SMALL, folder=folder, file_name=f"export_{tls}", max_file_size="150KB"
    )
    assert result.returncode == 0, result.stderr
    assert record["status"] == "succeeded" and record["rows"]["exported"] == 3000
    assert len(record["files"]) >= 3
    rows = 0
    for part, file in enumerate(record["files"], start=1):
        name = f"export_{tls}-{part:05d}.csv"
        assert file["path"] == ("" if folder == "." else folder + "/") + name
        stored = target.root / on_disk / name
        assert file["bytes"] == stored.stat().st_size and file["md5"] == md5(stored)
        rows += csv_rows(stored)
    assert rows == 3000
    assert leftovers(target.root / on_disk) == []


@pytest.mark.parametrize("kind, tls", [("pyftpdlib", "none"), ("vsftpd", "explicit")])
def test_an_existing_file_is_overwritten(
    ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str, tls: str
) -> None:
    target = ftp_servers.get(kind, tls)
    stored = target.root / "home/alex/overwrite" / "export.csv"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text("old content\n")
    os.chown(stored.parent, *owner(target))
    result, record = run(tmp_path, demo_db, target, sql=SMALL, folder="overwrite")
    assert result.returncode == 0, result.stderr
    assert csv_rows(stored) == 3000 and record["files"][0]["md5"] == md5(stored)
    assert leftovers(stored.parent) == []


def test_a_server_refusing_rename_over_existing(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path) -> None:
    target = ftp_servers.get("pyftpdlib", refuse_rename_over_existing=True)
    stored = target.root / "home/alex/no-overwrite" / "export.csv"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text("old content\n")
    result, record = run(tmp_path, demo_db, target, sql=SMALL, folder="no-overwrite")
    assert result.returncode == 0, result.stderr
    assert csv_rows(stored) == 3000 and record["files"][0]["md5"] == md5(stored)
    assert leftovers(stored.parent) == []
    assert "refused to rename over the existing `no-overwrite/export.csv`; moving the old file aside" in result.stderr


def test_pasv_with_a_private_address_uses_the_control_host(
    ftp_servers: FtpServers, demo_db: Path, tmp_path: Path
) -> None:
    # A server behind NAT: no EPSV, and PASV names its inside address, unreachable from here.
    target = ftp_servers.get("pyftpdlib", epsv=False, masquerade_address="10.255.255.1")
    result, _ = run(tmp_path, demo_db, target, sql=SMALL, folder="nat", env={"FILECAST_FTP_TIMEOUT": "5"})
    assert result.returncode == 0, result.stderr
    assert csv_rows(target.root / "home/alex/nat/export.csv") == 3000
    assert "answered PASV with 10.255.255.1, not reachable from here; using 127.0.0.1 instead" in result.stderr


# --- atomicity ------------------------------------------------------------------------------------


def owner(target: FtpTarget) -> tuple[int, int]:
    if isinstance(target.server, Vsftpd):
        assert target.server.site is not None
        return target.server.site.owner_of(WRITER)
    return os.getuid(), os.getgid()


def throttled(ftp_servers: FtpServers, kind: str, *, own: bool = False) -> FtpTarget:
    """A server taking about 3 s for the 14 MB of the full demo model."""
    options: dict[str, Any] = {"read_limit": 4_000_000} if kind == "pyftpdlib" else {"max_rate": 4_000_000}
    return ftp_servers.start(kind, **options) if own else ftp_servers.get(kind, **options)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_reader_never_sees_a_partial_file(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str) -> None:
    target = throttled(ftp_servers, kind)
    folder = target.root / "home/alex/watched"
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, *owner(target))
    stored = folder / "export.csv"
    stored.write_bytes(b"customer_id;old\n" * 1000)
    old = md5(stored)
    path = write_catalog(tmp_path / "catalog.yaml", customers_catalog(demo_db, target.destination(), folder="watched"))
    process = background_cli("run", "export", "--catalog", str(path), "--at", AT, env=target.env())
    with Watcher(stored) as watcher:
        _, stderr = process.communicate(timeout=300)
    seen, temps = watcher.seen, watcher.temps
    assert process.returncode == 0, stderr
    new = md5(stored)
    assert new != old and csv_rows(stored) == 100_000
    assert temps, "the reader never saw the upload in progress"
    assert set(seen) <= {old, new}, "a reader saw the target with content that is neither the old nor the new file"
    assert seen[old] > 10 and leftovers(folder) == []


def test_killed_vsftpd_session_fails_the_run_and_leaves_nothing(
    ftp_servers: FtpServers, demo_db: Path, tmp_path: Path
) -> None:
    target = throttled(ftp_servers, "vsftpd", own=True)
    assert isinstance(target.server, Vsftpd)
    folder = target.root / "home/alex/cut"
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, *owner(target))
    stored = folder / "export.csv"
    stored.write_text("old content\n")
    path = write_catalog(tmp_path / "catalog.yaml", customers_catalog(demo_db, target.destination(), folder="cut"))
    process = background_cli("run", "export", "--catalog", str(path), "--at", AT, env=target.env())
    cuts = 0
    while wait_for_temp(folder, process, 1_000_000) is not None:  # every attempt of the run, cut off mid-upload
        assert target.server.kill_sessions() > 0  # the connection's processes die; the listener stays
        cuts += 1
        while process.poll() is None and list(folder.glob(".*.filecast-tmp")):
            time.sleep(0.01)  # the failed attempt removes its temporary file before the next one starts
    result, record = finished(process)
    assert cuts >= 1
    assert failed(result, record, "connection_lost").startswith(
        f"the FTP connection to 127.0.0.1:{target.port} broke during write `cut/export.csv`"
    )
    assert stored.read_text() == "old content\n"
    assert leftovers(folder) == []  # removed on a fresh connection


def test_killed_server_fails_the_run_and_the_retry_cleans_up(
    ftp_servers: FtpServers, demo_db: Path, tmp_path: Path
) -> None:
    target = throttled(ftp_servers, "pyftpdlib", own=True)
    assert isinstance(target.server, FtpServer)
    folder = target.root / "home/alex/crash"
    folder.mkdir(parents=True, exist_ok=True)
    stored = folder / "export.csv"
    stored.write_text("old content\n")
    path = write_catalog(tmp_path / "catalog.yaml", customers_catalog(demo_db, target.destination(), folder="crash"))
    process = background_cli("run", "export", "--catalog", str(path), "--at", AT, env=target.env())
    temp = wait_for_temp(folder, process, 2_000_000)
    assert temp is not None
    target.server.kill()
    result, record = finished(process)
    # The attempt in flight broke; retries within the run (if any) found the server down.
    message = failed(result, record, record["error"]["code"])
    assert record["error"]["code"] in ("connection_lost", "connection_refused")
    assert f"the FTP connection to 127.0.0.1:{target.port} broke during write `crash/export.csv`" in (
        message + result.stderr
    )
    assert "the next run writing that file removes it" in result.stderr
    assert stored.read_text() == "old content\n"
    assert temp.exists()  # nobody was left to delete it
    target.server.restart()
    result, record = run(tmp_path, demo_db, target, folder="crash", sql=SMALL)  # the next run: same file
    assert result.returncode == 0, result.stderr
    assert csv_rows(stored) == 3000
    assert leftovers(folder) == []
    assert f"removed `crash/{temp.name}`, left on 127.0.0.1:{target.port} by an earlier failed run" in result.stderr


# --- every error, provoked for real -----------------------------------------------------------------


def test_unknown_host(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path) -> None:
    target = ftp_servers.get("pyftpdlib")
    result, record = run(tmp_path, demo_db, target, target.destination(host="does-not-exist.invalid"), sql=SMALL)
    assert failed(result, record, "unknown_host") == (
        "unknown FTP host `does-not-exist.invalid`: check the destination's `host`"
    )


def test_connection_refused(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path) -> None:
    target = ftp_servers.get("pyftpdlib")
    port = free_port()
    result, record = run(tmp_path, demo_db, target, target.destination(port=port), sql=SMALL)
    assert failed(result, record, "connection_refused") == (
        f"connection refused by 127.0.0.1:{port}: check `host`, `port` and that the FTP server is running"
    )


def test_timeout(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path) -> None:
    target = ftp_servers.get("pyftpdlib")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result, record = run(
            tmp_path, demo_db, target, target.destination(port=port), env={"FILECAST_FTP_TIMEOUT": "2"}, sql=SMALL
        )
    assert failed(result, record, "timeout") == (
        f"no answer from 127.0.0.1:{port} within 2 s during connect: check `host`, `port`, `tls` and the firewall"
    )


@pytest.mark.parametrize("kind, tls", [("pyftpdlib", "none"), ("vsftpd", "none"), ("vsftpd", "implicit")])
def test_login_failed(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str, tls: str) -> None:
    target = ftp_servers.get(kind, tls)
    result, record = run(
        tmp_path, demo_db, target, sql=SMALL, folder="never", env={SETTINGS[WRITER]: "not-the-password"}
    )
    message = failed(result, record, "authentication_failed")
    assert message.startswith(f"login failed for user `{WRITER}` on 127.0.0.1:{target.port} (server said: 530 ")
    assert message.endswith(f"check the username and app setting `{SETTINGS[WRITER]}`")
    assert "not-the-password" not in result.stdout + result.stderr
    assert not (target.root / "home/alex/never").exists()


@pytest.mark.parametrize("kind, tls", [("pyftpdlib", "none"), ("vsftpd", "none"), ("vsftpd", "explicit")])
def test_permission_denied_writing(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str, tls: str) -> None:
    target = ftp_servers.get(kind, tls)
    home = target.root / "home/reader"
    before = sorted(p.name for p in home.rglob("*"))
    result, record = run(tmp_path, demo_db, target, target.destination(READER), sql=SMALL, folder=".")
    message = failed(result, record, "permission_denied")
    assert message.startswith(f"permission denied to write `export.csv` on 127.0.0.1:{target.port} (server said: 55")
    assert message.endswith(
        f"the FTP user `{READER}` needs write access to the folder and the file "
        "(the folder is `/home/reader` on the server)"
    )
    assert sorted(p.name for p in home.rglob("*")) == before


@pytest.mark.parametrize("kind", SERVERS)
def test_permission_denied_creating_a_folder(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str) -> None:
    target = ftp_servers.get(kind)
    result, record = run(tmp_path, demo_db, target, target.destination(READER), sql=SMALL, folder="new/sub")
    message = failed(result, record, "permission_denied")
    assert message.startswith(f"permission denied to create folder `new` on 127.0.0.1:{target.port} (server said: 55")
    assert message.endswith(
        f"the FTP user `{READER}` needs write access to `/home/reader`, or create `/home/reader/new` for it"
    )


@pytest.mark.parametrize("kind", SERVERS)
def test_disk_full(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, small_disk: Any, kind: str) -> None:
    target = ftp_servers.get(kind)
    full = small_disk(target.root / f"home/alex/full-{kind}", owner(target))
    result, record = run(tmp_path, demo_db, target, folder=f"full-{kind}")  # 14 MB into 1 MiB
    message = failed(result, record, "disk_full")
    assert message.startswith(
        f"the FTP server 127.0.0.1:{target.port} could not store `full-{kind}/export.csv` (server said: 4"
    )
    assert message.endswith(
        "its disk is full or the user's quota is exhausted; free space on the server or raise the quota"
    )
    # pyftpdlib says why (`426 No space left on device`), vsftpd only that writing failed (`451 Failure writing
    # to local file.`), so its message hedges.
    assert ("No space left on device" in message) if kind == "pyftpdlib" else ("most often because" in message)
    assert list(full.iterdir()) == []  # the partial temporary file was removed


@pytest.mark.parametrize("kind", SERVERS)
def test_disk_full_on_the_last_bytes(ftp_servers: FtpServers, small_disk: Any, kind: str) -> None:
    # Room for one 4 KiB page: a 6,000-byte file arrives whole, and the server's last write (or
    # pyftpdlib's flush when it closes the file) fails after the data connection has closed.
    target = ftp_servers.get(kind)
    full = small_disk(target.root / f"home/alex/last-bytes-{kind}", owner(target))
    filler = full / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        handle.write(bytes(1 << 20))
    os.truncate(filler, filler.stat().st_size - 4096)
    if isinstance(target.server, Vsftpd):
        os.chown(filler, *owner(target))
    with pytest.raises(DestinationError) as caught:
        asyncio.run(upload(destination(target), f"last-bytes-{kind}/file.csv", os.urandom(6000)))
    assert (caught.value.code, caught.value.transient) == ("disk_full", True), caught.value.message
    assert [entry.name for entry in full.iterdir()] == ["filler"]  # no temporary file, no target
    asyncio.run(upload(destination(target), "after-disk-full.csv", b"a,b\n"))  # the server still serves
    assert (target.root / "home/alex/after-disk-full.csv").read_bytes() == b"a,b\n"


@pytest.mark.parametrize("kind", SERVERS)
def test_untrusted_certificate(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str) -> None:
    target = ftp_servers.get(kind, "explicit")
    result, record = run(
        tmp_path, demo_db, target, target.destination(trust=False), sql=SMALL, env={"SSL_CERT_FILE": os.devnull}
    )
    assert failed(result, record, "tls_certificate") == (
        f"the TLS certificate of 127.0.0.1:{target.port} is not trusted (self-signed certificate in certificate "
        "chain): if the server uses a private or self-signed certificate, set `ca_file` to its CA certificate"
    )


def test_certificate_for_another_host(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path) -> None:
    target = ftp_servers.start("pyftpdlib", "implicit", cert="wrong-host")
    result, record = run(tmp_path, demo_db, target, sql=SMALL)
    assert failed(result, record, "tls_certificate") == (
        f"the TLS certificate of 127.0.0.1:{target.port} is not trusted (IP address mismatch, certificate is not "
        "valid for '127.0.0.1'.): the destination's `host` must be a name the certificate lists"
    )


@pytest.mark.parametrize("kind", SERVERS)
def test_tls_required(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str) -> None:
    target = ftp_servers.get(kind, "explicit")
    result, record = run(tmp_path, demo_db, target, target.destination(tls="none"), sql=SMALL)
    message = failed(result, record, "tls_required")
    assert message.startswith(f"the FTP server 127.0.0.1:{target.port} requires TLS (server said: 5")
    assert message.endswith(
        "set `tls: explicit` (AUTH TLS, usually port 21) or `tls: implicit` (usually port 990) on destination `target`"
    )


def test_explicit_tls_against_a_plain_server(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path) -> None:
    target = ftp_servers.get("pyftpdlib")
    result, record = run(tmp_path, demo_db, target, target.destination(tls="explicit"), sql=SMALL)
    message = failed(result, record, "tls_failed")
    assert message.startswith(
        f"the FTP server 127.0.0.1:{target.port} does not offer explicit TLS (AUTH TLS) (server said: 500 "
    )


@pytest.mark.parametrize("kind", SERVERS)
def test_implicit_tls_against_a_plain_server(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path, kind: str) -> None:
    target = ftp_servers.get(kind)
    result, record = run(tmp_path, demo_db, target, target.destination(tls="implicit"), sql=SMALL)
    message = failed(result, record, "tls_failed")
    assert message.startswith(f"TLS with 127.0.0.1:{target.port} failed during connect (")
    assert message.endswith(
        "check `tls` (`implicit` speaks TLS from the first byte, usually on port 990; `explicit` "
        "upgrades a plain connection with AUTH TLS, usually on port 21)"
    )


def test_active_mode_is_refused(ftp_servers: FtpServers, demo_db: Path, tmp_path: Path) -> None:
    """Rejected by validation, before any connection: a Function can't accept data connections."""
    target = ftp_servers.get("pyftpdlib")
    doc = customers_catalog(demo_db, target.destination(passive=False), sql=SMALL)
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = run_cli("validate", str(path), env=target.env())
    assert result.returncode == 2
    assert (
        "destinations.target.passive: active mode is not supported: an Azure Function cannot accept the "
        "server's data connections" in result.stderr
    )


# --- in process: what the CLI doesn't show ------------------------------------------------------


async def upload(destination: FtpDestination, path: str, data: bytes) -> None:
    async with destination:
        upload = await destination.open(path, content_type="text/csv")
        try:
            for start in range(0, len(data), 1 << 20):
                await upload.write(data[start : start + (1 << 20)])
            await upload.finish(len(data), hashlib.md5(data).digest())
            await upload.publish()
        except BaseException:
            await upload.discard()
            raise


def destination(target: FtpTarget, user: str = WRITER, **extra: Any) -> FtpDestination:
    settings = Settings({SETTINGS[name]: password for name, password in target.passwords.items()})
    return FtpDestination(target.config(user, **extra), settings, timeout=10)


def test_session_reuse_is_what_vsftpd_demands(ftp_servers: FtpServers, monkeypatch: pytest.MonkeyPatch) -> None:
    target = ftp_servers.get("vsftpd", "explicit")
    asyncio.run(upload(destination(target), "reuse/ok.csv", b"a;b\n" * 10))
    assert (target.root / "home/alex/reuse/ok.csv").read_bytes() == b"a;b\n" * 10
    # The same client without session resumption on data connections is refused.
    monkeypatch.setattr(FtpClient, "_data_tls", lambda self: self.tls)
    with pytest.raises(DestinationError) as caught:
        asyncio.run(upload(destination(target), "reuse/refused.csv", b"a;b\n"))
    assert caught.value.code == "tls_failed" and not caught.value.transient
    assert caught.value.message == (
        f"TLS on the data connection to 127.0.0.1:{target.port} failed during write `reuse/refused.csv` "
        "(server said: 522 SSL connection failed: session reuse required): check the server's FTPS settings"
    )
    assert leftovers(target.root / "home/alex/reuse") == []


@pytest.mark.parametrize(
    "case, code, transient",
    [
        ("refused", "connection_refused", True),  # network fault
        ("password", "authentication_failed", False),  # 530
        ("read-only", "permission_denied", False),  # 550
        ("disk-full", "disk_full", True),  # pyftpdlib: 426 No space left on device
    ],
)
def test_transient_or_terminal(ftp_servers: FtpServers, small_disk: Any, case: str, code: str, transient: bool) -> None:
    target = ftp_servers.get("pyftpdlib")
    settings = {SETTINGS[name]: password for name, password in target.passwords.items()}
    user, path, extra = WRITER, "transient/file.bin", {}
    if case == "refused":
        extra = {"port": free_port()}
    elif case == "password":
        settings[SETTINGS[WRITER]] = "not-the-password"
    elif case == "read-only":
        user = READER
    else:
        small_disk(target.root / "home/alex/full-inprocess")
        path = "full-inprocess/file.bin"
    ftp = FtpDestination(target.config(user, **extra), Settings(settings), timeout=10)
    with pytest.raises(DestinationError) as caught:
        asyncio.run(upload(ftp, path, b"x" * 2_000_000))
    assert (caught.value.code, caught.value.transient) == (code, transient)


def test_uploads_use_large_writes(ftp_servers: FtpServers, monkeypatch: pytest.MonkeyPatch) -> None:
    target = ftp_servers.get("pyftpdlib")
    sizes: list[int] = []
    original = asyncio.StreamWriter.write

    def spy(self: asyncio.StreamWriter, data: Any) -> None:
        if self.get_extra_info("peername") and len(data) > 100:  # data, not commands
            sizes.append(len(data))
        original(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "write", spy)

    async def small_chunks() -> None:
        ftp = destination(target)
        async with ftp:
            upload = await ftp.open("writes/file.bin", content_type="application/octet-stream")
            for _ in range(1000):
                await upload.write(b"y" * 1000)  # the engine may hand over small chunks
            await upload.finish(1_000_000, b"")
            await upload.publish()

    asyncio.run(small_chunks())
    assert (target.root / "home/alex/writes/file.bin").stat().st_size == 1_000_000
    assert len(sizes) >= 2 and min(sizes[:-1]) >= 64 * 1024, sizes


def test_an_unreadable_ca_file(ftp_servers: FtpServers, tmp_path: Path) -> None:
    target = ftp_servers.get("pyftpdlib", "explicit")
    config = target.config()
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(DestinationError) as caught:
        FtpDestination(type(config)(**{**vars(config), "ca_file": str(missing)}), Settings(target.env()))
    assert (caught.value.code, caught.value.transient) == ("invalid_ca_file", False)
    assert caught.value.message == (
        f"destinations.target.ca_file: cannot load CA certificates from `{missing}`: "
        "No such file or directory; it must be a readable PEM file"
    )


def test_a_connection_the_server_closed_while_idle_is_replaced(
    ftp_servers: FtpServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long run leaves connections idle in the pool (one per staged file) until it publishes.
    target = ftp_servers.get("pyftpdlib", idle_timeout=1)
    monkeypatch.setattr(ftp_module, "IDLE_CHECK", 0.5)

    async def staged_then_idle() -> None:
        ftp = destination(target)
        async with ftp:
            upload = await ftp.open("idle/file.csv", content_type="text/csv")
            await upload.write(b"a;b\n")
            await upload.finish(4, b"")
            await asyncio.sleep(2.5)  # the server closes the idle session
            await upload.publish()

    asyncio.run(staged_then_idle())
    assert (target.root / "home/alex/idle/file.csv").read_bytes() == b"a;b\n"
