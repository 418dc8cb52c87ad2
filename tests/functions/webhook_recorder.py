"""A local HTTP server that records every request, standing in for Slack, Teams and webhooks.

`answers[path]` is a list of statuses to answer in turn (then 200), so a test can make a webhook
fail a few times or for good; `delays[path]` makes it hang before answering.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[str, list[int]] = {}
        self.delays: dict[str, float] = {}  # seconds to wait before answering, per path
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append(
                    {"path": self.path, "content_type": self.headers.get("Content-Type"), "body": json.loads(body)}
                )
                time.sleep(recorder.delays.get(self.path, 0))
                queue = recorder.answers.get(self.path) or []
                status = queue.pop(0) if queue else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[Any]:
        return [r["body"] for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
