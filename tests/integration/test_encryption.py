"""OpenPGP encryption end to end: files Filecast encrypted, decrypted and verified by GnuPG.

Keys come from gpg (tests/integration/gnupg.py). Each encrypted run is compared with the same
activation run without encryption, against the memory destination: the plaintext gpg returns
must equal the unencrypted export byte for byte.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from core.catalog.parse import parse_catalog
from core.destinations.memory import MemoryDestination
from core.run.engine import Run, RunResult
from core.run.records import RunRecord
from core.settings import Settings
from core.state.memory import MemoryStateStore
from core.write import pgp_stream
from core.write.encryption import Encryption, load_keys
from core.write.formats import WRITERS
from devtools.services import FtpServer
from tests.helpers import cli, run_record, unavailable, write_catalog
from tests.integration import gnupg
from tests.integration.gnupg import CV25519, GPG, RSA, SIGN_ONLY, SIGNING_PASSPHRASE, Key, make_key, revoke

AT = datetime(2025, 4, 14, 6, tzinfo=UTC)
ROWS = 5000


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("gpg") is None:
        unavailable("gpg (Debian gnupg)", FileNotFoundError(GPG))
    base = tmp_path_factory.mktemp("gnupg")
    rsa = make_key(base, "rsa", RSA, expire="1y")
    cv = make_key(base, "cv", CV25519)
    signer = make_key(base, "signer", SIGN_ONLY, passphrase=SIGNING_PASSPHRASE)
    for reader in (rsa, cv):
        reader.import_key(signer.public)
    expired = make_key(base, "expired", CV25519, expire="1y", faked_time="20200101T000000")
    revoked = make_key(base, "revoked", CV25519)
    soon = make_key(base, "soon", CV25519, expire="10d")
    # A primary key that never expires, whose only encryption subkey expired on 2020-12-31.
    stale = make_key(base, "stale", SIGN_ONLY, faked_time="20200101T000000")
    gnupg.add_subkey(stale, "cv25519", "encr", "1y", faked_time="20200101T000000")
    keys = {
        "rsa": rsa,
        "cv": cv,
        "signer": signer,
        "expired": expired,
        "revoked": revoked,
        "soon": soon,
        "stale": stale,
        "revoked_public": revoke(revoked),
    }
    yield keys
    for key in (rsa, cv, signer, expired, revoked, soon, stale):  # the gpg-agents these homedirs started
        subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "gpg-agent"], capture_output=True, check=False)


@pytest.fixture(scope="session")
def people_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pgpdb") / "people.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"""CREATE TABLE people AS SELECT i AS id, 'name ' || i || ', "quoted" ü' AS name,
            (i * 1.25)::DECIMAL(12, 2) AS amount, TIMESTAMPTZ '2025-01-01 00:00:00+00' + INTERVAL (i) MINUTE AS seen,
            i % 3 = 0 AS vip FROM range(1, {ROWS + 1}) t(i)""")
    return path


def settings_for(keys: dict[str, Any], *recipients: str) -> dict[str, str]:
    return {
        "PARTNER_KEYS": "".join(keys[r].public for r in recipients),
        "SIGNING_KEY": keys["signer"].secret(SIGNING_PASSPHRASE),
        "SIGNING_PASSPHRASE": SIGNING_PASSPHRASE,
    }


def catalog_doc(db: Path, **activation: Any) -> dict[str, Any]:
    return {
        "sources": {"db": {"type": "duckdb", "database": str(db)}},
        "models": {"people": {"source": "db", "table": "people", "primary_key": ["id"]}},
        "destinations": {"target": {"type": "azure_blob", "container": "xyz", "connection_setting": "X"}},
        "activations": {
            "export": {
                "model": "people",
                "destination": "target",
                "file_name": "people_{YYYY}{MM}{DD}",
                "format": "csv",
                **activation,
            }
        },
    }


def export(
    db: Path, settings: dict[str, str], *, state: MemoryStateStore | None = None, run_id: str = "r1", **activation: Any
) -> tuple[RunResult, dict[str, bytes]]:
    catalog = parse_catalog(catalog_doc(db, **activation), db.parent)
    destination = MemoryDestination()
    record = RunRecord(run_id, "export", "manual", AT)
    run = Run(catalog, "export", Settings(settings), record, destination=destination, state=state, retries=0)
    result = asyncio.run(run.execute())
    return result, destination.files


def signed_by(status: str, key: Key) -> bool:
    return f"VALIDSIG {key.fingerprint}" in status and "GOODSIG" in status


SIGNED = {
    "recipients_setting": "PARTNER_KEYS",
    "signing_key_setting": "SIGNING_KEY",
    "signing_passphrase_setting": "SIGNING_PASSPHRASE",
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_format_decrypts_with_gpg_for_both_recipients_and_the_signature_verifies(
    gpg_keys: dict[str, Any], people_db: Path, fmt: str
) -> None:
    settings = settings_for(gpg_keys, "rsa", "cv")
    plain_result, plain = export(people_db, settings, format=fmt)
    result, files = export(people_db, settings, format=fmt, encryption=SIGNED)
    assert plain_result.exception is None and result.exception is None, result.exception
    extension = WRITERS[fmt].spec.extension
    assert list(files) == [f"people_20250414.{extension}.pgp"] and list(plain) == [f"people_20250414.{extension}"]
    encrypted, expected = files[f"people_20250414.{extension}.pgp"], plain[f"people_20250414.{extension}"]
    assert not encrypted.startswith(b"-----BEGIN") and expected[:64] not in encrypted
    for reader in ("rsa", "cv"):  # each recipient's own homedir holds only its own secret key
        plaintext, status = gpg_keys[reader].decrypt(encrypted)
        assert plaintext == expected
        assert signed_by(status, gpg_keys["signer"]) and "GOODMDC" in status and "DECRYPTION_OKAY" in status
    assert "Good signature" in gpg_keys["cv"].verify(encrypted)
    [info] = result.record.files  # the run record describes the file as delivered: encrypted
    assert info["bytes"] == len(encrypted) and info["md5"] == hashlib.md5(encrypted).hexdigest()
    assert info["rows"] == ROWS


def test_gzip_parts_armoured_and_unsigned(gpg_keys: dict[str, Any], people_db: Path) -> None:
    settings = settings_for(gpg_keys, "cv")
    options: dict[str, Any] = {"compression": "gzip", "max_file_rows": 1500}
    _, plain = export(people_db, settings, **options)
    result, files = export(
        people_db, settings, **options, encryption={"recipients_setting": "PARTNER_KEYS", "armor": True}
    )
    assert result.exception is None, result.exception
    assert sorted(files) == [f"people_20250414-0000{n}.csv.gz.asc" for n in range(1, 5)]
    assert sorted(plain) == [f"people_20250414-0000{n}.csv.gz" for n in range(1, 5)]
    for name, data in files.items():
        assert data.startswith(b"-----BEGIN PGP MESSAGE-----")
        plaintext, status = gpg_keys["cv"].decrypt(data)
        assert plaintext == plain[name.removesuffix(".asc")]
        assert "SIG" not in status and "GOODMDC" in status
    rows = b"".join(gzip.decompress(gpg_keys["cv"].decrypt(files[n])[0]).split(b"\n", 1)[1] for n in sorted(files))
    assert rows.count(b"\n") == ROWS


def test_max_file_size_bounds_the_file_as_stored(gpg_keys: dict[str, Any], people_db: Path) -> None:
    limit = 64 * 1024
    settings = settings_for(gpg_keys, "rsa", "cv")
    _, plain = export(people_db, settings)
    result, files = export(people_db, settings, max_file_size="64KB", encryption={**SIGNED, "armor": True})
    assert result.exception is None, result.exception
    assert len(files) > 3 and all(len(data) <= limit for data in files.values())
    texts = [gpg_keys["rsa"].decrypt(files[name])[0].decode() for name in sorted(files)]
    rebuilt = texts[0] + "".join(text.split("\n", 1)[1] for text in texts[1:])
    assert rebuilt.encode() == plain["people_20250414.csv"]
    assert [w["code"] for w in result.record.warnings] == []


@pytest.mark.parametrize("armor", [False, True])
def test_the_size_bound_holds_and_is_close(gpg_keys: dict[str, Any], armor: bool) -> None:
    """`Keys.bound(limit)` bytes of incompressible data encrypt to at most `limit` bytes, and not much less."""
    keys = load_keys(
        Encryption("PARTNER_KEYS", "SIGNING_KEY", "SIGNING_PASSPHRASE", armor=armor),
        Settings(settings_for(gpg_keys, "rsa", "cv")),
    )
    for limit in (8 * 1024, 64 * 1024, 1_000_000, 16_000_000):
        size = len(keys.encrypt(os.urandom(keys.bound(limit))))
        assert limit - 4096 - limit * 0.003 < size <= limit, (limit, size)  # fixed allowance, 0.1 % slack


def test_difference_files_and_the_manifest_are_encrypted(
    gpg_keys: dict[str, Any], people_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "people.duckdb"
    shutil.copy(people_db, db)
    settings = settings_for(gpg_keys, "rsa")
    delta: dict[str, Any] = {"run_type": "full_then_delta", "sync_mode": "difference", "manifest": True}
    plain_state, state = MemoryStateStore(), MemoryStateStore()
    export(db, settings, state=plain_state, **delta)
    export(db, settings, state=state, encryption=SIGNED, **delta)
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE people SET amount = 0 WHERE id <= 10; DELETE FROM people WHERE id > 4990;"
            "INSERT INTO people SELECT 9000 + id, name, amount, seen, vip FROM people WHERE id <= 5"
        )
    _, plain = export(db, settings, state=plain_state, run_id="r2", **delta)
    result, files = export(db, settings, state=state, run_id="r2", encryption=SIGNED, **delta)
    assert result.exception is None, result.exception
    names = [f"people_20250414_{kind}.csv.pgp" for kind in ("added", "updated", "removed")]
    assert sorted(files) == sorted([*names, "people_20250414.manifest.json.pgp"])
    for name in names:
        plaintext, status = gpg_keys["rsa"].decrypt(files[name])
        assert plaintext == plain[name.removesuffix(".pgp")] and signed_by(status, gpg_keys["signer"])
    manifest_text, status = gpg_keys["rsa"].decrypt(files["people_20250414.manifest.json.pgp"])
    assert signed_by(status, gpg_keys["signer"])
    manifest = json.loads(manifest_text)
    assert [f["path"] for f in manifest["files"]] == names
    for entry in manifest["files"]:  # checksums of the files as delivered: the encrypted bytes
        assert entry["md5"] == hashlib.md5(files[entry["path"]]).hexdigest()
        assert entry["bytes"] == len(files[entry["path"]])
    assert [f["rows"] for f in manifest["files"]] == [5, 10, 10]


BAD_KEYS = {
    "expired": ("expired", "expired on 2020-12-31"),
    "revoked": ("revoked_public", "is revoked; ask the partner for their current public key"),
    "signing-only": ("signer", "has no usable encryption subkey (it can only sign or certify"),
    "encryption-subkey-expired": ("stale", "expired on 2020-12-31"),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_bad_recipient_keys_fail_before_anything_is_read(gpg_keys: dict[str, Any], tmp_path: Path, case: str) -> None:
    name, expected = BAD_KEYS[case]
    value = gpg_keys[name] if isinstance(gpg_keys[name], str) else gpg_keys[name].public
    key = gpg_keys[name.removesuffix("_public")]
    # The database does not exist: a run that reached the source would fail with a source error.
    result, files = export(
        tmp_path / "missing.duckdb", {"PARTNER_KEYS": value}, encryption={"recipients_setting": "PARTNER_KEYS"}
    )
    assert result.exception is not None and files == {} and result.record.rows.read == 0
    message = result.exception.message
    assert message.startswith(
        f"key `{key.fingerprint}` ({name.removesuffix('_public')} partner <{key.email}>) in app setting `PARTNER_KEYS`"
    )
    assert expected in message and result.exception.code == "invalid_catalog"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("not a key at all", "app setting `PARTNER_KEYS` does not hold ASCII-armoured OpenPGP public keys"),
        (
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
            "app setting `PARTNER_KEYS` does not hold ASCII-armoured OpenPGP public keys",
        ),
        (None, "app setting `PARTNER_KEYS` (the OpenPGP public keys files are encrypted to) is not set"),
    ],
)
def test_garbage_or_missing_recipients_setting(tmp_path: Path, value: str | None, expected: str) -> None:
    settings = {} if value is None else {"PARTNER_KEYS": value}
    result, _ = export(tmp_path / "missing.duckdb", settings, encryption={"recipients_setting": "PARTNER_KEYS"})
    assert result.exception is not None and result.exception.message.startswith(expected)
    assert result.record.rows.read == 0


def test_signing_key_problems_are_named_without_their_secrets(
    gpg_keys: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = settings_for(gpg_keys, "cv")
    signer = gpg_keys["signer"]
    cases = [
        (
            {**good, "SIGNING_PASSPHRASE": "wrong passphrase"},
            SIGNED,
            f"the passphrase in app setting `SIGNING_PASSPHRASE` does not unlock the signing key `{signer.fingerprint}`",  # noqa: E501
        ),
        (
            good,
            {"recipients_setting": "PARTNER_KEYS", "signing_key_setting": "SIGNING_KEY"},
            f"signing key `{signer.fingerprint}` (signer partner <{signer.email}>) in app setting `SIGNING_KEY` is "
            "protected by a passphrase: name the app setting holding it in `signing_passphrase_setting`",
        ),
        (
            {**good, "SIGNING_KEY": gpg_keys["cv"].public},
            SIGNED,
            "app setting `SIGNING_KEY` does not hold an ASCII-armoured OpenPGP private key",
        ),
        (
            {**good, "PARTNER_KEYS": good["SIGNING_KEY"]},
            SIGNED,
            "app setting `PARTNER_KEYS` holds a private key: give only the partner's public key",
        ),
    ]
    for settings, block, expected in cases:
        result, files = export(tmp_path / "missing.duckdb", settings, encryption=block)
        assert result.exception is not None and files == {}
        assert expected in result.exception.message, result.exception.message
        shown = json.dumps(result.record.as_dict(), default=str) + result.exception.message + caplog.text
        for secret in (SIGNING_PASSPHRASE, "wrong passphrase", good["SIGNING_KEY"].splitlines()[3]):
            assert secret not in shown


def test_a_key_expiring_within_30_days_warns_on_the_run(gpg_keys: dict[str, Any], people_db: Path) -> None:
    settings = {"PARTNER_KEYS": gpg_keys["soon"].public}
    block = {"recipients_setting": "PARTNER_KEYS"}
    result, files = export(people_db, settings, encryption=block)
    assert result.exception is None and len(files) == 1
    [warning] = result.record.warnings
    assert warning["code"] == "key_expiring"
    assert warning["message"].startswith(
        f"OpenPGP recipient key `{gpg_keys['soon'].fingerprint}` (soon partner <soon@partner.example>) expires on "
    )
    failed, files = export(people_db, settings, encryption=block, fail_on=["key_expiring"])
    assert failed.exception is not None and failed.exception.code == "failed_on_warning" and files == {}


def test_validate_names_bad_keys_and_probe_shows_fingerprint_and_expiry(
    gpg_keys: dict[str, Any], people_db: Path, tmp_path: Path
) -> None:
    doc = catalog_doc(people_db, encryption=SIGNED)
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    env = settings_for(gpg_keys, "rsa", "cv")
    probed = cli("validate", "--probe", str(path), env=env)
    assert probed.returncode == 0, probed.stderr
    rsa, cv, signer = gpg_keys["rsa"], gpg_keys["cv"], gpg_keys["signer"]
    assert (
        f"activations.export.encryption: recipient `{rsa.fingerprint}` (rsa partner <rsa@partner.example>), "
        "expires 20" in probed.stderr
    )
    assert (
        f"activations.export.encryption: recipient `{cv.fingerprint}` (cv partner <cv@partner.example>), "
        "does not expire" in probed.stderr
    )
    assert f"activations.export.encryption: signer `{signer.fingerprint}`" in probed.stderr
    assert SIGNING_PASSPHRASE not in probed.stderr + probed.stdout
    bad = cli("validate", str(path), env={**env, "PARTNER_KEYS": gpg_keys["expired"].public})
    assert bad.returncode == 2
    assert f"activations.export.encryption: key `{gpg_keys['expired'].fingerprint}`" in bad.stderr
    assert "expired on 2020-12-31" in bad.stderr


def test_the_cli_delivers_an_encrypted_file_over_ftp_that_gpg_decrypts(
    gpg_keys: dict[str, Any], people_db: Path, ftp_server: FtpServer, tmp_path: Path
) -> None:
    """The README's example as a partner sees it: `run` through the CLI, the file read off the FTP server's disk."""
    doc = catalog_doc(people_db, encryption=SIGNED, compression="gzip")
    doc["destinations"]["target"] = {
        "type": "ftp",
        "host": "127.0.0.1",
        "port": ftp_server.port,
        "username": "alex",
        "password_setting": "FTP_PW",
    }
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    env = {**settings_for(gpg_keys, "rsa", "cv"), "FTP_PW": "alex-secret-pw"}
    result = cli("run", "export", "--catalog", str(path), "--at", "2025-04-14T06:00:00Z", env=env)
    assert result.returncode == 0, result.stderr
    record = run_record(result)
    [info] = record["files"]
    delivered = (ftp_server.root / "home/alex" / info["path"]).read_bytes()
    assert info["path"] == "people_20250414.csv.gz.pgp" and info["md5"] == hashlib.md5(delivered).hexdigest()
    plaintext, status = gpg_keys["cv"].decrypt(delivered)
    assert signed_by(status, gpg_keys["signer"])
    lines = gzip.decompress(plaintext).decode().splitlines()
    assert len(lines) == ROWS + 1 and lines[0] == '"id","name","amount","seen","vip"'
    for secret in (SIGNING_PASSPHRASE, env["SIGNING_KEY"].splitlines()[3]):
        assert secret not in result.stdout + result.stderr


def test_a_helper_killed_mid_run_fails_the_run_and_publishes_nothing(
    gpg_keys: dict[str, Any], people_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault comes from outside: SIGKILL to the OpenPGP helper process, as the OOM killer would."""
    original = pgp_stream.Stage.__init__

    def start_then_kill(self: pgp_stream.Stage, keys: Any) -> None:
        original(self, keys)
        os.kill(self.process.pid, signal.SIGKILL)

    monkeypatch.setattr(pgp_stream.Stage, "__init__", start_then_kill)
    result, files = export(people_db, settings_for(gpg_keys, "cv"), encryption={"recipients_setting": "PARTNER_KEYS"})
    assert files == {} and result.record.files == [] and result.exception is not None
    assert result.exception.code == "encryption_error" and result.exception.transient
    assert result.exception.message == "OpenPGP encryption failed: the helper process was killed by signal 9"


def test_the_helper_gets_no_secret_in_its_arguments_or_environment(
    gpg_keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """App settings are environment variables on Azure: the helper must not inherit them."""
    settings = settings_for(gpg_keys, "cv")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    keys = load_keys(Encryption("PARTNER_KEYS", "SIGNING_KEY", "SIGNING_PASSPHRASE"), Settings.load())
    stage = keys.stage()
    try:
        visible = (
            Path(f"/proc/{stage.process.pid}/environ").read_bytes()
            + Path(f"/proc/{stage.process.pid}/cmdline").read_bytes()
        )
    finally:
        encrypted = b"".join([*stage.update(b"row 1\n"), stage.finish()])
    assert SIGNING_PASSPHRASE.encode() not in visible and b"PRIVATE KEY" not in visible
    assert b"SIGNING_KEY" not in visible
    plaintext, status = gpg_keys["cv"].decrypt(encrypted)
    assert plaintext == b"row 1\n" and signed_by(status, gpg_keys["signer"])
