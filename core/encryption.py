"""OpenPGP encryption (and signing) of exported files, streaming, readable by GnuPG (issue 18).

An activation's `encryption:` block names app settings: `recipients_setting` (one or more
ASCII-armoured public keys), optionally `signing_key_setting` and `signing_passphrase_setting`;
`armor: true` writes ASCII armour (`.asc`) instead of binary (`.pgp`). The keys are parsed and
checked (`load_keys`) before any row is read.

The OpenPGP itself is Sequoia-PGP's, through the `pysequoia` wheel. Its Python API encrypts a
whole buffer, or a file to a file while holding the GIL, so in-process streaming is impossible: each
file is encrypted by a helper process running `pysequoia.encrypt_file` from its stdin to its
stdout (`Stage`). The helper holds its own GIL on the second core; the engine's thread writes the
gzip output into the pipe and gets the encrypted bytes back, so memory stays bounded and the
files are never on disk in clear. Keys and passphrases reach the helper on its stdin, never in its
arguments or environment.
"""

from __future__ import annotations

import binascii
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import CatalogError, FilecastError, Problem
from .settings import Settings

FIELDS = ("recipients_setting", "signing_key_setting", "signing_passphrase_setting", "armor")
EXPIRY_WARNING = timedelta(days=30)
READ = 1024 * 1024
# Bytes OpenPGP may add to a file of n bytes (see `Keys.bound`): packet headers, the SEIPD
# prefix and MDC, each recipient's session-key packet, the signature; armour's base64 lines.
FIXED_OVERHEAD = 512
PER_RECIPIENT = 1100   # a PKESK for an RSA-8192 key is 1,036 bytes; Curve25519 about 96
PER_SIGNATURE = 1100   # one-pass signature plus signature packet (RSA-8192 at most)
BINARY_FACTOR = 1.001  # partial body length headers: measured under 0.01 %
ARMOR_FACTOR = 4 / 3 * 65 / 64 * BINARY_FACTOR  # base64, a newline every 64 characters

_CHILD = r"""
import json, os, sys
def read(n):
    data = b""
    while len(data) < n:
        more = os.read(0, n - len(data))
        if not more:
            sys.exit(3)
        data += more
    return data
config = json.loads(read(int.from_bytes(read(8), "big")))
sys.path[:0] = config["path"]
try:
    import pysequoia
    certs = [pysequoia.Cert.from_bytes(text.encode()) for text in config["recipients"]]
    signer = None
    if config["signing_key"]:
        signer = pysequoia.Tsk.from_bytes(config["signing_key"].encode()).signer(config["passphrase"])
    del config
    pysequoia.encrypt_file("/dev/stdin", "/dev/stdout", certs, signer, armor=False)
except BaseException as exc:
    sys.stderr.write(type(exc).__name__ + ": " + (str(exc).splitlines() or [""])[0][:300])
    sys.exit(1)
"""


@dataclass(frozen=True)
class Encryption:
    """The catalog's `encryption:` block of one activation (setting names, never key material)."""

    recipients_setting: str
    signing_key_setting: str | None = None
    signing_passphrase_setting: str | None = None
    armor: bool = False

    @property
    def extension(self) -> str:
        return ".asc" if self.armor else ".pgp"


def parse_encryption(r: Any) -> Encryption | None:
    """Read the block with the catalog's `_Reader` (passed in: catalog.py imports this module)."""
    r.known(FIELDS)
    recipients = r.setting("recipients_setting", required=True)
    signing = r.setting("signing_key_setting")
    passphrase = r.setting("signing_passphrase_setting")
    if passphrase is not None and signing is None:
        r.problem("signing_passphrase_setting", "is set but `signing_key_setting` is not: name the app setting "
                  "holding the signing key, or remove the passphrase")
    armor = r.flag("armor", False)
    if recipients is None:
        return None
    return Encryption(recipients, signing, passphrase, armor)


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: its fingerprint, first user ID and expiry (UTC)."""

    role: str            # recipient | signer
    fingerprint: str     # primary key, upper-case hex as GnuPG prints it
    user_id: str
    expires: datetime | None

    def describe(self) -> str:
        when = f"expires {self.expires:%Y-%m-%d %H:%M} UTC" if self.expires else "does not expire"
        return f"{self.role} `{self.fingerprint}` ({self.user_id}), {when}"


@dataclass(frozen=True)
class Keys:
    """Checked key material of one activation; `repr` and records never show the secret parts."""

    encryption: Encryption
    info: tuple[KeyInfo, ...]
    recipients: tuple[str, ...] = field(repr=False)
    signing_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)

    def stage(self) -> Stage:
        return Stage(self)

    def encrypt(self, data: bytes) -> bytes:
        """A small whole file (the manifest) through the same stage as the data files."""
        stage = self.stage()
        return b"".join([*stage.update(data), stage.finish()])

    def bound(self, limit: int) -> int:
        """Bytes of plaintext that always encrypt to at most `limit` bytes (max_file_size is of
        the file as stored)."""
        signers = 1 if self.signing_key else 0
        fixed = FIXED_OVERHEAD + PER_RECIPIENT * len(self.recipients) + PER_SIGNATURE * signers
        factor = ARMOR_FACTOR if self.encryption.armor else BINARY_FACTOR
        return max(int((limit - fixed) / factor), 1)

    def expiring(self, now: datetime | None = None) -> list[str]:
        """Warnings for keys that expire within 30 days."""
        now = now or datetime.now(UTC)
        return [f"OpenPGP {k.role} key `{k.fingerprint}` ({k.user_id}) expires on {k.expires:%Y-%m-%d} "
                f"({(k.expires - now).days} days); get its renewed public key before then"
                for k in self.info if k.expires is not None and k.expires - now <= EXPIRY_WARNING]


def _sequoia() -> Any:
    import pysequoia

    return pysequoia


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _expiry(pysequoia: Any, cert: Any, chosen: set[str]) -> datetime | None:
    """The earliest of the certificate's expiry and that of the encryption subkeys Sequoia chose
    (read from their newest binding signatures)."""
    from pysequoia.packet import PacketPile, SignatureType, Tag

    ends: list[datetime] = []
    current: tuple[str, datetime] | None = None
    newest: dict[str, tuple[datetime, datetime | None]] = {}
    for packet in PacketPile.from_bytes(bytes(cert)):
        if packet.tag == Tag.PublicSubkey:
            current = (str(packet.key_id), packet.key_created)
        elif packet.tag == Tag.Signature and current is not None and \
                packet.signature_type == SignatureType.SubkeyBinding:
            made = packet.signature_created or datetime.min.replace(tzinfo=UTC)
            period = packet.key_validity_period
            end = current[1] + period if period else None
            if current[0] not in newest or made >= newest[current[0]][0]:
                newest[current[0]] = (made, end)
    subkeys = [newest[k][1] for k in chosen if k in newest]
    if subkeys and all(end is not None for end in subkeys):
        ends.append(max(end for end in subkeys if end is not None))
    if cert.expiration is not None:
        ends.append(cert.expiration)
    return min(ends) if ends else None


def _has_secrets(text: str) -> bool:
    from pysequoia.packet import PacketPile, Tag

    return any(p.tag in (Tag.SecretKey, Tag.SecretSubkey) for p in PacketPile.from_bytes(text.encode()))


def _user_id(cert: Any) -> str:
    ids = [str(u) for u in cert.user_ids]
    return ids[0] if ids else "no user ID"


def _recipient(pysequoia: Any, cert: Any, setting: str, now: datetime) -> KeyInfo:
    from pysequoia.packet import PacketPile, Tag

    fingerprint, user = cert.fingerprint.upper(), _user_id(cert)
    where = f"key `{fingerprint}` ({user}) in app setting `{setting}`"
    if cert.is_revoked:
        raise CatalogError(f"{where} is revoked; ask the partner for their current public key")
    try:
        probe = pysequoia.encrypt(b"", [cert], armor=False)
    except Exception:
        raise CatalogError(f"{where} has no usable encryption subkey (it can only sign or certify, or its "
                           "encryption subkeys are revoked); ask for a key with an encryption subkey (gpg lists it "
                           "as `[E]`)") from None
    chosen = {p.body[1:9].hex() for p in PacketPile.from_bytes(probe) if p.tag == Tag.PKESK}
    expires = _expiry(pysequoia, cert, chosen)
    if expires is not None and expires <= now:
        raise CatalogError(f"{where} expired on {expires:%Y-%m-%d}; ask the partner for their renewed public key")
    return KeyInfo("recipient", fingerprint, user, expires)


def _signer(pysequoia: Any, encryption: Encryption, settings: Settings, now: datetime) -> tuple[str, str | None,
                                                                                                   KeyInfo]:
    assert encryption.signing_key_setting is not None
    name = encryption.signing_key_setting
    text = settings.secret(name, purpose="the OpenPGP key that signs exported files")
    passphrase = None
    if encryption.signing_passphrase_setting is not None:
        passphrase = settings.secret(encryption.signing_passphrase_setting, purpose="the signing key's passphrase")
    try:
        tsk = pysequoia.Tsk.from_bytes(text.encode())
        if not _has_secrets(text):
            raise ValueError("a public key")
    except Exception:
        raise CatalogError(f"app setting `{name}` does not hold an ASCII-armoured OpenPGP private key; export it "
                           "with `gpg --armor --export-secret-keys`") from None
    cert = tsk.extract_certificate()
    fingerprint, user = cert.fingerprint.upper(), _user_id(cert)
    where = f"signing key `{fingerprint}` ({user}) in app setting `{name}`"
    if cert.is_revoked:
        raise CatalogError(f"{where} is revoked")
    if cert.expiration is not None and cert.expiration <= now:
        raise CatalogError(f"{where} expired on {cert.expiration:%Y-%m-%d}")
    try:
        tsk.signer(passphrase)
    except Exception as exc:
        if passphrase is None and "encrypted" in str(exc):
            raise CatalogError(f"{where} is protected by a passphrase: name the app setting holding it in "
                               "`signing_passphrase_setting`") from None
        if passphrase is not None:
            raise CatalogError(f"the passphrase in app setting `{encryption.signing_passphrase_setting}` does not "
                               f"unlock the {where}") from None
        raise CatalogError(f"{where} cannot sign ({_first_line(exc)})") from None
    return text, passphrase, KeyInfo("signer", fingerprint, user, cert.expiration)


def load_keys(encryption: Encryption, settings: Settings, now: datetime | None = None) -> Keys:
    """Resolve and check the activation's keys; raises `SettingError` or `CatalogError` naming the
    setting and the key, never a value."""
    pysequoia = _sequoia()
    now = now or datetime.now(UTC)
    name = encryption.recipients_setting
    text = settings.secret(name, purpose="the OpenPGP public keys files are encrypted to")
    try:
        certs = pysequoia.Cert.split_bytes(text.encode())
    except Exception as exc:
        raise CatalogError(f"app setting `{name}` does not hold ASCII-armoured OpenPGP public keys "
                           f"({_first_line(exc)}); paste the partner's whole key block, `-----BEGIN PGP PUBLIC KEY "
                           "BLOCK-----` to `-----END PGP PUBLIC KEY BLOCK-----`") from None
    if not certs:
        raise CatalogError(f"app setting `{name}` holds no OpenPGP public key; paste the partner's whole key block, "
                           "`-----BEGIN PGP PUBLIC KEY BLOCK-----` to `-----END PGP PUBLIC KEY BLOCK-----`")
    if _has_secrets(text):
        raise CatalogError(f"app setting `{name}` holds a private key: give only the partner's public key "
                           "(`gpg --armor --export`), never a private one")
    info = [_recipient(pysequoia, cert, name, now) for cert in certs]
    signing_key = passphrase = None
    if encryption.signing_key_setting is not None:
        signing_key, passphrase, signer = _signer(pysequoia, encryption, settings, now)
        info.append(signer)
    return Keys(encryption, tuple(info), tuple(str(cert) for cert in certs), signing_key, passphrase)


def check_catalog(catalog: Any, settings: Settings) -> tuple[list[Problem], list[str]]:
    """`validate`: every activation's keys, as problems, and (for `--probe`) a line per key."""
    problems: list[Problem] = []
    lines: list[str] = []
    for activation in catalog.activations.values():
        encryption = getattr(activation, "encryption", None)
        if encryption is None:
            continue
        path = f"activations.{activation.id}.encryption"
        try:
            keys = load_keys(encryption, settings)
        except FilecastError as exc:
            problems.append(Problem(path, exc.message))
            continue
        lines.extend(f"{path}: {k.describe()}" for k in keys.info)
        lines.extend(f"{path}: warning: {message}" for message in keys.expiring())
    return problems, lines


def prepare(activation: Any, settings: Settings, warn: Any) -> Keys | None:
    """A run's keys, checked before the source is opened; a key expiring soon warns `key_expiring`."""
    encryption = getattr(activation, "encryption", None)
    if encryption is None:
        return None
    keys = load_keys(encryption, settings)
    for message in keys.expiring():
        warn("key_expiring", message)
    return keys


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class Stage:
    """One file's encryption: `update(data)` yields the encrypted bytes ready so far, `finish()`
    returns the rest. A reader thread drains the helper's stdout so neither side can block the other; what
    it holds is at most what the helper produced since the last call (about one input chunk)."""

    def __init__(self, keys: Keys):
        self.armor = _Armor() if keys.encryption.armor else None
        env: Mapping[str, str] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_BACKTRACE": "0"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-E", "-S", "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=dict(env), bufsize=0)
        except OSError as exc:
            raise FilecastError(f"cannot start the OpenPGP helper process ({exc.strerror or exc})",
                                code="encryption_error") from None
        self._finalizer = weakref.finalize(self, _kill, self.process)
        for pipe in (self.process.stdin, self.process.stdout):  # fewer, larger reads and writes
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, READ)  # type: ignore[union-attr]
        self.ready: deque[bytes] = deque()
        self.lock = threading.Lock()
        self.errors = b""
        self.reader = threading.Thread(target=self._drain, name="filecast-pgp-out", daemon=True)
        self.reader.start()
        self.error_reader = threading.Thread(target=self._drain_errors, name="filecast-pgp-err", daemon=True)
        self.error_reader.start()
        header = json.dumps({"path": [p for p in sys.path if p], "recipients": list(keys.recipients),
                             "signing_key": keys.signing_key, "passphrase": keys.passphrase}).encode()
        self._write(len(header).to_bytes(8, "big") + header)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, READ):
            with self.lock:
                self.ready.append(chunk)

    def _drain_errors(self) -> None:
        assert self.process.stderr is not None
        self.errors = self.process.stderr.read(4096)

    def _take(self) -> bytes:
        with self.lock:
            chunks = list(self.ready)
            self.ready.clear()
        return b"".join(chunks)

    def _write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        fd, view = self.process.stdin.fileno(), memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BrokenPipeError:
            self._fail()

    def _fail(self) -> None:
        self.process.wait()
        self.error_reader.join()
        detail = self.errors.decode("utf-8", "replace").strip() or f"exit status {self.process.returncode}"
        raise FilecastError(f"OpenPGP encryption failed: {detail}", code="encryption_error")

    def update(self, data: bytes) -> Iterator[bytes]:
        """Feed `data` a MiB at a time and yield what the helper has produced meanwhile: memory
        holds a MiB or two of output, however large the encoded batch."""
        for start in range(0, len(data), READ):
            self._write(data[start:start + READ])
            ready = self._take()
            if self.armor is not None:
                ready = self.armor.update(ready)
            if ready:
                yield ready

    def finish(self) -> bytes:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self.reader.join()
        if self.process.wait() != 0:
            self._fail()
        self._finalizer.detach()
        ready = self._take()
        return self.armor.update(ready) + self.armor.finish() if self.armor is not None else ready


class _Armor:
    """ASCII armour (RFC 4880 §6.2) of the helper's binary output: base64 in 64-column lines and
    the CRC-24 line GnuPG 2.2 requires. Done here, with binascii and anycrc's CLMUL CRC, because
    Sequoia's armour writer ran at about 20 MB/s (this at about 100 MB/s)."""

    LINE = 48  # bytes per 64-character line

    def __init__(self) -> None:
        import anycrc

        self.model = anycrc.Model("CRC24-OPENPGP")
        self.crc: int | None = None
        self.rest = b""
        self.started = False

    @staticmethod
    def _lines(data: bytes) -> bytes:
        encoded = binascii.b2a_base64(data, newline=False)
        return b"".join([encoded[i:i + 64] + b"\n" for i in range(0, len(encoded), 64)])

    def update(self, data: bytes) -> bytes:
        head = b"" if self.started else b"-----BEGIN PGP MESSAGE-----\n\n"
        self.started = True
        if data:
            self.crc = self.model.calc(data) if self.crc is None else self.model.calc(data, self.crc)
        data = self.rest + data
        whole = len(data) // self.LINE * self.LINE
        self.rest = data[whole:]
        return head + self._lines(data[:whole])

    def finish(self) -> bytes:
        crc = (self.crc if self.crc is not None else self.model.calc(b"")).to_bytes(3, "big")
        return (self._lines(self.rest) + b"=" + binascii.b2a_base64(crc, newline=False)
                + b"\n-----END PGP MESSAGE-----\n")
