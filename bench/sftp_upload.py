"""Benchmark: SFTP upload rate on loopback, Filecast's destination against OpenSSH's own `sftp`.

    python -m bench.sftp_upload [--mb 256] [--rounds 5] [--chunk-kib 1024]

Starts OpenSSH's sshd (devtools.sshd, a chrooted `internal-sftp` user of its own, needs root)
and, in interleaved rounds (the order alternating each round, so load from others on the machine
hits both alike), uploads the same `--mb` MB of incompressible bytes twice to the same server:

- `openssh`: `sftp -b` with `put` of a file in tmpfs (its defaults: 32 KiB requests, 64 in
  flight, its preferred cipher), key authentication;
- `filecast`: `SftpDestination` exactly as a run does (connect and authenticate, open a hidden
  temporary file, write the chunks the engine hands over, finish with the size check, posix-rename
  over the target, close), password authentication.

Both clocks run over the whole session, connection and authentication included. The server
writes into a tmpfs mounted on the user's login directory (so the disk is not measured), and
each file is deleted after its round, off the clock. Printed: MB/s of each (1 MB = 10^6 bytes),
the ratio filecast / openssh per round and its median, each client's CPU seconds (the `sftp` and
`ssh` processes; this process), and the load average before and after.

Target (issue 17): filecast >= 0.8 x openssh.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ftp_upload import send  # noqa: E402
from core.catalog.model import Destination  # noqa: E402
from core.destinations.sftp import SftpDestination  # noqa: E402
from core.settings import Settings  # noqa: E402
from devtools.services import FtpUser  # noqa: E402
from devtools.sshd import Sshd, SshdSite  # noqa: E402

MB = 1_000_000
TARGET = 0.8


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def openssh_put(sshd: Sshd, site: SshdSite, user: str, source: Path, name: str, work: Path) -> float:
    known = work / "known_hosts"
    known.write_text(sshd.known_hosts() + "\n")
    batch = work / "put.sftp"
    batch.write_text(f"put {source} {name}\n")
    started = time.perf_counter()
    subprocess.run(
        [
            "sftp",
            "-q",
            "-b",
            str(batch),
            "-P",
            str(sshd.port),
            "-i",
            str(site.keys["openssh"]),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            f"{user}@127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def filecast_put(config: Destination, password: str, total: int, chunk: bytes, name: str) -> float:
    started = time.perf_counter()
    async with SftpDestination(config, Settings({"BENCH_SFTP_PASSWORD": password}), timeout=60) as destination:
        await send(destination, name, total, chunk)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256, help="MB per upload")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk-kib", type=int, default=1024, help="size of the chunks handed to write()")
    args = parser.parse_args()
    total = args.mb * MB
    chunk = os.urandom(args.chunk_kib * 1024)
    password = "b-" + secrets.token_urlsafe(12)
    user = f"fcbench{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="filecast-sftp-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    source = work / "source.bin"
    with source.open("wb") as handle:
        for _ in range(total // len(chunk)):
            handle.write(chunk)
        handle.write(chunk[: total % len(chunk)])
    site = SshdSite.create([FtpUser(user, password, home="/home/bench")])
    home = site.root / "home/bench"
    uid, gid = site.owner_of(user)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={2 * args.mb + 64}m,mode=0755,uid={uid},gid={gid}", "tmpfs", str(home)],
        check=True,
    )
    sshd = Sshd.start(site)
    config = Destination(
        "bench",
        "sftp",
        host="127.0.0.1",
        port=sshd.port,
        username=user,
        password_setting="BENCH_SFTP_PASSWORD",
        host_key=(sshd.fingerprint,),
    )
    load_before = os.getloadavg()
    print(
        f"SFTP upload on loopback to OpenSSH {sshd_version()}: {args.mb} MB per upload, chunks of "
        f"{args.chunk_kib} KiB, {args.rounds} interleaved rounds; load average {fmt_load(load_before)}"
    )
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"openssh": [], "filecast": []}
    cpu: dict[str, list[float]] = {"openssh": [], "filecast": []}
    try:
        for round_ in range(args.rounds):
            order = ("openssh", "filecast") if round_ % 2 == 0 else ("filecast", "openssh")
            seconds: dict[str, float] = {}
            for who in order:
                name = f"{who}-{round_}.bin"
                used = children_cpu() if who == "openssh" else time.process_time()
                if who == "openssh":
                    seconds[who] = openssh_put(sshd, site, user, source, name, work)
                else:
                    seconds[who] = asyncio.run(filecast_put(config, password, total, chunk, name))
                cpu[who].append((children_cpu() if who == "openssh" else time.process_time()) - used)
                assert (home / name).stat().st_size == total
                (home / name).unlink()
                rates[who].append(total / seconds[who] / MB)
            ratio = seconds["openssh"] / seconds["filecast"]
            ratios.append(ratio)
            print(
                f"  round {round_ + 1}: openssh {rates['openssh'][-1]:6.0f} MB/s   filecast "
                f"{rates['filecast'][-1]:6.0f} MB/s   ratio {ratio:.2f}   (client CPU s: openssh "
                f"{cpu['openssh'][-1]:.2f}, filecast {cpu['filecast'][-1]:.2f}; load {fmt_load(os.getloadavg())})",
                flush=True,
            )
    finally:
        sshd.stop()
        subprocess.run(["umount", "-l", str(home)], capture_output=True)
        site.remove()
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    median = statistics.median(ratios)
    print(
        f"\nmedian: openssh {statistics.median(rates['openssh']):.0f} MB/s, filecast "
        f"{statistics.median(rates['filecast']):.0f} MB/s, ratio {median:.2f} (target >= {TARGET}): "
        f"{'met' if median >= TARGET else 'NOT MET'}; load average before {fmt_load(load_before)}, after "
        f"{fmt_load(os.getloadavg())}"
    )


def sshd_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return (done.stderr or done.stdout).split(",")[0].strip()


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{value:.2f}" for value in load)


if __name__ == "__main__":
    main()
