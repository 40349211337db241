"""The tamper-evident audit log: hash-chained events, appended in the caller's transaction.

    hash(n) = sha256(hash(n-1) || canonical JSON of event n), hash(0) = 64 zeros

Editing, deleting or reordering any row breaks the chain at that row, and `verify`
names the first sequence number that does not hold. Removing rows from the very end
leaves a shorter chain that still verifies; keep the head (printed by `verify`, and
present in every export) somewhere else to catch that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from jitcore.store.models import AuditEvent, audit_events_table

GENESIS = "0" * 64
# Any constant: the advisory lock that serialises chain appends on PostgreSQL.
_CHAIN_LOCK_KEY = 0x6A69745F61756474
# The chain head, as a core select: read once per writing transaction.
_HEAD = (select(audit_events_table.c.seq, audit_events_table.c.hash)
         .order_by(audit_events_table.c.seq.desc()).limit(1))
# PostgreSQL: the lock that serialises appends and the head, in one round trip.
_LOCKED_HEAD = text("SELECT seq, hash FROM jit_audit_head(:key)")
_LOCK_PARAMS = {"key": _CHAIN_LOCK_KEY}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_HASHED = ("seq", "at", "actor", "action", "grant_id", "target", "port", "source", "details")


def event_body(event: AuditEvent) -> dict[str, Any]:
    """The fields the hash covers, in the form the export writes."""
    return _body({name: getattr(event, name) for name in _HASHED})


def _body(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**{name: row[name] for name in _HASHED}, "at": _timestamp(row["at"]),
            "details": json.loads(row["details"])}


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


class ChainWriter:
    """Appends links to the chain inside one transaction, reading the head once."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._head: tuple[int, str] | None = None
        self._pending: list[dict[str, Any]] = []

    def add(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        grant_id: int | None = None,
        target: str | None = None,
        port: int | None = None,
        source: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue the next link; returns its hash. Written by `flush` (before commit)."""
        seq, prev_hash = self._next()
        row: dict[str, Any] = {
            "seq": seq, "at": at.astimezone(UTC), "actor": actor, "action": action,
            "grant_id": grant_id, "target": target, "port": port, "source": source,
            "details": canonical_json(dict(details or {})), "prev_hash": prev_hash,
        }
        row["hash"] = chain_hash(prev_hash, _body(row))
        self._pending.append(row)
        self._head = (seq, row["hash"])
        return str(row["hash"])

    def flush(self) -> None:
        if self._pending:
            self._session.execute(insert(audit_events_table), self._pending)
            self._pending = []

    def _next(self) -> tuple[int, str]:
        if self._head is None:
            if self._session.get_bind().dialect.name == "postgresql":
                # Two transactions must not read the same head: the lock is held until
                # commit (the function takes it, then reads the head; migration 0004).
                head = self._session.execute(_LOCKED_HEAD, _LOCK_PARAMS).first()
            else:  # SQLite: BEGIN IMMEDIATE already made this the only writer
                head = self._session.execute(_HEAD).first()
            self._head = (head[0], head[1]) if head else (0, GENESIS)
        return self._head[0] + 1, self._head[1]


def append(session: Session, **fields: Any) -> str:
    """Add one link of the chain inside the caller's transaction; returns its hash."""
    writer = ChainWriter(session)
    link = writer.add(**fields)
    writer.flush()
    return link


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    bad_seq: int | None = None
    problem: str = ""


def verify(session: Session, batch: int = 5000) -> Verification:
    """Walk the chain from the start; stop at the first row that does not hold."""
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    for event in session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    ):
        problem = ""
        if event.seq != expected_seq:
            problem = (f"expected event #{expected_seq} next but found #{event.seq}: "
                       "events are missing or renumbered")
        elif event.prev_hash != prev_hash:
            problem = "its prev_hash does not match the event before it (deleted or reordered)"
        elif chain_hash(prev_hash, event_body(event)) != event.hash:
            problem = "its content does not match its hash (edited)"
        if problem:
            bad = min(event.seq, expected_seq)
            return Verification(False, checked, expected_seq - 1, prev_hash, bad, problem)
        checked += 1
        expected_seq, prev_hash = event.seq + 1, event.hash
    return Verification(True, checked, expected_seq - 1, prev_hash)


def export(session: Session, since: datetime | None = None,
           batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Events as JSON-ready dicts, oldest first, each with its prev_hash and hash."""
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    for event in session.scalars(query.execution_options(yield_per=batch)):
        yield {**event_body(event), "prev_hash": event.prev_hash, "hash": event.hash}
