"""A server that accepts requests and answers only when released: a cloud that hangs."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler

from tests.fakes.local_server import LocalServer


class HangingServer(LocalServer):
    """Every request waits until `release()` (or `timeout`), then gets a 503."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.released = threading.Event()
        self.requests = 0
        release, timeout_s, server = self.released, timeout, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                release.wait(timeout_s)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    def release(self) -> None:
        self.released.set()
