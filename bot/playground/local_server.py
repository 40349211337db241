"""The lifecycle every local stand-in shares: a threaded HTTP server on a loopback port."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

_HANDSHAKE_TIMEOUT = 10.0
LOOPBACK = "127.0.0.1"  # never anything else: these servers trust whoever reaches them


class _TlsHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer speaking TLS; each handshake runs in the request's own thread.

    The listening socket stays plain: wrapping it would run every handshake in the accept
    loop, where one client that never speaks TLS would stall all the others.
    """

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        return self._context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(_HANDSHAKE_TIMEOUT)
            request.do_handshake()
            request.settimeout(None)
        except (ssl.SSLError, OSError):
            return  # not a TLS client, or one that gave up: nothing to serve
        super().finish_request(request, client_address)


class LocalServer:
    """Serve `handler` on 127.0.0.1 between `start()` and `stop()` (or as a context manager);
    `url` is its base URL. The port is bound at construction: `port`, or a free one.

    With `ssl_context` (a server-side context holding a certificate) it serves HTTPS and `url`
    starts with https://.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler], *,
                 ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self._scheme = "http" if ssl_context is None else "https"
        self._handler_class, self._ssl_context = handler, ssl_context
        self._server = self._bind(port)
        self._host, self._port = self._server.server_address[:2]
        self._thread = self._serving()

    def _bind(self, port: int) -> ThreadingHTTPServer:
        server = (ThreadingHTTPServer((LOOPBACK, port), self._handler_class)
                  if self._ssl_context is None else
                  _TlsHTTPServer((LOOPBACK, port), self._handler_class, self._ssl_context))
        server.daemon_threads = True
        return server

    def _serving(self) -> threading.Thread:
        return threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self._host!s}:{self._port}"

    @property
    def port(self) -> int:
        return int(self._port)

    def refuse_connections(self) -> None:
        """Stop listening: connections to `url` are refused until `accept_connections`."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def accept_connections(self) -> None:
        """Listen again, on the same port."""
        self._server = self._bind(self._port)
        self._thread = self._serving()
        self._thread.start()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        if self._thread.ident is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
