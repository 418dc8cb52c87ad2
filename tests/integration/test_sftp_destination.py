"""The SFTP destination against OpenSSH's sshd (chrooted `internal-sftp` users, own host key).

Runs go through the CLI (`python -m core run …`) as a user runs them; files are checked on the
server's disk and read back with OpenSSH's own `sftp` client.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from core.catalog.model import Destination
from core.destinations.sftp import SftpDestination
from core.errors import DestinationError
from core.settings import Settings
from devtools.services import free_port
from tests.helpers import AT, SMALL, csv_rows, customers_catalog, failed, leftovers, md5, run_record, write_catalog
from tests.helpers import cli as run_cli

from .sftp_target import KEY_SETTING, PASSPHRASE_SETTING, PASSWORD_SETTING, SFTP_READER, SFTP_WRITER, SftpTarget

pytest_plugins = ["tests.integration.conftest_sftp"]

FOLDERS = [  # folder → where it lands, relative to the chroot (login directory /home/alex)
    ("exports/daily", "home/alex/exports/daily"),
    ("/shared/drop", "shared/drop"),
    ("../outbox", "home/outbox"),
    (".", "home/alex"),
]
KEYS = ("openssh", "openssh-passphrase", "pem-passphrase")

Result = tuple[Any, dict[str, Any]]


def run(
    tmp_path: Path,
    demo_db: Path,
    target: SftpTarget,
    destination: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    key: str | None = None,
    **activation: Any,
) -> Result:
    path = write_catalog(
        tmp_path / "catalog.yaml", customers_catalog(demo_db, destination or target.destination(key=key), **activation)
    )
    result = run_cli("run", "export", "--catalog", str(path), "--at", AT, env={**target.env(key), **(env or {})})
    record = run_record(result)
    for secret in target.secrets():
        assert secret not in result.stdout + result.stderr
    return result, record


@pytest.mark.parametrize("folder, on_disk", FOLDERS)
def test_files_land_in_the_folder(
    sftp_server: SftpTarget, demo_db: Path, tmp_path: Path, folder: str, on_disk: str
) -> None:
    result, record = run(tmp_path, demo_db, sftp_server, sql=SMALL, folder=folder, max_file_size="150KB")
    assert result.returncode == 0, result.stderr
    assert record["status"] == "succeeded" and record["rows"]["exported"] == 3000
    assert len(record["files"]) >= 3
    rows = 0
    for part, file in enumerate(record["files"], start=1):
        name = f"export-{part:05d}.csv"
        assert file["path"] == ("" if folder == "." else folder + "/") + name
        stored = sftp_server.root / on_disk / name
        assert file["bytes"] == stored.stat().st_size and file["md5"] == md5(stored)
        rows += csv_rows(stored)
    assert rows == 3000
    assert leftovers(sftp_server.root / on_disk) == []


@pytest.mark.parametrize("key", KEYS)
def test_key_authentication(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path, key: str) -> None:
    result, record = run(tmp_path, demo_db, sftp_server, key=key, sql=SMALL, folder=f"keys/{key}")
    assert result.returncode == 0, result.stderr
    stored = sftp_server.root / f"home/alex/keys/{key}/export.csv"
    assert csv_rows(stored) == 3000 and record["files"][0]["md5"] == md5(stored)
    assert f"Accepted publickey for {SFTP_WRITER}" in sftp_server.sshd.log_path.read_text()  # type: ignore[union-attr]


def test_read_back_with_openssh(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    result, record = run(tmp_path, demo_db, sftp_server, folder="readback")  # the whole demo model, 14 MB
    assert result.returncode == 0, result.stderr
    local = tmp_path / "fetched.csv"
    got = sftp_server.openssh(f"get readback/export.csv {local}\nls -a readback\n", tmp_path)
    assert got.returncode == 0, got.stderr
    assert csv_rows(local) == 100_000 and hashlib.md5(local.read_bytes()).hexdigest() == record["files"][0]["md5"]
    assert ".filecast-" not in got.stdout


def test_an_existing_file_is_overwritten(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    put = tmp_path / "old.csv"
    put.write_text("old content\n")
    done = sftp_server.openssh(f"-mkdir overwrite\nput {put} overwrite/export.csv\n", tmp_path)
    assert done.returncode == 0, done.stderr
    stored = sftp_server.root / "home/alex/overwrite/export.csv"
    assert stored.read_text() == "old content\n"
    result, record = run(tmp_path, demo_db, sftp_server, sql=SMALL, folder="overwrite")
    assert result.returncode == 0, result.stderr
    assert csv_rows(stored) == 3000 and record["files"][0]["md5"] == md5(stored)
    assert leftovers(stored.parent) == [] and record["warnings"] == []


def test_every_format_parts_gzip_and_manifest(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    sql = "select customer_id, first_name, country from customers where customer_id <= 500"
    folder = sftp_server.root / "home/alex/formats"
    for fmt in ("csv", "json", "ndjson", "xml", "parquet"):
        compression = "none" if fmt == "parquet" else "gzip"
        destination = sftp_server.destination()
        doc = customers_catalog(
            demo_db,
            destination,
            sql=sql,
            folder="formats",
            file_name=f"all_{fmt}",
            format=fmt,
            compression=compression,
            manifest=True,
            max_file_rows=200,
        )
        doc["activations"]["export"].pop("csv")
        path = write_catalog(tmp_path / f"{fmt}.yaml", doc)
        result = run_cli("run", "export", "--catalog", str(path), "--at", AT, env=sftp_server.env())
        record = run_record(result)
        assert result.returncode == 0, result.stderr
        files = record["files"]
        assert len(files) == 3 and [f["rows"] for f in files] == [200, 200, 100]
        ids: list[int] = []
        for file in files:
            raw = (folder / Path(file["path"]).name).read_bytes()
            assert hashlib.md5(raw).hexdigest() == file["md5"]
            data = raw if fmt == "parquet" else gzip.decompress(raw)
            if fmt == "parquet":
                ids += pq.read_table(io.BytesIO(data)).column("customer_id").to_pylist()
            elif fmt == "json":
                ids += [row["customer_id"] for row in json.loads(data)]
            elif fmt == "ndjson":
                ids += [json.loads(line)["customer_id"] for line in data.splitlines()]
            elif fmt == "xml":
                ids += [int(e.text or 0) for e in ET.fromstring(data).iter("customer_id")]
            else:
                ids += [int(line.split(b",")[0]) for line in data.splitlines()[1:]]
        assert ids == list(range(1, 501)), fmt
        manifest = json.loads((folder / f"all_{fmt}.manifest.json").read_text())
        assert [f["path"] for f in manifest["files"]] == [f["path"] for f in files]
    assert leftovers(folder) == []


def test_preview_uploads_nothing(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    doc = customers_catalog(demo_db, sftp_server.destination(), sql=SMALL, folder="previewed")
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = run_cli("preview", "export", "--catalog", str(path), "--at", AT, env=sftp_server.env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"][0]["path"] == "previewed/export.csv"
    assert not (sftp_server.root / "home/alex/previewed").exists()


# --- host keys --------------------------------------------------------------------------------------


def test_a_known_hosts_line_pins_too(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    destination = sftp_server.destination(host_key=["SHA256:" + "A" * 43, sftp_server.sshd.known_hosts()])
    result, _ = run(tmp_path, demo_db, sftp_server, destination, sql=SMALL, folder="pinned-line")
    assert result.returncode == 0, result.stderr
    assert csv_rows(sftp_server.root / "home/alex/pinned-line/export.csv") == 3000


def test_a_host_key_mismatch_fails_before_authentication(
    sftp_server: SftpTarget, demo_db: Path, tmp_path: Path
) -> None:
    log = sftp_server.sshd.log_path
    assert log is not None
    before = log.read_text()
    wrong = "SHA256:" + "B" * 43
    result, record = run(
        tmp_path, demo_db, sftp_server, sftp_server.destination(host_key=wrong), sql=SMALL, folder="never-mismatch"
    )
    seen = sftp_server.sshd.fingerprint
    assert failed(result, record, "host_key_mismatch") == (
        f"the host key of 127.0.0.1:{sftp_server.port} is `{seen}` (ssh-ed25519), not the pinned `{wrong}`: nothing "
        "was sent to it. If the server's key changed on purpose, set `host_key` of destination `target` to "
        f"`{seen}` (`filecast validate --probe` prints it); otherwise the connection may be intercepted"
    )
    assert not (sftp_server.root / "home/alex/never-mismatch").exists()
    added = log.read_text()[len(before) :]
    assert "Host key is not trusted" in added and "[preauth]" in added
    assert "password for" not in added and "Accepted" not in added and "Failed" not in added


def test_validate_probe_prints_the_key_to_pin(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    destination = sftp_server.destination()
    destination.pop("host_key")
    path = write_catalog(tmp_path / "catalog.yaml", customers_catalog(demo_db, destination, sql=SMALL))
    result = run_cli("validate", "--probe", str(path), env=sftp_server.env())
    assert result.returncode == 2  # no host_key yet: invalid, but the key to pin is printed
    fingerprint, line = sftp_server.sshd.fingerprint, sftp_server.sshd.known_hosts()
    assert (
        f"destinations.target: 127.0.0.1:{sftp_server.port} presents host key {fingerprint} (ssh-ed25519), "
        f'no `host_key` yet; to pin it, set\n    host_key: "{fingerprint}"\n  or the known_hosts line\n'
        f'    host_key: "{line}"'
    ) in result.stderr
    assert "destinations.target.host_key: is required" in result.stderr
    write_catalog(path, customers_catalog(demo_db, {**destination, "host_key": fingerprint}, sql=SMALL))
    result = run_cli("validate", "--probe", str(path), env=sftp_server.env())
    assert result.returncode == 0, result.stderr
    assert f"presents host key {fingerprint} (ssh-ed25519), pinned" in result.stderr
    write_catalog(path, customers_catalog(demo_db, {**destination, "host_key": "SHA256:" + "C" * 43}, sql=SMALL))
    result = run_cli("validate", "--probe", str(path), env=sftp_server.env())
    assert result.returncode == 2
    assert f"destinations.target.host_key: the server presents `{fingerprint}`, which is not pinned" in result.stderr


# --- every error, provoked for real -------------------------------------------------------------------


def test_wrong_password(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    result, record = run(
        tmp_path,
        demo_db,
        sftp_server,
        sql=SMALL,
        folder="never",
        env={PASSWORD_SETTING[SFTP_WRITER]: "not-the-password"},
    )
    assert failed(result, record, "authentication_failed") == (
        f"authentication failed for user `{SFTP_WRITER}` on 127.0.0.1:{sftp_server.port}: the server refused the "
        f"password in app setting `{PASSWORD_SETTING[SFTP_WRITER]}`; check the username and the password"
    )
    assert "not-the-password" not in result.stdout + result.stderr
    assert not (sftp_server.root / "home/alex/never").exists()


def test_key_not_authorised(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    destination = sftp_server.destination(SFTP_READER, key="openssh")  # the writer's key, offered as the reader
    result, record = run(tmp_path, demo_db, sftp_server, destination, key="openssh", sql=SMALL)
    assert failed(result, record, "authentication_failed") == (
        f"authentication failed for user `{SFTP_READER}` on 127.0.0.1:{sftp_server.port}: the server refused the "
        f"private key in app setting `{KEY_SETTING}`; check the username and that the key's public half is in the "
        "user's `authorized_keys`"
    )


def test_wrong_passphrase(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    result, record = run(
        tmp_path, demo_db, sftp_server, key="pem-passphrase", sql=SMALL, env={PASSPHRASE_SETTING: "not-the-passphrase"}
    )
    message = failed(result, record, "invalid_private_key")
    assert message.startswith(
        f"app setting `{KEY_SETTING}` of destination `target` does not hold a usable private key ("
    )
    assert message.endswith(f"in OpenSSH or PEM format, and check the passphrase in app setting `{PASSPHRASE_SETTING}`")


def test_permission_denied_writing(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    result, record = run(tmp_path, demo_db, sftp_server, sftp_server.destination(SFTP_READER), sql=SMALL, folder=".")
    assert failed(result, record, "permission_denied") == (
        f"permission denied to write `export.csv` on 127.0.0.1:{sftp_server.port} (server said: Permission denied): "
        f"the SFTP user `{SFTP_READER}` needs write access to the folder and the file (the folder is `/home/reader` "
        "on the server)"
    )
    assert list((sftp_server.root / "home/reader").iterdir()) == []


def test_permission_denied_creating_a_folder(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    result, record = run(
        tmp_path, demo_db, sftp_server, sftp_server.destination(SFTP_READER), sql=SMALL, folder="new/sub"
    )
    assert failed(result, record, "permission_denied") == (
        f"permission denied to create folder `new` on 127.0.0.1:{sftp_server.port} (server said: Permission "
        f"denied): the SFTP user `{SFTP_READER}` needs write access to `/home/reader`, or create "
        "`/home/reader/new` for it"
    )


def test_disk_full(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path, small_disk: Any) -> None:
    full = small_disk(sftp_server.root / "home/alex/full", sftp_server.site.owner_of(SFTP_WRITER))
    result, record = run(tmp_path, demo_db, sftp_server, folder="full")  # 14 MB into 1 MiB
    message = failed(result, record, "disk_full")
    assert message.startswith(
        f"the SFTP server 127.0.0.1:{sftp_server.port} could not store `full/export.csv` "
        "(server said: Failure): its disk is full ("
    )
    assert message.endswith("bytes free) or the user's quota is exhausted; free space on the server or raise the quota")
    assert list(full.iterdir()) == []  # the partial temporary file was removed


def test_connection_refused(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    port = free_port()
    result, record = run(tmp_path, demo_db, sftp_server, sftp_server.destination(port=port), sql=SMALL)
    assert failed(result, record, "connection_refused") == (
        f"connection refused by 127.0.0.1:{port}: check `host`, `port` and that the SFTP server is running"
    )


def test_timeout(sftp_server: SftpTarget, demo_db: Path, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result, record = run(
            tmp_path,
            demo_db,
            sftp_server,
            sftp_server.destination(port=port),
            env={"FILECAST_SFTP_TIMEOUT": "2"},
            sql=SMALL,
        )
    assert failed(result, record, "timeout") == (
        f"no answer from 127.0.0.1:{port} within 2 s during connect: check `host`, `port` and the firewall"
    )


@pytest.mark.parametrize(
    "case, code, transient",
    [
        ("refused", "connection_refused", True),
        ("password", "authentication_failed", False),
        ("host key", "host_key_mismatch", False),
        ("read-only", "permission_denied", False),
    ],
)
def test_transient_or_terminal(sftp_server: SftpTarget, case: str, code: str, transient: bool) -> None:
    user, settings = SFTP_WRITER, sftp_server.env()
    doc = sftp_server.destination()
    if case == "refused":
        doc["port"] = free_port()
    elif case == "password":
        settings[PASSWORD_SETTING[SFTP_WRITER]] = "nope-nope"
    elif case == "host key":
        doc["host_key"] = "SHA256:" + "D" * 43
    else:
        user = SFTP_READER
        doc = sftp_server.destination(SFTP_READER)
    config = Destination(
        "target",
        "sftp",
        host="127.0.0.1",
        port=doc["port"],
        username=user,
        password_setting=PASSWORD_SETTING[user],
        host_key=(doc["host_key"],),
    )

    async def upload() -> None:
        async with SftpDestination(config, Settings(settings), timeout=10) as destination:
            staged = await destination.open("transient.bin", content_type="application/octet-stream")
            await staged.write(b"x" * 1000)
            await staged.finish(1000, b"")
            await staged.publish()

    with pytest.raises(DestinationError) as caught:
        asyncio.run(upload())
    assert (caught.value.code, caught.value.transient) == (code, transient)
