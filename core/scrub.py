"""The one secret scrubber: every message built from a third party's words goes through `scrub`.

An SDK or server may quote a URL, a connection string or the credentials it was given; Filecast's
messages reach run records, logs, alerts and API answers, so what could be a secret is blanked
to `***` before it is put into an error: the values the caller knows to be secret (a password,
a private key line by line, a passphrase), and anything shaped like a credential whatever its
value (a SAS `sig=`, an `AccountKey=`, a `SharedAccessSignature=`, a `Password=`/`pwd=` pair of
a connection string, the password of a `scheme://user:password@host` URI).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MIN_SECRET = 3  # shorter values would blank ordinary words of a message
MIN_KEY_LINE = 16  # a PEM key's lines are masked one by one (a server may quote one line)

_PATTERNS = (
    re.compile(r"(?i)(sig=)[^&\s'\"]+"),
    re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"),
    re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"),
    re.compile(r"(?i)(\b(?:password|pwd)=)[^;&\s'\"]+"),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)[^@/\s'\"]+(?=@)"),
)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with the given secret values, and anything shaped like a credential, blanked."""
    known: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        known.add(secret)
        if "\n" in secret:
            known.update(line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_KEY_LINE)
    for secret in sorted((s for s in known if len(s) >= MIN_SECRET), key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern in _PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text
