"""What each outbox post says, as bot.blocks renders it for the sender: audit messages and
alerts, the card once the request moves on, and the requester's DMs (the expiry warning
too); every status and every event kind has words."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from bot import blocks
from bot.blocks.text import state
from jitcore import outbox
from jitcore.domain import EventKind, GrantEvent, GrantView, Status
from jitcore.policy import AwsLocation, PortPolicy, Target

T0 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)
EVIL = "<!channel> & <@U123>"
TARGET = Target(
    name="prod-db", location=AwsLocation(region="us-east-1", security_group_id="sg-0abc123"),
    ports={"ssh": PortPolicy("ssh", 22)}, requesters=("*",), approvers=("U0BOB",),
    max_duration=timedelta(hours=3), approval_timeout=timedelta(hours=1))
ACTIVE = GrantView(
    id=42, status=Status.ACTIVE, requester="U0ALICE", target="prod-db", cloud="aws",
    service="ssh", port=22, protocol="tcp", source="203.0.113.7/32",
    duration=timedelta(minutes=30), reason="fix replication", created_at=T0,
    decided_by="U0BOB", decided_at=T0 + timedelta(minutes=2),
    expires_at=T0 + timedelta(minutes=30), rule_ref="sgr-0abc")


def event(kind: EventKind, actor: str = "jit", detail: str = "", at: datetime = T0,
          grant: GrantView = ACTIVE) -> GrantEvent:
    return GrantEvent(kind, grant, actor, at, detail)


STATES = {
    Status.PENDING: "waiting for approval since 14:00 UTC",
    Status.APPROVED: "approved, opening",
    Status.OPENING: "approved, opening",
    Status.ACTIVE: "open until 14:30 UTC",
    Status.CLOSING: "closing",
    Status.CLOSED: "closed at 14:00 UTC (expired)",
    Status.CLOSE_FAILED: "close failed; jit keeps retrying and the SOC is alerted",
    Status.DENIED: "denied by <@U0BOB>",
    Status.CANCELLED: "cancelled",
    Status.LAPSED: "lapsed: no decision in time",
    Status.FAILED: "failed: AccessDenied &lt;ec2&gt;",
}


@pytest.mark.parametrize("status", list(Status))
def test_every_status_has_words(status: Status) -> None:
    grant = dataclasses.replace(ACTIVE, status=status, closed_at=T0, close_reason="expired",
                                error="AccessDenied\n<ec2>")
    assert state(grant) == STATES[status]


def test_audit_posts_are_the_audit_line() -> None:
    opened = event(EventKind.OPENED)
    line = blocks.audit_line(opened)
    assert blocks.audit_message(opened) == {"text": line}
    assert blocks.audit_alert(opened) == {"text": f":rotating_light: {line}"}


def test_a_free_standing_alert_is_escaped() -> None:
    assert blocks.alert_message("orphan <rule> & more removed") == {
        "text": ":rotating_light: orphan &lt;rule&gt; &amp; more removed"}


@pytest.mark.parametrize(("kind", "actor", "detail", "said"), [
    (EventKind.APPROVED, "U0BOB", "", "approved by <@U0BOB>, opening…"),
    (EventKind.AUTO_APPROVED, "policy", "", "approved by policy, opening…"),
    (EventKind.DENIED, "U0BOB", EVIL, "denied by <@U0BOB>: &lt;!channel&gt; &amp; &lt;@U123&gt;"),
    (EventKind.DENIED, "U0BOB", "", "denied by <@U0BOB>"),
    (EventKind.CANCELLED, "U0ALICE", "", "cancelled by the requester"),
    (EventKind.LAPSED, "jit", "", "lapsed: no decision in time"),
    (EventKind.OPENED, "jit", "", "open until 14:30 UTC"),
    (EventKind.OPEN_FAILED, "jit", "Rules\nLimit <x>", "failed: Rules Limit &lt;x&gt;"),
    (EventKind.CLOSED, "U0ALICE", "", "closed (revoked by <@U0ALICE>)"),
])
def test_the_card_once_the_request_moves_on(kind: EventKind, actor: str, detail: str,
                                            said: str) -> None:
    grant = dataclasses.replace(ACTIVE, close_reason="revoked")
    card = blocks.card_update(event(kind, actor, detail, grant=grant), TARGET)
    decided = card["blocks"][-1]
    assert decided["block_id"] == "jit_decided:42"
    assert decided["text"]["text"] == f"*Decided by <@U0BOB> at 14:02 UTC:* {said}"
    assert card["text"] == f"jit #42: {said}"
    assert all(b["type"] != "actions" for b in card["blocks"])


def test_a_card_closed_at_its_end_says_why_not_who() -> None:
    grant = dataclasses.replace(ACTIVE, close_reason="expired")
    card = blocks.card_update(event(EventKind.CLOSED, "jit", "", grant=grant), TARGET)
    assert card["text"] == "jit #42: closed (expired)"


def test_every_card_outcome_the_outbox_owes_has_words() -> None:
    assert set(blocks.CARD_OUTCOME) == set(outbox.CARD_OUTCOMES)


def test_a_plain_outcome_is_escaped_on_the_card() -> None:
    card = blocks.decided_card(ACTIVE, TARGET, "denied: <@U9> & co")
    assert card["blocks"][-1]["text"]["text"].endswith("denied: &lt;@U9&gt; &amp; co")


@pytest.mark.parametrize(("at", "minutes"), [(T0 + timedelta(minutes=20), "10 minutes"),
                                             (T0 + timedelta(minutes=29, seconds=50),
                                              "1 minute,"),
                                             (T0 + timedelta(minutes=31), "1 minute,")])
def test_the_expiry_dm_counts_the_minutes_left(at: datetime, minutes: str) -> None:
    dm = blocks.dm_for(event(EventKind.EXPIRING, at=at))
    assert dm is not None
    assert minutes in dm["blocks"][0]["text"]["text"]
    (button,) = dm["blocks"][1]["elements"]
    assert (button["action_id"], button["value"]) == ("jit_extend", "42")


def test_no_expiry_dm_without_an_end() -> None:
    assert blocks.dm_for(event(EventKind.EXPIRING,
                               grant=dataclasses.replace(ACTIVE, expires_at=None))) is None


@pytest.mark.parametrize("kind", list(EventKind))
def test_a_dm_exactly_when_the_outbox_owes_one(kind: EventKind) -> None:
    for actor in ("U0ALICE", "U0BOB"):
        made = event(kind, actor, "because")
        assert (blocks.dm_for(made) is not None) == outbox.owes_dm(made), (kind, actor)
