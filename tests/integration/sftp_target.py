"""What the SFTP tests share: `SftpTarget` (how a catalog points at the session's sshd, its
secrets, OpenSSH's own client) and the names of its users and settings.

The fixture (`sftp_server` in conftest_sftp.py) runs OpenSSH's sshd for the session, on a free
loopback port with its own host key, chrooted at a root laid out as the FTP one (`/home/alex` the
writer's login directory). Its users are system accounts unique to this session, removed at the
end.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.sshd import Sshd, SshdSite

_TAG = secrets.token_hex(3)
SFTP_WRITER, SFTP_READER = f"fc{_TAG}-sftp", f"fc{_TAG}-sftpr"
PASSWORD_SETTING = {SFTP_WRITER: "SFTP_WRITER_PASSWORD", SFTP_READER: "SFTP_READER_PASSWORD"}
KEY_SETTING, PASSPHRASE_SETTING = "SFTP_PRIVATE_KEY", "SFTP_KEY_PASSPHRASE"


@dataclass
class SftpTarget:
    sshd: Sshd
    site: SshdSite
    passwords: dict[str, str]

    @property
    def port(self) -> int:
        return self.sshd.port

    @property
    def root(self) -> Path:
        return self.site.root

    def destination(self, user: str = SFTP_WRITER, *, key: str | None = None, **extra: Any) -> dict[str, Any]:
        """A catalog destination: password auth, or the client key `key` (see devtools.sshd.CLIENT_KEYS)."""
        doc: dict[str, Any] = {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": self.port,
            "username": user,
            "host_key": self.sshd.fingerprint,
        }
        if key is None:
            doc["password_setting"] = PASSWORD_SETTING[user]
        else:
            doc["private_key_setting"] = KEY_SETTING
            if self.site.passphrases[key]:
                doc["passphrase_setting"] = PASSPHRASE_SETTING
        doc.update(extra)
        return doc

    def env(self, key: str | None = None) -> dict[str, str]:
        values = {PASSWORD_SETTING[name]: password for name, password in self.passwords.items()}
        if key is not None:
            values[KEY_SETTING] = self.site.keys[key].read_text()
            values[PASSPHRASE_SETTING] = self.site.passphrases[key]
        return values

    def secrets(self) -> list[str]:
        found = list(self.passwords.values()) + [p for p in self.site.passphrases.values() if p]
        for key in self.site.keys.values():
            found += [line for line in key.read_text().splitlines()[1:-1] if line]
        return found

    def openssh(self, batch: str, tmp_path: Path, key: str = "openssh") -> subprocess.CompletedProcess[str]:
        """OpenSSH's own `sftp -b` as the writer, with its key and this server's key pinned."""
        known = tmp_path / "known_hosts"
        known.write_text(self.sshd.known_hosts() + "\n")
        script = tmp_path / "batch.sftp"
        script.write_text(batch)
        return subprocess.run(
            [
                "sftp",
                "-q",
                "-b",
                str(script),
                "-P",
                str(self.port),
                "-i",
                str(self.site.keys[key]),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "IdentitiesOnly=yes",
                f"{SFTP_WRITER}@127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
