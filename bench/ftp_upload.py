"""Benchmark: FTP upload rate on loopback through the FTP destination.

    python -m bench.ftp_upload [--mb 512] [--repeat 3] [--chunk-kib 1024] [--servers pyftpdlib,vsftpd]
                               [--tls none,explicit] [--root /dev/shm]

For each server (pyftpdlib, the Python test server; vsftpd from Debian, needs root to create its
users) and TLS mode, uploads `--mb` MB of incompressible bytes through `FtpDestination` exactly
as a run does (open a hidden temporary file, write the chunks the engine hands over, finish
with the SIZE check, rename over the target) and prints MB/s (1 MB = 10^6 bytes), best of
`--repeat`. The clock runs from `open()` to `publish()` done; the connection and login are made
before it starts, as a run makes them once for all its files.

The server stores the files under `--root` (tmpfs by default) so the disk is not what is
measured, and each file is deleted after its upload (off the clock): on these VMs memory the
guest has not touched recently costs about ten times more to fill (a 512 MB tmpfs write takes
0.17 s while about 1.5 GB of freed pages are warm, 1.7 s beyond), so keeping every upload made
the later runs measure the hypervisor, not FTP. Both ends share the machine's cores: pyftpdlib
is a single Python process and is usually the bottleneck; vsftpd shows what the client side can
do. The server's CPU seconds are printed when the server runs as our child processes.

Budget (DESIGN.md §5): >= 300 MB/s on loopback, with writes of 64 KiB or more
(`--write-kib 8` shows aioftp's default write size, for comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.catalog.model import Destination  # noqa: E402
from core.destinations import ftp  # noqa: E402
from core.destinations.base import Destination as Target  # noqa: E402
from core.destinations.ftp import FtpDestination  # noqa: E402
from core.settings import Settings  # noqa: E402
from devtools.certs import make_ca  # noqa: E402
from devtools.services import FtpServer, FtpUser, Service, ServiceUnavailable, cpu_seconds, descendants  # noqa: E402
from devtools.vsftpd import Vsftpd, VsftpdSite  # noqa: E402

BUDGET = 300.0
MB = 1_000_000
USER = "filecast-bench"


@dataclass(frozen=True)
class BenchDestination(Destination):
    ca_file: str | None = None


def server_cpu(server: FtpServer | Vsftpd) -> float:
    """CPU seconds used so far by the server: its listener and the processes serving connections."""
    if server.process is None:
        return 0.0
    return cpu_seconds([server.process.pid, *descendants(server.process.pid)])


async def send(destination: Target, path: str, total: int, chunk: bytes) -> None:
    """Upload `total` bytes, `chunk` after `chunk`, and publish them: what every upload benchmark times."""
    upload = await destination.open(path, content_type="application/octet-stream")
    sent = 0
    while sent < total:
        piece = chunk[: min(len(chunk), total - sent)]
        await upload.write(piece)
        sent += len(piece)
    await upload.finish(total, b"")
    await upload.publish()


async def upload_once(
    destination: FtpDestination, server: FtpServer | Vsftpd, total: int, chunk: bytes, name: str
) -> tuple[float, float, float]:
    """Wall-clock, client CPU and server CPU seconds of one upload."""
    started, cpu, served = time.perf_counter(), time.process_time(), server_cpu(server)
    await send(destination, f"bench/{name}", total, chunk)
    elapsed, used, server_used = time.perf_counter() - started, time.process_time() - cpu, server_cpu(server) - served
    await destination.remove_quietly(f"bench/{name}")  # frees the server's tmpfs pages for the next run
    return elapsed, used, server_used


async def measure(
    config: Destination, server: FtpServer | Vsftpd, password: str, total: int, chunk: bytes, repeat: int
) -> list[tuple[float, float, float]]:
    """(MB/s, MB per client CPU second, MB per server CPU second) of each upload."""
    destination = FtpDestination(config, Settings({"BENCH_FTP_PASSWORD": password}), timeout=60)
    rates = []
    async with destination:
        for attempt in range(repeat):
            seconds, cpu, served = await upload_once(destination, server, total, chunk, f"file-{attempt}.bin")
            rates.append((total / seconds / MB, total / max(cpu, 1e-9) / MB, total / max(served, 1e-9) / MB))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=512, help="MB per upload")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-kib", type=int, default=1024, help="size of the chunks handed to write()")
    parser.add_argument(
        "--write-kib",
        type=int,
        default=ftp.WRITE_SIZE // 1024,
        help="smallest write on the data connection (the destination's WRITE_SIZE)",
    )
    parser.add_argument("--servers", default="pyftpdlib,vsftpd")
    parser.add_argument("--tls", default="none,explicit")
    parser.add_argument(
        "--root",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="where the servers store files (default: tmpfs)",
    )
    args = parser.parse_args()
    ftp.WRITE_SIZE = args.write_kib * 1024
    chunk = os.urandom(args.chunk_kib * 1024)
    total = args.mb * MB
    password = "b-" + secrets.token_urlsafe(12)
    work = Path(tempfile.mkdtemp(prefix="filecast-ftp-bench-", dir=args.root))
    work.chmod(0o755)
    ca = make_ca(work / "ca")
    cert = ca.issue(work / "ca", "server")
    user = FtpUser(USER, password, home="/home/bench")
    site: VsftpdSite | None = None
    started: list[Service] = []
    print(
        f"FTP upload on loopback: {args.mb} MB per upload, chunks of {args.chunk_kib} KiB, writes of at least "
        f"{args.write_kib} KiB, best of {args.repeat}; budget >= {BUDGET:.0f} MB/s"
    )
    results: list[tuple[str, str, float | None, str]] = []
    try:
        for kind in args.servers.split(","):
            for tls in args.tls.split(","):
                server: FtpServer | Vsftpd
                try:
                    if kind == "pyftpdlib":
                        server = FtpServer.start(
                            work / "pyftpdlib", [user], tls=tls, certfile=cert.cert, keyfile=cert.key
                        )
                    else:
                        if site is None:
                            site = VsftpdSite.create([user], parent=work)
                        server = Vsftpd.start(site, tls=tls, certfile=cert.cert, keyfile=cert.key)
                except ServiceUnavailable as exc:
                    results.append((kind, tls, None, f"skipped: {exc}"))
                    continue
                started.append(server)
                config = BenchDestination(
                    "bench",
                    "ftp",
                    host="127.0.0.1",
                    port=server.port,
                    username=USER,
                    password_setting="BENCH_FTP_PASSWORD",
                    tls=tls,
                    ca_file=str(ca.cert),
                )
                measured = asyncio.run(measure(config, server, password, total, chunk, args.repeat))
                server.stop()
                rates = [rate for rate, _, _ in measured]
                note = "  ".join(f"{rate:.0f}" for rate in rates)
                client = max(per_cpu for _, per_cpu, _ in measured)
                served = max(per_cpu for _, _, per_cpu in measured)
                results.append((kind, tls, max(rates), f"runs: {note} MB/s"))
                print(
                    f"  {kind:<10} tls={tls:<9} {max(rates):7.0f} MB/s   (runs: {note}; MB per CPU second: "
                    f"client {client:.0f}, server {served:.0f})",
                    flush=True,
                )
    finally:
        for service in started:
            service.stop()
        if site is not None:
            site.remove()
        shutil.rmtree(work, ignore_errors=True)
    print()
    for kind, tls, rate, note in results:
        verdict = "" if rate is None else ("within budget" if rate >= BUDGET else "BELOW BUDGET")
        shown = "    -   " if rate is None else f"{rate:7.0f} MB/s"
        print(f"{kind:<10} tls={tls:<9} {shown}  {verdict}  {note if rate is None else ''}".rstrip())


if __name__ == "__main__":
    main()
