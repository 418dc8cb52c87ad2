"""`filecast console`: the console's pages served locally (http.server on 127.0.0.1) against the
configured storage (Azurite), with the same paths as the Function App, including the buttons'
`POST /api/activations/{id}/run` and `/preview`. No key is asked: it listens on loopback only.
"""

from __future__ import annotations

import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .settings import Settings

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
        from .console import render
        from .service import Services

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
        from . import api

        found = match(ACTIONS, urlsplit(self.path).path)
        if found is None:
            self._answer(404, api.dumps({"error": {"code": "not_found", "message": "no such API route"}}),
                         "application/json")
            return
        length = int(self.headers.get("Content-Length") or 0)
        status, body = api.handle(self.settings, found[0], found[1], self.rfile.read(length))
        self._answer(status, api.dumps(body), "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries `?code=` when a link was opened with a key: log the path alone.
        log.info("%s %s %s", self.command, urlsplit(self.path).path, args[1] if len(args) > 1 else "")


def server(settings: Settings, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A console server bound to `host:port` (port 0 = a free one); call serve_forever() on it."""
    handler = type("ConsoleHandler", (Handler,), {"settings": settings})
    return ThreadingHTTPServer((host, port), handler)
