"""`PUT /api/catalog` checks OpenPGP keys as `filecast validate` does, and shows no secret (issue 18).

Called through the Functions app (function_app.py's HTTP trigger) against Azurite; keys come from
gpg (tests/integration/gnupg.py), the app settings from the environment as on Azure.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.services import Azurite
from tests.helpers import functions_catalog, http, unavailable
from tests.integration.gnupg import CV25519, GPG, SIGN_ONLY, SIGNING_PASSPHRASE, make_key, revoke

PATH = "activations.small.encryption"
SIGNED = {
    "recipients_setting": "PARTNER_KEYS",
    "signing_key_setting": "SIGNING_KEY",
    "signing_passphrase_setting": "SIGNING_PASSPHRASE",
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("gpg") is None:
        unavailable("gpg (Debian gnupg)", FileNotFoundError(GPG))
    base = tmp_path_factory.mktemp("gnupg-api")
    made = {
        "good": make_key(base, "good", CV25519),
        "expired": make_key(base, "expired", CV25519, expire="1y", faked_time="20200101T000000"),
        "revoked": make_key(base, "revoked", CV25519),
        "signer": make_key(base, "signer", SIGN_ONLY, passphrase=SIGNING_PASSPHRASE),
    }
    texts = {
        "good": made["good"].public,
        "expired": made["expired"].public,
        "revoked": revoke(made["revoked"]),
        "signing-only": made["signer"].public,
        "secret": made["signer"].secret(SIGNING_PASSPHRASE),
        "signer": made["signer"],
    }
    yield texts
    for key in made.values():
        subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "gpg-agent"], capture_output=True, check=False)


def put(doc: dict[str, Any]) -> tuple[int, Any]:
    return http("put_catalog", "PUT", "/api/catalog", body=json.dumps(doc).encode())


def encrypted_doc(demo_db: Path, azurite: Azurite, block: dict[str, Any]) -> dict[str, Any]:
    doc = functions_catalog(demo_db, azurite)
    doc["activations"]["small"]["encryption"] = block
    return doc


CASES = {
    "expired": (
        "expired",
        {"recipients_setting": "PARTNER_KEYS"},
        "expired on 2020-12-31; ask the partner for their renewed public key",
    ),
    "revoked": (
        "revoked",
        {"recipients_setting": "PARTNER_KEYS"},
        "is revoked; ask the partner for their current public key",
    ),
    "no-encryption-subkey": (
        "signing-only",
        {"recipients_setting": "PARTNER_KEYS"},
        "has no usable encryption subkey (it can only sign or certify",
    ),
    "missing-setting": (None, {"recipients_setting": "PARTNER_KEYS"}, "`PARTNER_KEYS`"),
    "garbage": (
        "garbage",
        {"recipients_setting": "PARTNER_KEYS"},
        "app setting `PARTNER_KEYS` does not hold ASCII-armoured OpenPGP public keys",
    ),
    "wrong-passphrase": (
        "good",
        SIGNED,
        "the passphrase in app setting `SIGNING_PASSPHRASE` does not unlock the signing key `",
    ),
    "passphrase-not-named": (
        "good",
        {"recipients_setting": "PARTNER_KEYS", "signing_key_setting": "SIGNING_KEY"},
        "is protected by a passphrase: name the app setting holding it in `signing_passphrase_setting`",
    ),
    "private-key-as-recipient": (
        "secret",
        {"recipients_setting": "PARTNER_KEYS"},
        "app setting `PARTNER_KEYS` holds a private key: give only the partner's public key",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_put_catalog_rejects_bad_keys_as_validate_does_and_shows_no_secret(
    storage: Azurite,
    demo_db: Path,
    keys: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    from core.catalog.parse import parse_catalog
    from core.control.service import Services
    from core.settings import Settings
    from core.write.encryption import check_catalog

    caplog.set_level(logging.DEBUG)
    recipient, block, expected = CASES[case]
    assert put(functions_catalog(demo_db, storage))[0] == 200  # the catalog in place before the bad one
    passphrase = "wrong passphrase" if case == "wrong-passphrase" else SIGNING_PASSPHRASE
    settings = {"SIGNING_KEY": keys["secret"], "SIGNING_PASSPHRASE": passphrase}
    if recipient is not None:
        settings["PARTNER_KEYS"] = f"not a key {SIGNING_PASSPHRASE}" if recipient == "garbage" else keys[recipient]
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    doc = encrypted_doc(demo_db, storage, block)
    status, body = put(doc)
    assert status == 400 and body["error"]["code"] == "invalid_catalog", body
    [problem] = body["error"]["problems"]
    assert problem["path"] == PATH and expected in problem["message"], problem
    # The same message `filecast validate` gives (core/cli.py's check_catalog) for the same settings.
    validate_problems, _ = check_catalog(parse_catalog(doc, demo_db.parent), Settings.load())
    assert [(p.path, p.message) for p in validate_problems] == [(PATH, problem["message"])]
    # Nothing was stored: the catalog in place still has no encryption.
    stored, _ = Services(Settings.load()).catalogs.document()
    assert "encryption" not in stored["activations"]["small"]
    shown = json.dumps(body) + caplog.text
    for secret in (SIGNING_PASSPHRASE, "wrong passphrase", keys["secret"].splitlines()[3], "PRIVATE KEY BLOCK"):
        assert secret not in shown, secret


def test_put_catalog_with_good_keys_is_applied_and_shows_no_secret(
    storage: Azurite,
    demo_db: Path,
    keys: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PARTNER_KEYS", keys["good"])
    monkeypatch.setenv("SIGNING_KEY", keys["secret"])
    monkeypatch.setenv("SIGNING_PASSPHRASE", SIGNING_PASSPHRASE)
    status, body = put(encrypted_doc(demo_db, storage, SIGNED))
    assert (status, body) == (200, {"activations": ["small"]})
    shown = json.dumps(body) + caplog.text
    for secret in (SIGNING_PASSPHRASE, keys["secret"].splitlines()[3]):
        assert secret not in shown
