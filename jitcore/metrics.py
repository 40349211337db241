"""Prometheus metrics.

Two kinds:
- what this process did (counters and latency histograms), moved by `GrantMetrics.observe`
  from the service's committed events and by `count_request`: per replica, so sum them;
- what the database holds now (active grants, CLOSE_FAILED grants, pending approvals, the
  oldest overdue grant), read by `StateCollector` at scrape time: every replica reports the
  same shared state, so take the max, not the sum.

Nothing is registered at import time: `install(store, clock)` registers both on a registry
(prometheus-client's default one unless told otherwise) and is called once by a process
that serves /metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from jitcore import outbox
from jitcore.domain import EventKind, GrantEvent, Status
from jitcore.ports import Clock
from jitcore.store import Store
from jitcore.store.models import Grant

# Seconds: a cloud step takes from tens of milliseconds (EC2) to a minute (a busy NSG).
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Grants still open past their end: expired but not yet (or not successfully) closed.
_STILL_OPEN = (Status.ACTIVE, Status.CLOSING, Status.CLOSE_FAILED)


class GrantMetrics:
    """The counters and histograms of one process, and what moves them."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "jit_requests", "Access requests, by outcome: approval_needed, auto_approved, "
            "refused (by policy)", ["outcome"], registry=registry)
        self.opened = Counter("jit_grants_opened", "Grants whose rule was put in place",
                              ["cloud"], registry=registry)
        self.open_failures = Counter("jit_open_failures", "Grants whose rule could not be "
                                     "put in place (FAILED)", ["cloud"], registry=registry)
        self.closed = Counter("jit_grants_closed", "Grants closed, by reason (expired, "
                              "revoked, ...)", ["cloud", "reason"], registry=registry)
        self.close_failures = Counter("jit_close_failures", "Failed attempts to remove a "
                                      "grant's rule (each retry counts)", ["cloud"],
                                      registry=registry)
        self.close_failed = Counter("jit_close_failed", "Grants that ran out of close "
                                    "attempts: CLOSE_FAILED, alerted, the rule may still be "
                                    "open", ["cloud"], registry=registry)
        self.open_seconds = Histogram("jit_open_seconds", "From claiming an open to its rule "
                                      "being recorded in place", ["cloud"],
                                      buckets=_LATENCY_BUCKETS, registry=registry)
        self.close_seconds = Histogram("jit_close_seconds", "From claiming a close (expiry "
                                       "or revoke) to its rule being recorded removed",
                                       ["cloud"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.posts = Counter("jit_slack_posts", "Slack posts owed by events, by outcome of "
                             "each attempt (sent, retried, failed: for good) and kind of post",
                             ["outcome", "post"], registry=registry)
        self._started: dict[tuple[int, EventKind], datetime] = {}
        self._lock = threading.Lock()

    def count_request(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def count_post(self, outcome: str, post: str) -> None:
        self.posts.labels(outcome, post).inc()

    def observe(self, event: GrantEvent) -> None:
        grant, kind = event.grant, event.kind
        if kind in (EventKind.OPENING, EventKind.CLOSING):
            with self._lock:
                if len(self._started) > 100_000:  # steps whose end this process never saw
                    self._started.clear()
                self._started[(grant.id, kind)] = event.at
        elif kind is EventKind.OPENED:
            self.opened.labels(grant.cloud).inc()
            self._took(self.open_seconds, grant.cloud, grant.id, EventKind.OPENING, event.at)
        elif kind is EventKind.OPEN_FAILED:
            self.open_failures.labels(grant.cloud).inc()
            self._took(None, grant.cloud, grant.id, EventKind.OPENING, event.at)
        elif kind is EventKind.CLOSED:
            self.closed.labels(grant.cloud, grant.close_reason or "unknown").inc()
            self._took(self.close_seconds, grant.cloud, grant.id, EventKind.CLOSING, event.at)
        elif kind in (EventKind.CLOSE_RETRY, EventKind.CLOSE_FAILED):
            self.close_failures.labels(grant.cloud).inc()
            if kind is EventKind.CLOSE_FAILED:
                self.close_failed.labels(grant.cloud).inc()

    def _took(self, histogram: Histogram | None, cloud: str, grant_id: int,
              started_by: EventKind, at: datetime) -> None:
        with self._lock:
            started = self._started.pop((grant_id, started_by), None)
        if histogram is not None and started is not None:
            histogram.labels(cloud).observe(max(0.0, (at - started).total_seconds()))


class StateCollector(Collector):
    """Gauges of the shared state, read from the database at each scrape."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("jit_database_up", "1 if the last scrape could read the "
                               "database, else 0 (and the other jit_* gauges are missing)")
        try:
            families = self._read()
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        now = self._clock.now()
        with self._store.read() as session:
            active = session.execute(
                select(Grant.cloud, Grant.target, func.count())
                .where(Grant.status == Status.ACTIVE.value)
                .group_by(Grant.cloud, Grant.target)).all()
            counts = dict(session.execute(
                select(Grant.status, func.count())
                .where(Grant.status.in_([Status.PENDING.value, Status.CLOSE_FAILED.value]))
                .group_by(Grant.status)).all())
            oldest = session.execute(
                select(func.min(Grant.expires_at))
                .where(Grant.status.in_([s.value for s in _STILL_OPEN]),
                       Grant.expires_at <= now)).scalar()
        grants = GaugeMetricFamily("jit_active_grants", "Grants open now (ACTIVE), by cloud "
                                   "and target", labels=["cloud", "target"])
        for cloud, target, count in active:
            grants.add_metric([cloud, target], count)
        failed = GaugeMetricFamily("jit_close_failed_grants", "Grants in CLOSE_FAILED now: "
                                   "their rule may still be open")
        failed.add_metric([], counts.get(Status.CLOSE_FAILED.value, 0))
        pending = GaugeMetricFamily("jit_pending_approvals", "Requests waiting for an "
                                    "approver")
        pending.add_metric([], counts.get(Status.PENDING.value, 0))
        overdue = GaugeMetricFamily("jit_oldest_overdue_grant_seconds", "How long past its "
                                    "end the oldest grant whose rule is not yet removed is "
                                    "(0: none)")
        overdue.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
        return [grants, failed, pending, overdue, *self._outbox(now)]

    def _outbox(self, now: datetime) -> list[Metric]:
        with self._store.read() as session:
            owed = outbox.backlog(session, failures=0)
        pending = GaugeMetricFamily("jit_slack_posts_pending", "Slack posts owed and not yet "
                                    "delivered (the outbox's backlog)")
        pending.add_metric([], owed.pending)
        oldest = GaugeMetricFamily("jit_slack_oldest_pending_post_seconds", "Age of the "
                                   "oldest Slack post not yet delivered (0: none); alert on "
                                   "this rather than on readiness when Slack is down")
        oldest.add_metric([], owed.oldest_age(now))
        failed = GaugeMetricFamily("jit_slack_posts_failed", "Slack posts that failed for "
                                   "good and are kept (jit status lists them)")
        failed.add_metric([], owed.failed)
        return [pending, oldest, failed]


class WriteCollector(Collector):
    """Cloud writes that carry many changes (Azure NSGs and firewalls): how many writes this
    process made and how many changes they carried; changes / writes is the batch size."""

    def collect(self) -> Iterator[Metric]:
        from jitcore.providers.coalesce import totals

        writes = CounterMetricFamily("jit_cloud_writes", "Writes of a whole cloud resource "
                                     "(each carries every change waiting on it)", labels=["kind"])
        changes = CounterMetricFamily("jit_cloud_write_changes", "Rule changes carried by "
                                      "those writes", labels=["kind"])
        for kind, (batches, carried) in sorted(totals().items()):
            writes.add_metric([kind], batches)
            changes.add_metric([kind], carried)
        yield writes
        yield changes


def install(store: Store, clock: Clock,
            registry: CollectorRegistry = REGISTRY) -> GrantMetrics:
    """Register this process's metrics and the state gauges; returns the former."""
    metrics = GrantMetrics(registry)
    registry.register(StateCollector(store, clock))
    registry.register(WriteCollector())
    return metrics
