"""A local stand-in for Slack's Socket Mode: WebSocket over TLS on 127.0.0.1:443.

    with SocketModeServer() as server, SlackWithSocketMode(server) as slack:
        # the bot calls apps.connections.open on `slack.api_url` with its xapp- token and
        # connects to the wss://localhost/link/?ticket=... URL it gets back
        connection = server.wait_for_connections(1)[-1]
        envelope = server.send("slash_commands", slash_command("U0ALICE", "help"))
        ack = server.wait_for_ack(envelope)

Like Slack it greets every connection with `hello` (`num_connections`, `debug_info`,
`connection_info.app_id`), pings it, delivers envelopes (`slash_commands`, `interactive`) and
records the acks (`{"envelope_id": ...}`) that come back on any connection. A test can send
`disconnect` (`warning`, `refresh_requested`), close a connection with a close frame, drop
it the way a load balancer or a network change does (a FIN without a close frame, or an RST),
or freeze it: nothing more is read, answered or sent, as on a link that went dead silently.
Each ticket opens one connection: a client that reconnects with an old URL is refused (HTTP
401) and shows up in `refused`.

It is a minimal RFC 6455 server on the standard library. Each connection has one thread that
does all its socket I/O (an SSL object must not be read and written from two threads at once,
and an RST is only sent once no thread is blocked in the socket); the test's calls queue work
for that thread and wait until it is done.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import queue
import secrets
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

import trustme

from tests.fakes.slack_api import SlackApiFake, SlackError

Json = dict[str, Any]
Drop = Literal["fin", "rst"]
DisconnectReason = Literal["warning", "refresh_requested", "link_disabled"]

_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY = 0x0, 0x1, 0x2
_OP_CLOSE, _OP_PING, _OP_PONG = 0x8, 0x9, 0xA
_MAX_REQUEST_HEAD = 16_384
_IO_TIMEOUT = 2.0  # a peer that stops reading must not hang a test forever
_ACTION_TIMEOUT = 5.0


@dataclass(frozen=True)
class Ack:
    """An acknowledgement the fake received; `at` is `time.monotonic()` on arrival."""

    envelope_id: str
    payload: Json | None
    connection: int
    at: float


@dataclass(frozen=True)
class Sent:
    """An envelope the fake delivered."""

    envelope_id: str
    type: str
    payload: Json
    connection: int
    at: float


def slash_command(user: str, text: str, *, command: str = "/jit", team_id: str = "T0JITTEST",
                  channel_id: str = "C0GENERAL", app_id: str = "A0JITAPP",
                  response_url: str = "https://hooks.slack.com/commands/T0JITTEST/1/x") -> Json:
    """A slash command payload, with the fields of Slack's SlashCommandPayload sample."""
    return {
        "token": "unused", "api_app_id": app_id, "team_id": team_id, "team_domain": "jit-test",
        "channel_id": channel_id, "channel_name": "general", "user_id": user,
        "user_name": user.lower(), "command": command, "text": text,
        "response_url": response_url, "is_enterprise_install": "false",
        "trigger_id": f"{secrets.randbelow(10**10)}.738474920.8088930838d88f008e0",
    }


def block_action(user: str, action_id: str, value: str, *, block_id: str, channel_id: str,
                 message_ts: str, team_id: str = "T0JITTEST", app_id: str = "A0JITAPP",
                 response_url: str = "https://hooks.slack.com/actions/T0JITTEST/1/x") -> Json:
    """A block_actions payload for a button click on a message, shaped like Slack's
    BlockActionPayload sample."""
    return {
        "type": "block_actions", "api_app_id": app_id, "token": "unused",
        "team": {"id": team_id, "domain": "jit-test"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                      "is_ephemeral": False},
        "trigger_id": f"{secrets.randbelow(10**10)}.738474920.8088930838d88f008e0",
        "channel": {"id": channel_id, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "", "user": "U0JITBOT"},
        "response_url": response_url, "state": {"values": {}}, "is_enterprise_install": False,
        "actions": [{"type": "button", "action_id": action_id, "block_id": block_id,
                     "value": value, "action_ts": f"{time.time():.6f}",
                     "text": {"type": "plain_text", "text": action_id, "emoji": True}}],
    }


def _frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented frame (servers never mask)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _parse_frame(buffer: bytearray) -> tuple[bool, int, bytes] | None:
    """Take one complete frame off the front of `buffer`: (fin, opcode, unmasked payload)."""
    if len(buffer) < 2:
        return None
    fin, opcode = bool(buffer[0] & 0x80), buffer[0] & 0x0F
    masked, size = bool(buffer[1] & 0x80), buffer[1] & 0x7F
    offset = 2
    if size == 126:
        if len(buffer) < 4:
            return None
        size, offset = struct.unpack_from("!H", buffer, 2)[0], 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        size, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
    mask = b""
    if masked:
        if len(buffer) < offset + 4:
            return None
        mask, offset = bytes(buffer[offset:offset + 4]), offset + 4
    if len(buffer) < offset + size:
        return None
    payload = bytes(buffer[offset:offset + size])
    del buffer[:offset + size]
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return fin, opcode, payload


class Connection:
    """One Socket Mode connection; every socket operation runs on its own thread."""

    def __init__(self, server: SocketModeServer, number: int, sock: ssl.SSLSocket,
                 ticket: str) -> None:
        self.number = number
        self.ticket = ticket
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.ended_by: str | None = None  # "client close", "client EOF", "fin", "rst", ...
        self.pongs: list[float] = []
        self.pings_sent = 0
        self.closed = threading.Event()
        self._server = server
        self._sock = sock
        self._actions: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._next_ping = time.monotonic() + server.ping_interval
        self._frozen = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"socket-mode-fake-{number}")

    def __repr__(self) -> str:
        state = f"ended by {self.ended_by}" if self.closed.is_set() else "open"
        return f"<Connection {self.number} {state}>"

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    def start(self) -> None:
        self._thread.start()

    # -- what a test asks for; each waits until the connection's thread has done it ---------

    def send_json(self, message: Json) -> None:
        data = json.dumps(message).encode()
        self._do(lambda: self._write(_OP_TEXT, data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """A clean close: a close frame, then the TCP connection ends."""
        body = struct.pack("!H", code) + reason.encode()
        self._do(lambda: self._close_cleanly(body))

    def freeze(self) -> None:
        """Stop reading, pinging and answering pings; `drop` or `close` still end it."""
        self._do(lambda: setattr(self, "_frozen", True))

    def drop(self, how: Drop) -> None:
        """End the TCP connection without a close frame (or a TLS close_notify): "fin" shuts
        it down, "rst" resets it (SO_LINGER 0)."""
        self._do(lambda: self._drop(how))
        if not self.closed.wait(_ACTION_TIMEOUT):
            raise AssertionError(f"{self!r} did not drop")

    # -- the connection's thread ----------------------------------------------------------

    def _do(self, action: Callable[[], None]) -> None:
        if not self.is_open:
            raise AssertionError(f"{self!r} is closed")
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                action()
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                done.set()

        self._actions.put(run)
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        if not done.wait(_ACTION_TIMEOUT):
            raise AssertionError(f"{self!r} did not carry out the action in time")
        if failure:
            raise AssertionError(f"{self!r}: {failure[0]!r}") from failure[0]

    def _run(self) -> None:
        try:
            self._server._hello(self)
            while self.is_open:
                self._run_actions()
                if not self.is_open:
                    break
                now = time.monotonic()
                if self._frozen:  # only the test's actions wake it
                    select.select([self._wake_reader], [], [])
                    self._wake_reader.recv(4096)
                    continue
                if now >= self._next_ping:
                    self._ping()
                if self._sock.pending() == 0:  # TLS may hold decrypted bytes select cannot see
                    ready, _, _ = select.select([self._sock, self._wake_reader], [], [],
                                                max(0.0, self._next_ping - now))
                    if self._wake_reader in ready:
                        self._wake_reader.recv(4096)
                    if self._sock not in ready:
                        continue
                try:
                    data = self._sock.recv(65536)
                except (ssl.SSLWantReadError, TimeoutError):
                    continue
                except OSError as exc:
                    self._end(f"client {type(exc).__name__}")
                    break
                if not data:
                    self._end("client EOF")
                    break
                self._buffer += data
                self._read_frames()
        except OSError as exc:
            self._end(f"error {exc!r}")
        finally:
            self._end("server shutdown")
            self._run_actions()  # so nobody waits on work queued as the connection ended
            self._wake_reader.close()
            self._wake_writer.close()

    def _run_actions(self) -> None:
        while True:
            try:
                action = self._actions.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                action()

    def _read_frames(self) -> None:
        while self.is_open and (parsed := _parse_frame(self._buffer)) is not None:
            fin, opcode, payload = parsed
            if opcode == _OP_PING:
                self._write(_OP_PONG, payload)
            elif opcode == _OP_PONG:
                self.pongs.append(time.monotonic())
            elif opcode == _OP_CLOSE:
                with contextlib.suppress(OSError):
                    self._write(_OP_CLOSE, payload[:2])
                self._end("client close")
            elif opcode in (_OP_TEXT, _OP_BINARY, _OP_CONTINUATION):
                self._fragments.append(payload)
                if fin:
                    message, self._fragments = b"".join(self._fragments), []
                    self._server._received(self, message)

    def _write(self, opcode: int, payload: bytes) -> None:
        self._sock.sendall(_frame(opcode, payload))

    def _ping(self) -> None:
        self.pings_sent += 1
        self._next_ping = time.monotonic() + self._server.ping_interval
        self._write(_OP_PING, f"ping-{self.pings_sent}".encode())

    def _close_cleanly(self, body: bytes) -> None:
        self._write(_OP_CLOSE, body)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._end("server close")

    def _drop(self, how: Drop) -> None:
        if how == "rst":
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self._sock.shutdown(socket.SHUT_RDWR)  # SSLSocket.shutdown sends no close_notify
        self._end(how)

    def _end(self, why: str) -> None:
        if self.closed.is_set():
            return
        self.ended_by = why
        self.closed_at = time.monotonic()
        with contextlib.suppress(OSError):
            self._sock.close()
        self.closed.set()


class SocketModeServer:
    """Slack's Socket Mode endpoint on 127.0.0.1 (port 443 by default, as Slack's)."""

    def __init__(self, *, app_id: str = "A0JITAPP", port: int = 443,
                 ping_interval: float = 5.0) -> None:
        self.app_id = app_id
        self.port = port
        self.ping_interval = ping_interval
        self.ca = trustme.CA()
        self._certificate = self.ca.issue_cert("localhost", "127.0.0.1")
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._certificate.configure_cert(self._context)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tickets: dict[str, bool] = {}  # ticket -> used
        self._connections: list[Connection] = []
        self._sent: list[Sent] = []
        self._acks: list[Ack] = []
        self._other_messages: list[tuple[int, str]] = []
        self.refused: list[str] = []  # the request lines of upgrades refused
        self._numbers = itertools.count(1)
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="socket-mode-fake-accept")

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        self._accept_thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopping.set()
        self._accept_thread.join()
        if self._listener is not None:
            self._listener.close()
        for connection in self.connections:
            if connection.is_open:
                with contextlib.suppress(AssertionError):
                    connection.drop("fin")

    def write_ca(self, path: Path) -> Path:
        """Write the CA that signed the server's certificate (PEM) to `path`."""
        self.ca.cert_pem.write_to_path(str(path))
        return path

    # -- what apps.connections.open hands out ---------------------------------------------

    def new_url(self) -> str:
        """A fresh wss URL with a ticket good for one connection."""
        ticket = secrets.token_hex(16)
        with self._lock:
            self._tickets[ticket] = False
        host = "localhost" if self.port == 443 else f"localhost:{self.port}"
        app_hash = hashlib.sha256(self.app_id.encode()).hexdigest()
        return f"wss://{host}/link/?ticket={ticket}&app_id={app_hash}"

    # -- reading back ---------------------------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        """Every connection ever opened, oldest first."""
        with self._lock:
            return list(self._connections)

    def open_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.is_open]

    @property
    def acks(self) -> list[Ack]:
        with self._lock:
            return list(self._acks)

    @property
    def sent(self) -> list[Sent]:
        with self._lock:
            return list(self._sent)

    @property
    def other_messages(self) -> list[tuple[int, str]]:
        """(connection number, text) of what clients sent that is not an ack."""
        with self._lock:
            return list(self._other_messages)

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> list[Connection]:
        """Wait until `count` connections have been opened in all; returns them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._connections) >= count, timeout):
                raise AssertionError(f"waited {timeout}s for connection {count}; "
                                     f"have {self._connections}, refused {self.refused}")
            return list(self._connections)

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((a for a in self._acks if a.envelope_id == envelope_id), None),
                timeout)
            if found is None:
                raise AssertionError(f"no ack for {envelope_id} within {timeout}s; acks: "
                                     f"{[a.envelope_id for a in self._acks]}, connections: "
                                     f"{self._connections}")
            return found

    # -- what Slack sends -----------------------------------------------------------------

    def send(self, envelope_type: str, payload: Json, connection: Connection | None = None,
             *, accepts_response_payload: bool | None = None) -> str:
        """Deliver an envelope (on `connection`, else the newest open one); returns its id."""
        target = connection or self._newest_open()
        envelope_id = f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}"
        if accepts_response_payload is None:  # as Slack: commands and modals can answer inline
            accepts_response_payload = envelope_type == "slash_commands" or (
                envelope_type == "interactive" and payload.get("type") == "view_submission")
        envelope: Json = {"envelope_id": envelope_id, "payload": payload, "type": envelope_type,
                          "accepts_response_payload": accepts_response_payload}
        if envelope_type == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        with self._lock:
            self._sent.append(Sent(envelope_id, envelope_type, payload, target.number,
                                   time.monotonic()))
        target.send_json(envelope)
        return envelope_id

    def disconnect(self, reason: DisconnectReason, connection: Connection | None = None,
                   *, close_after: float | None = None) -> Connection:
        """Send `{"type": "disconnect"}`; with `close_after`, close the connection that many
        seconds later, as Slack does once the client has had time to reconnect."""
        target = connection or self._newest_open()
        target.send_json({"type": "disconnect", "reason": reason,
                          "debug_info": {"host": f"applink-fake-{target.number}"}})
        if close_after is not None:
            timer = threading.Timer(close_after, self._close_quietly, args=(target,))
            timer.daemon = True
            timer.start()
        return target

    def _newest_open(self) -> Connection:
        live = self.open_connections()
        if not live:
            raise AssertionError(f"no open connection; have {self.connections}")
        return live[-1]

    @staticmethod
    def _close_quietly(connection: Connection) -> None:
        if connection.is_open:
            with contextlib.suppress(AssertionError):
                connection.close(1001, "going away")

    # -- called on the server's threads ---------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._open, args=(raw,), daemon=True,
                             name="socket-mode-fake-handshake").start()

    def _open(self, raw: socket.socket) -> None:
        raw.settimeout(_IO_TIMEOUT)
        try:
            sock = self._context.wrap_socket(raw, server_side=True)
            head = bytearray()
            while b"\r\n\r\n" not in head and len(head) < _MAX_REQUEST_HEAD:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed during the upgrade")
                head += chunk
            request_line, *header_lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in header_lines)}
            ticket = self._check_upgrade(request_line, headers)
        except (OSError, ValueError) as exc:
            raw.close()
            with self._lock:
                self.refused.append(f"handshake failed: {exc!r}")
            return
        if ticket is None:
            with self._lock:
                self.refused.append(request_line)
            with contextlib.suppress(OSError):
                sock.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
            sock.close()
            return
        digest = hashlib.sha1((headers["sec-websocket-key"] + _WEBSOCKET_GUID).encode(),
                              usedforsecurity=False).digest()
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                     + base64.b64encode(digest) + b"\r\n\r\n")
        with self._changed:
            connection = Connection(self, next(self._numbers), sock, ticket)
            self._connections.append(connection)
            self._changed.notify_all()
        connection.start()

    def _check_upgrade(self, request_line: str, headers: dict[str, str]) -> str | None:
        """The ticket of a valid, unused upgrade request (and marks it used), else None."""
        method, _, rest = request_line.partition(" ")
        target = rest.rpartition(" ")[0]
        url = urlsplit(target)
        ticket = (parse_qs(url.query).get("ticket") or [""])[0]
        upgrade_ok = (method == "GET" and url.path.rstrip("/") == "/link"
                      and headers.get("upgrade", "").lower() == "websocket"
                      and "upgrade" in headers.get("connection", "").lower()
                      and headers.get("sec-websocket-key"))
        with self._lock:
            if not upgrade_ok or self._tickets.get(ticket) is not False:
                return None
            self._tickets[ticket] = True
        return ticket

    def _hello(self, connection: Connection) -> None:
        connection._write(_OP_TEXT, json.dumps({
            "type": "hello", "num_connections": len(self.open_connections()),
            "debug_info": {"host": f"applink-fake-{connection.number}", "build_number": 1,
                           "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }).encode())

    def _received(self, connection: Connection, message: bytes) -> None:
        try:
            parsed = json.loads(message)
        except ValueError:
            parsed = None
        with self._changed:
            if isinstance(parsed, dict) and isinstance(parsed.get("envelope_id"), str):
                payload = parsed.get("payload")
                self._acks.append(Ack(parsed["envelope_id"],
                                      payload if isinstance(payload, dict) else None,
                                      connection.number, time.monotonic()))
            else:
                self._other_messages.append((connection.number, message.decode(errors="replace")))
            self._changed.notify_all()


class SlackWithSocketMode(SlackApiFake):
    """The Web API fake plus `apps.connections.open`, which hands out `server`'s URLs.

    Like Slack, that method takes only an app-level token (xapp-): none is `not_authed`, a
    bot or user token `not_allowed_token_type`, another app token `invalid_auth`.
    """

    def __init__(self, server: SocketModeServer, app_token: str = "xapp-1-A0JITAPP-1-test",
                 **kwargs: Any) -> None:
        self.socket_mode = server
        self.app_token = app_token
        super().__init__(**kwargs)
        self._methods["apps.connections.open"] = self._open_connection

    def _check_token(self, method: str, token: str | None) -> None:
        if method != "apps.connections.open":
            super()._check_token(method, token)
        elif not token:
            raise SlackError("not_authed")
        elif not token.startswith("xapp-"):
            raise SlackError("not_allowed_token_type")
        elif token != self.app_token:
            raise SlackError("invalid_auth")

    def _open_connection(self, args: Json) -> Json:
        return {"url": self.socket_mode.new_url()}

