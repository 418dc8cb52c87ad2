"""`type: sftp` in the catalog, host-key pins and private keys, without a server."""

from __future__ import annotations

from typing import Any

import asyncssh
import pytest

from core.catalog.parse import parse_catalog
from core.destinations.sftp_errors import SftpContext
from core.destinations.sftp_keys import fingerprint, known_hosts_line, pins, private_key
from core.error_codes import ErrorCode
from core.errors import CatalogInvalid

KEY = asyncssh.generate_private_key("ssh-ed25519")
FINGERPRINT = fingerprint(KEY)


def doc(**destination: Any) -> dict[str, Any]:
    return {
        "sources": {"w": {"type": "duckdb", "database": "/tmp/x.duckdb"}},
        "models": {"m": {"source": "w", "table": "t"}},
        "destinations": {"partner": {"type": "sftp", **destination}},
        "activations": {
            "a": {"model": "m", "destination": "partner", "format": "csv", "file_name": "f", "folder": "../outbox"}
        },
    }


def problems(**destination: Any) -> list[str]:
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(doc(**destination))
    return [str(p) for p in caught.value.problems]


def test_a_valid_destination() -> None:
    line = known_hosts_line("sftp.example.com", 22, KEY)
    catalog = parse_catalog(
        doc(
            host="sftp.example.com",
            username="u",
            private_key_setting="KEY",
            passphrase_setting="PASS",
            host_key=[FINGERPRINT, line],
        )
    )
    partner = catalog.destinations["partner"]
    assert (partner.type, partner.port, partner.username, partner.password_setting) == ("sftp", 22, "u", None)
    assert (partner.private_key_setting, partner.passphrase_setting) == ("KEY", "PASS")
    assert partner.host_key[0] == FINGERPRINT and len(partner.host_key) == 2
    assert catalog.activations["a"].folder == "../outbox"


def test_every_problem_is_listed() -> None:
    assert problems(host="h", username="u", passphrase_setting="P", tls="explicit") == [
        "destinations.partner.tls: unknown field; allowed fields are: type, host, port, username, password_setting, "
        "private_key_setting, passphrase_setting, host_key",
        "destinations.partner: needs `password_setting`, `private_key_setting` or both (app settings holding the "
        "secrets)",
        "destinations.partner.passphrase_setting: is the passphrase of `private_key_setting`, which is not set",
        "destinations.partner.host_key: is required: the server's `SHA256:` fingerprint or `known_hosts` line, or "
        "a list of them (`filecast validate --probe` prints the line to paste)",
    ]


def test_host_key_entries_are_checked() -> None:
    found = problems(
        host="h",
        username="u",
        password_setting="P",
        host_key=[
            "MD5:16:27:ac",
            "SHA256:tooshort",
            "ssh-ed25519 not-base64!",
            "16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48",
        ],
    )
    assert found == [
        "destinations.partner.host_key: `MD5:16:27:ac` is not a SHA256 fingerprint; `ssh-keygen -lf <key> -E "
        "sha256` prints one",
        "destinations.partner.host_key: `SHA256:tooshort` is not a SHA256 fingerprint (`SHA256:` and 43 base64 "
        "characters)",
        "destinations.partner.host_key: `ssh-ed25519 not-base64!` is neither a `SHA256:` fingerprint nor a "
        "`known_hosts` line (`host key-type base64`)",
        "destinations.partner.host_key: `16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48` is not a SHA256 "
        "fingerprint; `ssh-keygen -lf <key> -E sha256` prints one",
    ]


def test_pins_from_lines_and_fingerprints() -> None:
    line = known_hosts_line("127.0.0.1", 2222, KEY)
    assert line.startswith("[127.0.0.1]:2222 ssh-ed25519 AAAA")
    assert known_hosts_line("h", 22, KEY).startswith("h ssh-ed25519 ")
    only_lines = pins([line, "@cert-authority-free " + line])
    assert only_lines.fingerprints == {FINGERPRINT} and only_lines.algorithms == ("ssh-ed25519",)
    mixed = pins([line, "SHA256:" + "A" * 43 + "="])
    assert mixed.fingerprints == {FINGERPRINT, "SHA256:" + "A" * 43} and mixed.algorithms == ()


def test_private_keys_in_settings() -> None:
    # 16 bcrypt rounds, not 128: the key derivation's cost is not under test, and each round costs.
    text = KEY.export_private_key("openssh", passphrase="pp", rounds=16, ignore_few_rounds=True).decode()
    assert fingerprint(private_key(text, "pp")) == FINGERPRINT
    flattened = text.strip().replace("\n", "\\n")  # a setting that lost its newlines
    assert fingerprint(private_key(flattened, "pp")) == FINGERPRINT
    pem = KEY.export_private_key("pkcs8-pem").decode()
    assert fingerprint(private_key(pem, None)) == FINGERPRINT
    with pytest.raises((asyncssh.KeyImportError, asyncssh.KeyEncryptionError)):
        private_key(text, "wrong")


def test_messages_never_carry_secrets() -> None:
    key_text = KEY.export_private_key("openssh").decode()
    config = parse_catalog(doc(host="h", username="u", password_setting="P", host_key=FINGERPRINT))
    context = SftpContext(config.destinations["partner"], ["hunter2-password", key_text, "the-passphrase"], 30)
    body = key_text.splitlines()[1]
    error = context.error(f"server said: hunter2-password {body} the-passphrase", ErrorCode.SFTP_ERROR)
    assert error.message == "server said: *** *** ***"
