"""Slack posts that survive a bad day: jit-bot as a process (HTTP mode), the Slack Web API
fake down or refusing connections, jit-bot SIGKILLed with posts owed, two replicas on
PostgreSQL. EC2 is moto's server; every count is read from the fake's own call log."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from jitcore.store import Store
from jitcore.store.models import OutboxPost
from tests.e2e.test_slack_bot import (
    ALICE,
    APPROVALS,
    AUDIT,
    BOB,
    BOT_TOKEN,
    wait_until,
)
from tests.fakes.slack_api import Call, SlackApiFake
from tests.support.aws import jit_rules
from tests.support.bot_process import bot_process
from tests.support.fixtures import new_postgres_database
from tests.support.policies import write_bot_policy

OUTAGE = 60.0  # seconds Slack is down in the outage tests
BACK_WITHIN = 30.0  # seconds after Slack's return by which everything owed has arrived


def write_policy(tmp_path: Path, aws_group: Any) -> Path:
    return write_bot_policy(tmp_path / "jit.yaml", aws_group.group_id)


def delivered(slack: SlackApiFake) -> list[Call]:
    return [c for c in slack.calls if c.ok and c.method in ("chat.postMessage", "chat.update")]


def grant_of(call: Call) -> int:
    """The grant a post is about, read from what was sent."""
    found = re.search(r"#(\d+)", str(call.args.get("text", "")))
    assert found, call.args
    return int(found.group(1))


def assert_each_once(calls: list[Call]) -> None:
    seen = [(c.method, c.args.get("channel"), c.args.get("ts"), c.args.get("thread_ts"),
             str(c.args.get("text")), str(c.args.get("blocks"))) for c in calls]
    assert len(seen) == len(set(seen)), "a post arrived twice"


def pending_posts(database_url: str) -> int:
    store = Store.from_url(database_url)
    try:
        with store.read() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxPost)
                                      .where(OutboxPost.status == "pending")) or 0)
    finally:
        store.dispose()


@pytest.mark.parametrize("down", ["503", "refused"])
def test_posts_made_during_an_outage_all_arrive_once_after_it(
        down: str, aws_group: Any, tmp_path: Path) -> None:
    config = write_policy(tmp_path, aws_group)
    with SlackApiFake(bot_token=BOT_TOKEN) as slack, \
            bot_process(slack, config, f"sqlite:///{tmp_path}/jit.db",
                        tmp_path / "bot.log") as bot:
        started = time.monotonic()
        if down == "503":
            slack.outage(OUTAGE, status=503)
        else:
            slack.refuse_connections()
        status, body = bot.command(ALICE, "ssh prod-db 20m from 203.0.113.7 fix replication")
        assert status == 200 and "#1" in body  # acked while Slack is down
        status, _ = bot.click(BOB, "jit_approve", 1)
        assert status == 200
        rules = wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 15,
                           "the rule to open during the outage")
        assert rules[0]["CidrIpv4"] == "203.0.113.7/32"
        assert delivered(slack) == []
        assert pending_posts(f"sqlite:///{tmp_path}/jit.db") == 9

        time.sleep(max(0.0, OUTAGE - (time.monotonic() - started)))
        if down == "refused":
            slack.accept_connections()
        else:
            slack.end_outage()
        back = time.monotonic()
        wait_until(lambda: len(delivered(slack)) >= 9, BACK_WITHIN,
                   "every post owed to arrive after Slack's return")
        took = time.monotonic() - back
        time.sleep(1.0)  # nothing more arrives: each exactly once
        calls = delivered(slack)
        assert len(calls) == 9, [(c.method, c.args.get("channel")) for c in calls]
        assert_each_once(calls)
        assert took < BACK_WITHIN

        parent = slack.messages(AUDIT)[0]
        lines = [m["text"].split()[2] for m in slack.thread(AUDIT, parent["ts"])]
        assert lines == ["requested", "approved", "opening", "opened"]  # in order
        assert len(slack.messages(AUDIT)) == 4  # no reply outside the thread
        card = slack.messages(APPROVALS)
        assert len(card) == 1 and len(card[0]["edits"]) == 2
        assert "open until" in str(card[0]["blocks"])
        dms = [m["text"] for m in slack.messages(ALICE)]
        assert len(dms) == 2 and "approved" in dms[0] and "is open" in dms[1]
        if down == "503":
            tries = [c for c in slack.calls if c.status == 503 and c.method != "auth.test"]
            assert tries, "no post was tried during the outage"


def test_posts_owed_by_a_killed_bot_are_sent_by_the_next(aws_group: Any,
                                                         tmp_path: Path) -> None:
    config = write_policy(tmp_path, aws_group)
    db = f"sqlite:///{tmp_path}/jit.db"
    log = tmp_path / "bot.log"
    with SlackApiFake(bot_token=BOT_TOKEN) as slack:
        with bot_process(slack, config, db, log) as bot:
            slack.outage(status=503)
            for n in range(1, 26):  # 25 requests: a thread parent and a card each
                status, body = bot.command(ALICE, f"ssh prod-db 20m from 203.0.113.{n} r{n}")
                assert status == 200 and f"#{n}" in body, body
            assert pending_posts(db) == 50
            bot.proc.send_signal(signal.SIGKILL)
            bot.proc.wait(timeout=10)
        slack.end_outage()
        assert delivered(slack) == []
        with bot_process(slack, config, db, log):
            wait_until(lambda: len(delivered(slack)) >= 50, 30, "the 50 posts owed")
            time.sleep(1.0)
            calls = delivered(slack)
            assert pending_posts(db) == 0
        assert len(calls) == 50
        assert_each_once(calls)
        order: dict[int, list[str]] = defaultdict(list)
        for call in calls:
            order[grant_of(call)].append(call.args["channel"])
        assert sorted(order) == list(range(1, 26))
        assert all(channels == [AUDIT, APPROVALS] for channels in order.values())


@pytest.mark.postgres
def test_two_replicas_send_every_post_once_in_order(aws_group: Any, tmp_path: Path) -> None:
    config = write_policy(tmp_path, aws_group)
    with new_postgres_database("jit_e2e_outbox") as url, \
            SlackApiFake(bot_token=BOT_TOKEN) as slack:
        migrated = subprocess.run([sys.executable, "-m", "jitcore", "--database-url", url,
                                   "db", "upgrade"], capture_output=True, text=True,
                                  timeout=60)
        assert migrated.returncode == 0, migrated.stderr
        with bot_process(slack, config, url, tmp_path / "a.log") as one, \
                bot_process(slack, config, url, tmp_path / "b.log") as two:
            # 100 requests and their 100 cancels (200 events, 400 posts), the request on
            # one replica and its cancel on the other.
            for n in range(1, 101):
                first, second = (one, two) if n % 2 else (two, one)
                status, body = first.command(ALICE, f"ssh prod-db 20m from 198.51.100.{n} r")
                assert status == 200 and "#" in body, body
                grant = int(body.split("#", 1)[1].split()[0].strip("*:,."))
                status, body = second.command(ALICE, f"cancel {grant}")
                assert status == 200, body
            wait_until(lambda: len(delivered(slack)) >= 400, 60, "400 posts")
            time.sleep(1.5)
            calls = delivered(slack)
        assert len(calls) == 400
        assert_each_once(calls)
        per_grant: dict[int, list[tuple[str, str | None]]] = defaultdict(list)
        for call in calls:
            per_grant[grant_of(call)].append((call.method, call.args.get("channel")))
        assert len(per_grant) == 100
        expected = [("chat.postMessage", AUDIT), ("chat.postMessage", APPROVALS),
                    ("chat.postMessage", AUDIT), ("chat.update", APPROVALS)]
        assert all(posts == expected for posts in per_grant.values()), per_grant
        store = Store.from_url(url)
        try:
            with store.read() as session:
                senders = set(session.scalars(select(OutboxPost.leased_by).distinct()))
        finally:
            store.dispose()
        assert len(senders) == 2  # both replicas sent posts
