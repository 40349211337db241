"""What each event owes Slack, and the event as a row keeps it (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot import blocks
from bot.blocks import CARD_OUTCOME
from jitcore import outbox
from jitcore.domain import EventKind, GrantEvent, GrantView, Status
from jitcore.outbox import Outbox, Post
from tests.support.policies import REQUESTER, aws_policy

AT = datetime(2026, 12, 5, 17, 30, 12, 345678, tzinfo=UTC)


def view(**changes: object) -> GrantView:
    base = GrantView(
        id=42, status=Status.ACTIVE, requester=REQUESTER, target="prod-db", cloud="aws",
        service="ssh", port=22, protocol="tcp", source="203.0.113.7/32",
        duration=timedelta(minutes=30), reason='fix "replication" <!channel> \u2028 ✓',
        created_at=AT, decided_by="U0BOB", decided_at=AT + timedelta(seconds=5),
        opened_at=AT + timedelta(seconds=9), expires_at=AT + timedelta(minutes=30, seconds=9),
        rule_ref="sgr-0abc", error=None)
    return GrantView(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def test_an_event_survives_its_row_exactly() -> None:
    event = GrantEvent(EventKind.OPENED, view(), "jit", AT, "removed", alert=True)
    assert outbox.event_from_json(outbox.event_json(event)) == event
    pending = GrantEvent(EventKind.REQUESTED, view(status=Status.PENDING, decided_by=None,
                                                   decided_at=None, opened_at=None,
                                                   expires_at=None, rule_ref=None),
                         REQUESTER, AT)
    assert outbox.event_from_json(outbox.event_json(pending)) == pending


@pytest.mark.parametrize("kind", list(EventKind))
def test_a_dm_is_owed_exactly_when_there_is_one_to_send(kind: EventKind) -> None:
    for actor in (REQUESTER, "U0BOB"):
        event = GrantEvent(kind, view(), actor, AT, "because")
        renders = blocks.dm_for(event) is not None or kind is EventKind.EXPIRING
        assert outbox.owes_dm(event) == renders, (kind, actor)


def test_every_card_outcome_has_words() -> None:
    assert set(CARD_OUTCOME) == set(outbox.CARD_OUTCOMES)


def test_what_each_event_owes() -> None:
    owes = Outbox(aws_policy("sg-0123456789abcdef0"))
    audit, approvals = "C0AUDIT", "C0APPROVE"

    def posts(kind: EventKind, actor: str = "jit", alert: bool = False,
              target: str = "prod-db") -> list[tuple[Post, str]]:
        return owes.posts(GrantEvent(kind, view(target=target), actor, AT, "", alert))

    assert posts(EventKind.REQUESTED, REQUESTER) == [(Post.THREAD, audit),
                                                     (Post.CARD, approvals)]
    assert posts(EventKind.REQUESTED, REQUESTER, target="gone") == [(Post.THREAD, audit)]
    assert posts(EventKind.OPENING) == [(Post.REPLY, audit)]
    assert posts(EventKind.CANCELLED, REQUESTER) == [(Post.REPLY, audit),
                                                     (Post.CARD_UPDATE, approvals)]
    assert posts(EventKind.CANCELLED, "U0ADMIN")[-1] == (Post.DM, REQUESTER)
    assert posts(EventKind.OPEN_FAILED, alert=True) == [
        (Post.REPLY, audit), (Post.ALERT, audit), (Post.CARD_UPDATE, approvals),
        (Post.DM, REQUESTER)]
    assert posts(EventKind.EXPIRING) == [(Post.REPLY, audit), (Post.DM, REQUESTER)]

    rows = owes.rows([GrantEvent(EventKind.REQUESTED, view(), REQUESTER, AT)], AT)
    assert [(r["lane"], r["grant_id"], r["status"], r["attempts"]) for r in rows] == [
        ("grant:42", 42, "pending", 0)] * 2
    alert = owes.alert_row("orphan <rule> removed", AT)
    assert alert["lane"] == outbox.ALERTS_LANE and alert["grant_id"] is None
    assert outbox.alert_from_json(alert["payload"]) == "orphan <rule> removed"


def test_a_policy_without_slack_owes_nothing() -> None:
    from jitcore.policy_file import parse_policy
    from tests.support.policies import aws_policy_data

    data = aws_policy_data("sg-0123456789abcdef0")
    del data["slack"]
    with pytest.raises(ValueError, match="no slack section"):
        Outbox(parse_policy(data, "p.yaml"))
