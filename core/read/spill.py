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
    """This process's spill folder, `<tmp>/filecast-duckdb-<pid>` (created when missing)."""
    global _folder
    with _lock:
        if _folder is None or not _folder.is_dir():
            folder = Path(tempfile.gettempdir()) / f"filecast-duckdb-{os.getpid()}"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if _folder is None:
                atexit.register(shutil.rmtree, folder, True)
            _folder = folder
        return _folder
