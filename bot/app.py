"""build_app(service, client, signing_secret) -> slack_bolt.App, with every listener registered.

Slack waits 3 s for an ack. Bolt runs each listener in the thread that received the request
(`process_before_response=True`): no hand-off to a listener pool and no polling for the ack,
so the HTTP response leaves as soon as the listener returns. Listeners therefore do only
what the ack depends on (parse, policy, the database) and hand everything else (cloud calls,
Web API calls) to `AfterAck`, which runs it on its own threads.

Not Bolt's lazy listeners, which do the same job: Bolt starts a listener's lazy functions on
every request the listener takes, copying the request for them, even when the ack leaves
nothing to do (a `/jit` request that waits for an approver, the common case). That costs
about 0.2 ms of CPU per ack, and bench.ack measured fewer acks per second and a higher p99
with them. `later(fn)` is called only when there is something to do.

The process is one interpreter, so whatever runs beside a listener takes CPU from the acks.
`Foreground` counts the requests being answered, and the Slack notifier waits for a quiet
moment (at most a second per message, about the pace Slack allows chat.postMessage per
channel anyway) before it talks to Slack: an ack has a 3 s deadline, an audit-channel post
does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_sdk import WebClient

from bot.listeners import register_all
from jitcore.service import JitService
from jitcore.store.deadlines import within

log = logging.getLogger(__name__)

ACK_DB_BUDGET = 1.5  # s a database statement may take before the ack (Slack waits 3 s)


class AfterAck:
    """Work a listener starts after its ack: `later(fn)` returns at once; fn runs on a pool.

    Mostly waiting: an open after an approval waits for its cloud write, and Azure writes to
    one firewall coalesce (one write carries every open waiting on it). So the pool is wide:
    a burst of approvals must be waiting together to share a write, not eight at a time.
    """

    def __init__(self, workers: int = 128) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jit-after-ack")

    def __call__(self, work: Callable[[], object]) -> None:
        self._pool.submit(self._run, work)

    @staticmethod
    def _run(work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:  # nobody waits on the future: log, or it is lost
            log.exception("work after an ack failed")

    def close(self) -> None:
        """Finish what has started; drop what has not (the sweep opens approved grants)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class Foreground:
    """The Slack requests being answered right now; background work yields to them.

    Quiet means no request has been in a listener for `settle` seconds: under a burst the
    gaps between requests are shorter than that, and the background waits its turn.
    """

    def __init__(self, settle: float = 0.05) -> None:
        self._busy = 0
        self._last_end = float("-inf")
        self._settle = settle
        self._quiet = threading.Condition()

    def __enter__(self) -> None:
        with self._quiet:
            self._busy += 1

    def __exit__(self, *exc: object) -> None:
        with self._quiet:
            self._busy -= 1
            self._last_end = time.monotonic()
            if self._busy == 0:
                self._quiet.notify_all()

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until it is quiet, or `timeout` s; True if it is quiet."""
        deadline = time.monotonic() + timeout
        with self._quiet:
            while True:
                now = time.monotonic()
                idle = now - self._last_end if self._busy == 0 else -1.0
                if idle >= self._settle:
                    return True
                if now >= deadline:
                    return False
                self._quiet.wait(deadline - now if idle < 0
                                 else min(deadline - now, self._settle - idle))


class _App(App):
    """Bolt's App, counting each request it answers (HTTP and Socket Mode both dispatch)."""

    def __init__(self, foreground: Foreground, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._foreground = foreground

    def dispatch(self, req: BoltRequest) -> BoltResponse:
        # Each database statement of the ack path gets ACK_DB_BUDGET: on a hung database
        # the person still hears "unavailable" before Slack's 3 s are up.
        with self._foreground, within(ACK_DB_BUDGET):
            return super().dispatch(req)


def build_app(service: JitService, client: WebClient, signing_secret: str,
              later: AfterAck | None = None, foreground: Foreground | None = None) -> App:
    app = _App(foreground or Foreground(), client=client, signing_secret=signing_secret,
               process_before_response=True)
    register_all(app, service, later or AfterAck())
    return app
