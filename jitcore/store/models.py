"""SQLAlchemy 2.0 models: requests/grants, rule handles, priority reservations, audit events,
the Slack outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from jitcore.domain import Status


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every backend; always read back as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    pass


class Grant(Base):
    """A request for access and, once approved, the grant it becomes."""

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16))
    requester: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    cloud: Mapped[str] = mapped_column(String(8))
    service: Mapped[str] = mapped_column(String(32))
    port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(64))
    duration_s: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lapses_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the expiry warning
    close_reason: Mapped[str | None] = mapped_column(String(16))
    closed_by: Mapped[str | None] = mapped_column(String(64))
    # When the sweep may (re)try the pending cloud step: a lease while a worker holds it,
    # a backoff after a failure.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    rule_handle_id: Mapped[int | None] = mapped_column(ForeignKey("rule_handles.id"))

    @property
    def state(self) -> Status:
        return Status(self.status)

    __table_args__ = (
        Index("ix_grants_status_expires_at", "status", "expires_at"),
        Index("ix_grants_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_grants_status_lapses_at", "status", "lapses_at"),
        Index("ix_grants_rule_handle_id", "rule_handle_id"),
    )


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """A grant's row as a statement returned it: plain values, no ORM identity or change
    tracking (what the hot paths pass around: a transition's RETURNING, the close batch).
    Frozen: a change goes through a statement, never an assignment. Its fields are the
    table's columns, in order (`record_of` builds it positionally)."""

    id: int
    status: str
    requester: str
    target: str
    cloud: str
    service: str
    port: int
    protocol: str
    source: str
    duration_s: int
    reason: str
    created_at: datetime
    lapses_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    opened_at: datetime | None
    expires_at: datetime | None
    closed_at: datetime | None
    warned_at: datetime | None
    close_reason: str | None
    closed_by: str | None
    next_attempt_at: datetime | None
    attempts: int
    last_error: str | None
    rule_handle_id: int | None

    @property
    def state(self) -> Status:
        return Status(self.status)


@dataclass(frozen=True, slots=True)
class HandleRecord:
    """A rule handle's row as a statement returned it (see GrantRecord)."""

    id: int
    cloud: str
    scope: str
    ref: str
    port: int
    protocol: str
    source: str
    owned: bool
    created_at: datetime
    removed_at: datetime | None
    entry: str | None


# A grant as read through the ORM or as a plain row: what code that only reads one takes
# (AnyHandle, below, is the same for a rule handle).
AnyGrant = Grant | GrantRecord


class RuleHandle(Base):
    """A cloud rule jit opened or shares; several grants may hold one (same port and source)."""

    __tablename__ = "rule_handles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cloud: Mapped[str] = mapped_column(String(8))
    scope: Mapped[str] = mapped_column(String(400))
    ref: Mapped[str] = mapped_column(String(200))
    port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(64))
    owned: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    entry: Mapped[str | None] = mapped_column(String(200))  # Entry.to_text(), for a DNAT

    __table_args__ = (Index("ix_rule_handles_scope_ref", "scope", "ref"),)


AnyHandle = RuleHandle | HandleRecord


class PriorityReservation(Base):
    """An Azure NSG priority held for a grant; unique per NSG so replicas cannot collide."""

    __tablename__ = "priority_reservations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(400))
    priority: Mapped[int] = mapped_column(Integer)
    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id"))
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("scope", "priority", name="uq_priority_reservations_scope_priority"),
        Index("ix_priority_reservations_grant_id", "grant_id"),
    )


class Notice(Base):
    """Where a notifier said something about a grant (a Slack channel and message ts, say),
    so that later events can follow up on it: reply in its thread, update it in place."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("grants.id"))
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("grant_id", "kind", name="uq_notices_grant_id_kind"),)


class TargetState(Base):
    """Whether jit keeps a target closed by default, and how to undo it exactly.

    `lockdown` is the JSON of what enabling did (the standing rules it removed, whole, and
    what jit created in their place); `problems` the findings of the last posture check.
    """

    __tablename__ = "target_states"

    target: Mapped[str] = mapped_column(String(63), primary_key=True)
    cloud: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_by: Mapped[str] = mapped_column(String(128))
    lockdown: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    problems: Mapped[str | None] = mapped_column(Text)


class AuditEvent(Base):
    """One link of the hash chain: hash = sha256(prev_hash || canonical JSON of the event)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                     primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    grant_id: Mapped[int | None] = mapped_column(Integer)
    target: Mapped[str | None] = mapped_column(String(64))
    port: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON, stored as hashed
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_events_at", "at"), Index("ix_audit_events_grant_id",
                                                                  "grant_id"))


class OutboxPost(Base):
    """A Slack post an event owes, committed with the event (jitcore.outbox).

    `lane` orders delivery: a post is sent only once every earlier post of its lane is
    sent or has failed for good (one lane per grant, one for free-standing alerts).
    `next_attempt_at` is when it may be tried (a backoff after a failure); `leased_until`
    and `leased_by` say which process is sending it, until when.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    lane: Mapped[str] = mapped_column(String(32))
    grant_id: Mapped[int | None] = mapped_column(Integer)
    post: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8))  # pending | sent | failed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(64))
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    # One index: the claim, the backlog and the prune all start from the status (a request
    # that writes posts pays for each index inside its statement).
    __table_args__ = (Index("ix_outbox_status_lane_id", "status", "lane", "id"),)


# The tables themselves, for Core statements on hot paths.
grants_table = cast(Table, Grant.__table__)
rule_handles_table = cast(Table, RuleHandle.__table__)
audit_events_table = cast(Table, AuditEvent.__table__)
outbox_table = cast(Table, OutboxPost.__table__)
