"""Socket Mode for jit-bot: Bolt's listeners over websocket-client connections that notice a
dropped link at once and lose no ack to a reconnect.

Not slack_sdk's built-in client (Bolt's default `SocketModeHandler`): when a connection ends
without a close frame (a FIN or an RST, as a load balancer or a network change ends it), it
reads the EOF as "no data yet" and spins on it until five pings have gone unanswered, about
48 s without Slack and a CPU core busy all along. websocket-client raises on EOF and on a
reset, so the connection is replaced within a second.

Not Bolt's websocket-client adapter as shipped either: on a `disconnect` from Slack it closes
the old connection before the new one is open, so the ack of an envelope that arrived just
before the `disconnect` finds no connection and is lost, and its monitor opens a second
connection at start-up. Here the new connection is open (Slack has said `hello`) before the
old one is retired, an ack goes back on the connection its envelope came on while that is
open, and one thread does all the reconnecting, backing off while Slack is unreachable.

TLS: websocket-client checks Slack's certificate against OpenSSL's default CAs, as the Web
API client does, so SSL_CERT_FILE / SSL_CERT_DIR (a TLS-inspecting proxy's CA, say) apply to
both; WEBSOCKET_CLIENT_CA_BUNDLE to the WebSocket alone. A bundle given there must hold the
public CAs too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from queue import Queue

from slack_bolt import App
from slack_bolt.adapter.socket_mode.base_handler import BaseSocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from websocket import WebSocketApp, WebSocketException

from jitcore.errors import JitError

log = logging.getLogger(__name__)

PING_INTERVAL = 10.0  # s between our pings to Slack
PING_TIMEOUT = 5.0  # s to wait for the pong: a link that went silent without a FIN ends too
OPEN_TIMEOUT = 10.0  # s from the TCP connect to Slack's hello
ACK_WAIT = 3.0  # s an ack waits for a connection to send on: Slack's ack deadline
ACK_GRACE = 5.0  # s a replaced connection stays open for the acks still to come on it
PENDING_TTL = 60.0  # s after which an envelope nobody acked is forgotten
MAX_BACKOFF = 30.0  # s between attempts while Slack cannot be reached
CONNECT_ERRORS = (OSError, SlackClientError, WebSocketException)


class _Connection:
    """One WebSocket connection to Slack, read on its own thread."""

    def __init__(self, client: SocketModeClient, url: str, number: int) -> None:
        self.number = number
        self.greeted = False  # Slack's hello arrived: the connection delivers envelopes
        self.replace_wanted = False  # Slack sent `disconnect` on it, or it failed
        self.settled = threading.Event()  # greeted, or ended before that
        self.ended = threading.Event()
        self.error: object = None  # why it failed; set, it sends nothing more
        self._client = client
        self.websocket = WebSocketApp(
            url,
            on_message=lambda _ws, message: client._received(self, message),
            on_error=lambda _ws, error: client._failed(self, error),
        )
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"socket-mode-{number}")

    def __repr__(self) -> str:
        return f"Socket Mode connection {self.number}"

    @property
    def is_open(self) -> bool:
        return (self.greeted and self.error is None and not self.ended.is_set()
                and self.websocket.sock is not None)

    def start(self) -> None:
        self._thread.start()

    def send(self, message: str) -> None:
        self.websocket.send(message)

    def close(self) -> None:
        """A close frame, then the end of the TCP connection."""
        with contextlib.suppress(*CONNECT_ERRORS):
            self.websocket.close()

    def _run(self) -> None:
        try:
            self.websocket.run_forever(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)
        finally:
            self.ended.set()
            self.settled.set()
            self._client._ended(self)


class SocketModeClient(BaseSocketModeClient):
    """slack_sdk's Socket Mode client contract (listeners, `send_socket_mode_response`) on
    websocket-client, replacing a connection make-before-break."""

    def __init__(self, app_token: str, web_client: WebClient, *, concurrency: int = 10) -> None:
        self.app_token = app_token
        self.web_client = web_client
        self.logger = log
        self.message_queue = Queue()
        self.message_listeners = []
        self.socket_mode_request_listeners = []
        self.closed = False
        self.auto_reconnect_enabled = True
        self.connect_operation_lock = threading.Lock()
        self.current: _Connection | None = None
        self._live: set[_Connection] = set()  # started and not yet ended, retiring ones too
        self._numbers = itertools.count(1)
        self._changed = threading.Condition()  # `current` replaced, an ack sent, one ended
        self._pending: dict[str, tuple[_Connection, float]] = {}  # envelope id -> came on, at
        self._replace: _Connection | None = None  # the connection to replace, once woken
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.message_workers = ThreadPoolExecutor(max_workers=concurrency,
                                                  thread_name_prefix="socket-mode-listener")
        # process_messages() hands each envelope to a worker until `closed` is set
        self._processor = threading.Thread(target=self.process_messages, daemon=True,
                                           name="socket-mode-processor")
        self._processor.start()
        self._supervisor = threading.Thread(target=self._keep_connected, daemon=True,
                                            name="socket-mode-supervisor")
        self._supervisor.start()

    def is_connected(self) -> bool:
        current = self.current
        return current is not None and current.is_open

    def connect(self) -> None:
        """Open a connection and wait for Slack's hello; the one it replaces is retired."""
        with self.connect_operation_lock:
            connection = _Connection(self, self.issue_new_wss_url(), next(self._numbers))
            with self._changed:
                self._live.add(connection)
            connection.start()
            if not connection.settled.wait(OPEN_TIMEOUT) or not connection.is_open:
                connection.close()
                raise ConnectionError(f"{connection} did not open: "
                                      f"{connection.error or 'no hello from Slack'}")
            with self._changed:
                replaced, self.current = self.current, connection
                self.auto_reconnect_enabled = True
                self._changed.notify_all()
        if connection.replace_wanted or connection.ended.is_set():
            self._reconnect(connection)  # it failed, or Slack sent `disconnect`, before now
        if replaced is not None:
            threading.Thread(target=self._retire, args=(replaced,), daemon=True,
                             name=f"socket-mode-retire-{replaced.number}").start()
        self.logger.info("%s open", connection)

    def disconnect(self) -> None:
        """Close the connection; no reconnect until `connect()`."""
        self.auto_reconnect_enabled = False
        if self.current is not None:
            self.current.close()

    def send_message(self, message: str) -> None:
        """Send on the connection the envelope came on while it is open, else the current."""
        envelope_id = _envelope_id(message)
        with self._changed:
            came_on, _ = self._pending.pop(envelope_id, (None, 0.0))
            self._changed.notify_all()
        for connection in (came_on, self._wait_for_current()):
            if connection is None or not connection.is_open:
                continue
            try:
                connection.send(message)
                return
            except WebSocketException:  # it ended a moment ago; try the current one
                continue
        raise ConnectionError("no Socket Mode connection to send on")

    def close(self) -> None:
        """Finish the envelopes being handled, then close every connection."""
        self.closed = True
        self.auto_reconnect_enabled = False
        self._stop.set()
        self._wake.set()
        self._processor.join()
        self.message_workers.shutdown(wait=True)
        with self._changed:
            live = list(self._live)
            self._changed.notify_all()
        for connection in live:
            connection.close()
        self._supervisor.join(timeout=OPEN_TIMEOUT)

    # -- on the connections' threads ----------------------------------------------------

    def _received(self, connection: _Connection, message: str) -> None:
        try:
            parsed = json.loads(message)
        except ValueError:
            parsed = None
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind == "hello":
            connection.greeted = True
            connection.settled.set()
        elif kind == "disconnect":
            # Slack is about to close this connection: open the next one now. Not queued,
            # so it never waits behind envelopes (nor they behind it).
            self.logger.info("%s: Slack asks for a new one (%s)", connection,
                             parsed.get("reason") if isinstance(parsed, dict) else "")
            connection.replace_wanted = True
            self._reconnect(connection)
            return
        envelope_id = parsed.get("envelope_id") if isinstance(parsed, dict) else None
        if isinstance(envelope_id, str):
            now = time.monotonic()
            with self._changed:
                for stale in [e for e, (_, at) in self._pending.items() if now - at > PENDING_TTL]:
                    del self._pending[stale]
                self._pending[envelope_id] = (connection, now)
        self.enqueue_message(message)

    def _failed(self, connection: _Connection, error: object) -> None:
        # Called before websocket-client tears the connection down, which can take another
        # 3 s (it waits for a close frame that a dead link never brings): reconnect now.
        connection.error = error
        self._lost(connection)

    def _ended(self, connection: _Connection) -> None:
        with self._changed:
            self._live.discard(connection)
            self._changed.notify_all()
        self._lost(connection)

    def _lost(self, connection: _Connection) -> None:
        with self._changed:
            first_word = connection is self.current and not connection.replace_wanted
            connection.replace_wanted = True
        if first_word and not self.closed:
            self.logger.warning("%s lost (%s); reconnecting", connection,
                                connection.error or "closed")
            self._reconnect(connection)

    # -- the supervisor -------------------------------------------------------------------

    def _reconnect(self, connection: _Connection) -> None:
        if self.auto_reconnect_enabled and connection is self.current:
            self._replace = connection
            self._wake.set()

    def _keep_connected(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.current is not self._replace or not self.auto_reconnect_enabled:
                continue  # already replaced, or disconnect() asked for none
            try:
                self.connect()
                failures = 0
            except Exception as exc:  # whatever it is, stopping would leave the bot deaf
                failures += 1
                delay = min(MAX_BACKOFF, 2.0 ** (failures - 1))
                self.logger.warning("cannot reconnect to Slack (%s); next try in %.0fs",
                                    exc, delay, exc_info=not isinstance(exc, CONNECT_ERRORS))
                if self._stop.wait(delay):
                    return
                self._wake.set()

    def _wait_for_current(self) -> _Connection | None:
        with self._changed:
            self._changed.wait_for(lambda: self.closed or self.is_connected(), ACK_WAIT)
            return self.current

    def _retire(self, connection: _Connection) -> None:
        """Close a replaced connection once the acks for what came on it are sent."""
        with self._changed:
            self._changed.wait_for(
                lambda: connection.ended.is_set()
                or all(came_on is not connection for came_on, _ in self._pending.values()),
                ACK_GRACE)
        connection.close()


def _envelope_id(message: str) -> str:
    try:
        parsed = json.loads(message)
    except ValueError:
        return ""
    envelope_id = parsed.get("envelope_id") if isinstance(parsed, dict) else None
    return envelope_id if isinstance(envelope_id, str) else ""


class SocketModeHandler(BaseSocketModeHandler):
    """Bolt's Socket Mode handler on `SocketModeClient`."""

    client: SocketModeClient

    def __init__(self, app: App, app_token: str) -> None:
        self.app = app
        self.client = SocketModeClient(app_token, app.client)
        self.client.socket_mode_request_listeners.append(self.handle)

    def handle(self, client: BaseSocketModeClient, req: SocketModeRequest) -> None:
        started = time.time()
        send_response(client, req, run_bolt_app(self.app, req), started)

    def connect(self) -> None:
        self.client.connect()

    def close(self) -> None:
        self.client.close()


def connect(app: App, app_token: str) -> SocketModeHandler:
    """A handler with its first connection open, serving `app`'s listeners."""
    handler = SocketModeHandler(app, app_token)
    try:
        handler.connect()
    except CONNECT_ERRORS as exc:
        handler.close()
        raise JitError(f"cannot open a Socket Mode connection to Slack: {exc}") from None
    return handler
