"""OpenSSH's `sshd` (Debian `openssh-server`) as the SFTP server of the integration tests and benchmarks.

Layout mirrors the FTP servers: one root folder, each user logged in to `home` inside it and
jailed there (`ChrootDirectory`), so `/` is the root, relative paths start at the login directory,
and `..` climbs towards the root. sshd refuses a chroot whose folder or any parent is writable by
anyone but root, and the system's temporary folder is world-writable: a site therefore lives under
`/var/lib/filecast-sshd/` (root-owned, 0755). Inside the jail the root itself stays root's (sshd
demands it); `/home`, the writer's home and `/shared` belong to the writer, the reader's home to
root, so its writes fail on plain Unix permissions.

Users are system accounts (`useradd`, `chpasswd`), named by the caller (unique per test session),
`ForceCommand internal-sftp`, password and public-key authentication; `create()` generates client
keys with `ssh-keygen` (OpenSSH format with and without passphrase, PEM with a passphrase) and
authorises them for the writer. Each sshd gets its own ed25519 host key, config and `PidFile` on a
free loopback port; `/run/sshd` (its privilege-separation folder) must exist.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .services import FtpUser, Service, ServiceUnavailable, descendants, free_port, wait_for_port
from .vsftpd import VsftpdSite, ensure_system_user

PARENT = Path("/var/lib/filecast-sshd")
PRIVSEP = Path("/run/sshd")
# name → (ssh-keygen arguments, passphrase)
CLIENT_KEYS: dict[str, tuple[list[str], str]] = {
    "openssh": (["-t", "ed25519"], ""),
    "openssh-passphrase": (["-t", "ed25519"], "key-passphrase-1"),
    "pem-passphrase": (["-t", "rsa", "-b", "2048", "-m", "PEM"], "key-passphrase-2"),
}


def sshd_binary() -> str:
    binary = os.environ.get("SSHD_BIN") or "/usr/sbin/sshd"
    if not Path(binary).exists():
        raise ServiceUnavailable("sshd is not installed: `apt-get install -y openssh-server` (Debian), or set SSHD_BIN")
    return binary


def keygen(path: Path, args: list[str], passphrase: str = "", comment: str = "filecast-test") -> Path:
    done = subprocess.run(
        ["ssh-keygen", "-q", *args, "-N", passphrase, "-C", comment, "-f", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ServiceUnavailable(f"ssh-keygen failed: {done.stderr.strip()}")
    return path


@dataclass
class SshdSite(VsftpdSite):
    """Files, users and keys every sshd of a session serves (`owner_of`, `remove` as vsftpd's)."""

    keys: dict[str, Path] = field(default_factory=dict)  # client key name → private key file
    passphrases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, users: list[FtpUser], *, parent: Path | None = None) -> SshdSite:
        """A new root under `parent` (root-owned, default PARENT); the first user whose `perm` has `w`
        is the writer and gets the client keys."""
        sshd_binary()
        if os.geteuid() != 0:
            raise ServiceUnavailable("the sshd tests create local users and chroot them, which needs root")
        parent = parent or PARENT
        parent.mkdir(mode=0o755, exist_ok=True)
        os.chown(parent, 0, 0)
        parent.chmod(0o755)
        base = Path(tempfile.mkdtemp(prefix="site-", dir=parent))
        base.chmod(0o755)
        self = cls(base, base / "root", users)
        self.root.mkdir(mode=0o755)
        try:
            for user in users:
                if ensure_system_user(user, user.home):
                    self.created.append(user.name)
            self._layout()
            self._keys()
        except BaseException:
            self.remove()
            raise
        return self

    def _layout(self) -> None:
        writer = next((u for u in self.users if "w" in u.perm), None)
        uid, gid = self.owner_of(writer.name) if writer else (0, 0)
        for folder in ("home", "shared"):
            (self.root / folder).mkdir(mode=0o755, exist_ok=True)
            os.chown(self.root / folder, uid, gid)
        for user in self.users:
            home = self.root / user.home.strip("/")
            home.mkdir(parents=True, exist_ok=True)
            home.chmod(0o755)
            os.chown(home, *(self.owner_of(user.name) if "w" in user.perm else (0, 0)))

    def _keys(self) -> None:
        folder = self.base / "client-keys"
        folder.mkdir(mode=0o700)
        authorized = self.base / "authorized_keys"
        authorized.mkdir(mode=0o755)
        lines = []
        for name, (args, passphrase) in CLIENT_KEYS.items():
            self.keys[name] = keygen(folder / name, args, passphrase)
            self.passphrases[name] = passphrase
            lines.append(Path(f"{folder / name}.pub").read_text())
        writer = next((u for u in self.users if "w" in u.perm), None)
        if writer is not None:
            (authorized / writer.name).write_text("".join(lines))


@dataclass
class Sshd(Service):
    port: int = 0
    site: SshdSite | None = None
    host_key: Path = field(default_factory=Path)

    @property
    def root(self) -> Path:
        assert self.site is not None
        return self.site.root

    @classmethod
    def start(cls, site: SshdSite, *, chroot: bool = True) -> Sshd:
        """sshd on a free loopback port, in the foreground, with its own host key, config and PidFile."""
        PRIVSEP.mkdir(mode=0o755, exist_ok=True)
        port = free_port()
        self = cls(port=port, site=site, host_key=site.base / f"host-key-{port}")
        keygen(self.host_key, ["-t", "ed25519"], comment="")
        self.log_path = site.base / f"sshd-{port}.log"
        names = " ".join(u.name for u in site.users)
        lines = [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {site.base}/sshd-{port}.pid",
            "UsePAM no",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            f"AuthorizedKeysFile {site.base}/authorized_keys/%u",
            "StrictModes no",
            "PermitRootLogin no",
            f"AllowUsers {names}",
            "MaxStartups 50:30:100",
            "MaxSessions 50",
            "MaxAuthTries 10",
            "UseDNS no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            f"Match User {','.join(u.name for u in site.users)}",
            "  ForceCommand internal-sftp -l VERBOSE",
            *([f"  ChrootDirectory {site.root}"] if chroot else []),
            "  AllowTcpForwarding no",
            "  X11Forwarding no",
        ]
        config = site.base / f"sshd-{port}.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [sshd_binary(), "-D", "-e", "-f", str(config), "-E", str(self.log_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, self.process, "sshd")
        except ServiceUnavailable as exc:
            log = self.log_path.read_text(errors="replace").strip() if self.log_path.exists() else ""
            self.stop()
            raise ServiceUnavailable(f"{exc}: {log}" if log else str(exc)) from None
        return self

    @property
    def public_key(self) -> str:
        """`ssh-ed25519 AAAA…` of the host key."""
        return " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])

    @property
    def fingerprint(self) -> str:
        done = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.split()[1]

    def known_hosts(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.public_key}"

    def stop(self) -> None:
        sessions = descendants(self.process.pid) if self.process is not None else []
        super().stop()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
