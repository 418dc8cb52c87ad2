"""OpenPGP encryption (and signing) of exported files, streaming, readable by GnuPG (issue 18).

An activation's `encryption:` block names app settings: `recipients_setting` (one or more
ASCII-armoured public keys), optionally `signing_key_setting` and `signing_passphrase_setting`;
`armor: true` writes ASCII armour (`.asc`) instead of binary (`.pgp`). The keys are parsed and
checked (`load_keys`) before any row is read.

The OpenPGP itself is Sequoia-PGP's (the `pysequoia` wheel); core/write/pgp_stream.py streams it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import CatalogError, CatalogInvalid, FilecastError, Problem
from ..settings import Settings
from .pgp_stream import Stage

if TYPE_CHECKING:  # the catalog imports this module to parse `encryption`
    from ..catalog.model import Activation, Catalog

FIELDS = ("recipients_setting", "signing_key_setting", "signing_passphrase_setting", "armor")
EXPIRY_WARNING = timedelta(days=30)
# Bytes OpenPGP may add to a file of n bytes (see `Keys.bound`): packet headers, the SEIPD
# prefix and MDC, each recipient's session-key packet, the signature; armour's base64 lines.
FIXED_OVERHEAD = 512
PER_RECIPIENT = 1100  # a PKESK for an RSA-8192 key is 1,036 bytes; Curve25519 about 96
PER_SIGNATURE = 1100  # one-pass signature plus signature packet (RSA-8192 at most)
BINARY_FACTOR = 1.001  # partial body length headers: measured under 0.01 %
ARMOR_FACTOR = 4 / 3 * 65 / 64 * BINARY_FACTOR  # base64, a newline every 64 characters


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
        r.problem(
            "signing_passphrase_setting",
            "is set but `signing_key_setting` is not: name the app setting "
            "holding the signing key, or remove the passphrase",
        )
    armor = r.flag("armor", False)
    if recipients is None:
        return None
    return Encryption(recipients, signing, passphrase, armor)


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: its fingerprint, first user ID and expiry (UTC)."""

    role: str  # recipient | signer
    fingerprint: str  # primary key, upper-case hex as GnuPG prints it
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
        return [
            f"OpenPGP {k.role} key `{k.fingerprint}` ({k.user_id}) expires on {k.expires:%Y-%m-%d} "
            f"({(k.expires - now).days} days); get its renewed public key before then"
            for k in self.info
            if k.expires is not None and k.expires - now <= EXPIRY_WARNING
        ]


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
        elif (
            packet.tag == Tag.Signature and current is not None and packet.signature_type == SignatureType.SubkeyBinding
        ):
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
        raise CatalogError(
            f"{where} has no usable encryption subkey (it can only sign or certify, or its "
            "encryption subkeys are revoked); ask for a key with an encryption subkey (gpg lists it "
            "as `[E]`)"
        ) from None
    chosen = {p.body[1:9].hex() for p in PacketPile.from_bytes(probe) if p.tag == Tag.PKESK}
    expires = _expiry(pysequoia, cert, chosen)
    if expires is not None and expires <= now:
        raise CatalogError(f"{where} expired on {expires:%Y-%m-%d}; ask the partner for their renewed public key")
    return KeyInfo("recipient", fingerprint, user, expires)


def _signer(
    pysequoia: Any, encryption: Encryption, settings: Settings, now: datetime
) -> tuple[str, str | None, KeyInfo]:
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
        raise CatalogError(
            f"app setting `{name}` does not hold an ASCII-armoured OpenPGP private key; export it "
            "with `gpg --armor --export-secret-keys`"
        ) from None
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
            raise CatalogError(
                f"{where} is protected by a passphrase: name the app setting holding it in `signing_passphrase_setting`"
            ) from None
        if passphrase is not None:
            raise CatalogError(
                f"the passphrase in app setting `{encryption.signing_passphrase_setting}` does not unlock the {where}"
            ) from None
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
        raise CatalogError(
            f"app setting `{name}` does not hold ASCII-armoured OpenPGP public keys "
            f"({_first_line(exc)}); paste the partner's whole key block, `-----BEGIN PGP PUBLIC KEY "
            "BLOCK-----` to `-----END PGP PUBLIC KEY BLOCK-----`"
        ) from None
    if not certs:
        raise CatalogError(
            f"app setting `{name}` holds no OpenPGP public key; paste the partner's whole key block, "
            "`-----BEGIN PGP PUBLIC KEY BLOCK-----` to `-----END PGP PUBLIC KEY BLOCK-----`"
        )
    if _has_secrets(text):
        raise CatalogError(
            f"app setting `{name}` holds a private key: give only the partner's public key "
            "(`gpg --armor --export`), never a private one"
        )
    info = [_recipient(pysequoia, cert, name, now) for cert in certs]
    signing_key = passphrase = None
    if encryption.signing_key_setting is not None:
        signing_key, passphrase, signer = _signer(pysequoia, encryption, settings, now)
        info.append(signer)
    return Keys(encryption, tuple(info), tuple(str(cert) for cert in certs), signing_key, passphrase)


def check_catalog(catalog: Catalog, settings: Settings) -> tuple[list[Problem], list[str]]:
    """`validate`: every activation's keys, as problems, and (for `--probe`) a line per key."""
    problems: list[Problem] = []
    lines: list[str] = []
    for activation in catalog.activations.values():
        encryption = activation.encryption
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


def require_keys(catalog: Catalog, settings: Settings) -> None:
    """`PUT /api/catalog`: every activation's keys checked as `filecast validate` checks them,
    before anything is stored; the problems name settings and fingerprints, never key material."""
    problems, _ = check_catalog(catalog, settings)
    if problems:
        raise CatalogInvalid(problems)


def prepare(activation: Activation, settings: Settings, warn: Any) -> Keys | None:
    """A run's keys, checked before the source is opened; a key expiring soon warns `key_expiring`."""
    encryption = activation.encryption
    if encryption is None:
        return None
    keys = load_keys(encryption, settings)
    for message in keys.expiring():
        warn("key_expiring", message)
    return keys
