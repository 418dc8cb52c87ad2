"""One measured process: wall time and peak RSS of a fresh interpreter (or any command).

Peak RSS is the kernel's high-water mark, VmHWM in /proc/<pid>/status, read every 10 ms from
the child and its descendants (the largest of them; descendants looked up every 0.2 s): VmHWM
only grows, so a sample misses at most what the last 10 ms before exit added. Not `wait4`'s
`ru_maxrss`: a child spawned through vfork inherits the *parent's* high-water mark at exec (Linux
keeps the old mm's maximum), so it reported the benchmark's own peak for every small run. Wall
time runs from spawn to exit: start-up, imports and teardown count, as they do for a user.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from devtools.services import descendants


def vm_hwm_kib(pid: int) -> int:
    """VmHWM of a live process, KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


@dataclass
class Measured:
    command: Sequence[str]
    returncode: int
    seconds: float
    rss_mb: float  # peak resident set, MB (10^6 bytes)
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-15:])
        return f"exit {self.returncode}: {tail}"


def run(command: Sequence[str], env: Mapping[str, str], *, cwd: str | None = None, timeout: float = 3600.0) -> Measured:
    """Runs `command` to its end; its output goes through files so a chatty child never blocks."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=out, stderr=err, env=dict(env), cwd=cwd)
        deadline = started + timeout
        peak, tick, children = 0, 0, []
        try:
            while True:
                if tick % 20 == 0:  # a /proc walk for new descendants (curl under the FTP limit) every 0.2 s
                    children = descendants(process.pid)
                tick += 1
                peak = max([peak, vm_hwm_kib(process.pid), *(vm_hwm_kib(p) for p in children)])
                pid, status, _ = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    process.kill()
                    pid, status, _ = os.wait4(process.pid, 0)
                    break
                time.sleep(0.01)
        except BaseException:  # the harness is stopped: so is what it was measuring
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            command,
            process.returncode,
            seconds,
            peak * 1024 / 1e6,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
