"""The hash chain on a real database: appends, verify, tamper detection, export."""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import select, update

from jitcore import audit
from jitcore.cli import cli
from jitcore.store import Store
from jitcore.store.models import AuditEvent

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _seed(store: Store, count: int = 6) -> None:
    with store.transaction() as session:
        for i in range(count):
            audit.append(session, at=T0 + timedelta(seconds=i), actor=f"U{i}",
                         action="requested", grant_id=i + 1, target="prod-db", port=22,
                         source="203.0.113.7/32", details={"reason": f"fix <{i}> & more"})


def _verify_cli(db_url: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify"])
    return result.exit_code, result.output


def test_intact_chain_verifies_and_links(store: Store, db_url: str) -> None:
    _seed(store)
    with store.read() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        result = audit.verify(session)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert result.ok and result.checked == 6 and result.head_hash == events[-1].hash
    code, out = _verify_cli(db_url)
    assert code == 0 and f"ok: 6 events, head #6 {events[-1].hash}" in out


def test_edited_row_is_named(store: Store, db_url: str) -> None:
    _seed(store)
    with store.transaction() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 4)
                        .values(actor="U-attacker"))
    code, out = _verify_cli(db_url)
    assert code == 1
    assert "audit chain BROKEN at event #4: its content does not match its hash (edited)" in out


def test_edited_details_are_caught(store: Store) -> None:
    _seed(store)
    with store.transaction() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 2)
                        .values(details='{"reason":"nothing to see"}'))
    with store.read() as session:
        result = audit.verify(session)
    assert not result.ok and result.bad_seq == 2 and result.checked == 1


def test_deleted_row_is_named(store: Store, db_url: str) -> None:
    _seed(store)
    with store.transaction() as session:
        session.delete(session.get(AuditEvent, 3))
    code, out = _verify_cli(db_url)
    assert code == 1
    assert "BROKEN at event #3: expected event #3 next but found #4" in out


def test_swapped_rows_are_named(store: Store, db_url: str) -> None:
    _seed(store)
    with store.transaction() as session:
        # Swap the contents of #2 and #3, keeping their sequence numbers.
        a, b = session.get(AuditEvent, 2), session.get(AuditEvent, 3)
        assert a and b
        fields = ("at", "actor", "action", "grant_id", "details", "prev_hash", "hash")
        values_a = {f: getattr(a, f) for f in fields}
        for f in fields:
            setattr(a, f, getattr(b, f))
            setattr(b, f, values_a[f])
    code, out = _verify_cli(db_url)
    assert code == 1 and "BROKEN at event #2" in out


def test_renumbered_rows_are_named(store: Store) -> None:
    _seed(store)
    with store.transaction() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(seq=50))
        session.execute(update(AuditEvent).where(AuditEvent.seq == 6).values(seq=5))
        session.execute(update(AuditEvent).where(AuditEvent.seq == 50).values(seq=6))
    with store.read() as session:
        result = audit.verify(session)
    assert not result.ok and result.bad_seq == 5


def test_export_writes_json_lines_since(store: Store, db_url: str) -> None:
    _seed(store)
    since = (T0 + timedelta(seconds=4)).isoformat().replace("+00:00", "Z")
    result = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "export",
                                      "--since", since])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [e["seq"] for e in lines] == [5, 6]
    assert lines[0]["details"] == {"reason": "fix <4> & more"}
    assert lines[0]["at"] == "2026-11-22T12:00:04.000000Z"
    # Each exported line carries what is needed to re-check the chain outside jit.
    assert audit.chain_hash(lines[0]["prev_hash"], {k: v for k, v in lines[0].items()
                                                    if k not in ("prev_hash", "hash")}) \
        == lines[0]["hash"]


def test_export_rejects_bad_since(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "export",
                                      "--since", "yesterday"])
    assert result.exit_code == 2
    assert "'yesterday' is not an ISO 8601 time" in result.output


def test_concurrent_writers_on_separate_engines_keep_one_chain(db_url: str) -> None:
    """Four writers, each with an engine of its own (as separate processes would have),
    append at once: every link lands once, in one unbroken chain."""
    stores = [Store.from_url(db_url) for _ in range(4)]
    start = threading.Barrier(len(stores))

    def write(index: int) -> None:
        start.wait()
        for n in range(40):
            with stores[index].transaction() as session:
                audit.append(session, at=T0, actor=f"U{index}", action="noted",
                             details={"n": n})

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(write, range(len(stores))))
    with stores[0].read() as session:
        rows = session.execute(select(AuditEvent.seq, AuditEvent.actor)).all()
        result = audit.verify(session)
    for store in stores:
        store.dispose()
    assert sorted(seq for seq, _ in rows) == list(range(1, 161))
    assert Counter(actor for _, actor in rows) == {f"U{i}": 40 for i in range(4)}
    assert result.ok and result.checked == 160
