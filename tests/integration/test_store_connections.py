"""PostgreSQL connections: those that died in the pool are replaced before jit uses them, and
the engine's work queues for one when the pool has none free."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from jitcore import audit
from jitcore.store import Store, db
from jitcore.store.deadlines import patient
from jitcore.store.models import AuditEvent


@pytest.fixture
def pg_store(postgres_database: str) -> Iterator[Store]:
    store = Store.from_url(postgres_database)
    yield store
    store.dispose()


def _backend_pid(store: Store) -> int:
    with store.read() as session:
        return int(session.execute(select(func.pg_backend_pid())).scalar_one())


def _terminate(url: str, pid: int) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")  # not the store's pool
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    admin.dispose()


def test_a_connection_killed_while_idle_is_replaced_before_use(
        pg_store: Store, postgres_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = _backend_pid(pg_store)  # the pool now holds that connection, idle
    _terminate(postgres_database, pid)     # (as a database restart or an idle cut would)
    monkeypatch.setattr(db, "_IDLE_BEFORE_PING", 0.0)  # it has been idle long enough
    with pg_store.transaction() as session:  # no error: the dead connection was swapped
        audit.append(session, at=datetime.now(UTC), actor="test", action="noted")
    assert _backend_pid(pg_store) != pid
    with pg_store.read() as session:
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar() >= 1


def test_only_a_connection_idle_for_a_while_is_pinged(
        pg_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    dialect = pg_store.engine.dialect
    pings: list[object] = []
    real_ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: pings.append(conn) or real_ping(conn))
    for _ in range(5):  # back-to-back transactions: no round trip spent on a ping
        _backend_pid(pg_store)
    assert pings == []
    monkeypatch.setattr(db, "_IDLE_BEFORE_PING", 0.0)
    _backend_pid(pg_store)
    assert len(pings) == 1


def test_a_patient_checkout_queues_for_a_connection_the_impatient_one_gives_up_on(
        postgres_database: str) -> None:
    """The engine's work waits its turn for the pool; a request on its ack budget does not."""
    store = Store(db.make_engine(postgres_database, pool_size=1, max_overflow=0,
                                 pool_timeout=0.1))
    held = store.engine.connect()  # the pool's only connection, busy elsewhere
    threading.Timer(0.5, held.close).start()
    try:
        with pytest.raises(SQLAlchemyTimeout):
            _backend_pid(store)
        started = time.monotonic()
        with patient(5.0):
            pid = _backend_pid(store)  # got it once the holder let go
        assert pid > 0
        assert 0.2 < time.monotonic() - started < 5.0
    finally:
        held.close()
        store.dispose()
