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
| `FILECAST_ALLOWED_SETTINGS` | - | names or globs (`PARTNER_*`), comma-separated, that `*_setting` may name |
| `FILECAST_AZURE_TIMEOUT` | `20` | seconds an Azure Blob connection or read may stall (1 to 600) |
| `FILECAST_DELTA_MEMORY_ROWS` | `2000000` | largest delta state diffed in memory, larger ones on disk (0: always) |

Secrets are named by catalog fields ending in `_setting`; `secret()` resolves them and never
echoes their value. A catalog may never name the host's or the platform's own settings
(`RESERVED_SETTINGS`), and, when `FILECAST_ALLOWED_SETTINGS` is set, only the names it allows:
`setting_refusal` says why a name is refused, at validation and again at resolution.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .error_codes import ErrorCode
from .errors import SettingError

RUNS_QUEUE = "activation-runs"  # the runner's queue trigger listens here (DESIGN.md §3)
DEFAULT_TABLE_PREFIX = "filecast"
DEFAULT_STATE_CONTAINER = "filecast-state"
STORAGE_SETTING = "AzureWebJobsStorage"
ALLOWED_SETTINGS = "FILECAST_ALLOWED_SETTINGS"
# The Functions host's, App Service's, the Azure SDKs', the managed identity endpoint's and
# Filecast's own settings: a catalog writer is not trusted with them (compared case-insensitively,
# as Windows and App Service environments are).
RESERVED_SETTINGS = (
    "AzureWebJobs*",
    "APPLICATIONINSIGHTS_*",
    "APPINSIGHTS_*",
    "WEBSITE_*",
    "WEBSITES_*",
    "FUNCTIONS_*",
    "AZURE_*",
    "AZUREWEBJOBS*",
    "IDENTITY_*",
    "MSI_*",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "FILECAST_*",
    "SCHEDULER_CRON",
    "CONTAINER_*",
    "SCM_*",
    "DOTNET_*",
    "PYTHON*",
    "PATH",
    "HOME",
    "ENABLE_ORYX_BUILD",
    "MACHINEKEY_*",
    "ASPNETCORE_*",
)


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


def _patterns(text: str | None) -> list[str]:
    return [item.strip() for item in re.split(r"[,;\s]+", text or "") if item.strip()]


def setting_refusal(name: str, allowed: str | None) -> str | None:
    """Why a catalog may not name the app setting `name` (None when it may); `allowed` is the
    value of FILECAST_ALLOWED_SETTINGS: None (not set) allows any name that is not reserved, an
    empty value none at all."""
    upper = name.upper()
    for pattern in RESERVED_SETTINGS:
        if fnmatch.fnmatchcase(upper, pattern.upper()):
            return (
                f"`{name}` is one of the host's or Filecast's own settings (`{pattern}`), which a catalog "
                "may never name; store the secret in a setting of its own, e.g. `PARTNER_FTP_PASSWORD`"
            )
    patterns = _patterns(allowed)
    if allowed is not None and not patterns:
        return (
            f"`{name}` is not allowed: `{ALLOWED_SETTINGS}` is set and empty, so a catalog may name no "
            f"setting; add `{name}` to it (the templates fill it from keyVaultSecretSettings / "
            "key_vault_secret_settings)"
        )
    if patterns and not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
        return (
            f"`{name}` is not among the settings the operator allows (`{ALLOWED_SETTINGS}`: "
            f"{', '.join(patterns)}); add `{name}` to {ALLOWED_SETTINGS} (the templates fill it from "
            "keyVaultSecretSettings / key_vault_secret_settings)"
        )
    return None


def allowed_settings() -> str | None:
    """FILECAST_ALLOWED_SETTINGS as the app sees it, for validation outside a run."""
    return Settings.load().values.get(ALLOWED_SETTINGS)


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
        """Resolve the app setting `name`; the error names the setting, never a value. Refused
        names fail here too, whatever validated the catalog (defence in depth)."""
        refusal = setting_refusal(name, self.values.get(ALLOWED_SETTINGS))
        if refusal is not None:
            raise SettingError(
                f"app setting {refusal[:1].lower()}{refusal[1:]} ({purpose})", code=ErrorCode.REFUSED_SETTING
            )
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
