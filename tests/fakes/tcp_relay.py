"""A TCP relay in front of a real server that can be told to hang: a database that accepts
connections and never answers, as a hung host or a stuck proxy does.

    with TcpRelay("127.0.0.1", pg_port) as relay:   # connect to relay.port instead
        relay.hang()      # bytes stop flowing both ways; new connections are accepted, then
                          # nothing (not even the server's greeting) comes back
        relay.resume()    # bytes flow again, on new connections and on those still open
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType
from typing import Self


class TcpRelay:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._hung = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0

    def hang(self) -> None:
        self._hung.set()

    def resume(self) -> None:
        self._hung.clear()

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                self._sockets.append(client)
            if self._hung.is_set():
                continue  # accepted, and never answered
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True,
                             name="relay-pipe").start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy both ways until either side ends; while hung, read and drop nothing: the
        bytes wait in the kernel's buffers, as they would in front of a hung server."""
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                if self._hung.is_set():
                    self._stop.wait(0.05)
                    continue
                for key, _ in selector.select(timeout=0.05):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
