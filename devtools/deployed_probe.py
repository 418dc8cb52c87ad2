"""Runs inside the deployed virtualenv (see `devtools/deployed.py`): nothing here may come from
the dev requirements. Usage: `python deployed_probe.py APP_FOLDER ROWS`, with `AzureWebJobsStorage`
and `CHECK_EXPORT_STORAGE` pointing at Azurite."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

APP, ROWS = Path(sys.argv[1]).resolve(), int(sys.argv[2])
sys.path.insert(0, str(APP))  # as the Functions worker does with wwwroot

EXPECTED = {"scheduler": "timerTrigger", "runner": "queueTrigger", "poisoned": "queueTrigger"}
CATALOG = """
sources:
  warehouse: {type: duckdb, database: data/check.duckdb}
models:
  people: {source: warehouse, table: people, primary_key: [id]}
destinations:
  lake: {type: azure_blob, container: deployed, connection_setting: CHECK_EXPORT_STORAGE, create_container: true}
activations:
  people_csv:
    model: people
    destination: lake
    folder: checks
    file_name: people_{YYYY}{MM}{DD}
    format: csv
    run_type: full_then_delta
    sync_mode: upsert
"""


def fail(message: str) -> None:
    print(f"deployed probe: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    import azure.functions as func
    import duckdb

    data = APP / "data"
    data.mkdir(exist_ok=True)
    with duckdb.connect(str(data / "check.duckdb")) as con:
        con.execute(
            "create table people as select i as id, 'name ' || i as name, "
            f"cast((i % 7) * 0.25 as decimal(6, 2)) as score from range({ROWS}) t(i)"
        )
    (APP / "catalog.yaml").write_text(CATALOG, encoding="utf-8")

    import importlib
    import pkgutil

    import core

    modules = [m.name for m in pkgutil.walk_packages(core.__path__, "core.") if m.name != "core.__main__"]
    for name in modules:  # every module, lazily imported ones too (SFTP, OpenPGP, the console)
        importlib.import_module(name)
    print(f"   imported all {len(modules)} core modules with requirements.txt alone")

    import function_app

    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    triggers = {name: json.loads(f.get_function_json())["bindings"][0]["type"] for name, f in functions.items()}
    for name, kind in EXPECTED.items():
        if triggers.get(name) != kind:
            fail(f"function `{name}` is not indexed as a {kind}; indexed: {triggers}")
    http = sorted(name for name, kind in triggers.items() if kind == "httpTrigger")
    if len(http) < 8:
        fail(f"only {len(http)} HTTP functions indexed: {http}")
    print(f"   indexed {len(functions)} functions: {', '.join(sorted(functions))}")

    def call(name: str, method: str, route: dict[str, str], body: bytes = b"") -> tuple[int, dict[str, object]]:
        request = func.HttpRequest(
            method=method, url=f"http://localhost/api/{name}", headers={}, params={}, route_params=route, body=body
        )
        response = functions[name].get_user_function()(request)
        return response.status_code, json.loads(response.get_body())

    status, answer = call("put_catalog", "PUT", {}, CATALOG.encode())
    if status != 200:
        fail(f"PUT /api/catalog answered {status}: {answer}")
    status, answer = call("run_activation", "POST", {"id": "people_csv"})
    if status != 202:
        fail(f"POST /api/activations/people_csv/run answered {status}: {answer}")
    run_id = str(answer["run_id"])

    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient

    queue = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], "activation-runs")  # noqa: SIM112
    [message] = list(queue.receive_messages(max_messages=1))
    body = base64.b64decode(message.content)  # host.json messageEncoding: base64
    functions["runner"].get_user_function()(func.QueueMessage(id=message.id, body=body))
    queue.delete_message(message)

    status, record = call("get_run", "GET", {"run_id": run_id})
    if status != 200 or record.get("status") != "succeeded":
        fail(f"the run did not succeed: {record}")
    [file] = record["files"]  # type: ignore[misc]
    container = BlobServiceClient.from_connection_string(os.environ["CHECK_EXPORT_STORAGE"]).get_container_client(
        "deployed"
    )
    text = container.download_blob(file["path"]).readall().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    expected = [["id", "name", "score"]] + [[str(i), f"name {i}", f"{(i % 7) / 4:.2f}"] for i in range(ROWS)]
    if rows != expected:
        fail(f"the exported file differs from the source: first rows {rows[:3]}")
    print(f"   run {run_id}: {file['path']}, {file['rows']} rows, {file['bytes']} bytes, every value read back")

    done = subprocess.run(
        [sys.executable, "-m", "core", "validate", str(APP / "catalog.yaml")], cwd=APP, capture_output=True, text=True
    )
    if done.returncode != 0:
        fail(f"`python -m core validate` exited {done.returncode}: {done.stderr}")
    try:
        import pandas  # noqa: F401
    except ImportError:
        print("   pandas is not installed (pyarrow can't pull it in on an export path)")
    else:
        fail("pandas is installed in the deployed venv; only requirements.txt should be")


if __name__ == "__main__":
    main()
