"""The `encryption:` block of an activation: parsing, exact messages, and `.pgp`/`.asc` names."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.catalog.parse import parse_catalog
from core.errors import CatalogInvalid
from core.write.encryption import Encryption, KeyInfo, Keys
from core.write.naming import NameContext, file_name

BASE: dict[str, Any] = {
    "sources": {"db": {"type": "duckdb", "database": "demo.duckdb"}},
    "models": {"people": {"source": "db", "table": "people"}},
    "destinations": {"lake": {"type": "azure_blob", "container": "exports", "connection_setting": "LAKE"}},
    "activations": {"daily": {"model": "people", "destination": "lake", "file_name": "people", "format": "csv"}},
}


def with_encryption(block: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["activations"]["daily"]["encryption"] = block
    return doc


def problems(block: Any) -> list[str]:
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(with_encryption(block), Path("/cat"))
    return [str(p) for p in caught.value.problems]


def test_the_block_becomes_setting_names_only() -> None:
    catalog = parse_catalog(
        with_encryption(
            {
                "recipients_setting": "PARTNER_KEYS",
                "signing_key_setting": "SIGN",
                "signing_passphrase_setting": "SIGN_PASS",
                "armor": True,
            }
        ),
        Path("/"),
    )
    assert catalog.activations["daily"].encryption == Encryption("PARTNER_KEYS", "SIGN", "SIGN_PASS", armor=True)
    plain = parse_catalog(copy.deepcopy(BASE), Path("/"))
    assert plain.activations["daily"].encryption is None


def test_every_problem_of_the_block_is_named() -> None:
    assert problems({"armor": "yes", "passphrase": "x", "signing_passphrase_setting": "SIGN_PASS"}) == [
        "activations.daily.encryption.passphrase: unknown field; allowed fields are: recipients_setting, "
        "signing_key_setting, signing_passphrase_setting, armor",
        "activations.daily.encryption.recipients_setting: is required",
        "activations.daily.encryption.signing_passphrase_setting: is set but `signing_key_setting` is not: name the "
        "app setting holding the signing key, or remove the passphrase",
        "activations.daily.encryption.armor: must be true or false, got `yes`",
    ]
    assert problems("PARTNER_KEYS") == [
        "activations.daily.encryption: must be a mapping of fields, got `PARTNER_KEYS`",
        "activations.daily.encryption.recipients_setting: is required",
    ]
    assert problems({"recipients_setting": "-----BEGIN PGP PUBLIC KEY BLOCK-----"}) == [
        "activations.daily.encryption.recipients_setting: must name an app setting (letters, digits, `_`), got "
        "`-----BEGIN PGP PUBLIC KEY BLOCK-----`"
    ]


def test_the_envelope_comes_after_the_format_and_gzip() -> None:
    context = NameContext(datetime(2025, 4, 14, 6, tzinfo=UTC), "daily", "r1")
    assert file_name("x", "out", context, extension="csv", gzip=True, envelope=".pgp") == "out/x.csv.gz.pgp"
    assert (
        file_name("x", "", context, extension="json", suffix="_added", part=2, envelope=".asc")
        == "x_added-00002.json.asc"
    )
    assert Encryption("K").extension == ".pgp" and Encryption("K", armor=True).extension == ".asc"


def test_keys_never_show_their_secrets() -> None:
    keys = Keys(
        Encryption("K", "S", "P"),
        (KeyInfo("recipient", "AB" * 20, "p <p@x>", None),),
        recipients=("PUBLIC",),
        signing_key="PRIVATE KEY TEXT",
        passphrase="hunter2",
    )
    assert "PRIVATE" not in repr(keys) and "hunter2" not in repr(keys) and "PUBLIC" not in repr(keys)


def test_the_size_bound_leaves_room_for_the_envelope() -> None:
    binary = Keys(Encryption("K"), (), recipients=("a", "b"))
    armored = Keys(Encryption("K", armor=True), (), recipients=("a",), signing_key="s")
    assert binary.bound(1_000_000) == int((1_000_000 - 512 - 2 * 1100) / 1.001)
    assert armored.bound(1_000_000) == int((1_000_000 - 512 - 1100 - 1100) / (4 / 3 * 65 / 64 * 1.001))
    assert binary.bound(100) == 1  # never zero: a part always takes at least a row
