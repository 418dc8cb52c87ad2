"""Test keys made by GnuPG (Debian `gnupg`, /usr/bin/gpg) in throwaway homedirs, and gpg as the
partner's reader: the encryption tests prove interoperability, not a library talking to itself.

Each key lives in a homedir of its own, so decrypting with one homedir proves that key's session
key packet works. Keys are generated unprotected (`%no-protection`) except the signing key, which
has a passphrase as a real one would. An expired key is made with `--faked-system-time`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GPG = shutil.which("gpg") or "/usr/bin/gpg"
SIGNING_PASSPHRASE = "correct horse battery staple"

RSA = """Key-Type: RSA
Key-Length: 2048
Key-Usage: sign
Subkey-Type: RSA
Subkey-Length: 2048
Subkey-Usage: encrypt
"""
CV25519 = """Key-Type: EDDSA
Key-Curve: ed25519
Key-Usage: sign
Subkey-Type: ECDH
Subkey-Curve: cv25519
Subkey-Usage: encrypt
"""
SIGN_ONLY = """Key-Type: EDDSA
Key-Curve: ed25519
Key-Usage: sign
"""


@dataclass
class Key:
    home: Path
    email: str

    def gpg(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """gpg against this key's homedir, non-interactive (GnuPG 2.2: loopback pinentry)."""
        command = [
            GPG,
            "--homedir",
            str(self.home),
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--status-fd",
            "2",
            *args,
        ]
        result = subprocess.run(command, input=input, capture_output=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result

    @property
    def public(self) -> str:
        return self.gpg("--armor", "--export", self.email).stdout.decode()

    @property
    def fingerprint(self) -> str:
        lines = self.gpg("--with-colons", "--list-keys", self.email).stdout.decode().splitlines()
        return next(line.split(":")[9] for line in lines if line.startswith("fpr:"))

    def secret(self, passphrase: str = "") -> str:
        result = self.gpg("--passphrase", passphrase, "--armor", "--export-secret-keys", self.email)
        return result.stdout.decode()

    def import_key(self, armored: str) -> None:
        self.gpg("--import", input=armored.encode())

    def decrypt(self, data: bytes) -> tuple[bytes, str]:
        """The plaintext and gpg's status lines (`GOODSIG`, `VALIDSIG`, `GOODMDC`…)."""
        result = self.gpg("--decrypt", input=data)
        return result.stdout, result.stderr.decode(errors="replace")

    def verify(self, data: bytes) -> str:
        """Strip the encryption (`--unwrap`), then `gpg --verify` the signed message inside."""
        signed = self.gpg("--unwrap", input=data).stdout
        return self.gpg("--verify", input=signed).stderr.decode(errors="replace")


def make_key(
    base: Path,
    name: str,
    params: str,
    *,
    expire: str = "0",
    passphrase: str | None = None,
    faked_time: str | None = None,
) -> Key:
    home = base / name
    home.mkdir(mode=0o700, parents=True)
    key = Key(home, f"{name}@partner.example")
    protection = f"Passphrase: {passphrase}\n" if passphrase else "%no-protection\n"
    body = params + protection + f"Name-Real: {name} partner\nName-Email: {key.email}\nExpire-Date: {expire}\n%commit\n"
    extra = ["--faked-system-time", faked_time] if faked_time else []
    key.gpg(*extra, "--gen-key", input=body.encode())
    return key


def revoke(key: Key) -> str:
    """The key's public block after importing the revocation certificate gpg stored at generation."""
    [certificate] = (key.home / "openpgp-revocs.d").glob("*.rev")
    text = certificate.read_text().replace(":-----BEGIN PGP", "-----BEGIN PGP")  # gpg guards it with a `:`
    key.import_key(text)
    return key.public


def add_subkey(key: Key, algo: str, usage: str, expire: str, *, faked_time: str | None = None) -> None:
    """A subkey of its own expiry (`gpg --quick-add-key`), e.g. an encryption subkey that expired
    while the primary key stays valid."""
    extra = ["--faked-system-time", faked_time] if faked_time else []
    key.gpg(*extra, "--quick-add-key", key.fingerprint, algo, usage, expire)
