"""Arrow's memory for runs: jemalloc with prompt page return, and no pandas behind pyarrow's back;
and at most two glibc malloc arenas.

pyarrow allocates through mimalloc by default, which keeps freed pages for reuse: the text
writers build and drop tens of MB of intermediate string arrays per batch, and mimalloc held
about 50 MB more at peak than jemalloc for the same CSV export of 1 M rows (same speed). Buffers
remember the pool they came from, so switching while others are alive is safe.

pyarrow imports pandas, when it is installed, the first time it converts a Python value
(`pa.array`, `pa.scalar`, a compute function's literal argument, `Schema.empty_table`), only to
ask whether the value is a pandas one: about 50 MB of RSS and 0.4 s, a quarter of a small run's
memory, for nothing an export uses (pandas is not a dependency of Filecast; a developer's venv
has it). Those imports come from pyarrow's C++ and Cython code; an `import pandas` statement in
Python code (a test, a notebook) still imports it, after which pyarrow uses it as before.

glibc gives each thread that allocates an arena of its own (up to 8 per core), and each keeps the
memory it freed: a run's encoder, upload, fingerprint and state threads held 10-13 MB more at the
peak of a 10 M-row delta run than with two arenas (`MALLOC_ARENA_MAX=2`, measured twice each), at
the same speed. A run sets that cap itself (`mallopt`), for the arenas created from then on.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import sys
import threading
from types import FrameType

import pyarrow as pa

log = logging.getLogger(__name__)
_done = threading.Event()


_M_ARENA_MAX = -8  # glibc's malloc.h
MALLOC_ARENAS = 2
_IMPORT_NAME = 108  # dis.opmap["IMPORT_NAME"], the same on Python 3.11 to 3.13


def _explicit(frame: FrameType | None) -> bool:
    """Whether the import was asked for by Python code: an `import` statement or `import_module`,
    rather than by C code (pyarrow's implicit check) with a Python caller that made some other call."""
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        frame = frame.f_back
    if frame is None:
        return True
    if frame.f_code is importlib.import_module.__code__:
        return True
    code = frame.f_code.co_code
    return 0 <= frame.f_lasti < len(code) and code[frame.f_lasti] == _IMPORT_NAME


class _ImplicitPandas:
    """A meta path finder refusing pandas to pyarrow's implicit checks; explicit imports pass."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" and not _explicit(sys._getframe(1)):
            raise ModuleNotFoundError(
                "pandas is not imported for pyarrow's implicit checks (core/write/arrow_memory.py)", name=name
            )


def use_lean_pool() -> None:
    """Make jemalloc (or, without it, the system allocator) pyarrow's default pool and keep pandas
    out of pyarrow's implicit checks; once per process."""
    if _done.is_set():
        return
    _done.set()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to cap
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _ImplicitPandas())
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        log.debug("pyarrow has no jemalloc here; using the system allocator")
        pa.set_memory_pool(pa.system_memory_pool())
