"""Streaming OpenPGP encryption of one file: Sequoia-PGP in a helper process (issue 18).

`pysequoia` encrypts a whole buffer, or a file to a file while holding the GIL, so in-process
streaming is impossible: each file is encrypted by a helper process running
`pysequoia.encrypt_file` from its stdin to its stdout (`Stage`). The helper holds its own GIL on
the second core; the engine's thread writes the gzip output into the pipe and gets the encrypted
bytes back a MiB at a time, so memory stays bounded and no file is on disk in clear. Keys and
passphrases reach the helper on its stdin, never in its arguments or environment. ASCII armour is
added here (`_Armor`) around Sequoia's binary output.
"""

from __future__ import annotations

import binascii
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import EncryptionError, EncryptionInterrupted

if TYPE_CHECKING:
    from .encryption import Keys

READ = 1024 * 1024

_CHILD = r"""
import json, os, sys
def read(n):
    data = b""
    while len(data) < n:
        more = os.read(0, n - len(data))
        if not more:
            sys.exit(3)
        data += more
    return data
config = json.loads(read(int.from_bytes(read(8), "big")))
sys.path[:0] = config["path"]
try:
    import pysequoia
    certs = [pysequoia.Cert.from_bytes(text.encode()) for text in config["recipients"]]
    signer = None
    if config["signing_key"]:
        signer = pysequoia.Tsk.from_bytes(config["signing_key"].encode()).signer(config["passphrase"])
    del config
    pysequoia.encrypt_file("/dev/stdin", "/dev/stdout", certs, signer, armor=False)
except BaseException as exc:
    sys.stderr.write(type(exc).__name__ + ": " + (str(exc).splitlines() or [""])[0][:300])
    sys.exit(1)
"""


def _kill(process: subprocess.Popen[bytes], writer: ThreadPoolExecutor) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    writer.shutdown(wait=False)


class Stage:
    """One file's encryption: `update(data)` yields the encrypted bytes ready so far, `finish()`
    returns the rest. A writer thread feeds the helper one batch while the engine encodes the next
    (os.write releases the GIL), so the helper's work overlaps the export's instead of adding to it;
    a reader thread drains the helper's stdout so neither side can block the other. Held: the batch
    being written, and what the helper produced since the last call (about one batch)."""

    def __init__(self, keys: Keys):
        self.armor = _Armor() if keys.encryption.armor else None
        # Not the parent's environment: app settings, secrets among them, are environment variables.
        env: Mapping[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RUST_BACKTRACE": "0",
            **{k: os.environ[k] for k in ("LD_LIBRARY_PATH",) if k in os.environ},
        }
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-E", "-S", "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                bufsize=0,
            )
        except OSError as exc:
            raise EncryptionError(f"cannot start the OpenPGP helper process ({exc.strerror or exc})") from None
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filecast-pgp-in")
        self.pending: Future[None] | None = None
        self._finalizer = weakref.finalize(self, _kill, self.process, self.writer)
        for pipe in (self.process.stdin, self.process.stdout):  # fewer, larger reads and writes
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, READ)  # type: ignore[union-attr]
        self.ready: deque[bytes] = deque()
        self.lock = threading.Lock()
        self.errors = b""
        self.reader = threading.Thread(target=self._drain, name="filecast-pgp-out", daemon=True)
        self.reader.start()
        self.error_reader = threading.Thread(target=self._drain_errors, name="filecast-pgp-err", daemon=True)
        self.error_reader.start()
        header = json.dumps(
            {
                "path": [p for p in sys.path if p],
                "recipients": list(keys.recipients),
                "signing_key": keys.signing_key,
                "passphrase": keys.passphrase,
            }
        ).encode()
        self.pending = self.writer.submit(self._write, len(header).to_bytes(8, "big") + header)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, READ):
            with self.lock:
                self.ready.append(chunk)

    def _drain_errors(self) -> None:
        assert self.process.stderr is not None
        self.errors = self.process.stderr.read(4096)

    def _take(self) -> list[bytes]:
        with self.lock:
            chunks = list(self.ready)
            self.ready.clear()
        if self.armor is not None:
            chunks = [self.armor.update(chunk) for chunk in chunks]
        return chunks

    def _write(self, data: bytes) -> None:
        """Writer thread: the whole of `data` into the helper's stdin."""
        assert self.process.stdin is not None
        fd, view = self.process.stdin.fileno(), memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _wait(self) -> None:
        """Until the previous batch is in the pipe: one batch in flight bounds the memory."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        try:
            pending.result()
        except BrokenPipeError:
            self._fail()

    def _fail(self) -> None:
        self.process.wait()
        self.error_reader.join()
        code = self.process.returncode
        detail = self.errors.decode("utf-8", "replace").strip() or (
            f"the helper process was killed by signal {-code}" if code < 0 else f"the helper exited with status {code}"
        )
        # The keys were checked before the run: a failing helper is the machine's (killed, out of
        # memory), so the run is retried.
        raise EncryptionInterrupted(f"OpenPGP encryption failed: {detail}")

    def update(self, data: bytes) -> Iterator[bytes]:
        """Hand `data` to the writer thread and yield what the helper has produced so far, in the
        chunks it was read in (a MiB at most)."""
        self._wait()
        if data:
            self.pending = self.writer.submit(self._write, data)
        yield from self._take()

    def finish(self) -> bytes:
        assert self.process.stdin is not None
        self._wait()
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self.reader.join()
        if self.process.wait() != 0:
            self._fail()
        self._finalizer.detach()
        self.writer.shutdown()
        rest = b"".join(self._take())
        return rest + self.armor.update(b"") + self.armor.finish() if self.armor is not None else rest


class _Armor:
    """ASCII armour (RFC 4880 §6.2) of the helper's binary output: base64 in 64-column lines and
    the CRC-24 line GnuPG 2.2 requires. Done here, with binascii and anycrc's CLMUL CRC, because
    Sequoia's armour writer ran at about 20 MB/s (this at about 100 MB/s)."""

    LINE = 48  # bytes per 64-character line
    SLICE = LINE * 16384

    def __init__(self) -> None:
        import anycrc

        self.model = anycrc.Model("CRC24-OPENPGP")
        self.crc: int | None = None
        self.rest = b""
        self.started = False

    @staticmethod
    def _lines(data: bytes | memoryview) -> bytes:
        import numpy as np

        encoded = binascii.b2a_base64(data, newline=False)
        whole = len(encoded) // 64
        lines = np.empty((whole, 65), np.uint8)  # 64 characters and a newline, without a bytes object a line
        lines[:, :64] = np.frombuffer(encoded, np.uint8, whole * 64).reshape(whole, 64)
        lines[:, 64] = 10
        rest = encoded[whole * 64 :]
        return lines.tobytes() + (rest + b"\n" if rest else b"")

    def update(self, data: bytes) -> bytes:
        """Armour of `data`, whole lines only; base64 runs on slices of 768 KiB, so no copy of
        the whole batch is made but the result."""
        out = [] if self.started else [b"-----BEGIN PGP MESSAGE-----\n\n"]
        self.started = True
        if data:
            self.crc = self.model.calc(data) if self.crc is None else self.model.calc(data, self.crc)
        view, at = memoryview(data), 0
        if self.rest:
            at = min(self.LINE - len(self.rest), len(data))
            self.rest += bytes(view[:at])
            if len(self.rest) < self.LINE:
                return b"".join(out)
            out.append(self._lines(self.rest))
        whole = at + (len(data) - at) // self.LINE * self.LINE
        for start in range(at, whole, self.SLICE):
            out.append(self._lines(view[start : min(start + self.SLICE, whole)]))
        self.rest = bytes(view[whole:])
        return b"".join(out)

    def finish(self) -> bytes:
        crc = (self.crc if self.crc is not None else self.model.calc(b"")).to_bytes(3, "big")
        return (
            self._lines(self.rest) + b"=" + binascii.b2a_base64(crc, newline=False) + b"\n-----END PGP MESSAGE-----\n"
        )
