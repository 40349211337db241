"""The Slack outbox, in process: jit's real service writes the rows, the real sender
(bot.delivery) sends them with slack_sdk to the Slack Web API fake, on SQLite and
PostgreSQL; EC2 is moto's server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from bot.delivery import Delivery, classify, delivery_client
from jitcore import outbox
from jitcore.cli import cli
from jitcore.domain import EventKind, Status
from jitcore.metrics import install
from jitcore.policy import Policy
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store
from jitcore.store.models import OutboxPost
from tests.fakes.slack_api import Call, SlackApiFake
from tests.support.fixtures import RecordingNotifier
from tests.support.policies import APPROVER, AUTO_USER, REQUESTER, aws_policy, aws_policy_data

SOURCE = "203.0.113.7"
APPROVALS, AUDIT = "C0APPROVE", "C0AUDIT"


@pytest.fixture
def slack() -> Iterator[SlackApiFake]:
    with SlackApiFake() as fake:
        yield fake


@pytest.fixture
def policy(aws_group: Any) -> Policy:
    return aws_policy(aws_group.group_id)


@pytest.fixture
def service(store: Store, policy: Policy) -> JitService:
    from jitcore.ports import SystemClock

    return JitService(store, policy, {"aws": AwsProvider()}, RecordingNotifier(),
                      SystemClock())


@contextmanager
def delivering(slack: SlackApiFake, policy: Policy, store: Store,
               **options: Any) -> Iterator[Delivery]:
    """jit-bot's sender, running against the fake until the block ends."""
    options.setdefault("poll", 0.05)
    options.setdefault("probe_every", 0.5)
    delivery = Delivery(delivery_client("xoxb-test", slack.api_url, timeout=2), policy, store,
                        **options)
    delivery.start()
    try:
        yield delivery
    finally:
        delivery.close()


def posts(slack: SlackApiFake) -> list[Call]:
    return [c for c in slack.calls if c.method in ("chat.postMessage", "chat.update") and c.ok]


def rows(store: Store) -> list[OutboxPost]:
    with store.read() as session:
        return list(session.scalars(select(OutboxPost).order_by(OutboxPost.id)))


def wait_for_rows(store: Store, timeout: float, done: set[str]) -> list[OutboxPost]:
    deadline = time.monotonic() + timeout
    while True:
        found = rows(store)
        if found and all(r.status in done for r in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"outbox not done after {timeout}s: "
                                 f"{[(r.id, r.post, r.status, r.last_error) for r in found]}")
        time.sleep(0.05)


def lifecycle(service: JitService) -> int:
    """request -> approve -> open: every post these events owe."""
    gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE,
                          "fix replication").grant.id
    service.approve(gid, APPROVER)
    assert service.open(gid).status is Status.ACTIVE
    return gid


def test_each_event_owes_its_posts_written_in_its_transaction(service: JitService,
                                                              store: Store) -> None:
    gid = lifecycle(service)
    found = [(r.lane, r.post, r.channel, r.status) for r in rows(store)]
    lane = f"grant:{gid}"
    assert found == [
        (lane, "thread", AUDIT, "pending"), (lane, "card", APPROVALS, "pending"),
        (lane, "reply", AUDIT, "pending"), (lane, "card_update", APPROVALS, "pending"),
        (lane, "dm", REQUESTER, "pending"),  # approved
        (lane, "reply", AUDIT, "pending"),  # opening
        (lane, "reply", AUDIT, "pending"), (lane, "card_update", APPROVALS, "pending"),
        (lane, "dm", REQUESTER, "pending"),  # opened
    ]
    kinds = [outbox.event_from_json(r.payload).kind for r in rows(store)]
    assert kinds[0] is EventKind.REQUESTED and kinds[-1] is EventKind.OPENED


def test_auto_approved_request_writes_its_posts_with_the_request(service: JitService,
                                                                 store: Store) -> None:
    result = service.request(AUTO_USER, "prod-db", "ssh", timedelta(minutes=10), SOURCE)
    assert result.auto_approved
    assert [r.post for r in rows(store)] == ["thread", "card", "reply", "card_update", "dm"]
    assert {r.grant_id for r in rows(store)} == {result.grant.id}


def test_a_policy_without_slack_writes_no_rows(store: Store, aws_group: Any) -> None:
    from jitcore.policy_file import parse_policy
    from jitcore.ports import SystemClock

    data = aws_policy_data(aws_group.group_id)
    del data["slack"]
    quiet = JitService(store, parse_policy(data, "p.yaml"), {"aws": AwsProvider()},
                       RecordingNotifier(), SystemClock())
    lifecycle(quiet)
    quiet.alert("nobody listens")
    assert rows(store) == []


def test_delivered_in_order_with_thread_and_card_followed_up(
        service: JitService, store: Store, slack: SlackApiFake, policy: Policy) -> None:
    gid = lifecycle(service)
    with delivering(slack, policy, store):
        wait_for_rows(store, 10, {"sent"})
    sent = posts(slack)
    assert [(c.method, c.args["channel"]) for c in sent] == [
        ("chat.postMessage", AUDIT), ("chat.postMessage", APPROVALS),
        ("chat.postMessage", AUDIT), ("chat.update", APPROVALS),
        ("chat.postMessage", REQUESTER), ("chat.postMessage", AUDIT),
        ("chat.postMessage", AUDIT), ("chat.update", APPROVALS),
        ("chat.postMessage", REQUESTER)]
    parent = slack.messages(AUDIT)[0]
    thread = slack.thread(AUDIT, parent["ts"])
    assert len(thread) == 4 and f"#{gid}" in thread[0]["text"]
    card = slack.messages(APPROVALS)
    assert len(card) == 1 and len(card[0]["edits"]) == 2  # one card, updated twice
    assert "open until" in str(card[0]["blocks"])
    assert [m["text"].split(" ")[0] for m in slack.messages(REQUESTER)] == [
        "Request", "Access"]


def decided_line(edit: dict[str, Any]) -> str:
    """The line a card update ends with: who decided, when, and what came of it."""
    blocks = edit["blocks"]
    if isinstance(blocks, str):  # sent form-encoded
        blocks = json.loads(blocks)
    return str(blocks[-1]["text"]["text"])


def test_the_card_says_what_came_of_the_request_and_the_alerts_are_escaped(
        service: JitService, store: Store, slack: SlackApiFake, policy: Policy) -> None:
    lifecycle(service)
    denied = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE).grant
    service.deny(denied.id, APPROVER, "not today <!here> & not tomorrow")
    service.alert("orphan rule <sgr-1> & co removed")
    with delivering(slack, policy, store):
        wait_for_rows(store, 10, {"sent"})
    opened, refused = slack.messages(APPROVALS)
    assert [decided_line(e).split(":* ", 1)[1] for e in opened["edits"]] == [
        f"approved by <@{APPROVER}>, opening…", opened["edits"][1]["text"].split(": ", 1)[1]]
    assert decided_line(opened["edits"][1]).startswith(f"*Decided by <@{APPROVER}> at ")
    assert "open until " in decided_line(opened["edits"][1])
    assert decided_line(refused["edits"][0]).endswith(
        f"denied by <@{APPROVER}>: not today &lt;!here&gt; &amp; not tomorrow")
    alerts = [m["text"] for m in slack.messages(AUDIT) if m["text"].startswith(":rotating")]
    assert alerts == [":rotating_light: orphan rule &lt;sgr-1&gt; &amp; co removed"]


def test_an_outage_delays_posts_and_loses_none(service: JitService, store: Store,
                                               slack: SlackApiFake, policy: Policy) -> None:
    slack.outage(status=503)
    with delivering(slack, policy, store, backoff_base=0.2, backoff_cap=1.0):
        lifecycle(service)
        time.sleep(1.5)
        assert posts(slack) == []
        assert any(c.status == 503 for c in slack.calls)
        assert all(r.status == "pending" for r in rows(store))
        first = rows(store)[0]
        assert first.attempts == 1 and first.last_error == "HTTP 503"
        assert all(r.attempts == 0 for r in rows(store)[1:])  # nothing else tried: Slack's down
        probes = [c for c in slack.calls if c.method == "auth.test"]
        assert probes and all(c.status == 503 for c in probes)
        slack.end_outage()
        back = time.monotonic()
        wait_for_rows(store, 10, {"sent"})
        took = time.monotonic() - back
    assert took < 5
    sent = posts(slack)
    assert len(sent) == 9 and len({(c.method, str(c.args)) for c in sent}) == 9  # once each
    assert len(slack.thread(AUDIT, slack.messages(AUDIT)[0]["ts"])) == 4


def test_rate_limited_post_waits_for_retry_after(service: JitService, store: Store,
                                                 slack: SlackApiFake, policy: Policy) -> None:
    service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE)
    slack.rate_limit_next(1, retry_after=3, method="chat.postMessage")
    with delivering(slack, policy, store):
        wait_for_rows(store, 10, {"sent"})
    attempts = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert attempts[0].status == 429 and attempts[1].ok
    assert attempts[1].at - attempts[0].at >= 3.0
    assert [r.attempts for r in rows(store)] == [2, 1]


def test_a_missing_audit_channel_fails_its_posts_for_good_and_the_rest_flows(
        service: JitService, store: Store, slack: SlackApiFake, policy: Policy,
        db_url: str, tmp_path: Path, aws_group: Any) -> None:
    slack.break_channel(AUDIT, "channel_not_found")
    registry = CollectorRegistry()
    metrics = install(store, service.clock, registry)
    with delivering(slack, policy, store, metrics=metrics):
        gid = lifecycle(service)
        found = wait_for_rows(store, 10, {"sent", "failed"})
    failed = [(r.post, r.last_error) for r in found if r.status == "failed"]
    assert failed == [("thread", "channel_not_found")] + [("reply", "channel_not_found")] * 3
    audit_tries = [c for c in slack.calls if c.args.get("channel") == AUDIT]
    assert len(audit_tries) == 4  # each tried once: not retried
    assert len(slack.messages(APPROVALS)) == 1 and len(slack.messages(REQUESTER)) == 2
    assert registry.get_sample_value("jit_slack_posts_total",
                                     {"outcome": "failed", "post": "reply"}) == 3
    assert registry.get_sample_value("jit_slack_posts_total",
                                     {"outcome": "sent", "post": "dm"}) == 2
    assert registry.get_sample_value("jit_slack_posts_failed") == 4
    assert registry.get_sample_value("jit_slack_posts_pending") == 0

    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(aws_policy_data(aws_group.group_id)))
    shown = CliRunner().invoke(cli, ["--config", str(config), "--database-url", db_url,
                                     "status"])
    assert shown.exit_code == 0, shown.output
    assert "Slack delivery: 0 pending; 4 failed" in shown.output
    assert f"#{gid} reply to {AUDIT}: channel_not_found" in shown.output
    as_json = CliRunner().invoke(cli, ["--config", str(config), "--database-url", db_url,
                                       "status", "--json"])
    delivery_state = json.loads(as_json.output.splitlines()[-1])["slack_delivery"]
    assert delivery_state["failed"] == 4 and delivery_state["pending"] == 0

    slack.mend_channel(AUDIT)  # the bot was invited: the failed posts go again
    again = CliRunner().invoke(cli, ["--config", str(config), "--database-url", db_url,
                                     "outbox", "retry"])
    assert again.output == "4 failed post(s) queued again; jit-bot sends them\n"
    with delivering(slack, policy, store):
        wait_for_rows(store, 10, {"sent"})
    assert len(slack.messages(AUDIT)) == 4


def test_replies_wait_for_their_parent(service: JitService, store: Store,
                                       slack: SlackApiFake, policy: Policy) -> None:
    """A rate-limited thread parent waits; nothing of its lane overtakes it, while the
    other lane goes on."""
    first = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE).grant
    service.cancel(first.id, REQUESTER)
    second = service.request(REQUESTER, "prod-db", "rdp", timedelta(minutes=30), SOURCE).grant
    slack.rate_limit_next(1, retry_after=2, method="chat.postMessage")  # the first parent
    with delivering(slack, policy, store):
        wait_for_rows(store, 10, {"sent"})
    texts = [(c.args.get("channel"), c.args.get("thread_ts"), c.ok) for c in slack.calls
             if c.method == "chat.postMessage"]
    assert texts[0] == (AUDIT, None, False)
    assert texts[1] == (AUDIT, None, True) and texts[2] == (APPROVALS, None, True)  # #2 goes
    parents = [m for m in slack.messages(AUDIT) if m["thread_ts"] is None]
    assert f"#{second.id}" in parents[0]["text"] and f"#{first.id}" in parents[1]["text"]
    replies = [m for m in slack.messages(AUDIT) if m["thread_ts"] is not None]
    assert len(replies) == 1 and f"#{first.id}" in replies[0]["text"]
    assert second.id != first.id


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: leases run out
def test_restart_takes_over_a_dead_senders_lease_on_sqlite(service: JitService, store: Store,
                                                           slack: SlackApiFake,
                                                           policy: Policy) -> None:
    service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE)
    with store.transaction() as session:  # a sender that died holding the lane
        assert outbox.claim(session, "dead:1:000000", service.clock.now(), timedelta(hours=1))
    with delivering(slack, policy, store):
        wait_for_rows(store, 5, {"sent"})
    assert len(posts(slack)) == 2


def test_delivered_rows_are_pruned_after_the_retention(service: JitService, store: Store,
                                                       slack: SlackApiFake,
                                                       policy: Policy) -> None:
    lifecycle(service)
    with delivering(slack, policy, store):
        wait_for_rows(store, 10, {"sent"})
    service.request(REQUESTER, "prod-db", "rdp", timedelta(minutes=30), SOURCE)  # pending
    with store.transaction() as session:
        assert outbox.prune(session, service.clock.now() - timedelta(days=7)) == 0
        assert outbox.prune(session, service.clock.now() + timedelta(seconds=1)) == 9
    with store.read() as session:
        left = session.execute(select(OutboxPost.status, func.count())
                               .group_by(OutboxPost.status)).all()
    assert left == [("pending", 2)]


def test_errors_are_sorted_into_transient_and_permanent() -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web import SlackResponse

    def answer(status: int, data: dict[str, Any], headers: dict[str, str] | None = None
               ) -> SlackApiError:
        response = SlackResponse(client=None, http_verb="POST", api_url="x", req_args={},
                                 data=data, headers=headers or {}, status_code=status)
        return SlackApiError("no", response)

    assert classify(answer(429, {"ok": False, "error": "ratelimited"},
                           {"Retry-After": "7"})).retry_after == 7
    assert classify(answer(503, {"ok": False, "error": "<html>"})).transient
    assert classify(answer(200, {"ok": False, "error": "internal_error"})).transient
    for permanent in ("channel_not_found", "not_in_channel", "is_archived", "invalid_blocks",
                      "invalid_auth", "msg_too_long"):
        failure = classify(answer(200, {"ok": False, "error": permanent}))
        assert not failure.transient and failure.error == permanent
    assert classify(ConnectionRefusedError(111, "refused")).transient
    assert classify(TimeoutError("timed out")).transient
    assert not classify(KeyError("blocks")).transient
