"""The Functions triggers: registered with the bindings DESIGN.md §3 names, called for real."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import yaml

from devtools.services import Azurite
from tests.helpers import call, functions, functions_catalog, http

FUNCTIONS = functions()


def bindings(name: str) -> list[dict[str, Any]]:
    return json.loads(FUNCTIONS[name].get_function_json())["bindings"]


def test_timer_queue_and_http_bindings() -> None:
    [timer] = bindings("scheduler")
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%SCHEDULER_CRON%"
    [queue] = bindings("runner")
    assert queue["type"] == "queueTrigger" and queue["queueName"] == "activation-runs"
    assert queue["connection"] == "AzureWebJobsStorage"
    routes: dict[tuple[str, str], str] = {}
    for name in FUNCTIONS:
        trigger = bindings(name)[0]
        if trigger["type"] == "httpTrigger":
            assert trigger["authLevel"] == "FUNCTION"
            routes[(trigger["methods"][0], trigger["route"])] = name
    assert sorted(routes) == sorted(
        [
            ("PUT", "catalog"),
            ("GET", "activations"),
            ("GET", "activations/{id}"),
            ("POST", "activations/{id}/run"),
            ("POST", "activations/{id}/preview"),
            ("POST", "activations/{id}/reset"),
            ("GET", "activations/{id}/runs"),
            ("GET", "runs/{run_id}"),
            ("GET", "console"),
            ("GET", "console/activations/{id}"),
            ("GET", "console/runs/{run_id}"),
        ]
    )
    for function in FUNCTIONS.values():  # what the host indexes
        assert function.get_dict_repr()["scriptFile"] == "function_app.py"
        assert [b["name"] for b in function.get_dict_repr()["bindings"]] == [
            b["name"] for b in bindings(str(function.get_function_name()))
        ]


def test_missing_activation_answers_404(storage: Azurite, demo_db: Path) -> None:
    status, body = http(
        "put_catalog", "PUT", "/api/catalog", body=yaml.safe_dump(functions_catalog(demo_db, storage)).encode()
    )
    assert (status, body) == (200, {"activations": ["small"]})
    status, body = http("get_activation", "GET", "/api/activations/nope", {"id": "nope"})
    assert status == 404
    assert body == {
        "error": {"code": "not_found", "message": "no activation `nope` in the catalog; activations are: small"}
    }
    status, body = http("run_activation", "POST", "/api/activations/nope/run", {"id": "nope"})
    assert status == 404
    status, body = http("get_run", "GET", "/api/runs/nope", {"run_id": "nope"})
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_invalid_catalog_answers_400_with_every_problem(storage: Azurite, demo_db: Path) -> None:
    doc = functions_catalog(demo_db, storage)
    doc["activations"]["small"]["format"] = "xlsx"
    doc["activations"]["small"]["destination"] = "nowhere"
    status, body = http("put_catalog", "PUT", "/api/catalog", body=json.dumps(doc).encode())
    assert status == 400
    assert [p["path"] for p in body["error"]["problems"]] == [
        "activations.small.destination",
        "activations.small.format",
    ]
    status, body = http("put_catalog", "PUT", "/api/catalog", body=b"{not json")
    assert status == 400 and "is not valid YAML or JSON" in body["error"]["message"]


def test_manual_run_through_the_queue(storage: Azurite, demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.storage.queue import QueueClient

    monkeypatch.setenv("FN_EXPORT_STORAGE", storage.connection_string)
    http("put_catalog", "PUT", "/api/catalog", body=yaml.safe_dump(functions_catalog(demo_db, storage)).encode())
    queue = QueueClient.from_connection_string(storage.connection_string, "activation-runs")
    queue.clear_messages() if _exists(queue) else None
    status, body = http("run_activation", "POST", "/api/activations/small/run", {"id": "small"})
    assert status == 202 and body["status"] == "queued"
    [message] = list(queue.receive_messages())
    payload = base64.b64decode(message.content)
    assert json.loads(payload)["run_id"] == body["run_id"]
    call("runner", func.QueueMessage(id=message.id, body=payload))
    status, record = http("get_run", "GET", f"/api/runs/{body['run_id']}", {"run_id": body["run_id"]})
    assert status == 200 and record["status"] == "succeeded", record
    assert record["rows"]["exported"] == 500
    assert record["files"][0]["path"] == f"small_{body['run_id']}.csv"
    status, history = http("list_runs", "GET", "/api/activations/small/runs", {"id": "small"})
    assert [r["run_id"] for r in history["runs"]] == [body["run_id"]]
    assert storage.connection_string not in json.dumps(record)


def _exists(queue: Any) -> bool:
    try:
        queue.get_queue_properties()
        return True
    except Exception:
        return False
