"""Where to connect through a DNAT, in the database: `rule_handles.entry` read back with the
grant (jitcore.store.repository) and by `jit grants`, on SQLite and PostgreSQL; migration
0007 up and down with grants holding rules; and the migrations building exactly the
schema the models describe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Table, inspect, select

from jitcore.cli import cli
from jitcore.domain import Entry, Status
from jitcore.store import Store, upgrade
from jitcore.store import repository as repo
from jitcore.store.db import _alembic_config
from jitcore.store.models import Base, Grant, RuleHandle, grants_table
from tests.support.fixtures import new_postgres_database
from tests.support.policies import REQUESTER, aws_policy_data

AT = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
ENTRY = Entry("20.30.40.50", 50007, "10.1.0.4", 22)
# As long as two hosts can make it: the column is String(200).
LONGEST = Entry("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
                ".".join(["a" * 19] * 4) + "b", 65535)


def add_grant(store: Store, entry: str | None, *, status: Status = Status.ACTIVE) -> int:
    """A grant holding a rule whose handle has this entry text; its id."""
    with store.transaction() as session:
        handle = RuleHandle(cloud="azure", scope="/subscriptions/s/azureFirewalls/fw-hub",
                            ref="jit-1", port=22, protocol="tcp", source="203.0.113.7/32",
                            owned=True, created_at=AT, entry=entry)
        session.add(handle)
        session.flush()
        grant = Grant(status=status.value, requester=REQUESTER, target="web-vm",
                      cloud="azure", service="ssh", port=22, protocol="tcp",
                      source="203.0.113.7/32", duration_s=1800, reason="", created_at=AT,
                      lapses_at=AT + timedelta(hours=1), opened_at=AT,
                      expires_at=AT + timedelta(minutes=30), rule_handle_id=handle.id)
        session.add(grant)
        session.flush()
        return grant.id


@pytest.mark.parametrize("entry", [ENTRY, LONGEST,
                                   Entry("2001:db8::1", 50000, "fd00::4", 3389)])
def test_an_entry_reads_back_with_its_grant(store: Store, entry: Entry) -> None:
    gid = add_grant(store, entry.to_text())
    with store.read() as session:
        row = session.get(Grant, gid)
        assert row is not None and row.rule_handle_id is not None
        view = repo.to_view(row, session.get(RuleHandle, row.rule_handle_id))
        assert view.entry == entry
        assert [v.entry for v in repo.list_views(session)] == [entry]


def test_no_entry_and_unreadable_text_read_as_none(store: Store) -> None:
    plain = add_grant(store, None)
    mangled = add_grant(store, "20.30.40.50:50007 to 10.1.0.4:22")
    with store.read() as session:
        assert {v.id: v.entry for v in repo.list_views(session)} == {plain: None,
                                                                     mangled: None}
        row = session.get(Grant, plain)
        assert row is not None and repo.to_view(row).entry is None  # no handle, no entry


# ---- jit grants -------------------------------------------------------------------------

def test_jit_grants_shows_where_to_connect(db_url: str, store: Store, tmp_path: Path) -> None:
    through = add_grant(store, ENTRY.to_text())
    plain = add_grant(store, None, status=Status.CLOSED)
    policy = tmp_path / "jit.yaml"
    policy.write_text(yaml.safe_dump(aws_policy_data("sg-0123456789abcdef0")))

    def jit(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--database-url", db_url, "--config", str(policy),
                                          "grants", *args], prog_name="jit")
        assert result.exit_code == 0, result.output
        return result.stdout

    by_id = {g["id"]: g for g in json.loads(jit("--json"))}
    assert by_id[through]["entry"] == "20.30.40.50:50007 -> 10.1.0.4:22"
    assert by_id[plain]["entry"] is None
    header, newest, oldest, connect = jit().splitlines()
    assert header.split()[:2] == ["ID", "STATUS"]
    assert newest.split()[:2] == [str(plain), "CLOSED"]
    assert oldest.split()[:2] == [str(through), "ACTIVE"]
    assert connect == "        connect to 20.30.40.50:50007 -> 10.1.0.4:22"


# ---- the schema ---------------------------------------------------------------------------

def test_the_migrations_build_the_models_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with new_postgres_database("jit_entry_migrate") as url:
        yield url


def test_0007_adds_and_drops_the_column_under_grants_holding_rules(fresh_url: str) -> None:
    store = Store.from_url(fresh_url)
    try:
        assert upgrade(store.engine, "0006") == "0006"
        before = add_grant_at_0006(store)
        assert upgrade(store.engine, "0007") == "0007"
        with store.read() as session:
            row = session.get(Grant, before)
            assert row is not None and row.rule_handle_id is not None
            assert repo.to_view(row, session.get(RuleHandle, row.rule_handle_id)).entry is None
        after = add_grant(store, ENTRY.to_text())

        command.downgrade(_alembic_config(store.engine), "0006")
        with store.engine.connect() as conn:
            assert "entry" not in {c["name"] for c in inspect(conn).get_columns("rule_handles")}
            assert len(conn.execute(select(grants_table.c.rule_handle_id)).all()) == 2
        assert upgrade(store.engine, "0007") == "0007"
        with store.read() as session:
            assert {v.id: v.entry for v in repo.list_views(session)} == {before: None,
                                                                         after: None}
    finally:
        store.dispose()


def add_grant_at_0006(store: Store) -> int:
    """A grant holding a rule, written to the schema before 0007 (no entry column)."""
    handles, grants = cast(Table, RuleHandle.__table__), grants_table
    with store.engine.begin() as conn:
        handle_id = conn.execute(handles.insert().values(
            cloud="aws", scope="sg-0123456789abcdef0", ref="sgr-1", port=22, protocol="tcp",
            source="203.0.113.7/32", owned=True, created_at=AT)
            .returning(handles.c.id)).scalar_one()
        return int(conn.execute(grants.insert().values(
            status="ACTIVE", requester=REQUESTER, target="prod-db", cloud="aws",
            service="ssh", port=22, protocol="tcp", source="203.0.113.7/32", duration_s=1800,
            reason="", created_at=AT, lapses_at=AT + timedelta(hours=1), attempts=0,
            rule_handle_id=handle_id).returning(grants.c.id)).scalar_one())
