"""Queries and conditional updates. Every function works inside the caller's session."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Select,
    String,
    Update,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from jitcore.domain import HOLDS_RULE, Entry, GrantView, Status, can_transition
from jitcore.store.models import (
    AnyGrant,
    AnyHandle,
    Grant,
    GrantRecord,
    HandleRecord,
    PriorityReservation,
    RuleHandle,
    grants_table,
    rule_handles_table,
)

# What a repository function runs on: an ORM session, or the Connection of a unit of work
# (UnitOfWork.begin: no ORM session on the engine's transitions).
Executor = Session | Connection


class GrantIds:
    """PostgreSQL: ids for new grants, taken from the grants' own sequence `block` at a time
    and handed out in order, so a request knows its id before its one INSERT (the audit
    link written with it names the grant). Ids left in a block when the process stops are
    never used, and replicas take blocks of their own, so ids can skip and, across
    replicas, interleave; each is still used once."""

    _NEXT = text("SELECT nextval(pg_get_serial_sequence('grants', 'id')) "
                 "FROM generate_series(1, :n)")

    def __init__(self, block: int = 16) -> None:
        self._block = block
        self._ids: deque[int] = deque()
        self._lock = threading.Lock()

    def take(self, conn: Connection) -> int:
        with self._lock:
            if not self._ids:
                self._ids.extend(sorted(conn.execute(self._NEXT, {"n": self._block}).scalars()))
            return self._ids.popleft()


def transition(
    session: Executor,
    grant_id: int,
    from_: Status | Collection[Status],
    to: Status,
    *,
    lease_expired_before: datetime | None = None,
    unlapsed_at: datetime | None = None,
    **values: Any,
) -> GrantRecord | None:
    """Move a grant from one status to another if, and only if, it is still in `from_`.

    Returns the updated row, or None when the grant was not in `from_` (exactly one of two
    racing callers gets the row). With `lease_expired_before`, a grant whose lease
    (next_attempt_at) is still running is left alone; with `unlapsed_at`, a request whose
    approval timeout (lapses_at) has passed by then.
    """
    moved = transition_many(session, [grant_id], from_, to,
                            lease_expired_before=lease_expired_before,
                            unlapsed_at=unlapsed_at, **values)
    return moved[0] if moved else None


def transition_many(
    session: Executor,
    grant_ids: Collection[int],
    from_: Status | Collection[Status],
    to: Status,
    *,
    lease_expired_before: datetime | None = None,
    unlapsed_at: datetime | None = None,
    **values: Any,
) -> list[GrantRecord]:
    """`transition` for many grants in one statement; returns the rows that moved."""
    sources = {from_} if isinstance(from_, Status) else set(from_)
    for source in sources:
        if source != to and not can_transition(source, to):
            raise ValueError(f"illegal transition {source} -> {to}")
    if not grant_ids:
        return []
    shape = _Shape(tuple(sorted(s.value for s in sources)), tuple(sorted(values)),
                   lease_expired_before is not None, unlapsed_at is not None,
                   len(grant_ids) > 1)
    params = {f"set_{name}": value for name, value in values.items()}
    params["to_status"] = to.value
    if lease_expired_before is not None:
        params["lease_before"] = lease_expired_before
    if unlapsed_at is not None:
        params["unlapsed_at"] = unlapsed_at
    if shape.many:
        params["grant_ids"] = list(grant_ids)
    else:
        [params["grant_id"]] = grant_ids
    return [record_of(row) for row in session.execute(_transition_statement(shape), params)]


def record_of(row: Sequence[Any]) -> GrantRecord:
    """A row of every grants column, in table order, as a plain record."""
    return GrantRecord(*row)


class _Shape(NamedTuple):
    """What a transition's statement depends on besides its values (its cache key)."""

    sources: tuple[str, ...]
    columns: tuple[str, ...]
    lease: bool
    unlapsed: bool
    many: bool


@lru_cache(maxsize=256)
def _transition_statement(shape: _Shape) -> Update:
    """Built once per shape, then reused: every value is a bound parameter, so a call
    neither rebuilds the statement nor computes its cache key (most of a transition's
    Python cost). Core, not ORM-enabled DML; the rows come back as plain records."""
    c = grants_table.c
    condition = and_(
        c.id.in_(bindparam("grant_ids", expanding=True)) if shape.many
        else c.id == bindparam("grant_id"),
        or_(*(c.status == literal(source, String) for source in shape.sources)))
    if shape.lease:
        condition = and_(condition, or_(c.next_attempt_at.is_(None),
                                        c.next_attempt_at <= bindparam("lease_before")))
    if shape.unlapsed:
        condition = and_(condition, or_(c.lapses_at.is_(None),
                                        c.lapses_at > bindparam("unlapsed_at")))
    changes = {name: bindparam(f"set_{name}", type_=c[name].type) for name in shape.columns}
    return (update(grants_table).where(condition)
            .values(status=bindparam("to_status", type_=c.status.type), **changes)
            .returning(*grants_table.c))


_RECORD = select(grants_table).where(grants_table.c.id == bindparam("grant_id"))


def record(session: Executor, grant_id: int) -> GrantRecord | None:
    """The grant's row as a plain record (None: no such grant)."""
    row = session.execute(_RECORD, {"grant_id": grant_id}).first()
    return record_of(row) if row else None


def get(session: Session, grant_id: int, *, for_update: bool = False) -> Grant | None:
    query = select(Grant).where(Grant.id == grant_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).first()


# The due_* queries below are "work to claim": called inside the transaction that then
# moves the rows, they lock what they return and skip rows another replica has locked
# (PostgreSQL's FOR UPDATE SKIP LOCKED), so replicas sweeping at once split the work instead
# of queueing on each other's rows. SQLite has one writer at a time and no such clause.
def _claimable(query: Select[Any], limit: int) -> Select[Any]:
    return query.limit(limit).with_for_update(skip_locked=True)


def due_for_expiry(session: Executor, now: datetime, limit: int) -> Sequence[int]:
    """Due grants, a target's together: a batch then needs a cloud call or two per
    firewall, not one per grant (every due grant is closed in the same sweep anyway)."""
    return session.scalars(_claimable(
        select(Grant.id)
        .where(Grant.status == Status.ACTIVE.value, Grant.expires_at <= now)
        .order_by(Grant.target, Grant.expires_at), limit)
    ).all()


def due_for_warning(session: Executor, before: datetime, limit: int,
                    after: datetime | None = None) -> Sequence[int]:
    """Active grants that end before `before` (and after `after`: one already overdue is
    closed, not warned) and whose holder has not been warned yet."""
    ending = Grant.expires_at <= before
    if after is not None:
        ending = and_(ending, Grant.expires_at > after)
    return session.scalars(_claimable(
        select(Grant.id)
        .where(Grant.status == Status.ACTIVE.value, ending, Grant.warned_at.is_(None))
        .order_by(Grant.expires_at), limit)
    ).all()


def due_for_retry(session: Session, statuses: Collection[Status], now: datetime,
                  limit: int) -> Sequence[int]:
    """Grants whose pending cloud step may run again: lease over or backoff elapsed."""
    return session.scalars(_claimable(
        select(Grant.id)
        .where(Grant.status.in_([s.value for s in statuses]), Grant.next_attempt_at <= now)
        .order_by(Grant.next_attempt_at), limit)
    ).all()


def next_due(session: Session, warn_before: timedelta | None,
             now: datetime) -> datetime | None:
    """The earliest time the sweep has something to do: an end, a lapse, a retry or a
    warning (one round trip; each minimum is read off its (status, time) index)."""
    def earliest(column: Any, *statuses: Status) -> Any:
        return (select(func.min(column))
                .where(Grant.status.in_([s.value for s in statuses])).scalar_subquery())

    retrying = (Status.APPROVED, Status.OPENING, Status.CLOSING, Status.CLOSE_FAILED)
    found = list(session.execute(select(
        earliest(Grant.expires_at, Status.ACTIVE),
        earliest(Grant.lapses_at, Status.PENDING),
        *(earliest(Grant.next_attempt_at, status) for status in retrying),
        select(func.min(Grant.expires_at)).where(
            Grant.status == Status.ACTIVE.value, Grant.warned_at.is_(None),
            Grant.expires_at > now).scalar_subquery(),
    )).one())
    warning = found.pop()
    if warning is not None and warn_before is not None:
        found.append(warning - warn_before)
    times = [t for t in found if t is not None]
    return min(times) if times else None


def due_to_lapse(session: Executor, now: datetime, limit: int) -> Sequence[int]:
    return session.scalars(_claimable(
        select(Grant.id)
        .where(Grant.status == Status.PENDING.value, Grant.lapses_at <= now)
        .order_by(Grant.lapses_at), limit)
    ).all()


def list_grants(session: Session, statuses: Collection[Status] | None = None,
                limit: int = 200, requester: str | None = None,
                target: str | None = None) -> Sequence[Grant]:
    query = select(Grant).order_by(Grant.id.desc()).limit(limit)
    if statuses:
        query = query.where(Grant.status.in_([s.value for s in statuses]))
    if requester is not None:
        query = query.where(Grant.requester == requester)
    if target is not None:
        query = query.where(Grant.target == target)
    return session.scalars(query).all()


_LIVE_HANDLE = select(rule_handles_table).where(
    rule_handles_table.c.scope == bindparam("scope"), rule_handles_table.c.ref == bindparam("ref"),
    rule_handles_table.c.removed_at.is_(None)).limit(1)


def live_handle(session: Executor, scope: str, ref: str) -> HandleRecord | None:
    row = session.execute(_LIVE_HANDLE, {"scope": scope, "ref": ref}).first()
    return HandleRecord(*row) if row else None


_ADD_HANDLE = insert(rule_handles_table).returning(rule_handles_table.c.id)


def add_handle(session: Executor, **values: Any) -> HandleRecord:
    """Record a rule jit opened (one prebuilt INSERT, no ORM flush)."""
    handle_id = session.execute(_ADD_HANDLE, values).scalar_one()
    return HandleRecord(id=handle_id, removed_at=None, **values)


_GRANT_COLUMNS = len(grants_table.c)
_WITH_HANDLES = (
    select(*grants_table.c, *rule_handles_table.c)
    .outerjoin(rule_handles_table, grants_table.c.rule_handle_id == rule_handles_table.c.id)
    .where(grants_table.c.id.in_(bindparam("grant_ids", expanding=True)))
    .order_by(grants_table.c.id))


def with_handles(session: Session, grant_ids: Collection[int]
                 ) -> list[tuple[GrantRecord, HandleRecord | None]]:
    """The grants with the rule each holds, fresh from the database, as plain rows."""
    if not grant_ids:
        return []
    pairs: list[tuple[GrantRecord, HandleRecord | None]] = []
    for row in session.execute(_WITH_HANDLES, {"grant_ids": list(grant_ids)}):
        handle = row[_GRANT_COLUMNS:]
        pairs.append((record_of(row[:_GRANT_COLUMNS]),
                      None if handle[0] is None else HandleRecord(*handle)))
    return pairs


def holders(session: Session, handle_ids: Collection[int]) -> dict[int, list[int]]:
    """Per rule handle, the grants that still rely on it (opening or active)."""
    if not handle_ids:
        return {}
    found: dict[int, list[int]] = {}
    for handle_id, grant_id in session.execute(
        select(Grant.rule_handle_id, Grant.id).where(
            Grant.rule_handle_id.in_(list(handle_ids)),
            Grant.status.in_([Status.OPENING.value, Status.ACTIVE.value]),
        ).order_by(Grant.id)
    ):
        if handle_id is not None:
            found.setdefault(handle_id, []).append(grant_id)
    return found


def mark_removed(session: Executor, handle_ids: Collection[int], at: datetime) -> None:
    if handle_ids:
        session.execute(update(rule_handles_table)
                        .where(rule_handles_table.c.id.in_(list(handle_ids)),
                               rule_handles_table.c.removed_at.is_(None))
                        .values(removed_at=at))


def take_leases(session: Session, grant_ids: Collection[int], now: datetime,
                until: datetime) -> list[int]:
    """Claim these grants' next cloud step for this worker, where no lease is running."""
    if not grant_ids:
        return []
    return list(session.scalars(
        update(Grant).where(Grant.id.in_(list(grant_ids)), Grant.next_attempt_at <= now)
        .values(next_attempt_at=until).returning(Grant.id)
        .execution_options(synchronize_session=False)
    ))


def holders_of(session: Session, scope: str, refs: Collection[str]) -> set[str]:
    """Of these rule refs in this scope, the ones a live grant still holds."""
    if not refs:
        return set()
    rows = session.execute(
        select(RuleHandle.ref)
        .join(Grant, Grant.rule_handle_id == RuleHandle.id)
        .where(RuleHandle.scope == scope, RuleHandle.ref.in_(list(refs)),
               Grant.status.in_([s.value for s in HOLDS_RULE]))
    ).scalars()
    return set(rows)


def holding_statuses(session: Session, scope: str, ref: str) -> set[Status]:
    """The statuses of the grants that hold this rule (none: no grant holds it)."""
    return {Status(status) for status in session.scalars(
        select(Grant.status).join(RuleHandle, Grant.rule_handle_id == RuleHandle.id)
        .where(RuleHandle.scope == scope, RuleHandle.ref == ref,
               Grant.status.in_([s.value for s in HOLDS_RULE])))}


def removed_since(session: Session, scope: str, ref: str, since: datetime) -> bool:
    """Whether a handle of this rule was recorded removed at or after `since`."""
    return session.scalar(
        select(RuleHandle.id).where(RuleHandle.scope == scope, RuleHandle.ref == ref,
                                    RuleHandle.removed_at >= since).limit(1)) is not None


def close_state(session: Session, grant_id: int) -> tuple[Status, datetime | None] | None:
    """A grant's status and when it closed; None when there is no such grant."""
    row = session.execute(select(Grant.status, Grant.closed_at)
                          .where(Grant.id == grant_id)).first()
    return (Status(row.status), row.closed_at) if row is not None else None


def owes_close(session: Session, due_before: datetime) -> bool:
    """Whether a grant due before `due_before` is still ACTIVE, or one is CLOSING."""
    return session.scalar(select(Grant.id).where(or_(
        and_(Grant.status == Status.ACTIVE.value, Grant.expires_at <= due_before),
        Grant.status == Status.CLOSING.value)).limit(1)) is not None


def statuses_of(session: Session, grant_ids: Collection[int]) -> dict[int, Status]:
    if not grant_ids:
        return {}
    rows = session.execute(select(Grant.id, Grant.status).where(Grant.id.in_(list(grant_ids))))
    return {gid: Status(status) for gid, status in rows}


# Slots (jitcore.ports.SlotPool: Azure priorities) reserved per grant, one per scope; the
# table keeps the name of its first use.
def reserved_slots(session: Session, scope: str) -> set[int]:
    return set(session.scalars(
        select(PriorityReservation.priority).where(PriorityReservation.scope == scope)
    ))


def slot_of(session: Session, grant_id: int, scope: str) -> int | None:
    return session.scalar(select(PriorityReservation.priority).where(
        PriorityReservation.grant_id == grant_id, PriorityReservation.scope == scope))


def reserve_slot(session: Session, scope: str, slot: int, grant_id: int,
                 at: datetime) -> None:
    """Hold `slot` in `scope` for the grant; the unique constraint refuses a double."""
    session.add(PriorityReservation(scope=scope, priority=slot, grant_id=grant_id,
                                    reserved_at=at))
    session.flush()


def release_slots(session: Executor, grant_ids: Collection[int]) -> None:
    if grant_ids:
        session.execute(delete(PriorityReservation)
                        .where(PriorityReservation.grant_id.in_(list(grant_ids))))


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Grant.status, func.count()).group_by(Grant.status))
    return {status: count for status, count in rows}


def count_by_target(session: Session, statuses: Collection[Status]) -> dict[str, int]:
    rows = session.execute(select(Grant.target, func.count())
                           .where(Grant.status.in_([s.value for s in statuses]))
                           .group_by(Grant.target))
    return {target: count for target, count in rows}


def to_view(row: AnyGrant, handle: AnyHandle | None = None) -> GrantView:
    """The read-only snapshot handed to notifiers, the CLI and the bot."""
    return GrantView(
        id=row.id, status=Status(row.status), requester=row.requester, target=row.target,
        cloud=row.cloud, service=row.service, port=row.port, protocol=row.protocol,
        source=row.source, duration=timedelta(seconds=row.duration_s), reason=row.reason,
        created_at=row.created_at, decided_by=row.decided_by, decided_at=row.decided_at,
        opened_at=row.opened_at, expires_at=row.expires_at, closed_at=row.closed_at,
        close_reason=row.close_reason, rule_ref=handle.ref if handle else None,
        error=row.last_error,
        entry=Entry.from_text(handle.entry) if handle and handle.entry else None,
    )


def list_views(session: Session, statuses: Collection[Status] | None = None,
               limit: int = 200, requester: str | None = None,
               target: str | None = None) -> list[GrantView]:
    """Newest first, each with the rule it holds."""
    rows = list_grants(session, statuses, limit, requester, target)
    handle_ids = {r.rule_handle_id for r in rows if r.rule_handle_id is not None}
    handles = {h.id: h for h in session.scalars(
        select(RuleHandle).where(RuleHandle.id.in_(handle_ids)))} if handle_ids else {}
    return [to_view(r, handles.get(r.rule_handle_id or -1)) for r in rows]


def last_source(session: Session, requester: str) -> str | None:
    """The source this person declared most recently, to prefill their next request."""
    return session.scalars(select(Grant.source).where(Grant.requester == requester)
                           .order_by(Grant.id.desc()).limit(1)).first()
