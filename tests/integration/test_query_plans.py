"""SQLite's plans for the hot queries at 100,000 grants: each takes the index meant for it
(the statistics migration 0008 keeps), not the first (status, ...) index it finds. The
statements are the repository's own, caught as they run and explained with their
parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.orm import Session

from jitcore.domain import Status
from jitcore.store import Store, repository, upgrade
from jitcore.store.models import Grant, RuleHandle

GRANTS = 100_000
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("plans") / "jit.db"
    store = Store.from_url(f"sqlite:///{path}")
    upgrade(store.engine)
    with store.transaction() as session:
        session.execute(insert(RuleHandle), [
            dict(cloud="aws", scope=f"sg-{n % 20}", ref=f"sgr-{n}", port=22, protocol="tcp",
                 source="203.0.113.7/32", owned=True, created_at=NOW) for n in range(GRANTS)])
        session.execute(insert(Grant), [
            dict(requester="U0ALICE", target=f"vm-{n % 20}", cloud="aws", service="ssh", port=22,
                 protocol="tcp", source="203.0.113.7/32", duration_s=1800, reason="",
                 status=Status.ACTIVE.value, created_at=NOW, lapses_at=NOW,
                 expires_at=NOW + timedelta(minutes=10 + n % 50), rule_handle_id=n + 1)
            for n in range(GRANTS)])
    yield store
    store.dispose()


def plans_of(store: Store, call: Callable[[Session], Any]) -> list[str]:
    """The plan of every statement `call` runs, as EXPLAIN QUERY PLAN gives it."""
    seen: list[tuple[str, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.startswith(("EXPLAIN", "SAVEPOINT", "RELEASE")):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", catch)
    try:
        with store.transaction() as session:
            call(session)
            session.rollback()
    finally:
        event.remove(store.engine, "before_cursor_execute", catch)
    plans = []
    with store.engine.connect() as conn:
        for statement, parameters in seen:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            plans += [row[-1] for row in cursor.execute(f"EXPLAIN QUERY PLAN {statement}",
                                                        parameters)]
    assert plans, "nothing ran"
    return plans


IDS = list(range(1, 101))


@pytest.mark.parametrize(("name", "call", "index"), [
    ("holders", lambda s: repository.holders(s, IDS), "INDEX ix_grants_rule_handle_id"),
    ("close claim", lambda s: repository.transition_many(
        s, IDS, Status.ACTIVE, Status.CLOSING), "INTEGER PRIMARY KEY"),
    ("due for expiry", lambda s: repository.due_for_expiry(s, NOW + timedelta(minutes=11), 100),
     "INDEX ix_grants_status_expires_at"),
    ("due for retry", lambda s: repository.due_for_retry(
        s, (Status.CLOSING,), NOW, 100), "INDEX ix_grants_status_next_attempt_at"),
    ("due to lapse", lambda s: repository.due_to_lapse(s, NOW, 100),
     "INDEX ix_grants_status_lapses_at"),
])
def test_a_hot_query_takes_its_index(store: Store, name: str, call: Callable[[Session], Any],
                                     index: str) -> None:
    plans = plans_of(store, call)
    assert any(index in plan for plan in plans), f"{name}: {plans}"
    assert not any(plan.startswith("SCAN grants") for plan in plans), f"{name}: {plans}"


def test_the_next_due_time_reads_each_minimum_off_an_index(store: Store) -> None:
    plans = plans_of(store, lambda s: repository.next_due(s, timedelta(minutes=5), NOW))
    assert not any(plan.startswith("SCAN grants") for plan in plans), plans
    for index in ("ix_grants_status_expires_at", "ix_grants_status_lapses_at",
                  "ix_grants_status_next_attempt_at"):
        assert any(index in plan for plan in plans), plans


def test_the_statistics_are_jits_own(store: Store) -> None:
    with store.engine.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'grants'")).all())
    assert rows["ix_grants_rule_handle_id"] == "100000 1"
