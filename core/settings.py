"""The only reader of the environment and of `local.settings.json`.

App settings come from the process environment, as the Functions host provides them; when a
`local.settings.json` with a `Values` map is found (current directory or FILECAST_LOCAL_SETTINGS),
its values fill in what the environment lacks, as `func start` does.

Settings Filecast reads itself:

| setting | default | meaning |
|---|---|---|
| `AzureWebJobsStorage` | - | connection string of the storage account for queue, tables, state |
| `AzureWebJobsStorage__accountName` | - | identity-based alternative (managed identity) |
| `AzureWebJobsStorage__blobServiceUri` | derived | identity endpoint, also `__queueServiceUri`, `__tableServiceUri` |
| `SCHEDULER_CRON` | `0 * * * * *` | NCRONTAB of the scheduler timer (read by the host binding) |
| `FILECAST_TABLE_PREFIX` | `filecast` | prefix of the catalog, runs, state and lease tables |
| `FILECAST_STATE_CONTAINER` | `filecast-state` | blob container for bulky delta state |
| `FILECAST_FTP_TIMEOUT` | `30` | seconds an FTP connection, command or transfer may stall (0 to 3600) |
| `FILECAST_SFTP_TIMEOUT` | `30` | seconds an SFTP connection or request may stall (0 to 3600) |

Secrets are named by catalog fields ending in `_setting`; `secret()` resolves them and never
echoes their value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import SettingError

RUNS_QUEUE = "activation-runs"  # the runner's queue trigger listens here (DESIGN.md §3)
DEFAULT_TABLE_PREFIX = "filecast"
DEFAULT_STATE_CONTAINER = "filecast-state"
STORAGE_SETTING = "AzureWebJobsStorage"


def _local_values() -> dict[str, str]:
    candidate = os.environ.get("FILECAST_LOCAL_SETTINGS") or "local.settings.json"
    path = Path(candidate)
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingError(f"cannot read `{path}`: {exc}; fix or remove the file") from exc
    values = doc.get("Values") or {}
    return {str(k): str(v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Settings:
    """A snapshot of the app settings; tests build one from a plain dict."""

    values: Mapping[str, str]

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        merged = dict(_local_values())
        merged.update(os.environ if environ is None else environ)
        return cls(merged)

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        return value if value not in (None, "") else default

    def secret(self, name: str, *, purpose: str) -> str:
        """Resolve the app setting `name`; the error names the setting, never a value."""
        value = self.get(name)
        if value is None:
            raise SettingError(
                f"app setting `{name}` ({purpose}) is not set; add it to the Function App's "
                "settings or to local.settings.json `Values`"
            )
        return value

    @property
    def table_prefix(self) -> str:
        return self.get("FILECAST_TABLE_PREFIX", DEFAULT_TABLE_PREFIX) or DEFAULT_TABLE_PREFIX

    @property
    def state_container(self) -> str:
        return self.get("FILECAST_STATE_CONTAINER", DEFAULT_STATE_CONTAINER) or DEFAULT_STATE_CONTAINER
