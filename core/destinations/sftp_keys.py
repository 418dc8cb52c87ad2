"""SSH keys for SFTP destinations: pinned host keys (`host_key`), the client's private key, and the
probe that shows a server's key so pinning it is one paste.

`host_key` holds one or more entries, each a `SHA256:` fingerprint (as `ssh-keygen -lf` and
OpenSSH's first-connection prompt print it) or a `known_hosts` line (`[host]:port type base64`,
or just `type base64`); the host names of a line are not checked, the destination's `host` is
what is connected to. A server whose key is none of them is refused during the key exchange,
before any credential is sent.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncssh

FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")
KEY_TYPE = re.compile(r"^(ssh-(ed25519|ed448|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9-]+@openssh\.com)$")


@dataclass(frozen=True)
class Pins:
    fingerprints: frozenset[str]  # every pinned key, as SHA256 fingerprints
    algorithms: tuple[str, ...]  # host key algorithms to offer (only when every pin is a full key)


def _line_key(entry: str) -> asyncssh.SSHKey | None:
    """The public key of a known_hosts line (hosts and marker ignored), or None if it has none."""
    fields = entry.split()
    for index, field in enumerate(fields[:-1]):
        if KEY_TYPE.match(field):
            try:
                base64.b64decode(fields[index + 1], validate=True)
                return asyncssh.import_public_key(f"{field} {fields[index + 1]}")
            except (ValueError, asyncssh.KeyImportError):
                return None
    return None


def host_key_problems(value: object) -> list[str]:
    """What is wrong with a `host_key` value (empty when it is usable)."""
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e.strip() for e in entries):
        return [
            "is required: the server's `SHA256:` fingerprint or `known_hosts` line, or a list of them "
            "(`filecast validate --probe` prints the line to paste)"
        ]
    problems = []
    for entry in entries:
        entry = entry.strip()
        if entry.upper().startswith(("MD5:", "SHA1:")) or re.fullmatch(r"([0-9a-f]{2}:){15}[0-9a-f]{2}", entry):
            problems.append(f"`{entry}` is not a SHA256 fingerprint; `ssh-keygen -lf <key> -E sha256` prints one")
        elif entry.startswith("SHA256:"):
            if not FINGERPRINT.match(entry):
                problems.append(f"`{entry}` is not a SHA256 fingerprint (`SHA256:` and 43 base64 characters)")
        elif _line_key(entry) is None:
            problems.append(
                f"`{entry[:60]}` is neither a `SHA256:` fingerprint nor a `known_hosts` line (`host key-type base64`)"
            )
    return problems


def pins(entries: Sequence[str]) -> Pins:
    fingerprints: set[str] = set()
    algorithms: list[str] = []
    full = True
    for entry in entries:
        entry = entry.strip()
        if entry.startswith("SHA256:"):
            fingerprints.add(entry.rstrip("="))
            full = False
            continue
        key = _line_key(entry)
        if key is not None:
            fingerprints.add(fingerprint(key))
            algorithms.extend(a.decode() for a in key.sig_algorithms if a.decode() not in algorithms)
    return Pins(frozenset(fingerprints), tuple(algorithms) if full else ())


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256").rstrip("=")


def known_hosts_line(host: str, port: int, key: asyncssh.SSHKey) -> str:
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {' '.join(key.export_public_key('openssh').decode().split()[:2])}"


def private_key(text: str, passphrase: str | None) -> asyncssh.SSHKey:
    """An OpenSSH or PEM private key from an app setting (literal `\\n` accepted where newlines were lost)."""
    if "\n" not in text.strip() and "\\n" in text:
        text = text.replace("\\n", "\n")
    return asyncssh.import_private_key(text.strip() + "\n", passphrase or None)


async def server_key(host: str, port: int, timeout: float, algorithms: Sequence[str] = ()) -> asyncssh.SSHKey | None:
    """The key a server presents to a destination with these pins (`Pins.algorithms`); no login."""
    options = asyncssh.SSHClientConnectionOptions(
        config=None, known_hosts=None, connect_timeout=timeout, server_host_key_algs=list(algorithms) or ()
    )
    return await asyncssh.get_server_host_key(host, port, options=options)
