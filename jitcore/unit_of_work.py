"""One transaction of the service: the state changes, their audit links and the posts
they owe Slack commit together; the events are published only after the commit.

Every use case (intake, opening, closing, the sweep, reconcile) changes grants through
`UnitOfWork.begin()` and `UnitOfWork.move()`, so that invariant 1 of DESIGN.md holds in
one place: no state change without its audit event, no audit event without its change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DBAPIError

from jitcore import audit, outbox
from jitcore.domain import EventKind, GrantEvent, GrantView, Status
from jitcore.errors import InvalidTransition, NotFound
from jitcore.metrics import GrantMetrics
from jitcore.ports import Clock, Notifier
from jitcore.store import Store
from jitcore.store import repository as repo
from jitcore.store.models import AnyGrant, GrantRecord, RuleHandle, outbox_table
from jitcore.store.watch import notify

log = logging.getLogger("jitcore.service")

# PostgreSQL: the outbox rows of a transaction's events, and its audit links, one statement.
_LINKS_AND_POSTS = audit.appending(outbox.RECORDING)

POLICY_ACTOR = "policy"
ENGINE_ACTOR = "jit"


@dataclass(slots=True)
class Work:
    """One transaction: its connection, the audit links it adds, the events it will
    publish. Core statements only (the repository's functions that take an Executor)."""

    db: Connection
    chain: audit.ChainWriter
    events: list[GrantEvent]


class UnitOfWork:
    """Transactions that carry their audit links and Slack posts, and what follows a
    commit: the log line, the metrics and the notifier for each event."""

    def __init__(self, store: Store, clock: Clock, notifier: Notifier,
                 posts: outbox.Outbox | None, metrics: GrantMetrics | None) -> None:
        self.store = store
        self.clock = clock
        self.notifier = notifier
        self.posts = posts  # None: the policy has no slack: section, nothing is owed
        self.metrics = metrics

    @contextmanager
    def begin(self) -> Iterator[Work]:
        """A transaction whose audit links and the posts its events owe Slack are written
        before commit, and whose events are published after it; on an exception, none."""
        events: list[GrantEvent] = []
        with self.store.writing() as db:
            work = Work(db, audit.ChainWriter(db), events)
            yield work
            self._write_links_and_posts(work)
            if events:  # a due time may have been made or moved: the engines' alarms wake
                notify(db)
        self.publish(events)

    def _write_links_and_posts(self, work: Work) -> None:
        now = self.clock.now()
        if self.posts is not None and work.chain.on_server and work.chain.pending:
            # PostgreSQL: the posts the events owe and their audit links in one statement,
            # one round trip instead of two.
            work.chain.flush(_LINKS_AND_POSTS, {"posts": self.posts.rows_json(work.events, now)})
            return
        work.chain.flush()
        if self.posts is not None:
            self.posts.write(work.db, work.events, now)

    def change(self, grant_id: int, from_: Status, to: Status, actor: str, kind: EventKind,
               values: dict[str, Any], action: str, unlapsed_at: datetime | None = None,
               **details: Any) -> GrantView:
        """One transition in a transaction of its own; InvalidTransition if the grant is
        no longer in `from_` (or, with `unlapsed_at`, has lapsed by then)."""
        with self.begin() as work:
            row = self.move(work, grant_id, from_, to, actor, kind, values=values,
                            unlapsed_at=unlapsed_at, **details)
            if row is None:
                raise InvalidTransition(grant_id, self.row(work.db, grant_id).state,
                                        action)
        return repo.to_view(row)

    def move(self, work: Work, grant_id: int, from_: Status | tuple[Status, ...],
             to: Status, actor: str, kind: EventKind, *, values: dict[str, Any] | None = None,
             lease_expired_before: datetime | None = None,
             unlapsed_at: datetime | None = None, alert: bool = False,
             **details: Any) -> GrantRecord | None:
        """Conditional transition plus its audit event, in the caller's transaction."""
        row = repo.transition(work.db, grant_id, from_, to,
                              lease_expired_before=lease_expired_before,
                              unlapsed_at=unlapsed_at, **(values or {}))
        if row is not None:
            self.record(work, row, actor, kind, alert=alert, **details)
        return row

    def record(self, work: Work, row: AnyGrant, actor: str, kind: EventKind,
               alert: bool = False, **details: Any) -> None:
        work.events.append(self.link(work.chain, repo.to_view(row), actor, kind, alert,
                                     **details))

    def link(self, chain: audit.ChainWriter, view: GrantView, actor: str, kind: EventKind,
             alert: bool = False, **details: Any) -> GrantEvent:
        """Queue the audit link of an event on `view`; the event, to publish after commit."""
        now = self.clock.now()
        kept = {k: v for k, v in details.items() if v not in (None, "")}
        chain.add(at=now, actor=actor, action=kind.value, grant_id=view.id,
                  target=view.target, port=view.port, source=view.source,
                  details={"status": view.status.value, **kept})
        detail = str(kept.get("error") or kept.get("outcome") or kept.get("reason") or "")
        return GrantEvent(kind, view, actor, now, detail, alert)

    def publish(self, events: list[GrantEvent]) -> None:
        for event in events:
            log.log(logging.WARNING if event.alert else logging.INFO,
                    "#%s %s (%s) by %s%s", event.grant.id, event.kind.value,
                    event.grant.status.value, event.actor,
                    f": {event.detail}" if event.detail else "",
                    extra={"grant_id": event.grant.id, "event": event.kind.value,
                           "status": event.grant.status.value, "actor": event.actor,
                           "target": event.grant.target})
            try:
                if self.metrics is not None:
                    self.metrics.observe(event)
                self.notifier.publish(event)
            except Exception:  # a notification failure must not undo a committed change
                log.exception("notifier failed for %s #%s", event.kind, event.grant.id)

    def alert(self, message: str) -> None:
        """Owed to the audit channel as a row of its own (never inside another
        transaction), and told to the notifier; never fails the caller."""
        if self.posts is not None:
            try:
                with self.store.transaction() as session:
                    session.execute(insert(outbox_table),
                                    [self.posts.alert_row(message, self.clock.now())])
            except DBAPIError as exc:  # the log is all that is left to tell
                log.error("alert not queued for Slack (database: %s): %s", exc.orig, message)
        try:
            self.notifier.alert(message)
        except Exception:  # see publish
            log.exception("notifier failed to alert: %s", message)

    def view(self, grant_id: int) -> GrantView:
        """The grant as it stands, with its rule; NotFound if there is no such grant."""
        with self.store.read() as session:
            row = self.row(session, grant_id)
            handle = session.get(RuleHandle, row.rule_handle_id) if row.rule_handle_id else None
            return repo.to_view(row, handle)

    @staticmethod
    def row(db: repo.Executor, grant_id: int) -> GrantRecord:
        row = repo.record(db, grant_id)
        if row is None:
            raise NotFound(f"no request #{grant_id}")
        return row
