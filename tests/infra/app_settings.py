"""The app settings the infrastructure templates must set: the single list tests/infra holds both
templates (infra/bicep, infra/terraform) and core/settings.py's documented settings against."""

from __future__ import annotations

# Every one of these is set by both templates. Destination secrets are not listed: their names are
# the user's (`password_setting`, `connection_setting`, ... in the catalog), and both templates take
# a map of app setting name -> Key Vault secret name for them (`keyVaultSecretSettings`,
# `key_vault_secret_settings`).
REQUIRED_APP_SETTINGS: frozenset[str] = frozenset(
    {
        # Identity-based host storage: the Functions host and Filecast's own clients both read these.
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__credential",
        "SCHEDULER_CRON",
        "FILECAST_TABLE_PREFIX",
        "FILECAST_STATE_CONTAINER",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        # The allowlist of settings a catalog may name, filled from the declared secrets' names.
        "FILECAST_ALLOWED_SETTINGS",
    }
)

# Settings core/settings.py documents that the templates deliberately do not set, and why. A
# setting documented there that is in neither this map nor REQUIRED_APP_SETTINGS fails the tests:
# the code grew a setting the templates lack.
NOT_SET_BY_TEMPLATES: dict[str, str] = {
    "AzureWebJobsStorage": (
        "a connection string carries the account key; the templates disable shared keys and use "
        "the identity-based AzureWebJobsStorage__accountName form instead"
    ),
    "AzureWebJobsStorage__blobServiceUri": (
        "derived from __accountName; explicit endpoints are for sovereign clouds or custom DNS, "
        "added by hand (infra/README.md)"
    ),
    "AzureWebJobsStorage__queueServiceUri": "same as AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__tableServiceUri": "same as AzureWebJobsStorage__blobServiceUri",
    "FILECAST_FTP_TIMEOUT": "optional: the 30 s default suits most servers; set it by hand for slow ones",
    "FILECAST_SFTP_TIMEOUT": "optional, as FILECAST_FTP_TIMEOUT",
    "FILECAST_AZURE_TIMEOUT": "optional: the 20 s default suits Azure; set it by hand for a slow network",
    "FILECAST_DELTA_MEMORY_ROWS": (
        "optional: the 2 M default keeps a delta run's diff under about 50 MB on any plan; set it by "
        "hand to trade memory for speed"
    ),
}
