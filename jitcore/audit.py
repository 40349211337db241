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

from sqlalchemy import (
    BigInteger,
    Connection,
    Insert,
    Select,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import UserDefinedType

from jitcore.errors import AuditChainError
from jitcore.store.models import AuditEvent, audit_events_table


class _Jsonb(UserDefinedType[Any]):
    """PostgreSQL's jsonb, named for a CAST: the statements that use it run on PostgreSQL
    alone, and importing that dialect would cost a process on SQLite ~30 ms at start."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "JSONB"


JSONB = _Jsonb()
GENESIS = "0" * 64
# Any constant: the advisory lock that serialises chain appends on PostgreSQL.
_CHAIN_LOCK_KEY = 0x6A69745F61756474
# The chain head, as a core select: read once per writing transaction (SQLite).
_HEAD = (select(audit_events_table.c.seq, audit_events_table.c.hash)
         .order_by(audit_events_table.c.seq.desc()).limit(1))
# PostgreSQL: lock, head, numbering, hashing and INSERT in one call (migration 0005).
_APPEND_CALL = func.jit_audit_append(
    bindparam("key", type_=BigInteger), cast(bindparam("links", type_=Text), JSONB),
).table_valued("seq", "prev_hash", "hash")
_APPEND = select(_APPEND_CALL.c.seq, _APPEND_CALL.c.prev_hash, _APPEND_CALL.c.hash)
_INSERT_LINKS = insert(audit_events_table)


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
    return _sha256(prev_hash + canonical_json(body))


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ChainWriter:
    """Appends links to the chain inside one transaction, all at once, just before commit.

    SQLite: the transaction already holds the only write lock (BEGIN IMMEDIATE), so the
    head is read and the links hashed here. PostgreSQL: one call to `jit_audit_append`
    (migration 0005) takes the chain's lock, reads the head, numbers and hashes the links
    and inserts them, so the lock is held from that call to COMMIT with no round trip to
    this process in between; see `appending` for the call and the INSERT it makes with it,
    as one statement. The server only concatenates and hashes: the canonical JSON is made
    here, in two pieces around the number it cannot know (`_around_seq`), and every hash
    it returns is checked here (`AuditChainError` if one differs).
    """

    def __init__(self, executor: Session | Connection) -> None:
        self._executor = executor
        bind = executor.get_bind() if isinstance(executor, Session) else executor
        self._on_server = bind.dialect.name == "postgresql"
        self._pending: list[dict[str, Any]] = []

    @property
    def on_server(self) -> bool:
        """PostgreSQL: the links are numbered, hashed and inserted by one statement."""
        return self._on_server

    @property
    def pending(self) -> int:
        """Links queued and not yet written."""
        return len(self._pending)

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
    ) -> None:
        """Queue the next link; `flush` writes the queue."""
        self._pending.append({
            "seq": 0, "at": at.astimezone(UTC), "actor": actor, "action": action,
            "grant_id": grant_id, "target": target, "port": port, "source": source,
            "details": canonical_json(dict(details or {})),
        })

    def flush(self, statement: Select[Any] | None = None,
              params: Mapping[str, Any] | None = None) -> list[str]:
        """Write the queued links after the head; their hashes, in order.

        PostgreSQL only: `statement` is `appending(insert)`, run with the INSERT's `params`,
        so that the row and the links are written by one statement.
        """
        rows, self._pending = self._pending, []
        if self._on_server:
            return self._append_on_server(rows, statement, params) if rows else []
        if statement is not None:
            raise ValueError("an INSERT appended with the links needs PostgreSQL")
        if not rows:
            return []
        head = self._executor.execute(_HEAD).first()
        seq, prev_hash = (head[0], head[1]) if head else (0, GENESIS)
        for row in rows:
            seq += 1
            row.update(seq=seq, prev_hash=prev_hash)
            row["hash"] = prev_hash = chain_hash(prev_hash, _body(row))
        self._executor.execute(_INSERT_LINKS, rows)
        return [row["hash"] for row in rows]

    def _append_on_server(self, rows: list[dict[str, Any]], statement: Select[Any] | None,
                          params: Mapping[str, Any] | None) -> list[str]:
        pieces = [_around_seq(_body(row)) for row in rows]
        links = [{**row, "at": row["at"].replace(tzinfo=None).isoformat(sep=" "),
                  "head": head, "tail": tail}
                 for row, (head, tail) in zip(rows, pieces, strict=True)]
        written = self._executor.execute(statement if statement is not None else _APPEND, {
            **(params or {}), "key": _CHAIN_LOCK_KEY,
            "links": json.dumps(links, ensure_ascii=False)}).all()
        if len(written) != len(rows):
            raise AuditChainError(f"the database wrote {len(written)} audit links of "
                                  f"{len(rows)}")
        for (seq, prev_hash, link_hash), (head, tail) in zip(written, pieces, strict=True):
            expected = _sha256(prev_hash + head + str(seq) + tail)
            if link_hash != expected:
                raise AuditChainError(
                    f"the database hashed audit link #{seq} as {link_hash}, not as its "
                    f"content hashes ({expected})")
        return [link_hash for _, _, link_hash in written]


def appending(*statements: Insert) -> Select[Any]:
    """PostgreSQL: one statement that runs `statements` and appends the queued links (a
    ChainWriter's `flush(statement, params)`), so rows and their audit links are written
    together, atomically even in autocommit, in one round trip.

    Each INSERT (with a RETURNING clause) is counted into the lock key's argument, times
    zero: PostgreSQL then runs it to completion as an InitPlan before jit_audit_append
    takes the chain's lock, which is held to COMMIT, so the lock covers the links alone.
    """
    written = [statement.cte(f"written_{n}") for n, statement in enumerate(statements)]
    before = sum((select(func.count()).select_from(cte).scalar_subquery() for cte in written),
                 start=literal(0, BigInteger))
    call = func.jit_audit_append(
        bindparam("key", type_=BigInteger) + before * 0,
        cast(bindparam("links", type_=Text), JSONB),
    ).table_valued("seq", "prev_hash", "hash")
    return select(call.c.seq, call.c.prev_hash, call.c.hash).add_cte(*written)


def _around_seq(body: Mapping[str, Any]) -> tuple[str, str]:
    """The canonical JSON of `body`, cut where its seq goes: head + str(seq) + tail is the
    canonical JSON of the body with that seq.

    Keys are sorted, so the top-level "seq" comes after "details" and before "source" and
    "target", whose values are strings or null; a string cannot hold an unescaped quote, so
    the last `"seq":0` in the text is that key.
    """
    head, mark, tail = canonical_json({**body, "seq": 0}).rpartition('"seq":0')
    return head + mark[:-1], tail


def append(session: Session, **fields: Any) -> str:
    """Add one link of the chain inside the caller's transaction; returns its hash."""
    writer = ChainWriter(session)
    writer.add(**fields)
    return writer.flush()[0]


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
