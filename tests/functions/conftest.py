"""Fixtures the Functions tests share: the app's storage on Azurite, per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.services import Azurite


@pytest.fixture
def storage(azurite: Azurite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Azurite:
    """The app's own tables on Azurite, under a prefix of this test's."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("FILECAST_TABLE_PREFIX", "fn" + tmp_path.name.replace("_", "")[-10:].lower())
    monkeypatch.setenv("FILECAST_LOCAL_SETTINGS", "/nonexistent")
    return azurite


@pytest.fixture
def env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Tables, the run queue (emptied) and an export container (`OUT_STORAGE`) of this test's, on Azurite."""
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient

    import core.run.engine

    prefix = "t" + tmp_path.name.replace("_", "").lower()[-12:]
    container = prefix[:20] + "-out"
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("FILECAST_TABLE_PREFIX", prefix)
    monkeypatch.setenv("FILECAST_LOCAL_SETTINGS", "/nonexistent")
    monkeypatch.setenv("OUT_STORAGE", azurite.connection_string)
    monkeypatch.setattr(core.run.engine, "BACKOFF", 0.01)
    queue = QueueClient.from_connection_string(azurite.connection_string, "activation-runs")
    try:
        queue.create_queue()
    except Exception:
        queue.clear_messages()
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return {"azurite": azurite, "queue": queue, "container": container, "blobs": blobs}
