"""Database, clock and notifier fixtures. Imported by conftest files that want them."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from jitcore import audit
from jitcore.domain import GrantEvent
from jitcore.store import Store, make_engine, upgrade
from jitcore.store.models import AuditEvent, Base

POSTGRES_ENV = "JIT_TEST_POSTGRES_URL"
# Every table of jit's models: emptied between PostgreSQL tests (a new table is never missed).
TABLES = tuple(Base.metadata.tables)


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set: CI must run the PostgreSQL tests")
        pytest.skip(f"{POSTGRES_ENV} not set (bash .ci/run sets it)")
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "jit.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty (unmigrated) PostgreSQL database of this process; dropped afterwards."""
    base = make_url(postgres_url())
    name = f"{prefix}_{os.getpid()}"
    admin = make_engine(base.render_as_string(hide_password=False),
                        isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session, migrated once."""
    with new_postgres_database("jit_test") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "jit.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    return emptied(request.getfixturevalue("postgres_database"))


def emptied(url: str) -> str:
    """The session's PostgreSQL database, every table emptied and every id restarted."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store.from_url(db_url)
    yield store
    store.dispose()


class ManualClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


class RecordingNotifier:
    """Stands in for Slack (outside jit): keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[GrantEvent] = []
        self.alerts: list[str] = []
        self._lock = threading.Lock()

    def publish(self, event: GrantEvent) -> None:
        with self._lock:
            self.events.append(event)

    def alert(self, message: str) -> None:
        with self._lock:
            self.alerts.append(message)

    def kinds(self, grant_id: int) -> list[str]:
        return [e.kind.value for e in self.events if e.grant.id == grant_id]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


def audit_actions(store: Store, grant_id: int) -> list[str]:
    """The grant's audit events, oldest first; the whole chain must verify."""
    with store.read() as session:
        assert audit.verify(session).ok
        return list(session.scalars(select(AuditEvent.action)
                                    .where(AuditEvent.grant_id == grant_id)
                                    .order_by(AuditEvent.seq)))
