"""Posts owed to Slack: written with the event that owes them; claimed, marked, pruned.

Every post an event owes (the approval card and its updates, the audit thread's parent
and replies, alerts, the requester's DMs) is a row of `outbox`, inserted in the event's
own transaction (DESIGN.md invariant 8). A row holds the event as it was, as JSON, and
which post it owes; the Slack layer (bot/delivery.py) renders and sends it. Nothing here
speaks Slack.

Order: rows of one lane (a grant's, or the free-standing alerts') are sent one after the
other, oldest first; a row waits while an earlier row of its lane is still pending.
Unrelated lanes never wait for each other. A sender claims whole lanes: their oldest
pending row must be due and unleased, and it takes a lease on every pending row of the
lane (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas split the lanes; SQLite has one
writer). A sender that dies leaves its lease to run out, and another takes the lane over.
"""

from __future__ import annotations

import enum
import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Integer,
    Text,
    and_,
    bindparam,
    cast,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from jitcore.domain import Entry, EventKind, GrantEvent, GrantView, Status
from jitcore.policy import Policy
from jitcore.store.models import Notice, OutboxPost, outbox_table


class Post(enum.StrEnum):
    """What a row owes Slack."""

    THREAD = "thread"  # the request, as the parent of its audit thread
    REPLY = "reply"  # an event, as a reply in the request's audit thread
    ALERT = "alert"  # a top-level alert in the audit channel
    CARD = "card"  # the approval card, with Approve and Deny
    CARD_UPDATE = "card_update"  # the card once the request has moved on
    DM = "dm"  # what the requester is told (the expiry warning too)


PENDING, SENT, FAILED = "pending", "sent", "failed"
RATE_LIMITED = "ratelimited"  # the error of a post Slack told to wait (Retry-After)
ALERTS_LANE = "alerts"
# Where a sent thread parent and card are remembered (the `notices` table), so that
# replies go into the thread and updates change the card in place.
NOTICE_OF = {Post.THREAD: "audit_thread", Post.CARD: "approval_card"}

# The events after which the approval card says how the request turned out.
CARD_OUTCOMES = frozenset({
    EventKind.APPROVED, EventKind.AUTO_APPROVED, EventKind.DENIED, EventKind.CANCELLED,
    EventKind.LAPSED, EventKind.OPENED, EventKind.OPEN_FAILED, EventKind.CLOSED,
})
# The events the requester hears of by DM (a cancellation only when someone else made it).
_DM_KINDS = frozenset({
    EventKind.APPROVED, EventKind.AUTO_APPROVED, EventKind.DENIED, EventKind.LAPSED,
    EventKind.OPENED, EventKind.OPEN_FAILED, EventKind.EXTENDED, EventKind.CLOSED,
    EventKind.EXPIRING,
})


def owes_dm(event: GrantEvent) -> bool:
    if event.kind is EventKind.CANCELLED:
        return event.actor != event.grant.requester
    return event.kind in _DM_KINDS


def lane_of(grant_id: int) -> str:
    return f"grant:{grant_id}"


# ---- events as JSON (a row keeps the event as it was when it happened) ----------------

def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _then(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


_VIEW_TIMES = ("created_at", "decided_at", "opened_at", "expires_at", "closed_at")


def event_json(event: GrantEvent) -> str:
    view: dict[str, Any] = {f.name: getattr(event.grant, f.name) for f in fields(GrantView)}
    view.update({name: _when(view[name]) for name in _VIEW_TIMES},
                status=event.grant.status.value,
                duration=int(event.grant.duration.total_seconds()),
                entry=event.grant.entry.to_text() if event.grant.entry else None)
    return json.dumps({"kind": event.kind.value, "actor": event.actor, "at": _when(event.at),
                       "detail": event.detail, "alert": event.alert, "grant": view},
                      ensure_ascii=False, separators=(",", ":"))


def event_from_json(text: str) -> GrantEvent:
    data = json.loads(text)
    view = dict(data["grant"])
    view.update({name: _then(view[name]) for name in _VIEW_TIMES},
                status=Status(view["status"]), duration=timedelta(seconds=view["duration"]),
                entry=Entry.from_text(view["entry"]) if view.get("entry") else None)
    at = _then(data["at"])
    assert at is not None
    return GrantEvent(EventKind(data["kind"]), GrantView(**view), data["actor"], at,
                      data["detail"], data["alert"])


def alert_json(message: str) -> str:
    return json.dumps({"message": message}, ensure_ascii=False)


def alert_from_json(text: str) -> str:
    return str(json.loads(text)["message"])


# ---- what an event owes ---------------------------------------------------------------

class Outbox:
    """Turns committed-with events into rows, for one policy's Slack channels."""

    def __init__(self, policy: Policy) -> None:
        if policy.slack is None:
            raise ValueError("no slack section: nothing is owed to Slack")
        self._channels = policy.slack
        self._targets = policy.targets

    def posts(self, event: GrantEvent) -> list[tuple[Post, str]]:
        """The posts an event owes, in the order they are to arrive, with their channels."""
        grant = event.grant
        audit, approvals = self._channels.audit_channel, self._channels.approvals_channel
        owed: list[tuple[Post, str]] = []
        if event.kind is EventKind.REQUESTED:
            owed.append((Post.THREAD, audit))
            if grant.target in self._targets:
                owed.append((Post.CARD, approvals))
        else:
            owed.append((Post.REPLY, audit))
        if event.alert:
            owed.append((Post.ALERT, audit))
        if event.kind in CARD_OUTCOMES:
            owed.append((Post.CARD_UPDATE, approvals))
        if owes_dm(event):
            owed.append((Post.DM, grant.requester))
        return owed

    def rows(self, events: Iterable[GrantEvent], now: datetime) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for event in events:
            payload = event_json(event)
            rows.extend(_row(lane_of(event.grant.id), event.grant.id, post, channel, payload,
                             now) for post, channel in self.posts(event))
        return rows

    def alert_row(self, message: str, now: datetime) -> dict[str, Any]:
        return _row(ALERTS_LANE, None, Post.ALERT, self._channels.audit_channel,
                    alert_json(message), now)

    def write(self, executor: Session | Connection, events: Sequence[GrantEvent],
              now: datetime) -> None:
        """Insert the rows these events owe, in the caller's transaction."""
        rows = self.rows(events, now)
        if rows:
            executor.execute(_INSERT_POSTS, rows)

    def rows_json(self, events: Iterable[GrantEvent], now: datetime) -> str:
        """The rows, as the JSON that `RECORDING` (PostgreSQL) inserts in one statement."""
        at = _naive(now)
        return json.dumps([{**row, "created_at": at, "next_attempt_at": at}
                           for row in self.rows(events, now)], ensure_ascii=False)


_INSERT_POSTS = insert(outbox_table)


def _row(lane: str, grant_id: int | None, post: Post, channel: str, payload: str,
         now: datetime) -> dict[str, Any]:
    return dict(lane=lane, grant_id=grant_id, post=post.value, channel=channel,
                payload=payload, status=PENDING, created_at=now, attempts=0,
                next_attempt_at=now)


def _naive(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


# PostgreSQL: the rows of `rows_json` inserted by the statement that records a request
# (see JitService), so the grant, its audit links and its posts are one atomic statement.
_POSTED_RECORDS = func.json_to_recordset(cast(bindparam("posts", type_=Text), JSON)) \
    .table_valued(column("lane", Text), column("grant_id", Integer), column("post", Text),
                  column("channel", Text), column("payload", Text), column("status", Text),
                  column("created_at", DateTime), column("attempts", Integer),
                  column("next_attempt_at", DateTime)) \
    .render_derived(name="owed", with_types=True)
_OWED_COLUMNS = ("lane", "grant_id", "post", "channel", "payload", "status", "created_at",
                 "attempts", "next_attempt_at")
RECORDING = insert(outbox_table).from_select(
    list(_OWED_COLUMNS), select(*(_POSTED_RECORDS.c[name] for name in _OWED_COLUMNS))
).returning(outbox_table.c.id)


# ---- sending: claim, mark, prune ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Owed:
    """A claimed row: what to send, where, and how often it was tried."""

    id: int
    lane: str
    grant_id: int | None
    post: Post
    channel: str
    payload: str
    attempts: int

    def event(self) -> GrantEvent:
        return event_from_json(self.payload)


def claim(session: Session, sender: str, now: datetime, lease: timedelta,
          lanes: int = 50) -> list[Owed]:
    """Lease up to `lanes` lanes whose oldest pending row is due; their pending rows, in
    order. Call in a transaction (the lease is taken when it commits)."""
    earlier = aliased(OutboxPost)
    waits = select(earlier.id).where(earlier.status == PENDING, earlier.lane == OutboxPost.lane,
                                     earlier.id < OutboxPost.id).exists()
    heads = session.execute(
        select(OutboxPost.id, OutboxPost.lane)
        .where(OutboxPost.status == PENDING, OutboxPost.next_attempt_at <= now,
               or_(OutboxPost.leased_until.is_(None), OutboxPost.leased_until < now,
                   OutboxPost.leased_by == sender), ~waits)
        .order_by(OutboxPost.id).limit(lanes)
        .with_for_update(skip_locked=True, of=OutboxPost)).all()
    if not heads:
        return []
    oldest_first = {lane: n for n, (_, lane) in enumerate(heads)}
    rows = session.scalars(
        update(OutboxPost)
        .where(OutboxPost.status == PENDING, OutboxPost.lane.in_(list(oldest_first)),
               or_(OutboxPost.leased_until.is_(None), OutboxPost.leased_until < now,
                   OutboxPost.leased_by == sender))
        .values(leased_until=now + lease, leased_by=sender)
        .returning(OutboxPost), execution_options={"synchronize_session": False}).all()
    return [Owed(r.id, r.lane, r.grant_id, Post(r.post), r.channel, r.payload, r.attempts)
            for r in sorted(rows, key=lambda r: (oldest_first[r.lane], r.id))]


def mark_sent(session: Session, owed: Owed, now: datetime,
              message: tuple[str, str] | None = None) -> None:
    """Sent; `message` (channel, ts) is remembered when later posts follow up on it."""
    session.execute(update(OutboxPost).where(OutboxPost.id == owed.id).values(
        status=SENT, done_at=now, leased_until=None, last_error=None,
        attempts=OutboxPost.attempts + 1), execution_options={"synchronize_session": False})
    kind = NOTICE_OF.get(owed.post)
    if kind is not None and message is not None and owed.grant_id is not None:
        channel, ref = message
        # The dialect's own INSERT (both have ON CONFLICT), imported only when used: a
        # process on SQLite never loads the PostgreSQL dialect.
        dialect = importlib.import_module(f"sqlalchemy.dialects.{session.get_bind().dialect.name}")
        upsert = dialect.insert(Notice)
        session.execute(upsert.values(grant_id=owed.grant_id, kind=kind, channel=channel,
                                      ref=ref)
                        .on_conflict_do_update(index_elements=["grant_id", "kind"],
                                               set_={"channel": channel, "ref": ref}))


def notice(session: Session, grant_id: int, post: Post) -> tuple[str, str] | None:
    """Where the thread parent or the card of a grant was posted: (channel, ts)."""
    found = session.execute(select(Notice.channel, Notice.ref).where(
        Notice.grant_id == grant_id, Notice.kind == NOTICE_OF[post])).first()
    return (found[0], found[1]) if found is not None else None


def mark_failed(session: Session, owed: Owed, now: datetime, error: str) -> None:
    """Failed for good: not retried; later posts of its lane go on."""
    session.execute(update(OutboxPost).where(OutboxPost.id == owed.id).values(
        status=FAILED, done_at=now, leased_until=None, last_error=error[:2000],
        attempts=OutboxPost.attempts + 1), execution_options={"synchronize_session": False})


def retry_later(session: Session, owed: Owed, sender: str, at: datetime, error: str) -> None:
    """Tried and not delivered: again at `at`. The lane's other rows go back (their turn
    comes after this one)."""
    session.execute(update(OutboxPost).where(OutboxPost.id == owed.id).values(
        next_attempt_at=at, last_error=error[:2000], attempts=OutboxPost.attempts + 1),
        execution_options={"synchronize_session": False})
    release(session, sender, lanes=[owed.lane])


def release(session: Session, sender: str | None, lanes: Sequence[str] | None = None) -> None:
    """Give back this sender's leases (None: every sender's), of these lanes or all."""
    mine = OutboxPost.status == PENDING
    if sender is not None:
        mine = and_(mine, OutboxPost.leased_by == sender)
    if lanes is not None:
        mine = and_(mine, OutboxPost.lane.in_(lanes))
    session.execute(update(OutboxPost).where(mine).values(leased_until=None, leased_by=None),
                    execution_options={"synchronize_session": False})


def due_now(session: Session, now: datetime) -> int:
    """Posts waiting out a failure's backoff are due now (not those a rate limit told to
    wait: Slack said when); how many."""
    result = session.execute(update(OutboxPost).where(
        OutboxPost.status == PENDING, OutboxPost.next_attempt_at > now,
        ~OutboxPost.last_error.startswith(RATE_LIMITED)).values(next_attempt_at=now),
        execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


def prune(session: Session, before: datetime) -> int:
    """Delete rows delivered (or failed for good) before `before`; how many."""
    result = session.execute(delete(OutboxPost).where(
        OutboxPost.status.in_([SENT, FAILED]), OutboxPost.done_at < before),
        execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


def requeue_failed(session: Session, now: datetime) -> int:
    """Failed posts become pending again (after the cause was fixed); how many."""
    result = session.execute(update(OutboxPost).where(OutboxPost.status == FAILED).values(
        status=PENDING, done_at=None, next_attempt_at=now, attempts=0),
        execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    oldest_pending: datetime | None
    failed: int
    recent_failures: tuple[OutboxPost, ...]

    def oldest_age(self, now: datetime) -> float:
        return (now - self.oldest_pending).total_seconds() if self.oldest_pending else 0.0


def backlog(session: Session, failures: int = 10) -> Backlog:
    counts: Mapping[Any, Any] = dict(session.execute(
        select(OutboxPost.status, func.count()).where(OutboxPost.status.in_([PENDING, FAILED]))
        .group_by(OutboxPost.status)).all())
    oldest = session.scalar(select(func.min(OutboxPost.created_at))
                            .where(OutboxPost.status == PENDING))
    recent = session.scalars(select(OutboxPost).where(OutboxPost.status == FAILED)
                             .order_by(OutboxPost.id.desc()).limit(failures)).all()
    return Backlog(int(counts.get(PENDING, 0)), oldest, int(counts.get(FAILED, 0)),
                   tuple(recent))
