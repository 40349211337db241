"""An HTTP proxy in front of moto that throttles EC2 the way AWS does.

The first `throttle` EC2 requests get HTTP 503 with EC2's `RequestLimitExceeded` error;
everything after that (and every non-EC2 request) is forwarded to moto unchanged, and
recorded so a test can see what boto3 sent. Point boto3 at it with `AWS_ENDPOINT_URL_EC2`
(or `AWS_ENDPOINT_URL` for every service).
"""

from __future__ import annotations

import http.client
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler

from tests.fakes.local_server import LocalServer

THROTTLED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    b"<Message>Request limit exceeded.</Message></Error></Errors>"
    b"<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
)
# SigV4 scopes each request to a service: "Credential=.../<date>/<region>/<service>/aws4_request".
_SERVICE = re.compile(r"/([a-z0-9-]+)/aws4_request")
# Headers the proxy sets itself rather than copying from moto.
_NOT_COPIED = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


@dataclass(frozen=True)
class Relayed:
    """One request the proxy passed on: who sent it (the client's TCP port) and the answer."""

    service: str
    params: dict[str, list[str]]  # the form-encoded body (EC2's query API)
    client_port: int
    status: int = 0

    @property
    def action(self) -> str:
        return self.params.get("Action", [""])[0]


class ThrottlingProxy(LocalServer):
    """Run as a context manager; `url` is its base URL, `seen` every (service, body) it got."""

    def __init__(self, upstream: str, throttle: int,
                 before_forward: Callable[[Relayed], None] | None = None) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.throttle = throttle
        self.throttled = 0
        self.seen: list[tuple[str, bytes]] = []
        # Every request moto answered, with its status: appended once the answer is back.
        self.answered: list[Relayed] = []
        # Called (in the request's thread) just before a request goes on to moto.
        self.before_forward = before_forward
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def ec2_requests(self) -> int:
        return sum(1 for service, _ in self.seen if service == "ec2")

    def _should_throttle(self, headers: dict[str, str], body: bytes) -> bool:
        scope = _SERVICE.search(headers.get("authorization", ""))
        service = scope.group(1) if scope else ""
        with self._lock:
            self.seen.append((service, body))
            if service == "ec2" and self.throttled < self.throttle:
                self.throttled += 1
                return True
        return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._relay()

            def do_GET(self) -> None:
                self._relay()

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if proxy._should_throttle(headers, body):
                    self._answer(503, {"Content-Type": "text/xml"}, THROTTLED_BODY)
                    return
                scope = _SERVICE.search(headers.get("authorization", ""))
                relayed = Relayed(scope.group(1) if scope else "",
                                  urllib.parse.parse_qs(body.decode(errors="replace")),
                                  self.client_address[1])
                if proxy.before_forward is not None:
                    proxy.before_forward(relayed)
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=30
                )
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    reply = response.read()
                    with proxy._lock:
                        proxy.answered.append(replace(relayed, status=response.status))
                    kept = {k: v for k, v in response.getheaders()
                            if k.lower() not in _NOT_COPIED}
                    self._answer(response.status, kept, reply)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test asserts on counters instead

        return Handler
