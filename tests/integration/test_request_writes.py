"""How a request is written: the grant row and its audit links together, on SQLite and
PostgreSQL; on PostgreSQL one autocommit statement with an id taken beforehand, whose
links the database numbers and hashes (and this process checks)."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from jitcore import audit
from jitcore.domain import EventKind, Status
from jitcore.errors import AuditChainError, NotAllowed, StoreError
from jitcore.policy import Reason
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store, upgrade
from jitcore.store.db import _alembic_config
from jitcore.store.models import AuditEvent, Grant, OutboxPost, audit_events_table
from tests.support.fixtures import (
    ManualClock,
    RecordingNotifier,
    emptied,
    new_postgres_database,
)
from tests.support.policies import AUTO_USER, REQUESTER, aws_policy

GROUP = "sg-0123456789abcdef0"  # requests make no cloud call
SOURCE = "203.0.113.7"


def new_service(store: Store, clock: ManualClock, notifier: RecordingNotifier) -> JitService:
    return JitService(store, aws_policy(GROUP), {"aws": AwsProvider()}, notifier, clock)


@pytest.fixture
def service(store: Store, clock: ManualClock, notifier: RecordingNotifier) -> JitService:
    return new_service(store, clock, notifier)


def links(store: Store) -> list[AuditEvent]:
    with store.read() as session:
        assert audit.verify(session).ok
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def grant_count(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(Grant)) or 0)


def test_pending_request_is_its_row_and_one_link(service: JitService, store: Store,
                                                 clock: ManualClock,
                                                 notifier: RecordingNotifier) -> None:
    result = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=20), SOURCE,
                             "  fix <replication> & more ")
    gid = result.grant.id
    with store.read() as session:
        row = session.get(Grant, gid)
        assert row is not None
        assert (row.status, row.requester, row.source, row.port, row.duration_s) == (
            "PENDING", REQUESTER, "203.0.113.7/32", 22, 1200)
        assert row.reason == "fix <replication> & more"
        assert row.created_at == clock.now() and row.decided_by is None
        assert row.lapses_at == clock.now() + timedelta(hours=1)
    [link] = links(store)
    assert (link.seq, link.action, link.actor, link.grant_id, link.target, link.port,
            link.source) == (1, "requested", REQUESTER, gid, "prod-db", 22, "203.0.113.7/32")
    assert link.at == clock.now()
    assert link.details == audit.canonical_json(
        {"status": "PENDING", "duration": "20m", "reason": "fix <replication> & more"})
    assert [(e.kind, e.grant.status) for e in notifier.events] == [
        (EventKind.REQUESTED, Status.PENDING)]
    assert result.grant == notifier.events[0].grant


def test_auto_approved_request_is_written_approved_with_both_links(
        service: JitService, store: Store, clock: ManualClock,
        notifier: RecordingNotifier) -> None:
    result = service.request(AUTO_USER, "prod-db", "ssh", timedelta(minutes=20), SOURCE)
    assert result.auto_approved
    gid = result.grant.id
    with store.read() as session:
        row = session.get(Grant, gid)
        assert row is not None
        assert (row.status, row.decided_by, row.decided_at) == ("APPROVED", "policy",
                                                                clock.now())
        # Leased: a sweep opens it if this process dies before it does.
        assert row.next_attempt_at == clock.now() + service.settings.lease
    assert [(link.action, link.actor, link.grant_id, link.details) for link in links(store)] == [
        ("requested", AUTO_USER, gid,
         audit.canonical_json({"status": "PENDING", "duration": "20m"})),
        ("auto_approved", "policy", gid, audit.canonical_json({"status": "APPROVED"})),
    ]
    assert [(e.kind, e.grant.status, e.grant.decided_by) for e in notifier.events] == [
        (EventKind.REQUESTED, Status.PENDING, None),
        (EventKind.AUTO_APPROVED, Status.APPROVED, "policy"),
    ]
    assert result.grant.status is Status.APPROVED


def test_requests_chain_after_other_writes(service: JitService, store: Store) -> None:
    with store.transaction() as session:
        audit.append(session, at=datetime(2026, 11, 22, tzinfo=UTC), actor="U0ADMIN",
                     action="target_enabled", target="prod-db", details={"added": ["x"]})
    ids = [service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5),
                           f"203.0.113.{n}").grant.id for n in range(1, 6)]
    chain = links(store)
    assert [link.seq for link in chain] == [1, 2, 3, 4, 5, 6]
    assert [link.grant_id for link in chain[1:]] == ids
    assert all(link.prev_hash == before.hash for before, link in itertools.pairwise(chain))


# ---- PostgreSQL: ids taken ahead, one statement, hashes made by the server -----------------

@pytest.fixture
def pg_store(postgres_database: str) -> Iterator[Store]:
    store = Store.from_url(emptied(postgres_database))
    yield store
    store.dispose()


@pytest.fixture
def pg_service(pg_store: Store, clock: ManualClock, notifier: RecordingNotifier) -> JitService:
    return new_service(pg_store, clock, notifier)


def test_replicas_take_ids_apart_and_keep_one_chain(pg_store: Store, clock: ManualClock) -> None:
    """Three services on engines of their own (as three processes) request at once: every
    id is used once, every grant has its link, and the chain holds."""
    stores = [Store.from_url(pg_store.engine.url.render_as_string(hide_password=False))
              for _ in range(3)]
    services = [new_service(s, clock, RecordingNotifier()) for s in stores]
    start = threading.Barrier(len(services))
    taken: list[list[int]] = [[] for _ in services]

    def requester(index: int) -> None:
        start.wait()
        for n in range(40):
            grant = services[index].request(f"U{index}", "prod-db", "ssh",
                                            timedelta(minutes=5), f"198.51.100.{n + 1}")
            taken[index].append(grant.grant.id)

    threads = [threading.Thread(target=requester, args=(i,)) for i in range(len(services))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for s in stores:
        s.dispose()
    every = [gid for ids in taken for gid in ids]
    assert len(set(every)) == 120
    assert all(ids == sorted(ids) for ids in taken)  # in order within a process
    chain = links(pg_store)
    assert len(chain) == 120
    assert sorted(link.grant_id or 0 for link in chain) == sorted(every)
    with pg_store.read() as session:
        rows = {gid: who for gid, who in session.execute(select(Grant.id, Grant.requester))}
    assert {gid: f"U{i}" for i, ids in enumerate(taken) for gid in ids} == rows


def test_the_request_connection_goes_back_to_the_pool_transactional(
        pg_store: Store, pg_service: JitService) -> None:
    """The request's statement ran in autocommit on a pooled connection; the next
    transaction on that same connection must be a transaction again."""
    pg_service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
    assert pg_store.engine.pool.checkedin() == 1  # the only connection, reused below
    with pytest.raises(RuntimeError, match="undo"), pg_store.transaction() as session:
        assert session.connection().connection.driver_connection.autocommit is False
        audit.append(session, at=datetime(2026, 11, 22, tzinfo=UTC), actor="U0ADMIN",
                     action="noted")
        raise RuntimeError("undo")
    assert [link.action for link in links(pg_store)] == ["requested"]


@contextmanager
def altered(store: Store, change: str, undo: str) -> Iterator[None]:
    with store.engine.begin() as conn:
        conn.execute(text(change))
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            conn.execute(text(undo))


def test_grant_is_not_written_when_its_link_cannot_be(pg_store: Store, pg_service: JitService,
                                                      notifier: RecordingNotifier) -> None:
    with altered(pg_store, "ALTER TABLE audit_events ADD CONSTRAINT no_requests "
                           "CHECK (action <> 'requested')",
                 "ALTER TABLE audit_events DROP CONSTRAINT no_requests"), \
            pytest.raises(StoreError, match=r"the database did not take the request: .*"
                                            r"no_requests"):
        pg_service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
    assert grant_count(pg_store) == 0 and links(pg_store) == []
    assert notifier.events == []
    result = pg_service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
    assert [link.grant_id for link in links(pg_store)] == [result.grant.id]


@contextmanager
def server_hashing_differently(store: Store) -> Iterator[None]:
    """jit_audit_append, but hashing one character more than it is given."""
    with store.engine.connect() as conn:
        original = conn.execute(text(
            "SELECT pg_get_functiondef('jit_audit_append'::regproc)")).scalar_one()
    broken = original.replace("|| (link->>'tail')", "|| (link->>'tail') || 'x'")
    assert broken != original
    with altered(store, broken, original):
        yield


def test_server_hash_that_differs_is_refused_before_commit(pg_store: Store) -> None:
    with server_hashing_differently(pg_store), \
            pytest.raises(AuditChainError, match="not as its content hashes"), \
            pg_store.transaction() as session:
        audit.append(session, at=datetime(2026, 11, 22, tzinfo=UTC), actor="U0ADMIN",
                     action="noted")
    assert links(pg_store) == []


def test_request_hashed_differently_is_kept_and_alerted(pg_store: Store,
                                                        pg_service: JitService,
                                                        notifier: RecordingNotifier) -> None:
    with server_hashing_differently(pg_store):
        result = pg_service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
    assert grant_count(pg_store) == 1
    [alert] = notifier.alerts
    assert alert.startswith("audit chain: the database hashed audit link #1 as ")
    assert f"request #{result.grant.id} is recorded" in alert
    with pg_store.read() as session:
        check = audit.verify(session)
    assert not check.ok and check.bad_seq == 1


def test_unreachable_database_is_a_store_error(clock: ManualClock,
                                               notifier: RecordingNotifier) -> None:
    store = Store.from_url("postgresql+psycopg://jit@127.0.0.1:9/jit?connect_timeout=2")
    try:
        service = new_service(store, clock, notifier)
        with pytest.raises(StoreError, match="the database did not take the request: "):
            service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
    finally:
        store.dispose()
    assert notifier.events == []


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    with new_postgres_database("jit_migrate") as url:
        yield url


def functions(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'jit\\_audit\\_%'")).scalars())


def test_upgrade_to_0005_continues_the_chain_and_downgrades(fresh_pg_url: str,
                                                             clock: ManualClock) -> None:
    store = Store.from_url(fresh_pg_url)
    try:
        assert upgrade(store.engine, "0004") == "0004"
        assert functions(store) == {"jit_audit_head"}
        with store.engine.begin() as conn:  # a chain written before the upgrade
            prev = audit.GENESIS
            for seq in (1, 2):
                row = {"seq": seq, "at": datetime(2026, 11, 22, tzinfo=UTC), "actor": "U0OLD",
                       "action": "noted", "grant_id": None, "target": None, "port": None,
                       "source": None, "details": audit.canonical_json({"n": seq})}
                digest = audit.chain_hash(prev, audit._body(row))
                conn.execute(insert(audit_events_table).values(
                    **row, prev_hash=prev, hash=digest))
                prev = digest

        assert upgrade(store.engine, "0005") == "0005"
        upgrade(store.engine)  # and on to head, which the service needs
        assert functions(store) == {"jit_audit_append"}
        service = new_service(store, clock, RecordingNotifier())
        result = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
        chain = links(store)
        assert [(link.seq, link.grant_id) for link in chain] == [
            (1, None), (2, None), (3, result.grant.id)]
        assert chain[2].prev_hash == prev

        command.downgrade(_alembic_config(store.engine), "0004")
        assert functions(store) == {"jit_audit_head"}
    finally:
        store.dispose()


# ---- SQLite: requests that wait for the writer are written together ------------------------

@pytest.fixture
def sqlite_store(tmp_path: Path, sqlite_template: Path) -> Iterator[Store]:
    path = tmp_path / "jit.db"
    shutil.copy(sqlite_template, path)
    store = Store.from_url(f"sqlite:///{path}")
    yield store
    store.dispose()


def settle(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the threads did not get there"
        time.sleep(0.005)


def commits(store: Store) -> list[int]:
    """A counter of the transactions committed on the store's engine from now on."""
    counted = [0]

    @event.listens_for(store.engine, "commit")
    def count(conn: object) -> None:
        counted[0] += 1
    return counted


def test_requests_waiting_for_the_writer_are_written_together(
        sqlite_store: Store, clock: ManualClock, notifier: RecordingNotifier) -> None:
    service = new_service(sqlite_store, clock, notifier)
    counted = commits(sqlite_store)
    results: dict[int, int] = {}

    def request(n: int) -> None:
        results[n] = service.request(f"U{n}", "prod-db", "ssh", timedelta(minutes=5),
                                     f"198.51.100.{n}").grant.id

    with sqlite_store._writer:  # another writer holds the database: five requests arrive
        threads = [threading.Thread(target=request, args=(n,)) for n in range(1, 6)]
        for thread in threads:
            thread.start()
        settle(lambda: len(service.intake._queued) == 4)  # the first waits for the lock, four queue
    for thread in threads:
        thread.join()
    assert counted[0] == 2  # the first alone, then the four queued behind it at once
    assert sorted(results.values()) == [1, 2, 3, 4, 5]
    with sqlite_store.read() as session:
        rows = {gid: who for gid, who in session.execute(select(Grant.id, Grant.requester))}
    assert rows == {gid: f"U{n}" for n, gid in results.items()}
    chain = links(sqlite_store)
    assert [(link.grant_id, link.actor) for link in chain] == [
        (gid, rows[gid]) for gid in sorted(rows)]
    assert sorted(e.grant.id for e in notifier.events) == [1, 2, 3, 4, 5]


def test_a_write_that_fails_in_a_group_fails_alone(sqlite_store: Store, clock: ManualClock,
                                                  notifier: RecordingNotifier) -> None:
    service = new_service(sqlite_store, clock, notifier)
    outcomes: dict[str, object] = {}
    fine = {"status": "PENDING", "requester": REQUESTER, "target": "prod-db", "cloud": "aws",
            "service": "ssh", "port": 22, "protocol": "tcp", "source": "203.0.113.7/32",
            "duration_s": 300, "reason": "", "created_at": clock.now(),
            "lapses_at": clock.now() + timedelta(hours=1), "attempts": 0, "decided_by": None,
            "decided_at": None, "next_attempt_at": None}

    def run(name: str, values: dict[str, object]) -> None:
        try:
            events = service.intake.write(values, lambda chain, gid: service._requested(
                chain, gid, values, timedelta(minutes=5)))
            outcomes[name] = events[0].grant.id
        except Exception as exc:
            outcomes[name] = exc

    broken = {**fine, "status": None}  # NOT NULL: this INSERT fails
    with sqlite_store._writer:  # the first writes alone, the other three queue behind it
        threads = [threading.Thread(target=run, args=("holder", fine))]
        threads[0].start()
        settle(lambda: service.intake._combiner.locked() and not service.intake._queued)
        threads += [threading.Thread(target=run, args=(name, values))
                    for name, values in (("a", fine), ("bad", broken), ("b", fine))]
        for queued, thread in enumerate(threads[1:], start=1):
            thread.start()
            settle(lambda n=queued: len(service.intake._queued) == n)
    for thread in threads:
        thread.join()
    assert isinstance(outcomes.pop("bad"), IntegrityError)
    assert outcomes == {"holder": 1, "a": 2, "b": 3}
    assert grant_count(sqlite_store) == 3
    assert [link.grant_id for link in links(sqlite_store)] == [1, 2, 3]


def outbox_rows(store: Store) -> list[tuple[int | None, str]]:
    with store.read() as session:
        return [(row.grant_id, row.post) for row in
                session.scalars(select(OutboxPost).order_by(OutboxPost.id))]


def test_a_requests_slack_posts_are_written_by_its_one_statement(
        pg_store: Store, pg_service: JitService) -> None:
    with altered(pg_store, "ALTER TABLE outbox ADD CONSTRAINT no_cards CHECK (post <> 'card')",
                 "ALTER TABLE outbox DROP CONSTRAINT no_cards"), \
            pytest.raises(StoreError, match="no_cards"):
        pg_service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
    assert grant_count(pg_store) == 0 and links(pg_store) == [] and outbox_rows(pg_store) == []

    pg_service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)  # ids ahead
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(pg_store.engine, "before_cursor_execute", seen)
    try:
        result = pg_service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE)
    finally:
        event.remove(pg_store.engine, "before_cursor_execute", seen)
    assert len(statements) == 1
    assert "INSERT INTO grants" in statements[0] and "INSERT INTO outbox" in statements[0]
    assert outbox_rows(pg_store)[-2:] == [(result.grant.id, "thread"), (result.grant.id, "card")]


@pytest.mark.parametrize("reason", ["x" * 10_000_000, "fix\x00it"])
def test_a_reason_too_long_or_with_a_nul_is_refused_and_changes_nothing(
        service: JitService, store: Store, notifier: RecordingNotifier, reason: str) -> None:
    with pytest.raises(NotAllowed) as refused:
        service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE, reason)
    assert refused.value.decision.reason in (Reason.REASON_TOO_LONG, Reason.REASON_UNPRINTABLE)
    assert ("keep it to 300" in str(refused.value) if len(reason) > 300
            else "control character (U+0000)" in str(refused.value))
    assert grant_count(store) == 0 and links(store) == [] and notifier.events == []
