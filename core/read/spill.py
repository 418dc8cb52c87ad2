"""Where embedded engines spill what does not fit their memory cap.

DuckDB's default spill folder is `<database>.tmp` next to the database file, which is inside the
app folder: read-only when the Function App runs from a package, so a model query that needs to
spill (a sort, a large join) would fail there. Spills go to a folder of this process under the
system's temporary directory instead, created on first use and removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

_lock = threading.Lock()
_folder: Path | None = None


def temp_directory() -> Path:
    """This process's spill folder, `<tmp>/filecast-duckdb-<pid>-<random>`, mode 0700 (created
    again if removed)."""
    global _folder
    with _lock:
        if _folder is None or not _folder.is_dir():
            # Created, never adopted: a name someone else made first (shared /tmp) gets a fresh one.
            _folder = Path(tempfile.mkdtemp(prefix=f"filecast-duckdb-{os.getpid()}-"))
            atexit.register(shutil.rmtree, _folder, True)
        return _folder
