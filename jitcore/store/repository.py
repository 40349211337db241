"""Queries and conditional updates. Every function works inside the caller's session."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session

from jitcore.domain import HOLDS_RULE, GrantView, Status, can_transition
from jitcore.store.models import Grant, PriorityReservation, RuleHandle


def transition(
    session: Session,
    grant_id: int,
    from_: Status | Collection[Status],
    to: Status,
    *,
    lease_expired_before: datetime | None = None,
    **values: Any,
) -> bool:
    """Move a grant from one status to another if, and only if, it is still in `from_`.

    Exactly one of two racing callers gets True. With `lease_expired_before`, a grant
    whose lease (next_attempt_at) is still running is left alone.
    """
    sources = {from_} if isinstance(from_, Status) else set(from_)
    for source in sources:
        if source != to and not can_transition(source, to):
            raise ValueError(f"illegal transition {source} -> {to}")
    condition = and_(Grant.id == grant_id, Grant.status.in_([s.value for s in sources]))
    if lease_expired_before is not None:
        condition = and_(condition, or_(Grant.next_attempt_at.is_(None),
                                        Grant.next_attempt_at <= lease_expired_before))
    result = session.execute(
        update(Grant).where(condition).values(status=to.value, **values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def get(session: Session, grant_id: int, *, for_update: bool = False) -> Grant | None:
    query = select(Grant).where(Grant.id == grant_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).first()


def due_for_expiry(session: Session, now: datetime, limit: int) -> Sequence[int]:
    return session.scalars(
        select(Grant.id)
        .where(Grant.status == Status.ACTIVE.value, Grant.expires_at <= now)
        .order_by(Grant.expires_at).limit(limit)
    ).all()


def due_for_retry(session: Session, statuses: Collection[Status], now: datetime,
                  limit: int) -> Sequence[int]:
    """Grants whose pending cloud step may run again: lease over or backoff elapsed."""
    return session.scalars(
        select(Grant.id)
        .where(Grant.status.in_([s.value for s in statuses]), Grant.next_attempt_at <= now)
        .order_by(Grant.next_attempt_at).limit(limit)
    ).all()


def due_to_lapse(session: Session, now: datetime, limit: int) -> Sequence[int]:
    return session.scalars(
        select(Grant.id)
        .where(Grant.status == Status.PENDING.value, Grant.lapses_at <= now)
        .order_by(Grant.lapses_at).limit(limit)
    ).all()


def list_grants(session: Session, statuses: Collection[Status] | None = None,
                limit: int = 200) -> Sequence[Grant]:
    query = select(Grant).order_by(Grant.id.desc()).limit(limit)
    if statuses:
        query = query.where(Grant.status.in_([s.value for s in statuses]))
    return session.scalars(query).all()


def live_handle(session: Session, scope: str, ref: str) -> RuleHandle | None:
    return session.scalars(
        select(RuleHandle).where(RuleHandle.scope == scope, RuleHandle.ref == ref,
                                 RuleHandle.removed_at.is_(None))
    ).first()


def other_holders(session: Session, handle_id: int, grant_id: int) -> Sequence[int]:
    """Other grants that still rely on the same cloud rule."""
    return session.scalars(
        select(Grant.id).where(
            Grant.rule_handle_id == handle_id, Grant.id != grant_id,
            Grant.status.in_([Status.OPENING.value, Status.ACTIVE.value]),
        )
    ).all()


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


def statuses_of(session: Session, grant_ids: Collection[int]) -> dict[int, Status]:
    if not grant_ids:
        return {}
    rows = session.execute(select(Grant.id, Grant.status).where(Grant.id.in_(list(grant_ids))))
    return {gid: Status(status) for gid, status in rows}


def reserved_priorities(session: Session, scope: str) -> set[int]:
    return set(session.scalars(
        select(PriorityReservation.priority).where(PriorityReservation.scope == scope)
    ))


def release_priorities(session: Session, grant_id: int) -> None:
    for row in session.scalars(
        select(PriorityReservation).where(PriorityReservation.grant_id == grant_id)
    ):
        session.delete(row)


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Grant.status, func.count()).group_by(Grant.status))
    return {status: count for status, count in rows}


def to_view(row: Grant, handle: RuleHandle | None = None) -> GrantView:
    """The read-only snapshot handed to notifiers, the CLI and the bot."""
    return GrantView(
        id=row.id, status=Status(row.status), requester=row.requester, target=row.target,
        cloud=row.cloud, service=row.service, port=row.port, protocol=row.protocol,
        source=row.source, duration=timedelta(seconds=row.duration_s), reason=row.reason,
        created_at=row.created_at, decided_by=row.decided_by, decided_at=row.decided_at,
        opened_at=row.opened_at, expires_at=row.expires_at, closed_at=row.closed_at,
        close_reason=row.close_reason, rule_ref=handle.ref if handle else None,
        error=row.last_error,
    )


def list_views(session: Session, statuses: Collection[Status] | None = None,
               limit: int = 200) -> list[GrantView]:
    """Newest first, each with the rule it holds."""
    rows = list_grants(session, statuses, limit)
    handle_ids = {r.rule_handle_id for r in rows if r.rule_handle_id is not None}
    handles = {h.id: h for h in session.scalars(
        select(RuleHandle).where(RuleHandle.id.in_(handle_ids)))} if handle_ids else {}
    return [to_view(r, handles.get(r.rule_handle_id or -1)) for r in rows]
