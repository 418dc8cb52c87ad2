"""`filecast console`: the console's pages served locally (http.server on 127.0.0.1) against the
configured storage (Azurite), with the same paths as the Function App, including the buttons'
`POST /api/activations/{id}/run` and `/preview`. No key is asked: it listens on loopback only.
"""

from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...error_codes import ErrorCode
from ...settings import Settings

log = logging.getLogger(__name__)

PAGES = [
    (re.compile(r"/api/console/?"), "index"),
    (re.compile(r"/api/console/activations/(?P<id>[^/]+)"), "activation"),
    (re.compile(r"/api/console/runs/(?P<run_id>[^/]+)"), "run"),
]
ACTIONS = [
    (re.compile(r"/api/activations/(?P<id>[^/]+)/run"), "run_activation"),
    (re.compile(r"/api/activations/(?P<id>[^/]+)/preview"), "preview_activation"),
]


def match(routes: list[tuple[re.Pattern[str], str]], path: str) -> tuple[str, dict[str, str]] | None:
    for pattern, name in routes:
        found = pattern.fullmatch(path)
        if found:
            return name, {k: unquote(v) for k, v in found.groupdict().items()}
    return None


class Handler(BaseHTTPRequestHandler):
    settings: Settings

    def _answer(self, status: int, body: str, content_type: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        from ..service import Services
        from .pages import render

        url = urlsplit(self.path)
        if url.path in ("", "/"):
            self.send_response(302)
            self.send_header("Location", "/api/console")
            self.end_headers()
            return
        found = match(PAGES, url.path)
        if found is None:
            self._answer(404, "not found: the console is at /api/console", "text/plain")
            return
        status, page, headers = render(Services(self.settings), found[0], found[1], dict(parse_qsl(url.query)))
        self._answer(status, page, "text/html", headers)

    def do_POST(self) -> None:
        from .. import api

        found = match(ACTIONS, urlsplit(self.path).path)
        if found is None:
            self._answer(
                404,
                api.dumps({"error": {"code": ErrorCode.NOT_FOUND.value, "message": "no such API route"}}),
                "application/json",
            )
            return
        length = int(self.headers.get("Content-Length") or 0)
        status, body = api.handle(self.settings, found[0], found[1], self.rfile.read(length))
        self._answer(status, api.dumps(body), "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries `?code=` when a link was opened with a key: log the path alone.
        log.info("%s %s %s", self.command, urlsplit(self.path).path, args[1] if len(args) > 1 else "")


def server(settings: Settings, port: int, host: str = "127.0.0.1", *, run_queued: bool = False) -> ThreadingHTTPServer:
    """A console server bound to `host:port` (port 0 = a free one); call serve_forever() on it. With
    `run_queued`, a daemon thread also runs what the buttons queue (`run_queued_forever`)."""
    handler = type("ConsoleHandler", (Handler,), {"settings": settings})
    httpd = ThreadingHTTPServer((host, port), handler)
    if run_queued:
        threading.Thread(target=run_queued_forever, args=(settings,), daemon=True).start()
    return httpd


def drain_queue(settings: Settings) -> int:
    """Run the messages waiting on the runs queue, as the Functions runner would; how many ended.

    For `console --run-queued` without Core Tools: a transient failure leaves its message for a later
    pass, and after MAX_DEQUEUE deliveries the run is given up as the poison trigger does."""
    import asyncio
    import base64

    from ...azure.clients import queue_service
    from ...errors import RunInProgress
    from ...settings import RUNS_QUEUE
    from ..service import MAX_DEQUEUE, handle_run_message, mark_poisoned

    queue = queue_service(settings).get_queue_client(RUNS_QUEUE)
    ended = 0
    for message in queue.receive_messages(messages_per_page=8, visibility_timeout=600):
        body = base64.b64decode(message.content).decode("utf-8")
        try:
            result = asyncio.run(handle_run_message(settings, body, dequeue_count=message.dequeue_count))
            retry = result is not None and result.transient
        except RunInProgress:
            retry = True
        except Exception as exc:  # the host retries a runner that raised, then gives the message up
            log.warning("queued run failed to start: %s", getattr(exc, "message", type(exc).__name__))
            retry = True
        if retry and message.dequeue_count < MAX_DEQUEUE:
            queue.update_message(message, visibility_timeout=10)
            continue
        if retry:
            mark_poisoned(settings, body)
        queue.delete_message(message)
        ended += 1
    return ended


def run_queued_forever(settings: Settings, interval: float = 2.0) -> None:
    """`drain_queue` every `interval` seconds (a daemon thread of `console --run-queued`)."""
    import time

    while True:
        try:
            drain_queue(settings)
        except Exception as exc:  # keep serving pages: the next pass tries again
            log.warning("queued runs: %s", getattr(exc, "message", type(exc).__name__))
        time.sleep(interval)
