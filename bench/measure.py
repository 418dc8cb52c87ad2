"""One measured process: wall time and peak RSS of a fresh interpreter (or any command).

Peak RSS is the kernel's own high-water mark: `os.wait4` returns the child's rusage, whose
`ru_maxrss` is the largest VmHWM among the child and the descendants it waited for, so nothing
is sampled and a short peak is not missed. Wall time runs from spawn to exit: start-up, imports
and teardown count, as they do for a user.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass
class Measured:
    command: Sequence[str]
    returncode: int
    seconds: float
    rss_mb: float           # peak resident set, MB (10^6 bytes)
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-15:])
        return f"exit {self.returncode}: {tail}"


def run(command: Sequence[str], env: Mapping[str, str], *, cwd: str | None = None,
        timeout: float = 3600.0) -> Measured:
    """Runs `command` to its end; its output goes through files so a chatty child never blocks."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=out, stderr=err, env=dict(env), cwd=cwd)
        deadline = started + timeout
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    process.kill()
                    pid, status, usage = os.wait4(process.pid, 0)
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
        return Measured(command, process.returncode, seconds, usage.ru_maxrss * 1024 / 1e6,
                        out.read().decode(errors="replace"), err.read().decode(errors="replace"))
