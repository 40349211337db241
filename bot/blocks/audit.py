"""The audit channel: one greppable line per event, and the alerts beside them."""

from __future__ import annotations

from collections.abc import Callable

from bot.blocks.kit import Message
from bot.blocks.text import DETAIL_IN_AUDIT, escape, inline, utc, who
from jitcore.domain import EventKind, GrantEvent, format_duration

_Words = Callable[[GrantEvent], str]


def _length(event: GrantEvent) -> str:
    return f"for {format_duration(event.grant.duration)}"


def _until(event: GrantEvent) -> str:
    expires = event.grant.expires_at
    return f"until {utc(expires):%H:%M}Z" if expires else ""


def _how_closed(event: GrantEvent) -> str:
    return f"({escape(event.grant.close_reason or event.detail or 'closed')})"


def _nothing(event: GrantEvent) -> str:
    return ""


def _detail(event: GrantEvent) -> str:
    return event.detail


# The facts a kind of event states after the source (none for the kinds not named).
_FACTS: dict[EventKind, _Words] = {
    EventKind.REQUESTED: _length,
    EventKind.APPROVED: _length,
    EventKind.AUTO_APPROVED: _length,
    EventKind.OPENED: _until,
    EventKind.EXTENDED: _until,
    EventKind.EXPIRING: _until,
    EventKind.CLOSING: _how_closed,
    EventKind.CLOSED: _how_closed,
}

# The text after the colon (the event's detail for the kinds not named).
_TEXT: dict[EventKind, _Words] = {
    EventKind.REQUESTED: lambda e: e.grant.reason,
    EventKind.APPROVED: _nothing,
    EventKind.AUTO_APPROVED: _nothing,
    EventKind.OPENED: _nothing,
    EventKind.EXTENDED: _nothing,
    EventKind.EXPIRING: _nothing,
    EventKind.CLOSING: _nothing,
    EventKind.CLOSED: lambda e: (f"{e.detail or 'closed'}; established sessions are not cut "
                                 "by the firewall"),
    EventKind.LAPSED: lambda e: e.detail or "no decision in time",
    EventKind.CLOSE_FAILED: lambda e: f"{e.detail or 'unknown error'}; retries continue",
}

# The kinds whose line names the cloud rule.
_NAMES_RULE = frozenset({EventKind.OPENED, EventKind.CLOSED, EventKind.CLOSE_RETRY,
                         EventKind.CLOSE_FAILED, EventKind.ORPHAN_REMOVED})


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
    rule = f"rule {escape(grant.rule_ref)}" if grant.rule_ref and kind in _NAMES_RULE else ""
    head = " ".join(part for part in (
        f"jit #{grant.id} {word} {escape(grant.service)} {escape(grant.target)}",
        escape(grant.source), _FACTS.get(kind, _nothing)(event), rule) if part)
    line = f"{head} by {who(event.actor)}"
    text = _TEXT.get(kind, _detail)(event)
    return f"{line}: {inline(text, DETAIL_IN_AUDIT)}" if text.strip() else line


def audit_message(event: GrantEvent) -> Message:
    """An event in the audit channel: the thread's parent, or a reply in it."""
    return {"text": audit_line(event)}


def audit_alert(event: GrantEvent) -> Message:
    """An event the SOC must see, at the top of the audit channel."""
    return {"text": f":rotating_light: {audit_line(event)}"}


def alert_message(text: str) -> Message:
    """A free-standing alert (an orphan removed, say), in the audit channel."""
    return {"text": f":rotating_light: {escape(text)}"}
