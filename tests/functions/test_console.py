"""The console's routes as the Functions host calls them: HTML, a nonce-only Content-Security-Policy,
the function key carried by every link, every catalog and record value escaped, 404 pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import yaml

from core.control.service import Services
from core.run.records import RunRecord
from core.settings import Settings
from devtools.services import Azurite
from tests.helpers import call, functions_catalog, http

EVIL = '<script>alert("x")</script>'


def page(name: str, route: dict[str, str] | None = None, params: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest(
        method="GET", url="/api/console", headers={}, params=params or {}, route_params=route or {}, body=b""
    )
    response: func.HttpResponse = call(name, request)
    assert response.mimetype == "text/html" and response.charset == "utf-8"
    return response


def test_pages_escape_everything_and_carry_the_key(storage: Azurite, demo_db: Path) -> None:
    assert page("console").status_code == 404  # no catalog yet
    assert "no catalog has been applied yet" in page("console").get_body().decode()
    http("put_catalog", "PUT", "/api/catalog", body=yaml.safe_dump(functions_catalog(demo_db, storage)).encode())
    record = RunRecord(
        "r-1",
        "small",
        "manual",
        datetime(2025, 4, 14, 6, tzinfo=UTC),
        status="failed",
        files=[{"path": f"a/{EVIL}.csv", "rows": 2, "bytes": 10, "md5": "0" * 32}],
        error={"code": "x", "message": f"bad {EVIL}"},
    )
    record.warn("row_drop", f"dropped {EVIL}")
    Services(Settings.load()).runs.save(record)
    key = 'k3y"><b>'
    for name, route in (("console", {}), ("console_activation", {"id": "small"}), ("console_run", {"run_id": "r-1"})):
        response = page(name, route, {"code": key})
        html = response.get_body().decode()
        assert response.status_code == 200
        [nonce] = set(re.findall(r'nonce="([^"]+)"', html))
        assert response.headers["Content-Security-Policy"].startswith(
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'"
        )
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "<script" not in html.replace(f'<script nonce="{nonce}">', "")  # one script: the console's own
        assert "<b>" not in html and "http" not in html.replace('"http://www.w3.org', "")  # no external asset
        hrefs = re.findall(r'href="([^"]+)"', html)
        assert hrefs and all(h.endswith("?code=k3y%22%3E%3Cb%3E") for h in hrefs), hrefs
    run_page = page("console_run", {"run_id": "r-1"}).get_body().decode()
    for text in (f"a/{EVIL}.csv", f"bad {EVIL}", f"dropped {EVIL}"):
        escaped = text.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        assert escaped in run_page
    assert page("console_activation", {"id": "nope"}).status_code == 404
    missing = page("console_run", {"run_id": "nope"})
    assert missing.status_code == 404 and "no run `nope`" in missing.get_body().decode()


def test_next_due_follows_the_schedule() -> None:
    from core.control.console.pages import next_due

    assert next_due("0 6 * * *", datetime(2025, 4, 14, 6, 0, tzinfo=UTC)) == datetime(2025, 4, 15, 6, tzinfo=UTC)
    assert next_due("@hourly", datetime(2025, 4, 14, 6, 30, tzinfo=UTC)) == datetime(2025, 4, 14, 7, tzinfo=UTC)
    assert next_due(None, datetime.now(UTC)) is None


def test_console_run_queued_runs_what_the_buttons_queue(storage: Azurite, demo_db: Path, monkeypatch: Any) -> None:
    from azure.storage.queue import QueueClient

    from core.control.console.server import drain_queue

    monkeypatch.setenv("FN_EXPORT_STORAGE", storage.connection_string)
    queue = QueueClient.from_connection_string(storage.connection_string, "activation-runs")
    try:
        queue.create_queue()
    except Exception:
        queue.clear_messages()
    http("put_catalog", "PUT", "/api/catalog", body=yaml.safe_dump(functions_catalog(demo_db, storage)).encode())
    status, body = http("run_activation", "POST", "/api/activations/small/run", {"id": "small"})
    assert status == 202
    assert drain_queue(Settings.load()) == 1
    status, record = http("get_run", "GET", "/x", {"run_id": body["run_id"]})
    assert record["status"] == "succeeded" and record["rows"]["exported"] == 500
    assert list(queue.peek_messages()) == [] and drain_queue(Settings.load()) == 0
