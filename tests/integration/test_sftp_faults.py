"""SFTP faults a real server can't be made to show on demand, from an in-process asyncssh server
(devtools.sftpserver): rename refused, no posix-rename, disk full on the last bytes, the connection
cut mid-upload, a slow server. Runs go through the CLI, as a user runs them; files are checked on
the server's disk: a reader never sees a partial file under the target name, no temporary file
remains, and the run ends with the right error and exit code.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.catalog.model import Destination
from core.destinations.sftp import SftpDestination
from core.errors import DestinationError
from core.settings import Settings
from devtools.sftpserver import Faults, SftpTestServer
from tests.helpers import (
    AT,
    SMALL,
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

PASSWORD = "p-" + secrets.token_urlsafe(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """`start(**faults)`: a faulty server of this test, stopped after it."""
    started: list[SftpTestServer] = []

    def start(**faults: Any) -> SftpTestServer:
        sftp = SftpTestServer(tmp_path / f"root{len(started)}", {"alex": PASSWORD}, Faults(**faults)).start()
        started.append(sftp)
        return sftp

    yield start
    for sftp in started:
        sftp.stop()


def destination(sftp: SftpTestServer) -> dict[str, Any]:
    return {
        "type": "sftp",
        "host": "127.0.0.1",
        "port": sftp.port,
        "username": "alex",
        "password_setting": "SFTP_PW",
        "host_key": sftp.fingerprint,
    }


def run(tmp_path: Path, demo_db: Path, sftp: SftpTestServer, **activation: Any) -> tuple[Any, dict[str, Any]]:
    path = write_catalog(tmp_path / "catalog.yaml", customers_catalog(demo_db, destination(sftp), **activation))
    result = run_cli("run", "export", "--catalog", str(path), "--at", AT, env={"SFTP_PW": PASSWORD})
    assert PASSWORD not in result.stdout + result.stderr
    return result, run_record(result)


def existing(sftp: SftpTestServer, folder: str) -> Path:
    stored = sftp.root / folder / "export.csv"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text("old content\n")
    return stored


def test_rename_refused(server: Any, demo_db: Path, tmp_path: Path) -> None:
    sftp = server(refuse_rename=True)
    stored = existing(sftp, "refused")
    result, record = run(tmp_path, demo_db, sftp, sql=SMALL, folder="refused")
    assert failed(result, record, "permission_denied") == (
        f"permission denied to rename `refused/export.csv` on 127.0.0.1:{sftp.port} (server said: Permission "
        "denied): the SFTP user `alex` needs write access to the folder and the file (the folder is `/refused` on "
        "the server)"
    )
    assert stored.read_text() == "old content\n" and leftovers(stored.parent) == []


def test_no_posix_rename_replaces_in_two_steps(server: Any, demo_db: Path, tmp_path: Path) -> None:
    sftp = server(posix_rename=False)
    stored = existing(sftp, "two-steps")
    result, record = run(tmp_path, demo_db, sftp, sql=SMALL, folder="two-steps")
    assert result.returncode == 0, result.stderr
    assert csv_rows(stored) == 3000 and record["files"][0]["md5"] == md5(stored)
    assert record["warnings"] == [
        {
            "code": "sftp_replace_in_two_steps",
            "message": f"127.0.0.1:{sftp.port} does not offer posix-rename@openssh.com, so `two-steps/export.csv` was "
            "replaced in two steps (the old file moved aside first): the name was briefly absent",
        }
    ]
    assert leftovers(stored.parent) == []
    # A new name needs no second step: a plain rename is atomic, and nothing is warned.
    result, record = run(tmp_path, demo_db, sftp, sql=SMALL, folder="two-steps-new")
    assert result.returncode == 0 and record["warnings"] == []
    assert csv_rows(sftp.root / "two-steps-new/export.csv") == 3000


def test_disk_full_on_the_last_bytes(server: Any) -> None:
    data = bytes(range(256)) * 4000  # 1,024,000 bytes: the last block does not fit
    sftp = server(space=len(data) - 10)
    config = Destination(
        "target",
        "sftp",
        host="127.0.0.1",
        port=sftp.port,
        username="alex",
        password_setting="SFTP_PW",
        host_key=(sftp.fingerprint,),
    )

    async def upload() -> None:
        async with SftpDestination(config, Settings({"SFTP_PW": PASSWORD}), timeout=10) as target:
            staged = await target.open("last-bytes/file.bin", content_type="application/octet-stream")
            try:
                for start in range(0, len(data), 1 << 20):
                    await staged.write(data[start : start + (1 << 20)])
                await staged.finish(len(data), hashlib.md5(data).digest())
                await staged.publish()
            except BaseException:
                await staged.discard()
                raise

    with pytest.raises(DestinationError) as caught:
        asyncio.run(upload())
    assert (caught.value.code, caught.value.transient) == ("disk_full", True)
    assert caught.value.message.startswith(
        f"the SFTP server 127.0.0.1:{sftp.port} could not store `last-bytes/file.bin` (server said: Failure): its "
        "disk is full ("
    )
    assert list((sftp.root / "last-bytes").iterdir()) == []  # no temporary file, no target


def test_disk_full_fails_the_run(server: Any, demo_db: Path, tmp_path: Path) -> None:
    sftp = server(space=2_000_000)
    result, record = run(tmp_path, demo_db, sftp, folder="full")  # 14 MB
    assert failed(result, record, "disk_full").endswith(
        "or the user's quota is exhausted; free space on the server or raise the quota"
    )
    assert list((sftp.root / "full").iterdir()) == []


def test_connection_cut_mid_upload(server: Any, demo_db: Path, tmp_path: Path) -> None:
    sftp = server(drop_after=3_000_000)
    stored = existing(sftp, "cut")
    result, record = run(tmp_path, demo_db, sftp, folder="cut")  # 14 MB, cut at 3 MB on every attempt
    message = failed(result, record, "connection_lost")
    assert message.startswith(f"the SFTP connection to 127.0.0.1:{sftp.port} broke during write `cut/export.csv`")
    assert sftp.disk.drops == 3  # the first attempt and both retries
    assert stored.read_text() == "old content\n"
    assert leftovers(stored.parent) == []  # each attempt removed its temporary file on a fresh connection


def test_a_reader_never_sees_a_partial_file(server: Any, demo_db: Path, tmp_path: Path) -> None:
    sftp = server(rate=4_000_000)  # about 3.5 s for the 14 MB of the demo model
    stored = existing(sftp, "watched")
    old = md5(stored)
    path = write_catalog(tmp_path / "catalog.yaml", customers_catalog(demo_db, destination(sftp), folder="watched"))
    process = background_cli("run", "export", "--catalog", str(path), "--at", AT, env={"SFTP_PW": PASSWORD})
    with Watcher(stored) as watcher:
        assert wait_for_temp(stored.parent, process, 1_000_000) is not None
        result, record = finished(process)
    seen, temps = watcher.seen, watcher.temps
    assert result.returncode == 0, result.stderr
    new = md5(stored)
    assert new != old and csv_rows(stored) == 100_000 and record["files"][0]["md5"] == new
    assert temps, "the reader never saw the upload in progress"
    assert set(seen) <= {old, new}, "a reader saw the target with content that is neither the old nor the new file"
    assert seen[old] > 10 and leftovers(stored.parent) == []


def test_the_next_run_removes_what_a_crash_left(server: Any, demo_db: Path, tmp_path: Path) -> None:
    sftp = server()
    folder = sftp.root / "crashed"
    folder.mkdir(parents=True)
    mine = folder / ".export.csv.0badf00d.filecast-tmp"  # this target's, from a crashed run
    stale = folder / ".other.csv.0badcafe.filecast-tmp"  # another file's, two days old
    fresh = folder / ".other.csv.0dadbeef.filecast-tmp"  # another file's, maybe a run in progress
    for path in (mine, stale, fresh):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    result, _ = run(tmp_path, demo_db, sftp, sql=SMALL, folder="crashed")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [fresh.name, "export.csv"]
    assert f"removed `crashed/{mine.name}`, left on 127.0.0.1:{sftp.port} by an earlier failed run" in result.stderr
