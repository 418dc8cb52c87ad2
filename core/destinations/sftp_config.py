"""The `type: sftp` destination's catalog fields, validated (called by `core.catalog.parse`)."""

from __future__ import annotations

from typing import Any

from ..catalog.model import Destination

FIELDS = (
    "type",
    "host",
    "port",
    "username",
    "password_setting",
    "private_key_setting",
    "passphrase_setting",
    "host_key",
)


def sftp_destination(r: Any, did: str) -> Destination:
    """`r` is the catalog's field reader for `destinations.<did>`; problems go to it, none are raised."""
    from .sftp_keys import host_key_problems

    r.known(FIELDS)
    if r.raw.get("password_setting") is None and r.raw.get("private_key_setting") is None:
        r.problem("", "needs `password_setting`, `private_key_setting` or both (app settings holding the secrets)")
    if r.raw.get("passphrase_setting") is not None and r.raw.get("private_key_setting") is None:
        r.problem("passphrase_setting", "is the passphrase of `private_key_setting`, which is not set")
    raw_pins = r.raw.get("host_key")
    for message in host_key_problems(raw_pins):
        r.problem("host_key", message)
    entries = [raw_pins] if isinstance(raw_pins, str) else raw_pins if isinstance(raw_pins, list) else []
    return Destination(
        did,
        "sftp",
        host=r.text("host", required=True),
        port=r.integer("port", minimum=1, maximum=65535) or 22,
        username=r.text("username", required=True),
        password_setting=r.setting("password_setting"),
        private_key_setting=r.setting("private_key_setting"),
        passphrase_setting=r.setting("passphrase_setting"),
        host_key=tuple(str(e).strip() for e in entries if isinstance(e, str) and e.strip()),
    )
