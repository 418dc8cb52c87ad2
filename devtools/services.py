"""Start and stop the local services the demo and the integration tests use.

Each service runs as a child process on free loopback ports and is stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The well-known Azurite development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class ServiceUnavailable(RuntimeError):
    """A local service could not be started (not installed, or it did not come up)."""


def descendants(pid: int) -> list[int]:
    """Live descendants of process `pid` (Linux /proc), each listed after its parent."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the live processes `pids` (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(f"{what} exited with code {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceUnavailable(f"{what} did not listen on port {port} within {timeout:.0f} s")


def azurite_command() -> list[str]:
    """Find Azurite: AZURITE_BIN, the repo's node_modules, the tools folder, or PATH."""
    candidates = [
        os.environ.get("AZURITE_BIN"),
        str(REPO / "node_modules" / ".bin" / "azurite"),
        str(Path(os.environ.get("FILECAST_TOOLS", REPO / ".tools")) / "node_modules" / ".bin" / "azurite"),
        shutil.which("azurite"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return [candidate]
    raise ServiceUnavailable(
        "Azurite is not installed: run `make setup` (it installs Azurite with npm into .tools/) or set AZURITE_BIN"
    )


def azurite_version() -> str:
    """The version of the Azurite `azurite_command()` runs, from its package.json ("unknown" if unreadable)."""
    binary = Path(azurite_command()[0]).resolve()  # node_modules/azurite/dist/src/azurite.js
    for folder in binary.parents:
        manifest = folder / "package.json"
        if manifest.is_file():
            try:
                document = json.loads(manifest.read_text())
            except (OSError, ValueError):
                break
            if document.get("name") == "azurite":
                return str(document.get("version", "unknown"))
    return "unknown"


@dataclass
class Service:
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Azurite(Service):
    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0

    # The flags Filecast starts Azurite with, everywhere (README "Running it locally"): without
    # --skipApiVersionCheck Azurite refuses the SDK's newest API version with `InvalidHeaderValue`.
    FLAGS = ("--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--loose")

    @classmethod
    def start(cls, workdir: Path, *, flags: tuple[str, ...] = FLAGS) -> Azurite:
        command = azurite_command()
        self = cls(blob_port=free_port(), queue_port=free_port(), table_port=free_port())
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "azurite.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *command,
                *flags,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(self.table_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        try:
            for port in (self.blob_port, self.queue_port, self.table_port):
                wait_for_port(port, self.process, "Azurite")
        except ServiceUnavailable:
            self.stop()
            raise
        return self

    def endpoint(self, service: str) -> str:
        port = {"blob": self.blob_port, "queue": self.queue_port, "table": self.table_port}[service]
        return f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint('blob')};QueueEndpoint={self.endpoint('queue')};"
            f"TableEndpoint={self.endpoint('table')};"
        )


@dataclass
class FtpUser:
    name: str
    password: str
    home: str = "/"  # login directory, inside the server root
    perm: str = "elradfmwMT"  # pyftpdlib permissions; "elr" = read only


@dataclass
class FtpServer(Service):
    """The pyftpdlib server of `devtools.ftpserver`; options as its command line documents."""

    port: int = 0
    root: Path = field(default_factory=Path)
    args: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        root: Path,
        users: list[FtpUser],
        *,
        tls: str = "none",
        certfile: Path | None = None,
        keyfile: Path | None = None,
        refuse_rename_over_existing: bool = False,
        read_limit: int = 0,
        epsv: bool = True,
        masquerade_address: str | None = None,
        idle_timeout: int | None = None,
    ) -> FtpServer:
        self = cls(port=free_port(), root=root)
        root.mkdir(parents=True, exist_ok=True)
        for user in users:
            (root / user.home.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.log_path = root.parent / f"ftpserver-{self.port}.log"
        args = [sys.executable, "-m", "devtools.ftpserver", "--port", str(self.port), "--root", str(root)]
        for user in users:
            args += ["--user", f"{user.name}:{user.password}:{user.home}:{user.perm}"]
        if tls != "none":
            if certfile is None:
                raise ValueError("FTPS needs a certificate")
            args += ["--tls", tls, "--cert", str(certfile)] + (["--key", str(keyfile)] if keyfile else [])
        if refuse_rename_over_existing:
            args.append("--refuse-rename-over-existing")
        if read_limit:
            args += ["--read-limit", str(read_limit)]
        if not epsv:
            args.append("--no-epsv")
        if masquerade_address:
            args += ["--masquerade-address", masquerade_address]
        if idle_timeout:
            args += ["--idle-timeout", str(idle_timeout)]
        self.args = args
        self._spawn()
        return self

    def _spawn(self) -> None:
        assert self.log_path is not None
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for_port(self.port, self.process, "the FTP server")
        except ServiceUnavailable:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: connections drop, nothing is cleaned up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port and root (after `kill()` or `stop()`)."""
        self.stop()
        self._spawn()
