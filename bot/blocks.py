"""Block Kit builders for every message and view jit shows in Slack. Pure: no I/O.

A message is `{"text": fallback, "blocks": [...]}`, ready for `chat_postMessage(**m)`,
`chat_update`, `chat_postEphemeral` or Bolt's `respond(**m)`; a view is the dict that
`views_open` / `views_publish` take.

Everything a person typed (reasons, deny reasons, sources and target names as typed) and
every error text passes through `escape` before it reaches mrkdwn or a fallback text,
so `<!channel>`, `<@U123>` and `<https://evil|click>` arrive inert; mrkdwn objects are
also `verbatim`, so Slack does not turn bare URLs or #names into links. Slack user ids
(from Slack's signed payloads) are rendered as mentions; other actors (`jit`, `policy`,
`cli:alice`) as escaped text. A modal's `initial_value` is an input value, not markup:
it is handed back exactly as the person typed it.

Block Kit limits kept here: 50 blocks per message, 100 per view, 3000 characters per
text object, 2000 per section field, 75 per button or option label, 24 per modal title.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

from bot.grammar import HELP_TEXT, REQUEST_EXAMPLE
from jitcore.domain import EventKind, GrantEvent, GrantView, Status, format_duration
from jitcore.policy import MAX_REASON_CHARS, AwsLocation, Target

Block: TypeAlias = dict[str, Any]
Message: TypeAlias = dict[str, Any]
View: TypeAlias = dict[str, Any]

APPROVE = "jit_approve"
DENY = "jit_deny"
EXTEND = "jit_extend"
REVOKE = "jit_revoke"
CANCEL = "jit_cancel"
DENY_MODAL = "jit_deny_modal"
REQUEST_MODAL = "jit_request_modal"

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_TEXT = 3000
MAX_FIELD = 2000
MAX_LABEL = 75
MAX_OPTIONS = 100
MAX_FALLBACK = 500  # a notification line, not the message
REASON_IN_CARD = 1500
REASON_IN_LINE = 200
DETAIL_IN_AUDIT = 500
REASON_INPUT_MAX = MAX_REASON_CHARS  # Slack stops the typing where policy would refuse it

_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")
_CLOSED_NOTE = ("established sessions are not cut by the firewall; "
                "reconnecting needs a new request")


# ---- text ---------------------------------------------------------------------------------

def escape(text: str) -> str:
    """Make text inert in mrkdwn: `&` first, then `<` and `>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(mrkdwn: str, limit: int) -> str:
    """Cut finished mrkdwn to `limit` characters, never inside an `&...;` or a `<...>`."""
    if len(mrkdwn) <= limit:
        return mrkdwn
    cut = mrkdwn[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    return cut + "…"


def _inline(raw: str, limit: int) -> str:
    """User text on one line, escaped and clipped."""
    return _clip(escape(" ".join(raw.split())), limit)


def _code(raw: str) -> str:
    return "`" + escape(raw).replace("`", "'") + "`"


def _who(actor: str | None) -> str:
    """A Slack user id as a mention; any other actor as plain (escaped) text."""
    if not actor:
        return "nobody"
    return f"<@{actor}>" if _SLACK_USER.fullmatch(actor) else escape(actor)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _clock(at: datetime | None) -> str:
    return f"{_utc(at):%H:%M} UTC" if at else "an unknown time"


def _port(grant: GrantView) -> str:
    """`ssh tcp/22`, or `tcp/8443` when the service is named by its number."""
    port = f"{grant.protocol}/{grant.port}"
    return port if grant.service == str(grant.port) else f"{escape(grant.service)} {port}"


def _what(grant: GrantView) -> str:
    """`ssh tcp/22 on *prod-db* from `203.0.113.7/32``."""
    return f"{_port(grant)} on *{escape(grant.target)}* from {_code(grant.source)}"


def _state(grant: GrantView) -> str:
    """Where a grant stands, in a few words."""
    match grant.status:
        case Status.PENDING:
            return f"waiting for approval since {_clock(grant.created_at)}"
        case Status.APPROVED | Status.OPENING:
            return "approved, opening"
        case Status.ACTIVE:
            return f"open until {_clock(grant.expires_at)}"
        case Status.CLOSING:
            return "closing"
        case Status.CLOSED:
            return f"closed at {_clock(grant.closed_at)} ({escape(grant.close_reason or 'closed')})"
        case Status.CLOSE_FAILED:
            return "close failed; jit keeps retrying and the SOC is alerted"
        case Status.DENIED:
            return f"denied by {_who(grant.decided_by)}"
        case Status.CANCELLED:
            return "cancelled"
        case Status.LAPSED:
            return "lapsed: no decision in time"
        case Status.FAILED:
            return f"failed: {_inline(grant.error or 'unknown error', REASON_IN_LINE)}"
    return grant.status.value.lower()  # pragma: no cover - every Status is matched above


# ---- blocks -------------------------------------------------------------------------------

def _mrkdwn(text: str, limit: int = MAX_TEXT) -> Block:
    return {"type": "mrkdwn", "text": _clip(text, limit), "verbatim": True}


def _plain(text: str, limit: int = MAX_LABEL) -> Block:
    return {"type": "plain_text", "text": text if len(text) <= limit else text[: limit - 1] + "…"}


def _section(text: str, block_id: str | None = None, accessory: Block | None = None) -> Block:
    block: Block = {"type": "section", "text": _mrkdwn(text)}
    if block_id:
        block["block_id"] = block_id
    if accessory:
        block["accessory"] = accessory
    return block


def _context(text: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def _header(text: str) -> Block:
    return {"type": "header", "text": _plain(text, 150)}


def _button(label: str, action_id: str, grant_id: int, style: str | None = None,
            confirm: Block | None = None) -> Block:
    button: Block = {"type": "button", "text": _plain(label), "action_id": action_id,
                     "value": str(grant_id)}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def _decision_buttons(grant_id: int) -> list[Block]:
    return [_button("Approve", APPROVE, grant_id, "primary"),
            _button("Deny", DENY, grant_id, "danger")]


def _message(fallback: str, blocks: list[Block]) -> Message:
    return {"text": _clip(fallback, MAX_FALLBACK), "blocks": blocks}


def _packed(lines: Sequence[str], max_blocks: int) -> list[Block]:
    """Lines in as few sections as fit; past `max_blocks`, a count of those left out."""
    blocks: list[Block] = []
    chunk: list[str] = []
    size = 0
    for index, raw in enumerate(lines):
        line = _clip(raw, MAX_TEXT)
        if chunk and size + 1 + len(line) > MAX_TEXT:
            blocks.append(_section("\n".join(chunk)))
            if len(blocks) == max_blocks - 1:
                blocks.append(_context(f"…and {len(lines) - index} more"))
                return blocks
            chunk, size = [], 0
        size += len(line) + (1 if chunk else 0)
        chunk.append(line)
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    return blocks


# ---- the audit channel --------------------------------------------------------------------

def audit_line(event: GrantEvent) -> str:
    """One greppable line per event, for the audit channel's thread:

        jit #<id> <kind> <service> <target> <source>[ <facts>][ by <actor>][: <text>]

    <kind> is the EventKind value (`requested`, `auto_approved`, `close_retry` ...), in
    capitals when the event is an alert (`OPEN_FAILED`, `CLOSE_FAILED`). <facts> are
    `for 30m`, `until 14:30Z`, `(expired)`, `rule sgr-0abc` as the kind has them; times
    are HH:MMZ in UTC. <text> (a reason, an outcome, an error) comes last, escaped and
    on one line, e.g. `jit #42 opened ssh prod-db 203.0.113.7/32 until 14:30Z rule sgr-0abc
    by jit`.
    """
    grant, kind = event.grant, event.kind
    word = kind.value.upper() if event.alert else kind.value
    facts: list[str] = []
    text = event.detail
    until = f"until {_utc(grant.expires_at):%H:%M}Z" if grant.expires_at else ""
    if kind in (EventKind.REQUESTED, EventKind.APPROVED, EventKind.AUTO_APPROVED):
        facts.append(f"for {format_duration(grant.duration)}")
        text = grant.reason if kind is EventKind.REQUESTED else ""
    elif kind in (EventKind.OPENED, EventKind.EXTENDED, EventKind.EXPIRING):
        facts.append(until)
        text = ""
    elif kind in (EventKind.CLOSING, EventKind.CLOSED):
        facts.append(f"({escape(grant.close_reason or event.detail or 'closed')})")
        if kind is EventKind.CLOSING:
            text = ""
        else:
            text = f"{event.detail or 'closed'}; established sessions are not cut by the firewall"
    elif kind is EventKind.LAPSED:
        text = text or "no decision in time"
    elif kind is EventKind.CLOSE_FAILED:
        text = f"{text or 'unknown error'}; retries continue"
    if grant.rule_ref and kind in (EventKind.OPENED, EventKind.CLOSED, EventKind.CLOSE_RETRY,
                                   EventKind.CLOSE_FAILED, EventKind.ORPHAN_REMOVED):
        facts.append(f"rule {escape(grant.rule_ref)}")
    head = " ".join(part for part in (
        f"jit #{grant.id} {word} {escape(grant.service)} {escape(grant.target)}",
        escape(grant.source), *facts) if part)
    line = f"{head} by {_who(event.actor)}"
    return f"{line}: {_inline(text, DETAIL_IN_AUDIT)}" if text.strip() else line


# ---- the approvals channel ----------------------------------------------------------------

def rule_change(grant: GrantView, target: Target) -> str:
    """The exact allow rule that approving adds, as mrkdwn."""
    location = target.location
    allow = f"Allow {grant.protocol}/{grant.port} from {_code(grant.source)}"
    length = format_duration(grant.duration)
    if isinstance(location, AwsLocation):
        where = (_code(location.security_group_id) if location.security_group_id
                 else f"jit's group for instance {_code(location.instance_id or '?')}")
        return (f"{allow} in {where} (aws {escape(location.region)}) for {length}, "
                f"tagged `jit:grant={grant.id}`")
    low, high = location.priority_band
    return (f"{allow} to {_code(location.destination)} in NSG "
            f"{_code(location.network_security_group)} (azure "
            f"{escape(location.resource_group)}) for {length}, as rule `jit-{grant.id}` "
            f"at the lowest free priority in {low}-{high}")


def _card_body(grant: GrantView, target: Target, rule_label: str,
               requester_groups_text: str = "") -> list[Block]:
    who = _who(grant.requester)
    if requester_groups_text.strip():
        who += f" ({_inline(requester_groups_text, REASON_IN_LINE)})"
    reason = _clip(escape(grant.reason.strip()), REASON_IN_CARD) or "_none given_"
    return [
        _section(f":key: *jit #{grant.id}* · request from {who}"),
        {"type": "section", "fields": [
            _mrkdwn(f"*Target*\n{escape(target.name)} · {_code(target.location.resource)}",
                    MAX_FIELD),
            _mrkdwn(f"*Port*\n{_port(grant)}", MAX_FIELD),
            _mrkdwn(f"*Source*\n{_code(grant.source)}", MAX_FIELD),
            _mrkdwn(f"*Duration*\n{format_duration(grant.duration)}", MAX_FIELD),
        ]},
        _section(f"*Reason*\n{reason}"),
        _section(f"*{rule_label}:* {rule_change(grant, target)}"),
    ]


def approval_card(grant: GrantView, target: Target, requester_groups_text: str = "") -> Message:
    """The request as approvers see it, with Approve and Deny."""
    lapses = _clock(grant.created_at + target.approval_timeout)
    blocks = [
        *_card_body(grant, target, "Approve adds", requester_groups_text),
        _context(f"Requested at {_clock(grant.created_at)}; lapses at {lapses} "
                 "if nobody decides."),
        {"type": "actions", "block_id": f"jit_decide:{grant.id}",
         "elements": _decision_buttons(grant.id)},
    ]
    fallback = (f"jit #{grant.id}: {_who(grant.requester)} asks for {escape(grant.service)} "
                f"on {escape(grant.target)} from {escape(grant.source)} "
                f"for {format_duration(grant.duration)}")
    return _message(fallback, blocks)


def decided_card(grant: GrantView, target: Target, outcome: str) -> Message:
    """The approval card after the decision: who decided, when, and what came of it."""
    when = _clock(grant.decided_at) if grant.decided_at else ""
    if grant.decided_by:
        head = f"Decided by {_who(grant.decided_by)}" + (f" at {when}" if when else "")
    else:
        head = f"At {when}" if when else "Outcome"
    line = f"*{head}:* {_inline(outcome, REASON_IN_CARD)}"
    blocks = [*_card_body(grant, target, "Rule"),
              _section(line, block_id=f"jit_decided:{grant.id}")]
    return _message(f"jit #{grant.id}: {_inline(outcome, REASON_IN_LINE)}", blocks)


# ---- replies to the requester -------------------------------------------------------------

def request_ack(grant: GrantView, auto_approved: bool) -> Message:
    """The ephemeral answer to a request: its id and what happens next."""
    what = f"Request *#{grant.id}*: {_what(grant)} for {format_duration(grant.duration)}"
    if auto_approved:
        text = f":white_check_mark: {what} is approved by policy. I'll message you when it is open."
        fallback = f"Request #{grant.id} is approved by policy"
    else:
        text = (f":hourglass_flowing_sand: {what} is waiting for an approver. I'll message "
                f"you when someone decides; withdraw it with `/jit cancel {grant.id}`.")
        fallback = f"Request #{grant.id} is waiting for an approver"
    return _message(fallback, [_section(text)])


def error_message(text: str, example: str | None = None) -> Message:
    """What was wrong (escaped), and a correct example in a code span."""
    blocks = [_section(f":warning: {escape(text)}")]
    if example:
        blocks.append(_context(f"For example: {_code(example)}"))
    return _message(escape(text), blocks)


def _dm(text: str, fallback: str) -> Message:
    return _message(fallback, [_section(text)])


def dm_for(event: GrantEvent) -> Message | None:
    """What the requester is told about an event, or None when it is not theirs to hear."""
    grant, kind = event.grant, event.kind
    ref = f"#{grant.id}"
    what = _what(grant)
    by_other = event.actor != grant.requester
    if kind in (EventKind.APPROVED, EventKind.AUTO_APPROVED):
        who = "policy" if kind is EventKind.AUTO_APPROVED else _who(event.actor)
        return _dm(f":white_check_mark: Request *{ref}* ({what}) was approved by {who}. "
                   "Opening it now.", f"Request {ref} was approved")
    if kind is EventKind.DENIED:
        reason = _inline(event.detail, REASON_IN_CARD) or "no reason given"
        return _dm(f":no_entry: Request *{ref}* ({what}) was denied by {_who(event.actor)}: "
                   f"{reason}", f"Request {ref} was denied")
    if kind is EventKind.CANCELLED:
        if not by_other:
            return None  # they cancelled it and were told so
        return _dm(f"Request *{ref}* ({what}) was cancelled by {_who(event.actor)}.",
                   f"Request {ref} was cancelled")
    if kind is EventKind.LAPSED:
        return _dm(f":hourglass: Request *{ref}* ({what}) lapsed: no approver decided in "
                   "time. Ask again if you still need it.", f"Request {ref} lapsed")
    if kind is EventKind.OPENED:
        return _dm(f":unlock: *{ref}* is open: {what} until {_clock(grant.expires_at)}. "
                   f"Close it early with `/jit revoke {grant.id}`.",
                   f"Access {ref} is open until {_clock(grant.expires_at)}")
    if kind is EventKind.OPEN_FAILED:
        error = _inline(event.detail or grant.error or "unknown error", REASON_IN_CARD)
        return _dm(f":x: *{ref}* could not be opened ({what}): {error}. The SOC has been told.",
                   f"Access {ref} could not be opened")
    if kind is EventKind.EXTENDED:
        who = "you" if not by_other else _who(event.actor)
        return _dm(f":stopwatch: *{ref}* was extended by {who}: {what} stays open until "
                   f"{_clock(grant.expires_at)}.",
                   f"Access {ref} is open until {_clock(grant.expires_at)}")
    if kind is EventKind.CLOSED:
        how = escape(grant.close_reason or "closed")
        if grant.close_reason == "revoked":
            how = f"revoked by {'you' if not by_other else _who(event.actor)}"
        return _dm(f":lock: *{ref}* is closed ({how}): {what} no longer gets in. Note: "
                   f"{_CLOSED_NOTE}.", f"Access {ref} is closed")
    return None  # requested, opening, closing, retries and alerts: not the requester's


def expiry_warning(grant: GrantView, minutes_left: int) -> Message:
    """A DM before a grant closes, with an Extend button."""
    minutes = f"{minutes_left} minute" + ("" if minutes_left == 1 else "s")
    text = (f":alarm_clock: *#{grant.id}* ({_what(grant)}) closes in {minutes}, at "
            f"{_clock(grant.expires_at)}. Established sessions are not cut when it closes, "
            "but new connections are refused.")
    return _message(f"Access #{grant.id} closes in {minutes}", [
        _section(text),
        {"type": "actions", "block_id": f"jit_expiry:{grant.id}",
         "elements": [_button("Extend", EXTEND, grant.id, "primary")]},
    ])


# ---- modals -------------------------------------------------------------------------------

def _modal(callback_id: str, title: str, blocks: list[Block], submit: str | None,
           private_metadata: str = "") -> View:
    view: View = {"type": "modal", "callback_id": callback_id, "title": _plain(title, 24),
                  "close": _plain("Cancel", 24), "blocks": blocks}
    if submit:
        view["submit"] = _plain(submit, 24)
    if private_metadata:
        view["private_metadata"] = private_metadata
    return view


def _input(block_id: str, label: str, element: Block, *, optional: bool = False,
           hint: str = "") -> Block:
    block: Block = {"type": "input", "block_id": block_id, "label": _plain(label, 2000),
                    "optional": optional, "element": {**element, "action_id": block_id}}
    if hint:
        block["hint"] = _plain(hint, 2000)
    return block


def _text_input(initial: str | None, placeholder: str, max_length: int,
                multiline: bool = False) -> Block:
    element: Block = {"type": "plain_text_input", "multiline": multiline,
                      "max_length": max_length, "placeholder": _plain(placeholder, 150)}
    if initial:
        element["initial_value"] = initial[:max_length]  # an input value: not escaped
    return element


def _select(options: Sequence[str], initial: str | None, placeholder: str) -> Block:
    shown = list(dict.fromkeys(options))
    if len(shown) > MAX_OPTIONS:
        kept = shown[:MAX_OPTIONS]
        if initial in shown and initial not in kept:
            kept[-1] = initial  # the prefilled choice must stay choosable
        shown = kept
    element: Block = {"type": "static_select", "placeholder": _plain(placeholder, 150),
                      "options": [_option(o) for o in shown]}
    if initial in shown:
        element["initial_option"] = _option(initial)
    return element


def _option(value: str) -> Block:
    return {"text": _plain(value), "value": value[:150]}


def deny_modal(grant_id: int) -> View:
    """Asks the approver why; the reason goes to the requester and the audit channel."""
    return _modal(DENY_MODAL, "Deny request", [
        _section(f"Deny request *#{grant_id}*? The requester sees your reason."),
        _input("reason", "Reason", _text_input(None, "Why not, or what to do instead",
                                               REASON_INPUT_MAX, multiline=True)),
    ], "Deny", private_metadata=str(grant_id))


def request_modal(prefill: dict[str, str], targets: list[str], services: list[str]) -> View:
    """The request form, prefilled with what is known (the last source this person declared)."""
    if not targets or not services:
        return _modal(REQUEST_MODAL, "Request access", [_section(
            "There is nothing you may ask for: no target lists you as a requester. "
            "Ask the jit admins to add you to the policy.")], None)
    return _modal(REQUEST_MODAL, "Request access", [
        _input("service", "Service", _select(services, prefill.get("service"), "ssh, rdp ...")),
        _input("target", "Target", _select(targets, prefill.get("target"), "Choose a target")),
        _input("duration", "Duration", _text_input(prefill.get("duration"), "30m, 2h or 1h30m",
                                                   32)),
        _input("source", "Your source address", _text_input(
            prefill.get("source"), "203.0.113.7", 64),
            hint="The public address your connection comes from; only it is let in."),
        _input("reason", "Reason", _text_input(prefill.get("reason"), "What you need to do",
                                               REASON_INPUT_MAX, multiline=True), optional=True),
    ], "Request")


# ---- App Home -----------------------------------------------------------------------------

def _share(demands: Sequence[int], capacity: int) -> list[int]:
    """Split capacity fairly: each gets what it needs up to an equal share of what is left."""
    given = [0] * len(demands)
    waiting = [i for i, need in enumerate(demands) if need > 0]
    while waiting and capacity > 0:
        share = capacity // len(waiting)
        satisfied = [i for i in waiting if demands[i] - given[i] <= share]
        for i in satisfied or waiting:
            grant = min(demands[i] - given[i], max(share, 1))
            given[i] += grant
            capacity -= grant
            if capacity == 0:
                break
        waiting = [i for i in waiting if given[i] < demands[i]]
    return given


def _home_section(title: str, empty: str, items: list[list[Block]], room: int) -> list[Block]:
    blocks = [_header(title)]
    if not items:
        return [*blocks, _context(empty)]
    size = len(items[0])
    shown = items[: room // size]
    for item in shown:
        blocks.extend(item)
    if len(shown) < len(items):
        blocks.append(_context(f"…and {len(items) - len(shown)} more"))
    return blocks


def home_view(active: list[GrantView], pending: list[GrantView],
              to_approve: list[GrantView]) -> View:
    """The App Home: your active grants, your pending requests, and what waits for you."""
    confirm_revoke: Block = {"title": _plain("Revoke this grant?", 100),
                             "text": _plain("The rule is removed now.", 300),
                             "confirm": _plain("Revoke", 30), "deny": _plain("Keep it", 30)}
    sections = [
        ("Your active grants", "No active grants.", [[_section(
            f"*#{g.id}* {_what(g)} · {_state(g)}", f"jit_home_active:{g.id}",
            _button("Revoke", REVOKE, g.id, "danger", confirm_revoke))] for g in active]),
        ("Your pending requests", "No pending requests.", [[_section(
            f"*#{g.id}* {_what(g)} for {format_duration(g.duration)} · {_state(g)}",
            f"jit_home_pending:{g.id}", _button("Cancel", CANCEL, g.id))] for g in pending]),
        ("Waiting for your approval", "Nothing waits for you.", [[
            _section(f"*#{g.id}* {_who(g.requester)} asks for {_what(g)} for "
                     f"{format_duration(g.duration)}\n>"
                     f"{_inline(g.reason, REASON_IN_LINE) or '_no reason given_'}"),
            {"type": "actions", "block_id": f"jit_home_decide:{g.id}",
             "elements": _decision_buttons(g.id)}] for g in to_approve]),
    ]
    intro = _context(f"Ask for access with {_code(REQUEST_EXAMPLE)}, or `/jit help`.")
    # Fixed: the intro, a header and a closing line per section, and the dividers between.
    fixed = 1 + 2 * len(sections) + len(sections) - 1
    rooms = _share([len(items) * len(items[0]) if items else 0 for _, _, items in sections],
                   MAX_VIEW_BLOCKS - fixed)
    blocks: list[Block] = [intro]
    for index, ((title, empty, items), room) in enumerate(zip(sections, rooms, strict=True)):
        if index:
            blocks.append({"type": "divider"})
        blocks.extend(_home_section(title, empty, items, room))
    return {"type": "home", "blocks": blocks}


def home_unavailable(why: str) -> View:
    """The App Home when jit cannot read the grants: why, in words, and what to do."""
    return {"type": "home", "blocks": [
        _context(f"Ask for access with {_code(REQUEST_EXAMPLE)}, or `/jit help`."),
        _section(f":warning: {escape(why)}"),
    ]}


# ---- slash command answers ----------------------------------------------------------------

def help_message() -> Message:
    return _message("How to use /jit", [_section(HELP_TEXT)])


def targets_message(targets: list[Target]) -> Message:
    """`/jit targets`: each target, where it is, and its ports with their longest grant."""
    if not targets:
        return _message("No targets", [_section("There are no targets you may ask for.")])
    lines = []
    for target in targets:
        ports = ", ".join(
            f"{escape(p.name)} {p.protocol}/{p.port} up to "
            f"{format_duration(target.port_max_duration(p))}" for p in target.ports.values())
        lines.append(f"*{escape(target.name)}* · {_code(target.location.resource)} · {ports}")
    blocks = [_section("*Targets you may ask for*"), *_packed(lines, MAX_MESSAGE_BLOCKS - 1)]
    return _message(f"/jit targets: {len(targets)}", blocks)


def grants_message(grants: list[GrantView]) -> Message:
    """`/jit list`: each request or grant and where it stands."""
    if not grants:
        return _message("No requests or grants", [_section(
            f"You have no requests or grants. Ask with {_code(REQUEST_EXAMPLE)}.")])
    lines = [f"*#{g.id}* {_what(g)} · {_state(g)}" for g in grants]
    blocks = [_section("*Your requests and grants*"), *_packed(lines, MAX_MESSAGE_BLOCKS - 1)]
    return _message(f"/jit list: {len(grants)}", blocks)
