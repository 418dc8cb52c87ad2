"""Helpers shared by the test tiers: catalogs on the fly, the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("FILECAST_QUICK_TESTS") == "1"  # `make test-unit`: the edit-test loop


def examples(full: int) -> int:
    """How many examples a property test tries: `full` (CI, `make test`), or a fifth of it, at least
    10, under FILECAST_QUICK_TESTS=1, which `make test-unit` sets to stay under a minute."""
    return max(10, full // 5) if QUICK else full


def write_catalog(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m core …` in a fresh process, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "FTP_", "EXPORT_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    full_env.setdefault("FILECAST_LOCAL_SETTINGS", os.devnull)
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd or REPO, timeout=600)


def run_record(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), f"no run record on stdout; stderr:\n{result.stderr}"
    return json.loads(result.stdout)
