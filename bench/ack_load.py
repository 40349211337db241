"""The load bench.ack sends: signed `/jit` slash commands, each on a connection of its own,
from threads that each send the next as soon as the previous one is acked (a closed loop).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from ipaddress import IPv4Address

from bench.common import SERVICE

TARGET = "prod-db"
USERS = 100
SECRET = "bench-signing-secret"
EVENTS_PATH = "/slack/events"
_ACK = re.compile(r"^Request #(\d+) is waiting for an approver$")
_FIRST_FALLBACK_SOURCE = int(IPv4Address("11.1.0.1"))


def source_address(n: int) -> str:
    """A distinct public address for every n: 198.51.100.x and 203.0.113.x first, then 11.1.x.x
    (documentation ranges are not private to jit; 11/8 is public space)."""
    if n < 254:
        return f"198.51.100.{n + 1}"
    if n < 508:
        return f"203.0.113.{n - 253}"
    return str(IPv4Address(_FIRST_FALLBACK_SOURCE + n - 508))


def user_id(n: int) -> str:
    return f"U0BENCH{n % USERS:03d}"


def command_body(n: int, response_url: str) -> bytes:
    user = user_id(n)
    return urllib.parse.urlencode({
        "token": "unused", "team_id": "T0JITTEST", "team_domain": "jit-test",
        "channel_id": "C0GENERAL", "channel_name": "general", "user_id": user,
        "user_name": user.lower(), "command": "/jit",
        "text": f"{SERVICE} {TARGET} 20m from {source_address(n)} bench",
        "api_app_id": "A0JITAPP", "is_enterprise_install": "false",
        "response_url": f"{response_url}/cmd-{n}",
        "trigger_id": f"{13345224609 + n}.738474920.8088930838d88f008e0",
    }).encode()


def signed_headers(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{timestamp}:".encode() + body,
                      hashlib.sha256).hexdigest()
    return {"Content-Type": "application/x-www-form-urlencoded", "Connection": "close",
            "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}


@dataclass(slots=True)
class Outcome:
    n: int
    sent: float  # time.perf_counter() just before connecting
    connected: float  # ... once connect() returned (the TCP handshake is done)
    received: float  # ... once the whole response was read
    status: int
    grant_id: int | None
    error: str | None

    @property
    def latency(self) -> float:
        return self.received - self.sent

    @property
    def ok(self) -> bool:
        return self.error is None


def send(port: int, n: int, response_url: str) -> Outcome:
    """One slash command on a connection of its own; the response is the ack."""
    body = command_body(n, response_url)
    headers = signed_headers(body)
    status, grant_id, error = 0, None, None
    sent = connected = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.connect()
            connected = time.perf_counter()
            conn.request("POST", EVENTS_PATH, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        received = time.perf_counter()
        status = response.status
        grant_id, error = read_ack(status, raw)
    except (OSError, http.client.HTTPException) as exc:
        received = time.perf_counter()
        error = f"{type(exc).__name__}: {exc}"
    return Outcome(n, sent, connected, received, status, grant_id, error)


def read_ack(status: int, raw: bytes) -> tuple[int | None, str | None]:
    """The request id in an ack, or what was wrong with it."""
    text = raw.decode(errors="replace")
    if status != 200:
        return None, f"HTTP {status}: {text[:200]}"
    try:
        message = json.loads(text)
    except ValueError:
        return None, f"not JSON: {text[:200]}"
    match = _ACK.match(str(message.get("text", ""))) if isinstance(message, dict) else None
    if match is None:
        return None, f"not a request ack: {text[:200]}"
    return int(match.group(1)), None


def burst(port: int, response_url: str, first: int, count: int,
          clients: int) -> list[Outcome]:
    """Requests first..first+count-1 from `clients` threads, each sending one at a time."""
    numbers = iter(range(first, first + count))
    lock = threading.Lock()
    start = threading.Barrier(clients)
    results: list[list[Outcome]] = [[] for _ in range(clients)]

    def client(k: int) -> None:
        start.wait()
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            results[k].append(send(port, n, response_url))

    threads = [threading.Thread(target=client, args=(k,), name=f"client-{k}")
               for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted((o for part in results for o in part), key=lambda o: o.n)
