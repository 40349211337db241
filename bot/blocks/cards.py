"""The approvals channel: the approval card, and the card once the request has moved on."""

from __future__ import annotations

from collections.abc import Callable

from bot.blocks.kit import (
    MAX_FIELD,
    Block,
    Message,
    context,
    decision_buttons,
    message,
    mrkdwn,
    section,
)
from bot.blocks.text import (
    REASON_IN_CARD,
    REASON_IN_LINE,
    clip,
    clock,
    code,
    connect,
    escape,
    inline,
    port,
    utc,
    who,
)
from jitcore.domain import EventKind, GrantEvent, GrantView, format_duration
from jitcore.policy import AwsLocation, Target


def rule_change(grant: GrantView, target: Target) -> str:
    """The exact allow rule that approving adds, as mrkdwn."""
    location = target.location
    allow = f"Allow {grant.protocol}/{grant.port} from {code(grant.source)}"
    length = format_duration(grant.duration)
    if isinstance(location, AwsLocation):
        where = (code(location.security_group_id) if location.security_group_id
                 else f"jit's group for instance {code(location.instance_id or '?')}")
        return (f"{allow} in {where} (aws {escape(location.region)}) for {length}, "
                f"tagged `jit:grant={grant.id}`")
    firewall = location.firewall
    if firewall is not None:
        low, high = firewall.mapped_ports
        behind = (f", and an allow from the firewall's subnet "
                  f"{code(firewall.source_range or '?')} in NSG "
                  f"{code(location.network_security_group)}"
                  if location.network_security_group else "")
        policy = f" (policy {code(firewall.policy)})" if firewall.policy else ""
        return (f"DNAT {grant.protocol} from {code(grant.source)} to "
                f"{code(firewall.public_ip)} on the lowest free port in {low}-{high}, "
                f"forwarded to {code(f'{location.destination}:{grant.port}')}, in firewall "
                f"{code(firewall.name)}{policy} (azure {escape(firewall.resource_group)}) "
                f"for {length}, as rule `jit-{grant.id}`{behind}")
    low, high = location.priority_band
    return (f"{allow} to {code(location.destination)} in NSG "
            f"{code(location.network_security_group or '?')} (azure "
            f"{escape(location.resource_group)}) for {length}, as rule `jit-{grant.id}` "
            f"at the lowest free priority in {low}-{high}")


def _card_body(grant: GrantView, target: Target, rule_label: str,
               requester_groups_text: str = "") -> list[Block]:
    requester = who(grant.requester)
    if requester_groups_text.strip():
        requester += f" ({inline(requester_groups_text, REASON_IN_LINE)})"
    reason = clip(escape(grant.reason.strip()), REASON_IN_CARD) or "_none given_"
    return [
        section(f":key: *jit #{grant.id}* · request from {requester}"),
        {"type": "section", "fields": [
            mrkdwn(f"*Target*\n{escape(target.name)} · {code(target.location.resource)}",
                   MAX_FIELD),
            mrkdwn(f"*Port*\n{port(grant)}", MAX_FIELD),
            mrkdwn(f"*Source*\n{code(grant.source)}", MAX_FIELD),
            mrkdwn(f"*Duration*\n{format_duration(grant.duration)}", MAX_FIELD),
        ]},
        section(f"*Reason*\n{reason}"),
        section(f"*{rule_label}:* {rule_change(grant, target)}"),
    ]


def approval_card(grant: GrantView, target: Target, requester_groups_text: str = "") -> Message:
    """The request as approvers see it, with Approve and Deny."""
    lapses = clock(grant.created_at + target.approval_timeout)
    blocks = [
        *_card_body(grant, target, "Approve adds", requester_groups_text),
        context(f"Requested at {clock(grant.created_at)}; lapses at {lapses} "
                "if nobody decides."),
        {"type": "actions", "block_id": f"jit_decide:{grant.id}",
         "elements": decision_buttons(grant.id)},
    ]
    fallback = (f"jit #{grant.id}: {who(grant.requester)} asks for {escape(grant.service)} "
                f"on {escape(grant.target)} from {escape(grant.source)} "
                f"for {format_duration(grant.duration)}")
    return message(fallback, blocks)


def decided_card(grant: GrantView, target: Target, outcome: str) -> Message:
    """The approval card after the decision: who decided, when, and what came of it
    (`outcome` is plain words: it is escaped here)."""
    return _decided(grant, target, inline(outcome, REASON_IN_CARD))


def _decided(grant: GrantView, target: Target, outcome: str) -> Message:
    when = clock(grant.decided_at) if grant.decided_at else ""
    if grant.decided_by:
        head = f"Decided by {who(grant.decided_by)}" + (f" at {when}" if when else "")
    else:
        head = f"At {when}" if when else "Outcome"
    blocks = [*_card_body(grant, target, "Rule"),
              section(f"*{head}:* {outcome}", block_id=f"jit_decided:{grant.id}")]
    through = connect(grant)
    if through:
        blocks.append(section(through))
    return message(f"jit #{grant.id}: {clip(outcome, REASON_IN_LINE)}", blocks)


def _expires(grant: GrantView) -> str:
    return f"{utc(grant.expires_at):%H:%M}" if grant.expires_at else "?"


def _detail(event: GrantEvent) -> str:
    return inline(event.detail, REASON_IN_CARD)


# What the approval card says once the request has moved on, as mrkdwn.
CARD_OUTCOME: dict[EventKind, Callable[[GrantEvent], str]] = {
    EventKind.APPROVED: lambda e: f"approved by {who(e.actor)}, opening…",
    EventKind.AUTO_APPROVED: lambda e: "approved by policy, opening…",
    EventKind.DENIED: lambda e: f"denied by {who(e.actor)}" + (f": {_detail(e)}"
                                                              if e.detail.strip() else ""),
    EventKind.CANCELLED: lambda e: "cancelled by the requester",
    EventKind.LAPSED: lambda e: "lapsed: no decision in time",
    EventKind.OPENED: lambda e: f"open until {_expires(e.grant)} UTC",
    EventKind.OPEN_FAILED: lambda e: f"failed: {_detail(e)}",
    EventKind.CLOSED: lambda e: (f"closed (revoked by {who(e.actor)})"
                                 if e.grant.close_reason == "revoked"
                                 else f"closed ({escape(e.grant.close_reason or 'done')})"),
}


def card_update(event: GrantEvent, target: Target) -> Message:
    """The approval card once `event` has moved the request on (a kind in CARD_OUTCOME)."""
    return _decided(event.grant, target, CARD_OUTCOME[event.kind](event))
