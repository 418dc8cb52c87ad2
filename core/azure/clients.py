"""Clients for Filecast's own storage account (AzureWebJobsStorage): tables, queue, blobs.

Either a connection string (`AzureWebJobsStorage`, Azurite locally) or the identity-based form
the Functions host uses (`AzureWebJobsStorage__accountName` or `__tableServiceUri`…), with
`DefaultAzureCredential` (a managed identity in Azure).
"""

from __future__ import annotations

from typing import Any

from ..errors import SettingError
from ..settings import STORAGE_SETTING, Settings


def _endpoint(settings: Settings, service: str) -> str | None:
    explicit = settings.get(f"{STORAGE_SETTING}__{service}ServiceUri")
    if explicit:
        return explicit
    account = settings.get(f"{STORAGE_SETTING}__accountName")
    return f"https://{account}.{service}.core.windows.net" if account else None


def _credential(settings: Settings) -> Any:
    from azure.identity import DefaultAzureCredential

    client_id = settings.get(f"{STORAGE_SETTING}__clientId")
    return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()


def _missing() -> SettingError:
    return SettingError(
        f"app setting `{STORAGE_SETTING}` is not set: give it a storage connection string "
        f"(`UseDevelopmentStorage=true` for Azurite), or set `{STORAGE_SETTING}__accountName` to use a managed "
        "identity"
    )


def connection_string(settings: Settings) -> str | None:
    value = settings.get(STORAGE_SETTING)
    if value == "UseDevelopmentStorage=true":
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
        )
    return value


def _service(settings: Settings, service: str, client_class: Any) -> Any:
    """A service client from the connection string, else from the endpoint and a managed identity."""
    conn = connection_string(settings)
    if conn:
        return client_class.from_connection_string(conn)
    endpoint = _endpoint(settings, service)
    if endpoint is None:
        raise _missing()
    return client_class(endpoint, credential=_credential(settings))


def table_service(settings: Settings) -> Any:
    from azure.data.tables import TableServiceClient

    return _service(settings, "table", TableServiceClient)


def queue_service(settings: Settings) -> Any:
    from azure.storage.queue import QueueServiceClient

    return _service(settings, "queue", QueueServiceClient)


def state_store(settings: Settings) -> Any:
    """The row-hash state store: a table and a blob container in Filecast's own storage account."""
    from ..state.table_storage import TableStorageStateStore

    table_name, container_name = f"{settings.table_prefix}state", settings.state_container
    conn = connection_string(settings)
    if conn:
        return TableStorageStateStore.from_connection_string(conn, table_name=table_name, container_name=container_name)
    table, blob = _endpoint(settings, "table"), _endpoint(settings, "blob")
    if table is None or blob is None:
        raise _missing()
    return TableStorageStateStore.from_account(
        table, blob, _credential(settings), table_name=table_name, container_name=container_name
    )
