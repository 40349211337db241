"""A PostgreSQL that accepts connections and never answers (a relay in front of the real
server, told to hang): jit-bot still answers within Slack's 3 s, /readyz within 1 s, and
the engine carries on by itself once the database answers again."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from jitcore.store import Store, db, make_engine
from jitcore.store.deadlines import within
from tests.e2e.test_ops_endpoints import bot_on, get, own_database
from tests.e2e.test_slack_bot import ALICE, signed_post, wait_until
from tests.fakes.tcp_relay import TcpRelay
from tests.support.fixtures import postgres_url

UNAVAILABLE = ("jit could not record the request: its database is unavailable. Try again "
               "in a minute; if it keeps failing, tell jit's operators.")


def through(relay: TcpRelay, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=relay.port).render_as_string(
        hide_password=False)


def timed(call: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def jit_command(base: str, text_: str) -> tuple[int, str]:
    return signed_post(f"{base}/slack/events", urllib.parse.urlencode({
        "team_id": "T0JITTEST", "user_id": ALICE, "command": "/jit", "text": text_,
        "response_url": "http://127.0.0.1:9/unused", "trigger_id": "1.2.3",
    }).encode())


@pytest.mark.postgres
def test_statements_on_a_hung_database_end_at_their_deadline_and_recover(
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_url(postgres_url())
    with TcpRelay(server.host or "127.0.0.1", server.port or 5432) as relay:
        store = Store(make_engine(through(relay, postgres_url()), statement_deadline=2.0))
        try:
            store.ping()
            relay.hang()
            assert 0.9 < refused_after(lambda: _select(store, 1.0)) < 1.8  # the block's
            assert refused_after(lambda: _select(store, None)) < 3.5  # a 2 s connect timeout
            relay.resume()
            assert _select(store, None) == 1  # the same store, no restart
            relay.hang()
            assert refused_after(lambda: _select(store, None)) < 3.5  # the engine's default
            relay.resume()
            assert _select(store, None) == 1
            # A connection idle in the pool is pinged on checkout: the ping has a deadline
            # too, and a hung ping is not retried on new connections (each would hang).
            monkeypatch.setattr(db, "_IDLE_BEFORE_PING", 0.0)
            relay.hang()
            assert refused_after(lambda: _select(store, 1.0)) < 1.8
        finally:
            relay.resume()
            store.dispose()


def refused_after(statement: Any) -> float:
    """Seconds until `statement` failed with a database error."""
    started = time.monotonic()
    with pytest.raises(DBAPIError):
        statement()
    return time.monotonic() - started


def _select(store: Store, deadline: float | None) -> int:
    with within(deadline) if deadline else nullcontext(), store.engine.connect() as conn:
        return int(conn.execute(text("SELECT 1")).scalar_one())


@pytest.mark.postgres
def test_jit_bot_answers_in_time_while_its_database_hangs(aws_group: Any,
                                                         tmp_path: Path) -> None:
    admin = make_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    name = f"jit_hung_{os.getpid()}"
    server = make_url(postgres_url())
    try:
        with own_database(admin, name) as url, \
                TcpRelay(server.host or "127.0.0.1", server.port or 5432) as relay, \
                bot_on(through(relay, url), aws_group, tmp_path) as bot:
            base = bot.base
            wait_until(lambda: get(f"{base}/readyz") == (200, "ready\n"), 15, "ready")
            status, body = jit_command(base, "ssh prod-db 20m from 203.0.113.7 before")
            assert status == 200 and "#" in json.loads(body)["text"]

            relay.hang()
            for attempt in range(3):  # pooled connections, then new ones: each in time
                took, (status, body) = timed(lambda n=attempt: jit_command(
                    base, f"ssh prod-db 20m from 203.0.113.{10 + n} while it hangs"))
                assert status == 200 and took < 3.0, (took, body)
                assert json.loads(body)["text"] == UNAVAILABLE
            took, (status, body) = timed(lambda: get(f"{base}/readyz"))
            assert took < 1.0 and status == 503 and body.startswith("not ready: "), body
            assert get(f"{base}/healthz") == (200, "ok\n")

            relay.resume()
            wait_until(lambda: get(f"{base}/readyz") == (200, "ready\n"), 30,
                       "the engine to sweep again without a restart")
            status, body = jit_command(base, "ssh prod-db 20m from 203.0.113.50 after")
            assert status == 200 and "#" in json.loads(body)["text"], body
            assert bot.proc.poll() is None
            output = bot.stop()
    finally:
        admin.dispose()
    assert "ran past their deadline" in output
