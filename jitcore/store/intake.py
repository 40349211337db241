"""Request writes, the hot path of every /jit command: a new grant row, its audit links
and the posts it owes Slack, written together without the ORM.

PostgreSQL: one statement in autocommit (one round trip; the audit chain's lock held
only inside the server), with an id taken beforehand. SQLite: INSERT ... RETURNING and
the links in one transaction, shared with whatever other requests are waiting for one
(group commit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.exc import OperationalError

from jitcore import audit, outbox
from jitcore.domain import GrantEvent
from jitcore.errors import AuditChainError
from jitcore.ports import Clock
from jitcore.store import Store
from jitcore.store import repository as repo
from jitcore.store.models import grants_table

# The links and events of a new grant, given its id: queued on the chain, not yet written.
Links = Callable[[audit.ChainWriter, int], list[GrantEvent]]

_INSERT_GRANT = insert(grants_table).returning(grants_table.c.id)
# PostgreSQL: a new grant (with an id taken beforehand), the Slack posts it owes and its
# audit links, one statement.
_REQUEST_FIELDS = (
    "id", "status", "requester", "target", "cloud", "service", "port", "protocol", "source",
    "duration_s", "reason", "created_at", "lapses_at", "attempts", "decided_by", "decided_at",
    "next_attempt_at",
)
_RECORD_REQUEST = audit.appending(
    insert(grants_table).values({name: bindparam(name) for name in _REQUEST_FIELDS})
    .returning(grants_table.c.id),
    outbox.RECORDING)


@dataclass(slots=True)
class _Queued:
    """A request waiting to be written with others (Intake._write_together)."""

    values: dict[str, Any]
    links: Links
    events: list[GrantEvent] | None = None
    error: Exception | None = None
    done: bool = False


class Intake:
    """Writes new requests. The caller publishes the events once `write` returns."""

    def __init__(self, store: Store, posts: outbox.Outbox | None, clock: Clock,
                 alert: Callable[[str], None]) -> None:
        self.store = store
        self.posts = posts
        self.clock = clock
        self._alert = alert
        self._grant_ids = repo.GrantIds()
        self._queued: list[_Queued] = []  # SQLite requests waiting for a writer
        self._queue_guard = threading.Lock()
        self._combiner = threading.Lock()

    def write(self, values: dict[str, Any], links: Links) -> list[GrantEvent]:
        """Write the grant `values` describe and the links `links` queues for it, committed
        when this returns. Raises SQLAlchemy's DBAPIError when the database refuses."""
        if self.store.dialect != "postgresql":
            return self._write_together(_Queued(values, links))
        created_at: datetime = values["created_at"]
        with self.store.autocommit() as conn:
            grant_id = self._grant_ids.take(conn)
            chain = audit.ChainWriter(conn)
            events = links(chain, grant_id)
            posts = self.posts.rows_json(events, created_at) if self.posts else "[]"
            try:
                chain.flush(_RECORD_REQUEST, {**values, "id": grant_id, "posts": posts})
            except AuditChainError as exc:  # committed all the same: a statement's own
                self._alert(f"audit chain: {exc}; request #{grant_id} is recorded with "
                            "that hash, which `jit audit verify` will report")
        return events

    def _write_together(self, mine: _Queued) -> list[GrantEvent]:
        """SQLite: write `mine` in a write transaction, with whatever other requests are
        waiting for one (group commit).

        SQLite takes one writer at a time, and each of its calls lets other threads have
        the GIL, which the writer then waits to get back: under a burst the write lock is
        held mostly by a writer waiting for the GIL, and requests queue behind it. So a
        request that arrives while another is being written is written by the next
        writer, together with all the others queued by then: one BEGIN IMMEDIATE, one
        head read and one COMMIT for all of them; each grant still commits with its links.
        """
        with self._queue_guard:
            self._queued.append(mine)
        with self._combiner:
            if not mine.done:
                with self._queue_guard:
                    batch, self._queued = self._queued, []
                self._write_batch(batch)
        if mine.error is not None:
            raise mine.error
        assert mine.events is not None
        return mine.events

    def _write_batch(self, batch: list[_Queued]) -> None:
        try:
            with self.store.transaction() as session:
                chain = audit.ChainWriter(session)
                written: list[GrantEvent] = []
                for queued in batch:
                    grant_id = session.execute(_INSERT_GRANT, queued.values).scalar_one()
                    queued.events = queued.links(chain, grant_id)
                    written.extend(queued.events)
                chain.flush()
                if self.posts is not None and written:
                    self.posts.write(session, written, self.clock.now())
        except OperationalError as exc:  # the database cannot be written: not for anyone
            for queued in batch:
                queued.error = exc
        except Exception as exc:  # noqa: BLE001 (raised again in its own caller's thread)
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one at a time, so that a write that fails fails alone
                for queued in batch:
                    queued.events = None
                    self._write_batch([queued])
        finally:
            for queued in batch:
                queued.done = True
