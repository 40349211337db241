"""The outbox's sender: every Slack post an event owes, delivered at least once, in order
per grant, through Slack outages and restarts (jitcore.outbox holds the rows).

One thread claims lanes (a grant's posts, or the free-standing alerts), renders each row
with `bot.blocks` and sends it, oldest first. Each outcome is committed as soon as Slack
answers, with the message's ts when later posts follow up on it (a reply in a thread, an
update of the card):

- sent: done. Slack has no idempotency key, so a process that dies between Slack's answer
  and that commit sends that one post again after the restart (at least once);
- a transient failure (no connection, a timeout, HTTP 5xx, `ratelimited` or an error
  Slack says is temporary): the lane waits and the row is tried again, after Retry-After
  when Slack gives one, else after a jittered backoff that doubles up to `backoff_cap`,
  for as long as the failure lasts. Any failure but a rate limit means Slack is down: no
  other post is tried meanwhile (a thousand lanes would be a thousand failing calls);
  Slack is probed with auth.test after 1 s, then at doubling intervals up to
  `probe_every`, and once it answers, every post waiting out the outage is due at once;
- a permanent failure (`channel_not_found`, `not_in_channel`, `is_archived`,
  `invalid_blocks`, `invalid_auth`, ...): the row is marked failed, logged at error once and
  counted; the rest of its lane goes on (`jit status` lists failed posts, `jit outbox
  retry` sends them again once the cause is fixed).

Given a `Foreground`, the sender lets the acks go first: before each post it waits for a
moment when no Slack request is being answered, but never longer than `yield_at_most`.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import Any, assert_never

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import SQLAlchemyError

from bot import blocks
from bot.app import Foreground
from jitcore import outbox
from jitcore.domain import GrantEvent, GrantView
from jitcore.errors import Undeliverable
from jitcore.metrics import GrantMetrics
from jitcore.outbox import Owed, Post
from jitcore.policy import Policy, Target
from jitcore.ports import Clock, SystemClock
from jitcore.store import Store

log = logging.getLogger(__name__)

# Errors Slack answers with that say "not now" rather than "never".
TRANSIENT_ERRORS = frozenset({
    "ratelimited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "team_added_to_org",
})
_NOTICES_KEPT = 10_000  # thread parents and cards remembered in memory


@dataclass(frozen=True, slots=True)
class Failure:
    """How a send failed: again later (and not before `retry_after`), or never."""

    error: str
    transient: bool
    retry_after: float | None = None


def classify(exc: Exception) -> Failure:
    """A failed Web API call, as the sender treats it."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 200)
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = str(data.get("error") or f"HTTP {status}")
        if status == 429 or error == outbox.RATE_LIMITED:
            headers = {k.lower(): v for k, v in (exc.response.headers or {}).items()}
            try:
                wait = float(headers.get("retry-after", 1))
            except (TypeError, ValueError):
                wait = 1.0
            return Failure(outbox.RATE_LIMITED, True, max(wait, 0.0))
        if status >= 500:
            return Failure(f"HTTP {status}", True)
        return Failure(error, error in TRANSIENT_ERRORS)
    if isinstance(exc, OSError | http.client.HTTPException | TimeoutError):  # URLError too
        return Failure(f"{type(exc).__name__}: {exc}", True)
    return Failure(f"{type(exc).__name__}: {exc}", False)


class Delivery:
    """Sends the outbox to Slack on a thread of its own; jitcore's Notifier port (events
    and alerts only wake it: their posts are already rows)."""

    def __init__(self, client: WebClient, policy: Policy, store: Store, *,
                 clock: Clock | None = None, foreground: Foreground | None = None,
                 metrics: GrantMetrics | None = None, yield_at_most: float = 1.0,
                 lease: timedelta = timedelta(seconds=60), poll: float = 1.0,
                 retention: timedelta = timedelta(days=7),
                 backoff_base: float = 1.0, backoff_cap: float = 60.0,
                 probe_every: float = 5.0) -> None:
        if policy.slack is None:
            raise ValueError("the policy has no slack section (approvals_channel, audit_channel)")
        self._client = client
        self._policy = policy
        self._store = store
        self._clock = clock or SystemClock()
        self._foreground = foreground
        self.metrics = metrics
        self._yield_at_most = yield_at_most
        self._lease = lease
        self._poll = poll
        self._retention = retention
        self._backoff = (backoff_base, backoff_cap)
        self._probe_every = probe_every
        self.sender = f"{socket.gethostname()[:40]}:{os.getpid()}:{random.getrandbits(24):06x}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outage_since: float | None = None  # monotonic time of the first failure
        self._last_probe = 0.0
        self._probes = 0
        self._next_prune = 0.0
        self._notices: dict[tuple[int, Post], tuple[str, str]] = {}  # a copy, oldest first
        self._worker = threading.Thread(target=self._run, name="jit-slack", daemon=True)

    # ---- the Notifier port, and the lifecycle --------------------------------------------

    def publish(self, event: GrantEvent) -> None:
        self._wake.set()

    def alert(self, message: str) -> None:
        self._wake.set()

    def start(self) -> None:
        """Deliver what is owed, first thing (a previous process's backlog too)."""
        self._take_over()
        self._worker.start()

    def close(self, timeout: float = 15.0) -> None:
        """Stop after the post in hand; what is left is given back for the next sender."""
        self._stop.set()
        self._wake.set()
        if self._worker.is_alive():
            self._worker.join(timeout)
        try:
            with self._store.transaction() as session:
                outbox.release(session, self.sender)
        except SQLAlchemyError as exc:  # the leases run out by themselves
            log.warning("could not give back the outbox leases: %s", exc)

    def _take_over(self) -> None:
        """A new process tries what waited out a backoff now (a restart is a good moment to
        try again); on SQLite, which one process owns, the leases of a dead one go too."""
        try:
            with self._store.transaction() as session:
                outbox.due_now(session, self._clock.now())
                if self._store.dialect == "sqlite":
                    outbox.release(session, None)
        except SQLAlchemyError as exc:
            log.error("cannot read the Slack outbox at start (delivery goes on when the "
                      "database answers): %s", exc)

    # ---- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.deliver_once()
                self._maintain()
            except SQLAlchemyError as exc:  # the database is down: the rows wait there
                log.error("slack delivery: the database is unavailable: %s", exc)
                busy = False
            except Exception:  # a bug must not stop delivery for good
                log.exception("slack delivery failed")
                busy = False
            if not busy:
                self._wake.wait(self._poll)
                self._wake.clear()

    def deliver_once(self) -> bool:
        """Claim due lanes and send their rows; whether anything was claimed."""
        if self._outage_since is not None:  # Slack is down: no post is tried, Slack is asked
            self._probe_if_down()
            return False
        now = self._clock.now()
        with self._store.transaction() as session:
            claimed = outbox.claim(session, self.sender, now, self._lease)
        if not claimed:
            return False
        lease_ends = time.monotonic() + self._lease.total_seconds() * 0.75
        for _, rows in groupby(claimed, key=lambda owed: owed.lane):
            for owed in rows:
                if self._stop.is_set() or time.monotonic() > lease_ends:
                    self._give_back()
                    return True
                if not self._send(owed):
                    break  # the lane waits: the rest of it goes back with the retry
            if self._outage_since is not None:  # the other lanes wait for Slack's return
                self._give_back()
                return True
        return True

    def _give_back(self) -> None:
        with self._store.transaction() as session:
            outbox.release(session, self.sender)

    def _send(self, owed: Owed) -> bool:
        """Send one row and commit its outcome; False when its lane must wait."""
        if self._foreground is not None:
            self._foreground.wait_quiet(self._yield_at_most)
        try:
            message = self._call(owed)
        except Undeliverable as exc:
            self._failed(owed, Failure(str(exc), False))
            return True
        except Exception as exc:
            failure = classify(exc)
            if failure.transient:
                self._retry(owed, failure)
                return False
            if not isinstance(exc, SlackApiError):
                log.exception("slack post %s (%s) could not be made", owed.id, owed.post)
            self._failed(owed, failure)
            return True
        with self._store.transaction() as session:
            outbox.mark_sent(session, owed, self._clock.now(), message)
        if message is not None and owed.post in outbox.NOTICE_OF and owed.grant_id is not None:
            if len(self._notices) >= _NOTICES_KEPT:
                self._notices.pop(next(iter(self._notices)))
            self._notices[(owed.grant_id, owed.post)] = message
        self._count("sent", owed)
        if self._outage_since is not None:
            self._slack_is_back()
        return True

    def _retry(self, owed: Owed, failure: Failure) -> None:
        if failure.retry_after is not None:  # Slack said when: not before
            delay = failure.retry_after + random.uniform(0, 0.5)
        else:
            base, cap = self._backoff
            delay = min(cap, base * 2 ** owed.attempts) * random.uniform(0.5, 1.0)
            if self._outage_since is None:
                self._outage_since = self._last_probe = time.monotonic()
                self._probes = 0
        now = self._clock.now()
        log.warning("slack post %s (%s to %s) not delivered, attempt %s: %s; again in %.1fs",
                    owed.id, owed.post, owed.channel, owed.attempts + 1, failure.error, delay)
        with self._store.transaction() as session:
            outbox.retry_later(session, owed, self.sender, now + timedelta(seconds=delay),
                               failure.error)
        self._count("retried", owed)

    def _failed(self, owed: Owed, failure: Failure) -> None:
        log.error("slack post %s (%s to %s, grant %s) failed for good: %s", owed.id, owed.post,
                  owed.channel, owed.grant_id, failure.error)
        with self._store.transaction() as session:
            outbox.mark_failed(session, owed, self._clock.now(), failure.error)
        self._count("failed", owed)

    def _count(self, outcome: str, owed: Owed) -> None:
        if self.metrics is not None:
            self.metrics.count_post(outcome, owed.post.value)

    def _probe_if_down(self) -> None:
        """During an outage, ask Slack whether it is back (cheaply): after 1 s, then at
        doubling intervals up to `probe_every`."""
        wait = min(self._probe_every, 2.0 ** self._probes)
        if self._outage_since is None or time.monotonic() - self._last_probe < wait:
            return
        self._last_probe = time.monotonic()
        self._probes += 1
        try:
            self._client.auth_test()
        except Exception as exc:  # noqa: BLE001 (still down, or refusing: the posts say)
            log.info("slack is still unavailable: %s", classify(exc).error)
            return
        self._slack_is_back()

    def _slack_is_back(self) -> None:
        """Posts waiting out the outage's backoff are due now (not those told to wait by a
        rate limit)."""
        down_for = time.monotonic() - (self._outage_since or time.monotonic())
        self._outage_since = None
        with self._store.transaction() as session:
            due = outbox.due_now(session, self._clock.now())
        log.info("slack answers again after %.0fs; %s waiting post(s) are due now", down_for,
                 due)
        self._wake.set()

    def _maintain(self) -> None:
        """Now and then: delivered rows past the retention period go."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + 3600
        with self._store.transaction() as session:
            pruned = outbox.prune(session, self._clock.now() - self._retention)
        if pruned:
            log.info("slack outbox: %s delivered post(s) older than %s pruned", pruned,
                     self._retention)

    # ---- one row -> one Web API call, with what bot.blocks renders -----------------------

    def _call(self, owed: Owed) -> tuple[str, str] | None:
        """Make the call a row owes; the (channel, ts) of a message later posts refer to."""
        if owed.grant_id is None:  # a free-standing alert
            self._post(owed.channel, **blocks.alert_message(outbox.alert_from_json(owed.payload)))
            return None
        event = owed.event()
        match owed.post:
            case Post.THREAD:
                return self._post(owed.channel, **blocks.audit_message(event))
            case Post.CARD:
                return self._post(owed.channel,
                                  **blocks.approval_card(event.grant, self._target(event.grant)))
            case Post.REPLY:
                self._reply(owed.channel, event)
            case Post.ALERT:
                self._post(owed.channel, **blocks.audit_alert(event))
            case Post.CARD_UPDATE:
                self._update_card(event)
            case Post.DM:
                dm = blocks.dm_for(event)
                if dm is None:
                    raise Undeliverable(f"nothing to tell the requester of {event.kind.value}")
                self._post(owed.channel, **dm)
            case _:  # a kind added to Post and not here: mypy says so
                assert_never(owed.post)
        return None

    def _reply(self, channel: str, event: GrantEvent) -> None:
        """An event as a reply in its request's audit thread (alone, if there is none)."""
        thread = self._notice(event.grant.id, Post.THREAD)
        if thread is None:  # its parent was never posted: the event stands alone
            self._post(channel, **blocks.audit_message(event))
        else:
            self._post(thread[0], thread_ts=thread[1], **blocks.audit_message(event))

    def _update_card(self, event: GrantEvent) -> None:
        card = self._notice(event.grant.id, Post.CARD)
        if card is None:
            raise Undeliverable("no approval card was posted for this request")
        self._client.chat_update(channel=card[0], ts=card[1],
                                 **blocks.card_update(event, self._target(event.grant)))

    def _post(self, channel: str, **message: Any) -> tuple[str, str]:
        response = self._client.chat_postMessage(channel=channel, unfurl_links=False,
                                                 unfurl_media=False, **message)
        return str(response["channel"]), str(response["ts"])

    def _target(self, grant: GrantView) -> Target:
        target = self._policy.targets.get(grant.target)
        if target is None:
            raise Undeliverable(f"target {grant.target} is no longer in the policy")
        return target

    def _notice(self, grant_id: int, post: Post) -> tuple[str, str] | None:
        """Where a grant's thread parent or card is; a copy of what this sender posted is
        kept in memory (the database holds them all)."""
        key = (grant_id, post)
        if key in self._notices:
            return self._notices[key]
        with self._store.read() as session:
            return outbox.notice(session, grant_id, post)


def delivery_client(token: str, base_url: str | None, timeout: int = 10) -> WebClient:
    """A WebClient for the sender: no retries of its own (the outbox retries, without
    holding a thread), and a bounded wait for each call."""
    return WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=timeout,
                     retry_handlers=[], logger=_quiet_sdk)


# slack_sdk logs every undecodable answer (an outage's HTML page) at error; the sender
# logs each failure once, with what it does next.
_quiet_sdk = logging.getLogger("jit.delivery.slack_sdk")
_quiet_sdk.setLevel(logging.CRITICAL)

