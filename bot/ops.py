"""The operations endpoints, served beside Slack's on the HTTP port (in Socket Mode, alone):

    GET /healthz   200 while the process can answer at all (a liveness probe)
    GET /readyz    200 when the database answers and the expiry engine is sweeping, else
                   503 with the reason (a readiness probe: take the replica out of rotation)
    GET /metrics   Prometheus text format (prometheus-client), see jitcore.metrics
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from jitcore.errors import StoreError
from jitcore.scheduler import Engine
from jitcore.store import Store

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Not ready when no sweep has completed for this long and none is running: a dead engine.
# A sweep that runs this long (a burst of expiries on a throttled cloud) counts as alive
# until it has run for STUCK_SWEEP.
STALE_SWEEP = timedelta(minutes=2)
STUCK_SWEEP = timedelta(minutes=15)
# A probe answers within a second whatever the database does: a ping that has not answered
# by then makes the replica not ready (and the next probe does not start another).
PING_WAIT = 0.8  # s


class Readiness:
    def __init__(self, store: Store, engine: Engine, stale_after: timedelta = STALE_SWEEP,
                 started_at: datetime | None = None) -> None:
        self._store = store
        self._engine = engine
        self._stale_after = stale_after
        self._started_at = started_at or datetime.now(UTC)
        self._pinger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jit-readiness")
        self._ping_lock = threading.Lock()
        self._pinging: Future[None] | None = None

    def _ping(self) -> str | None:
        """The database's answer to a ping, waited for at most PING_WAIT."""
        with self._ping_lock:
            if self._pinging is None or self._pinging.done():
                self._pinging = self._pinger.submit(self._store.ping, PING_WAIT)
            pinging = self._pinging
        try:
            pinging.result(timeout=PING_WAIT)
        except FutureTimeout:
            return f"the database did not answer within {PING_WAIT:g} s"
        except StoreError as exc:
            return str(exc)
        return None

    def check(self) -> str | None:
        """None when ready, else why not."""
        if not self._engine.running:
            return "the expiry engine is not running"
        problem = self._ping()
        if problem is not None:
            return problem
        now = datetime.now(UTC)
        done = self._engine.last_sweep_at or self._started_at
        began = self._engine.sweep_started_at
        if began is not None and began > done:  # one is running now
            if now - began > STUCK_SWEEP:
                return f"the expiry engine's sweep has been running since {began:%H:%M:%S}Z"
            return None
        if now - done > self._stale_after:
            return f"the expiry engine has not completed a sweep since {done:%H:%M:%S}Z"
        return None


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])
    return [data]


def ops_app(readiness: Readiness, slack: WsgiApp | None = None,
            registry: CollectorRegistry = REGISTRY) -> WsgiApp:
    """A WSGI app answering the operations paths and handing the rest to `slack`."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok")
        if path == "/readyz":
            problem = readiness.check()
            if problem is None:
                return _text(start_response, "200 OK", "ready")
            return _text(start_response, "503 Service Unavailable", f"not ready: {problem}")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if slack is not None:
            return slack(environ, start_response)
        return _text(start_response, "404 Not Found", "not found")

    return app
