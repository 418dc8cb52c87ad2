"""Filecast's own storage clients follow the Functions host's settings: a connection string, or the
identity-based `AzureWebJobsStorage__accountName` form with a managed identity (no key anywhere)."""

from __future__ import annotations

import pytest
from azure.identity import DefaultAzureCredential

from core.azure.clients import queue_service, state_store, table_service
from core.errors import SettingError
from core.settings import Settings


def test_identity_based_settings_use_endpoints_and_a_credential() -> None:
    settings = Settings({"AzureWebJobsStorage__accountName": "filecastprod"})
    tables, queues = table_service(settings), queue_service(settings)
    assert tables.url.startswith("https://filecastprod.table.core.windows.net")
    assert queues.url.startswith("https://filecastprod.queue.core.windows.net")
    assert isinstance(tables.credential, DefaultAzureCredential)
    store = state_store(Settings({"AzureWebJobsStorage__accountName": "filecastprod", "FILECAST_TABLE_PREFIX": "fc"}))
    try:
        assert store.table.table_name == "fcstate"
        assert store.container.url == "https://filecastprod.blob.core.windows.net/filecast-state"
    finally:
        store.close()


def test_explicit_service_uris_win() -> None:
    settings = Settings(
        {
            "AzureWebJobsStorage__accountName": "acct",
            "AzureWebJobsStorage__tableServiceUri": "https://tables.internal.example",
        }
    )
    assert table_service(settings).url.startswith("https://tables.internal.example")


def test_development_storage_means_local_azurite() -> None:
    tables = table_service(Settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}))
    assert tables.url.startswith("http://127.0.0.1:10002/devstoreaccount1")


def test_no_storage_setting_says_what_to_set() -> None:
    with pytest.raises(
        SettingError,
        match=r"app setting `AzureWebJobsStorage` is not set: give it a storage "
        r"connection string",
    ):
        table_service(Settings({}))
