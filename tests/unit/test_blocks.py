"""Block Kit builders (bot.blocks): structure, escaping, audit lines and Slack's limits."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot import blocks
from bot.blocks.text import clip
from bot.grammar import HELP_TEXT
from jitcore.domain import EventKind, GrantEvent, GrantView, Status
from jitcore.policy import AwsLocation, AzureLocation, PortPolicy, Target

EVIL = "<!channel> <@U123> <https://evil|click> & more"
EVIL_ESCAPED = "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|click&gt; &amp; more"
RAW_MARKUP = ("<!channel>", "<@U123>", "<https://evil")
T0 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)
REQUESTER, APPROVER = "U0ALICE", "U0BOB"

AWS = Target(
    name="prod-db", location=AwsLocation(region="us-east-1", security_group_id="sg-0abc123"),
    ports={"ssh": PortPolicy("ssh", 22, max_duration=timedelta(hours=1))},
    requesters=("*",), approvers=(APPROVER,), max_duration=timedelta(hours=3),
    approval_timeout=timedelta(hours=1),
)
AWS_INSTANCE = dataclasses.replace(
    AWS, location=AwsLocation(region="eu-west-1", instance_id="i-0123456789abcdef0"))
AZURE = Target(
    name="web-vm",
    location=AzureLocation(subscription_id="00000000-0000-0000-0000-000000000000",
                           resource_group="rg-web", network_security_group="nsg-web",
                           destination="10.0.1.4", priority_band=(300, 349)),
    ports={"rdp": PortPolicy("rdp", 3389)}, requesters=("*",), approvers=(APPROVER,),
    max_duration=timedelta(hours=3), approval_timeout=timedelta(minutes=30),
)


def grant(**changes: Any) -> GrantView:
    base = GrantView(
        id=42, status=Status.PENDING, requester=REQUESTER, target="prod-db", cloud="aws",
        service="ssh", port=22, protocol="tcp", source="203.0.113.7/32",
        duration=timedelta(minutes=30), reason="fix replication", created_at=T0,
    )
    return dataclasses.replace(base, **changes)


ACTIVE = grant(status=Status.ACTIVE, decided_by=APPROVER, decided_at=T0 + timedelta(minutes=2),
               opened_at=T0 + timedelta(minutes=3), expires_at=T0 + timedelta(minutes=30),
               rule_ref="sgr-0abc")


def event(kind: EventKind, view: GrantView = ACTIVE, actor: str = "jit", detail: str = "",
          alert: bool = False) -> GrantEvent:
    return GrantEvent(kind, view, actor, T0 + timedelta(minutes=5), detail, alert)


def texts(payload: Any) -> list[str]:
    """Every `text` string in a message or view, nested ones included."""
    found: list[str] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key == "text" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(texts(value))
    elif isinstance(payload, list):
        for item in payload:
            found.extend(texts(item))
    return found


def all_text(message: dict[str, Any]) -> str:
    return "\n".join(texts(message))


def elements(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Every interactive element of a type (button, static_select, ...) in a message or view."""
    found: list[dict[str, Any]] = []
    for block in message["blocks"]:
        candidates = [*block.get("elements", []), block.get("accessory"), block.get("element")]
        found.extend(c for c in candidates if isinstance(c, dict) and c.get("type") == kind)
    return found


def assert_valid(payload: dict[str, Any], max_blocks: int) -> None:
    """slack_sdk's own models accept every block, unchanged, within Slack's limits."""
    assert 1 <= len(payload["blocks"]) <= max_blocks
    for block in payload["blocks"]:
        parsed = Block.parse(block)
        assert parsed is not None
        parsed.validate_json()
        assert parsed.to_dict() == block
    if "type" in payload:
        view = View(**payload)
        view.validate_json()
        assert view.to_dict() == payload
    else:
        assert set(payload) == {"text", "blocks"}
        assert payload["text"].strip()
    block_ids = [b["block_id"] for b in payload["blocks"] if "block_id" in b]
    assert len(block_ids) == len(set(block_ids))
    for text in texts(payload):
        assert len(text) <= 3000
        assert re.search(r"&(?!amp;|lt;|gt;)", text) is None, text  # no cut-off entity


# ---- escape ----------------------------------------------------------------------------------

def test_escape_replaces_ampersand_first() -> None:
    assert blocks.escape(EVIL) == EVIL_ESCAPED
    assert blocks.escape("&lt;") == "&amp;lt;"
    assert blocks.escape("plain text") == "plain text"


# ---- every builder, against Slack's models and with hostile text ----------------------------

def _all_messages(reason: str) -> dict[str, dict[str, Any]]:
    evil_grant = dataclasses.replace(ACTIVE, reason=reason, target=f"db {reason}",
                                     error=reason, close_reason="revoked")
    pending = dataclasses.replace(evil_grant, status=Status.PENDING)
    decided = dataclasses.replace(evil_grant, status=Status.DENIED)
    return {
        "approval_card": blocks.approval_card(pending, AWS, reason),
        "approval_card_azure": blocks.approval_card(pending, AZURE),
        "decided_card": blocks.decided_card(decided, AWS, f"denied: {reason}"),
        "request_ack": blocks.request_ack(pending, auto_approved=False),
        "error_message": blocks.error_message(f"unknown target {reason!r}", reason),
        "expiry_warning": blocks.expiry_warning(evil_grant, 10),
        "home_view": blocks.home_view([evil_grant], [pending], [pending]),
        "grants_message": blocks.grants_message(
            [evil_grant, pending, decided,
             dataclasses.replace(evil_grant, status=Status.FAILED)]),
        "dm_denied": _dm(EventKind.DENIED, pending, APPROVER, reason),
        "dm_open_failed": _dm(EventKind.OPEN_FAILED, evil_grant, "jit", reason),
        "dm_opened": _dm(EventKind.OPENED, evil_grant),
        "dm_closed": _dm(EventKind.CLOSED, evil_grant, APPROVER, "removed"),
    }


def _dm(kind: EventKind, view: GrantView, actor: str = "jit",
        detail: str = "") -> dict[str, Any]:
    message = blocks.dm_for(event(kind, view, actor, detail))
    assert message is not None
    return message


@pytest.mark.parametrize("name", sorted(_all_messages(EVIL)))
def test_user_text_is_escaped_everywhere(name: str) -> None:
    message = _all_messages(EVIL)[name]
    serialised = json.dumps(message)
    for raw in RAW_MARKUP:
        assert raw not in serialised
    if name != "approval_card_azure":  # shows the reason or the target name
        assert "&lt;!channel&gt;" in serialised


def _text_objects(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, list):
        return [o for item in payload for o in _text_objects(item)]
    if not isinstance(payload, dict):
        return []
    own = [payload] if payload.get("type") == "mrkdwn" else []
    return own + [o for value in payload.values() for o in _text_objects(value)]


@pytest.mark.parametrize("name", sorted(_all_messages(EVIL)))
def test_mrkdwn_is_verbatim_so_bare_urls_and_names_stay_text(name: str) -> None:
    objects = _text_objects(_all_messages(EVIL)[name])
    assert objects and all(o["verbatim"] is True for o in objects)


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("abc", 3, "abc"),
    ("abcdef", 4, "abc…"),
    ("ab &amp; c", 6, "ab …"),
    ("by <@U0BOB> ok", 8, "by …"),
    ("by <@U0BOB> ok", 13, "by <@U0BOB> …"),
])
def test_clip_never_cuts_an_entity_or_a_mention(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected


def test_other_messages_are_valid() -> None:
    for message in (blocks.help_message(), blocks.targets_message([AWS, AZURE]),
                    blocks.grants_message([]), blocks.targets_message([]),
                    blocks.request_ack(grant(), auto_approved=True)):
        assert_valid(message, blocks.MAX_MESSAGE_BLOCKS)
    for view in (blocks.deny_modal(42), blocks.home_view([], [], []),
                 blocks.request_modal({}, ["prod-db"], ["ssh"]),
                 blocks.request_modal({}, [], [])):
        assert_valid(view, blocks.MAX_VIEW_BLOCKS)


@pytest.mark.parametrize("reason", [EVIL, "x" * 10_000, "&" * 5000, "<" * 3000 + "y" * 3000,
                                    "line\n" * 2000])
def test_every_message_stays_within_block_kit_limits(reason: str) -> None:
    for name, message in _all_messages(reason).items():
        limit = blocks.MAX_VIEW_BLOCKS if "type" in message else blocks.MAX_MESSAGE_BLOCKS
        try:
            assert_valid(message, limit)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


def test_long_reason_is_truncated_not_dropped() -> None:
    card = blocks.approval_card(grant(reason="why " * 2000), AWS)
    reason = next(t for t in texts(card) if t.startswith("*Reason*"))
    assert len(reason) <= 3000 and reason.endswith("…") and "why why" in reason


# ---- audit lines -----------------------------------------------------------------------------

ALERTS = {EventKind.OPEN_FAILED, EventKind.CLOSE_FAILED}


@pytest.mark.parametrize("kind", list(EventKind))
def test_audit_line_for_every_kind(kind: EventKind) -> None:
    alert = kind in ALERTS
    line = blocks.audit_line(event(kind, dataclasses.replace(ACTIVE, reason=EVIL),
                                   APPROVER, EVIL, alert))
    word = kind.value.upper() if alert else kind.value
    assert line.startswith(f"jit #42 {word} ssh prod-db 203.0.113.7/32")
    assert "\n" not in line
    assert not any(raw in line for raw in RAW_MARKUP)
    assert f"by <@{APPROVER}>" in line


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (event(EventKind.REQUESTED, grant(), REQUESTER, "fix replication"),
         "jit #42 requested ssh prod-db 203.0.113.7/32 for 30m by <@U0ALICE>: fix replication"),
        (event(EventKind.APPROVED, ACTIVE, APPROVER),
         "jit #42 approved ssh prod-db 203.0.113.7/32 for 30m by <@U0BOB>"),
        (event(EventKind.AUTO_APPROVED, grant(), "policy"),
         "jit #42 auto_approved ssh prod-db 203.0.113.7/32 for 30m by policy"),
        (event(EventKind.DENIED, grant(), APPROVER, "not during the freeze"),
         "jit #42 denied ssh prod-db 203.0.113.7/32 by <@U0BOB>: not during the freeze"),
        (event(EventKind.LAPSED, grant()),
         "jit #42 lapsed ssh prod-db 203.0.113.7/32 by jit: no decision in time"),
        (event(EventKind.OPENED, ACTIVE),
         "jit #42 opened ssh prod-db 203.0.113.7/32 until 14:30Z rule sgr-0abc by jit"),
        (event(EventKind.EXTENDED,
               dataclasses.replace(ACTIVE, expires_at=T0 + timedelta(hours=1)), APPROVER),
         "jit #42 extended ssh prod-db 203.0.113.7/32 until 15:00Z by <@U0BOB>"),
        (event(EventKind.CLOSING, dataclasses.replace(ACTIVE, close_reason="expired"),
               detail="expired"),
         "jit #42 closing ssh prod-db 203.0.113.7/32 (expired) by jit"),
        (event(EventKind.CLOSED, dataclasses.replace(ACTIVE, close_reason="revoked"),
               "cli:alice", "removed"),
         "jit #42 closed ssh prod-db 203.0.113.7/32 (revoked) rule sgr-0abc by cli:alice: "
         "removed; established sessions are not cut by the firewall"),
        (event(EventKind.CLOSE_FAILED, ACTIVE, detail="AccessDenied\nno ec2:Revoke", alert=True),
         "jit #42 CLOSE_FAILED ssh prod-db 203.0.113.7/32 rule sgr-0abc by jit: "
         "AccessDenied no ec2:Revoke; retries continue"),
    ],
)
def test_audit_line_examples(made: GrantEvent, expected: str) -> None:
    assert blocks.audit_line(made) == expected


def test_audit_times_are_utc() -> None:
    local = timezone(timedelta(hours=2))
    opened = dataclasses.replace(ACTIVE, expires_at=datetime(2024, 5, 1, 16, 30, tzinfo=local))
    assert "until 14:30Z" in blocks.audit_line(event(EventKind.OPENED, opened))
    naive = dataclasses.replace(ACTIVE, expires_at=datetime(2024, 5, 1, 9, 5))
    assert "until 09:05Z" in blocks.audit_line(event(EventKind.OPENED, naive))


def test_only_slack_user_ids_become_mentions() -> None:
    line = blocks.audit_line(event(EventKind.CANCELLED, grant(), "<@U999>"))
    assert line.endswith("by &lt;@U999&gt;")


# ---- the approval card -----------------------------------------------------------------------

def test_approval_card_buttons() -> None:
    card = blocks.approval_card(grant(), AWS)
    actions = [b for b in card["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1 and "42" in actions[0]["block_id"]
    approve, deny = actions[0]["elements"]
    assert (approve["action_id"], approve["value"], approve["style"]) == ("jit_approve", "42",
                                                                          "primary")
    assert (deny["action_id"], deny["value"], deny["style"]) == ("jit_deny", "42", "danger")


def test_approval_card_shows_the_request_and_the_exact_rule_change() -> None:
    text = all_text(blocks.approval_card(grant(), AWS, "@dba, @sre"))
    for part in ("<@U0ALICE> (@dba, @sre)", "prod-db", "`aws us-east-1 sg-0abc123`",
                 "ssh tcp/22", "`203.0.113.7/32`", "30m", "fix replication",
                 "lapses at 15:00 UTC"):
        assert part in text
    assert ("*Approve adds:* Allow tcp/22 from `203.0.113.7/32` in `sg-0abc123` "
            "(aws us-east-1) for 30m, tagged `jit:grant=42`") in text


def test_rule_change_for_an_instance_and_for_azure() -> None:
    assert blocks.rule_change(grant(), AWS_INSTANCE) == (
        "Allow tcp/22 from `203.0.113.7/32` in jit's group for instance "
        "`i-0123456789abcdef0` (aws eu-west-1) for 30m, tagged `jit:grant=42`")
    rdp = grant(target="web-vm", cloud="azure", service="rdp", port=3389)
    change = blocks.rule_change(rdp, AZURE)
    assert change.startswith("Allow tcp/3389 from `203.0.113.7/32` to `10.0.1.4` in NSG "
                             "`nsg-web` (azure rg-web) for 30m")
    assert "rule `jit-42`" in change and "300-349" in change


def test_approval_card_without_reason() -> None:
    assert "_none given_" in all_text(blocks.approval_card(grant(reason="  "), AWS))


def test_decided_card_has_no_buttons_and_says_who_when_what() -> None:
    denied = grant(status=Status.DENIED, decided_by=APPROVER,
                   decided_at=datetime(2024, 5, 1, 14, 7, tzinfo=UTC))
    card = blocks.decided_card(denied, AWS, "denied: not during the freeze")
    assert all(b["type"] != "actions" for b in card["blocks"])
    assert elements(card, "button") == []
    last = card["blocks"][-1]
    assert last["text"]["text"] == ("*Decided by <@U0BOB> at 14:07 UTC:* "
                                    "denied: not during the freeze")
    assert "42" in last["block_id"]
    assert "*Rule:* Allow tcp/22" in all_text(card)


def test_decided_card_for_a_lapsed_request() -> None:
    lapsed = grant(status=Status.LAPSED, decided_at=T0 + timedelta(hours=1))
    card = blocks.decided_card(lapsed, AWS, "lapsed: no decision in time")
    assert card["blocks"][-1]["text"]["text"] == "*At 15:00 UTC:* lapsed: no decision in time"


# ---- replies to the requester ----------------------------------------------------------------

def test_request_ack() -> None:
    waiting = all_text(blocks.request_ack(grant(), auto_approved=False))
    assert "*#42*" in waiting and "waiting for an approver" in waiting
    assert "`/jit cancel 42`" in waiting
    auto = all_text(blocks.request_ack(grant(), auto_approved=True))
    assert "approved by policy" in auto and "cancel" not in auto


def test_error_message_with_and_without_example() -> None:
    message = blocks.error_message("'30x' is not a duration", "/jit ssh prod-db 30m")
    assert message["text"] == "'30x' is not a duration"
    assert message["blocks"][-1]["elements"][0]["text"] == "For example: `/jit ssh prod-db 30m`"
    assert len(blocks.error_message("no").get("blocks", [])) == 1


def test_error_example_cannot_break_out_of_its_code_span() -> None:
    text = all_text(blocks.error_message("bad", "/jit ` <!here>"))
    assert text.count("`") == 2 and "<!here>" not in text


@pytest.mark.parametrize(
    ("kind", "actor", "detail", "expected"),
    [
        (EventKind.APPROVED, APPROVER, "", "was approved by <@U0BOB>"),
        (EventKind.AUTO_APPROVED, "policy", "", "was approved by policy"),
        (EventKind.DENIED, APPROVER, "use the bastion", "denied by <@U0BOB>: use the bastion"),
        (EventKind.DENIED, APPROVER, "", "denied by <@U0BOB>: no reason given"),
        (EventKind.CANCELLED, APPROVER, "", "cancelled by <@U0BOB>"),
        (EventKind.LAPSED, "jit", "", "lapsed: no approver decided in time"),
        (EventKind.OPENED, "jit", "",
         "ssh tcp/22 on *prod-db* from `203.0.113.7/32` until 14:30 UTC"),
        (EventKind.OPEN_FAILED, "jit", "RulesPerSecurityGroupLimitExceeded",
         "could not be opened"),
        (EventKind.EXTENDED, APPROVER, "", "extended by <@U0BOB>"),
        (EventKind.EXTENDED, REQUESTER, "", "extended by you"),
        (EventKind.CLOSED, "jit", "removed",
         "established sessions are not cut by the firewall; reconnecting needs a new request"),
    ],
)
def test_dm_for(kind: EventKind, actor: str, detail: str, expected: str) -> None:
    message = blocks.dm_for(event(kind, ACTIVE, actor, detail))
    assert message is not None
    assert expected in all_text(message)
    assert "42" in message["text"]
    assert_valid(message, blocks.MAX_MESSAGE_BLOCKS)


def test_dm_for_open_failed_carries_the_error() -> None:
    message = _dm(EventKind.OPEN_FAILED, ACTIVE, "jit", "RulesPerSecurityGroupLimitExceeded")
    assert "RulesPerSecurityGroupLimitExceeded" in all_text(message)


def test_dm_for_revoked_says_by_whom() -> None:
    revoked = dataclasses.replace(ACTIVE, close_reason="revoked")
    assert "(revoked by <@U0BOB>)" in all_text(_dm(EventKind.CLOSED, revoked, APPROVER))
    assert "(revoked by you)" in all_text(_dm(EventKind.CLOSED, revoked, REQUESTER))


@pytest.mark.parametrize("kind", [EventKind.REQUESTED, EventKind.OPENING, EventKind.CLOSING,
                                  EventKind.CLOSE_RETRY, EventKind.CLOSE_FAILED,
                                  EventKind.ORPHAN_REMOVED])
def test_no_dm_for_engine_events(kind: EventKind) -> None:
    assert blocks.dm_for(event(kind, ACTIVE, "jit", "boom", kind in ALERTS)) is None


def test_no_dm_when_the_requester_cancelled_it_themselves() -> None:
    assert blocks.dm_for(event(EventKind.CANCELLED, grant(), REQUESTER)) is None


@pytest.mark.parametrize(("minutes", "words"), [(10, "10 minutes"), (1, "1 minute,")])
def test_expiry_warning_has_an_extend_button(minutes: int, words: str) -> None:
    message = blocks.expiry_warning(ACTIVE, minutes)
    (button,) = elements(message, "button")
    assert (button["action_id"], button["value"], button["text"]["text"]) == (
        "jit_extend", "42", "Extend")
    text = all_text(message)
    assert words in text and "14:30 UTC" in text and "not cut" in text


# ---- modals ----------------------------------------------------------------------------------

def test_deny_modal() -> None:
    view = blocks.deny_modal(42)
    assert (view["type"], view["callback_id"], view["private_metadata"]) == (
        "modal", "jit_deny_modal", "42")
    (reason,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert (reason["block_id"], reason["element"]["action_id"]) == ("reason", "reason")
    assert reason["element"]["type"] == "plain_text_input" and reason["optional"] is False
    assert "submit" in view


def _inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def test_request_modal_structure_and_prefill() -> None:
    prefill = {"service": "rdp", "target": "web-vm", "duration": "1h", "source": "203.0.113.7"}
    view = blocks.request_modal(prefill, ["prod-db", "web-vm"], ["ssh", "rdp"])
    assert (view["type"], view["callback_id"]) == ("modal", "jit_request_modal")
    inputs = _inputs(view)
    assert list(inputs) == ["service", "target", "duration", "source", "reason"]
    for block_id, block in inputs.items():
        assert block["element"]["action_id"] == block_id
    service, target = inputs["service"]["element"], inputs["target"]["element"]
    assert service["type"] == target["type"] == "static_select"
    assert [o["value"] for o in service["options"]] == ["ssh", "rdp"]
    assert service["initial_option"]["value"] == "rdp"
    assert target["initial_option"]["value"] == "web-vm"
    assert inputs["duration"]["element"]["initial_value"] == "1h"
    assert inputs["source"]["element"]["initial_value"] == "203.0.113.7"
    assert inputs["reason"]["optional"] is True and inputs["reason"]["element"]["multiline"]
    assert "initial_value" not in inputs["reason"]["element"]
    assert all(inputs[k]["optional"] is False for k in ("service", "target", "duration",
                                                        "source"))


def test_request_modal_without_prefill_and_with_unknown_prefill() -> None:
    inputs = _inputs(blocks.request_modal({"target": "gone"}, ["prod-db"], ["ssh"]))
    assert "initial_option" not in inputs["target"]["element"]
    assert "initial_value" not in inputs["source"]["element"]


def test_request_modal_keeps_typed_values_as_typed() -> None:
    # An input's value is not markup; escaping it would change what the person submits.
    inputs = _inputs(blocks.request_modal({"reason": "a & b"}, ["prod-db"], ["ssh"]))
    assert inputs["reason"]["element"]["initial_value"] == "a & b"


def test_request_modal_caps_options_and_keeps_the_prefilled_one() -> None:
    targets = [f"vm-{n:03}" for n in range(150)]
    view = blocks.request_modal({"target": "vm-149"}, targets, ["ssh"])
    element = _inputs(view)["target"]["element"]
    assert len(element["options"]) == 100
    assert element["initial_option"]["value"] == "vm-149"
    assert_valid(view, blocks.MAX_VIEW_BLOCKS)


def test_request_modal_with_nothing_to_request() -> None:
    view = blocks.request_modal({}, [], ["ssh"])
    assert _inputs(view) == {} and "submit" not in view
    assert "nothing you may ask for" in all_text(view)


# ---- App Home --------------------------------------------------------------------------------

def test_home_view_sections_and_buttons() -> None:
    mine = grant(id=7, status=Status.ACTIVE, expires_at=T0 + timedelta(minutes=30))
    waiting = grant(id=8)
    theirs = grant(id=9, requester="U0CAROL")
    view = blocks.home_view([mine], [waiting], [theirs])
    assert view["type"] == "home"
    headers = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert headers == ["Your active grants", "Your pending requests",
                       "Waiting for your approval"]
    buttons = [(b["action_id"], b["value"]) for b in elements(view, "button")]
    assert buttons == [("jit_revoke", "7"), ("jit_cancel", "8"), ("jit_approve", "9"),
                       ("jit_deny", "9")]
    assert "open until 14:30 UTC" in all_text(view)
    assert "<@U0CAROL> asks for" in all_text(view)


def test_home_view_empty_sections_say_so() -> None:
    text = all_text(blocks.home_view([], [], []))
    for empty in ("No active grants.", "No pending requests.", "Nothing waits for you."):
        assert empty in text


@pytest.mark.parametrize("counts", [(200, 200, 200), (200, 0, 0), (0, 0, 200), (3, 200, 1)])
def test_home_view_stays_under_100_blocks(counts: tuple[int, int, int]) -> None:
    active, pending, to_approve = ([grant(id=n, status=status) for n in range(1, count + 1)]
                                   for count, status in zip(counts, (Status.ACTIVE,
                                                                     Status.PENDING,
                                                                     Status.PENDING),
                                                            strict=True))
    view = blocks.home_view(active, pending, to_approve)
    assert_valid(view, blocks.MAX_VIEW_BLOCKS)
    text = all_text(view)
    shown = {kind: len([b for b in elements(view, "button") if b["action_id"] == kind])
             for kind in ("jit_revoke", "jit_cancel", "jit_approve")}
    for (count, kind) in zip(counts, ("jit_revoke", "jit_cancel", "jit_approve"), strict=True):
        assert 0 < shown[kind] <= count if count else shown[kind] == 0
        if shown[kind] < count:
            assert f"…and {count - shown[kind]} more" in text
    assert len(view["blocks"]) >= 90  # the room is used, not wasted


def test_home_view_shares_room_fairly() -> None:
    many = [grant(id=n, status=Status.ACTIVE) for n in range(1, 201)]
    view = blocks.home_view(many, [grant(id=500)], [grant(id=600, requester="U0CAROL")])
    values = {b["value"] for b in elements(view, "button")}
    assert {"500", "600"} <= values


# ---- slash command answers -------------------------------------------------------------------

def test_help_message_is_the_grammar_help() -> None:
    message = blocks.help_message()
    assert HELP_TEXT in all_text(message)
    assert_valid(message, blocks.MAX_MESSAGE_BLOCKS)


def test_targets_message_lists_targets_ports_and_limits() -> None:
    text = all_text(blocks.targets_message([AWS, AZURE]))
    assert "*prod-db* · `aws us-east-1 sg-0abc123` · ssh tcp/22 up to 1h" in text
    assert "*web-vm*" in text and "rdp tcp/3389 up to 3h" in text
    assert "-&gt; 10.0.1.4" in text


def test_grants_message_says_where_each_stands() -> None:
    text = all_text(blocks.grants_message([
        ACTIVE, grant(id=43), grant(id=44, status=Status.DENIED, decided_by=APPROVER),
        grant(id=45, status=Status.CLOSED, closed_at=T0, close_reason="expired"),
    ]))
    assert "*#42* ssh tcp/22 on *prod-db* from `203.0.113.7/32` · open until 14:30 UTC" in text
    assert "*#43*" in text and "waiting for approval since 14:00 UTC" in text
    assert "denied by <@U0BOB>" in text and "closed at 14:00 UTC (expired)" in text
    assert "no requests or grants" in all_text(blocks.grants_message([]))


@pytest.mark.parametrize(("build", "more"), [
    (lambda: blocks.grants_message([grant(id=n, reason="r" * 500) for n in range(1, 3001)]),
     r"…and (\d+) more"),
    (lambda: blocks.targets_message([dataclasses.replace(AWS, name=f"t-{n}")
                                     for n in range(3000)]),
     r"…and (\d+) more: one Slack message cannot hold them all\. .*"),
])
def test_long_lists_stop_where_slack_would_refuse_them(build: Callable[[], dict[str, Any]],
                                                       more: str) -> None:
    message = build()
    assert_valid(message, blocks.MAX_MESSAGE_BLOCKS)
    assert sum(map(len, texts(message["blocks"]))) <= blocks.MAX_MESSAGE_CHARS
    left = re.fullmatch(more, message["blocks"][-1]["elements"][0]["text"])
    assert left is not None
    shown = sum(t.count("\n") + 1 for t in texts(message["blocks"][1:-1]))
    assert shown + int(left[1]) == 3000 and shown > 100  # every one shown or counted


def test_the_request_form_chooses_the_only_target_there_is() -> None:
    view = blocks.request_modal({}, ["demo-vm"], ["ssh", "rdp"])
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert inputs["target"]["element"]["initial_option"]["value"] == "demo-vm"
    assert "initial_option" not in inputs["service"]["element"]
