"""vsftpd (Debian's `vsftpd` package) as a second, independent FTP server for the integration tests.

Layout mirrors `devtools.ftpserver`: one root folder, each user logged in to `home` inside it and
jailed (chroot) at the root, so `/` is the root, relative paths start at the login directory, and
`..` climbs towards the root, as in the seed docs. The jail comes from vsftpd's `/./` marker in
the user's home folder (`passwd_chroot_enable`): `root/./home/alex` jails at `root` and logs in to
`/home/alex`.

vsftpd authenticates local (system) users through PAM, so `VsftpdSite.create()` makes each
`FtpUser` a system user (`useradd` when missing, `chpasswd`, `usermod --home`), which needs root.
A site is one root folder shared by every vsftpd instance of a test session (plain, explicit,
implicit…): the users' home folders point into it. A user whose `perm` lacks `w` gets a login
directory it cannot write to (plain Unix permissions), so a write fails as on a real server.

vsftpd needs `background=NO` to stay the child we started, `seccomp_sandbox=NO` (its sandbox
rejects syscalls of newer kernels and libcs) and `/var/run/vsftpd/empty`. Each connection runs in
child processes of the listener; `session_pids()` finds them, so a test can cut a transfer off.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .services import FtpUser, Service, ServiceUnavailable, descendants, free_port, wait_for_port

SECURE_CHROOT = Path("/var/run/vsftpd/empty")
SHELL = "/bin/bash"  # must be listed in /etc/shells for Debian's PAM stack (pam_shells)


def vsftpd_binary() -> str:
    binary = os.environ.get("VSFTPD_BIN") or shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    if not Path(binary).exists():
        raise ServiceUnavailable("vsftpd is not installed: `apt-get install -y vsftpd` (Debian), or set VSFTPD_BIN")
    return binary


def ensure_system_user(user: FtpUser, home: str) -> bool:
    """Create `user` as a local account when missing, point its home at `home`, set its password.
    True when this call created the account."""
    if os.geteuid() != 0:
        raise ServiceUnavailable("the vsftpd tests create local users and must run as root")
    try:
        account = pwd.getpwnam(user.name)
    except KeyError:
        done = subprocess.run(
            ["useradd", "--no-create-home", "--home-dir", home, "--shell", SHELL, "--user-group", user.name],
            capture_output=True,
            text=True,
        )
        if done.returncode not in (0, 9):  # 9: created meanwhile by another session
            raise ServiceUnavailable(f"useradd {user.name} failed: {done.stderr.strip()}") from None
        created = done.returncode == 0
    else:
        created = False
        if account.pw_dir != home or account.pw_shell != SHELL:
            done = subprocess.run(
                ["usermod", "--home", home, "--shell", SHELL, user.name], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise ServiceUnavailable(f"usermod {user.name} failed: {done.stderr.strip()}")
    done = subprocess.run(["chpasswd"], input=f"{user.name}:{user.password}\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise ServiceUnavailable(f"chpasswd for {user.name} failed: {done.stderr.strip()}")
    return created


@dataclass
class VsftpdSite:
    """The files and users every vsftpd instance of a session serves."""

    base: Path  # private folder: configs, logs, and the root
    root: Path  # what `/` is for every user
    users: list[FtpUser]
    created: list[str] = field(default_factory=list)  # the system users this site added

    @classmethod
    def create(cls, users: list[FtpUser], *, parent: Path | None = None) -> VsftpdSite:
        """A new root (in a private folder under `parent`, default the system's temporary folder)."""
        vsftpd_binary()
        # Not under pytest's 0700 temporary folders: vsftpd enters the jail as the logged-in user.
        base = Path(tempfile.mkdtemp(prefix="filecast-vsftpd-", dir=parent))
        base.chmod(0o755)
        self = cls(base, base / "root", users)
        self.root.mkdir()
        try:
            for user in users:
                if ensure_system_user(user, f"{self.root}/./{user.home.strip('/')}"):
                    self.created.append(user.name)
        except BaseException:
            self.remove()
            raise
        writer = next((u for u in users if "w" in u.perm), None)
        if writer is not None:
            owner = pwd.getpwnam(writer.name)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)  # writers may create folders anywhere, `/x` too
        for user in users:
            home = self.root / user.home.strip("/")
            home.mkdir(parents=True, exist_ok=True)
            account = pwd.getpwnam(user.name)
            for folder in [home, *home.parents]:
                if folder == self.root or self.root not in folder.parents:
                    break
                if "w" in user.perm:
                    os.chown(folder, account.pw_uid, account.pw_gid)
                folder.chmod(0o755)
        return self

    def owner_of(self, user_name: str) -> tuple[int, int]:
        account = pwd.getpwnam(user_name)
        return account.pw_uid, account.pw_gid

    def remove(self) -> None:
        """Delete the files and the system users this site created (and their groups)."""
        for name in self.created:
            subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class Vsftpd(Service):
    port: int = 0
    site: VsftpdSite | None = None
    config_path: Path = field(default_factory=Path)

    @property
    def root(self) -> Path:
        assert self.site is not None
        return self.site.root

    @classmethod
    def start(
        cls,
        site: VsftpdSite,
        *,
        tls: str = "none",
        certfile: Path | None = None,
        keyfile: Path | None = None,
        require_ssl_reuse: bool = True,
        max_rate: int = 0,
        pasv_address: str | None = None,
    ) -> Vsftpd:
        """Start vsftpd on a free loopback port. `tls`: none | explicit (AUTH TLS required) | implicit."""
        if tls != "none" and (certfile is None or keyfile is None):
            raise ValueError("FTPS needs certfile and keyfile")
        SECURE_CHROOT.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self = cls(port=port, site=site, config_path=site.base / f"vsftpd-{port}.conf")
        self.log_path = site.base / f"vsftpd-{port}.log"
        lines = {
            "listen": "YES",
            "listen_ipv6": "NO",
            "listen_address": "127.0.0.1",
            "listen_port": str(port),
            "background": "NO",
            "seccomp_sandbox": "NO",
            "secure_chroot_dir": str(SECURE_CHROOT),
            "anonymous_enable": "NO",
            "local_enable": "YES",
            "write_enable": "YES",
            "local_umask": "022",
            "chroot_local_user": "YES",
            "passwd_chroot_enable": "YES",
            "allow_writeable_chroot": "YES",
            "pam_service_name": "vsftpd",
            "userlist_enable": "NO",
            "pasv_enable": "YES",
            "port_enable": "NO",
            "use_localtime": "NO",
            "dirmessage_enable": "NO",
            "xferlog_enable": "YES",
            "xferlog_std_format": "NO",
            "log_ftp_protocol": "YES",
            "vsftpd_log_file": str(self.log_path),
            "syslog_enable": "NO",
            "local_max_rate": str(max_rate),
        }
        if pasv_address:
            lines["pasv_address"] = pasv_address
        if tls != "none":
            lines.update(
                {
                    "ssl_enable": "YES",
                    "rsa_cert_file": str(certfile),
                    "rsa_private_key_file": str(keyfile),
                    "force_local_logins_ssl": "YES",
                    "force_local_data_ssl": "YES",
                    "require_ssl_reuse": "YES" if require_ssl_reuse else "NO",
                    "ssl_ciphers": "HIGH",
                    "ssl_request_cert": "NO",
                    "implicit_ssl": "YES" if tls == "implicit" else "NO",
                }
            )
        self.config_path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
        self._spawn()
        return self

    def _spawn(self) -> None:
        assert self.site is not None
        stderr_path = self.site.base / f"vsftpd-{self.port}.stderr"
        self.process = subprocess.Popen(
            [vsftpd_binary(), str(self.config_path)], stdout=subprocess.DEVNULL, stderr=stderr_path.open("ab")
        )
        try:
            wait_for_port(self.port, self.process, "vsftpd")
        except ServiceUnavailable as exc:
            stderr = stderr_path.read_text(errors="replace").strip()
            self.stop()
            raise ServiceUnavailable(f"{exc}: {stderr}" if stderr else str(exc)) from None

    def session_pids(self) -> list[int]:
        """Processes serving connections: descendants of the listener we started."""
        if self.process is None:
            return []
        return descendants(self.process.pid)

    def kill_sessions(self) -> int:
        """SIGKILL every connection's processes (the listener keeps running); returns how many."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        sessions = self.session_pids()
        super().stop()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
