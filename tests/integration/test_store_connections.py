"""PostgreSQL connections that died in the pool are replaced before jit uses them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, func, select, text

from jitcore import audit
from jitcore.store import Store, db
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
