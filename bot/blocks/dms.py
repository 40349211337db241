"""What the requester is told in a DM, event by event."""

from __future__ import annotations

from collections.abc import Callable

from bot.blocks.kit import EXTEND, Message, button, message, section
from bot.blocks.text import REASON_IN_CARD, clock, connect, escape, inline, what, who
from jitcore.domain import EventKind, GrantEvent, GrantView

_CLOSED_NOTE = ("established sessions are not cut by the firewall; "
                "reconnecting needs a new request")


def _dm(text: str, fallback: str) -> Message:
    return message(fallback, [section(text)])


def _by(event: GrantEvent) -> str:
    """`you` when the requester did it, else who did."""
    return "you" if event.actor == event.grant.requester else who(event.actor)


def _approved(event: GrantEvent) -> Message:
    grant = event.grant
    by = "policy" if event.kind is EventKind.AUTO_APPROVED else who(event.actor)
    return _dm(f":white_check_mark: Request *#{grant.id}* ({what(grant)}) was approved by "
               f"{by}. Opening it now.", f"Request #{grant.id} was approved")


def _denied(event: GrantEvent) -> Message:
    grant = event.grant
    reason = inline(event.detail, REASON_IN_CARD) or "no reason given"
    return _dm(f":no_entry: Request *#{grant.id}* ({what(grant)}) was denied by "
               f"{who(event.actor)}: {reason}", f"Request #{grant.id} was denied")


def _cancelled(event: GrantEvent) -> Message | None:
    grant = event.grant
    if event.actor == grant.requester:
        return None  # they cancelled it and were told so
    return _dm(f"Request *#{grant.id}* ({what(grant)}) was cancelled by {who(event.actor)}.",
               f"Request #{grant.id} was cancelled")


def _lapsed(event: GrantEvent) -> Message:
    grant = event.grant
    return _dm(f":hourglass: Request *#{grant.id}* ({what(grant)}) lapsed: no approver "
               "decided in time. Ask again if you still need it.",
               f"Request #{grant.id} lapsed")


def _opened(event: GrantEvent) -> Message:
    grant = event.grant
    until = clock(grant.expires_at)
    through = connect(grant)
    return _dm(f":unlock: *#{grant.id}* is open: {what(grant)} until {until}. "
               + (f"{through}.\n" if through else "")
               + f"Close it early with `/jit revoke {grant.id}`.",
               f"Access #{grant.id} is open until {until}"
               + (f": connect to {escape(str(grant.entry))}" if through else ""))


def _open_failed(event: GrantEvent) -> Message:
    grant = event.grant
    error = inline(event.detail or grant.error or "unknown error", REASON_IN_CARD)
    return _dm(f":x: *#{grant.id}* could not be opened ({what(grant)}): {error}. "
               "The SOC has been told.", f"Access #{grant.id} could not be opened")


def _extended(event: GrantEvent) -> Message:
    grant = event.grant
    until = clock(grant.expires_at)
    return _dm(f":stopwatch: *#{grant.id}* was extended by {_by(event)}: {what(grant)} "
               f"stays open until {until}.", f"Access #{grant.id} is open until {until}")


def _expiring(event: GrantEvent) -> Message | None:
    grant = event.grant
    if grant.expires_at is None:
        return None
    left = (grant.expires_at - event.at).total_seconds()
    return expiry_warning(grant, max(1, round(left / 60)))


def _closed(event: GrantEvent) -> Message:
    grant = event.grant
    how = escape(grant.close_reason or "closed")
    if grant.close_reason == "revoked":
        how = f"revoked by {_by(event)}"
    return _dm(f":lock: *#{grant.id}* is closed ({how}): {what(grant)} no longer gets in. "
               f"Note: {_CLOSED_NOTE}.", f"Access #{grant.id} is closed")


# The requester hears of these kinds; of the others (requested, opening, closing, retries
# and alerts) the audit channel is told, not them.
_DMS: dict[EventKind, Callable[[GrantEvent], Message | None]] = {
    EventKind.APPROVED: _approved,
    EventKind.AUTO_APPROVED: _approved,
    EventKind.DENIED: _denied,
    EventKind.CANCELLED: _cancelled,
    EventKind.LAPSED: _lapsed,
    EventKind.OPENED: _opened,
    EventKind.OPEN_FAILED: _open_failed,
    EventKind.EXTENDED: _extended,
    EventKind.EXPIRING: _expiring,
    EventKind.CLOSED: _closed,
}


def dm_for(event: GrantEvent) -> Message | None:
    """What the requester is told about an event, or None when it is not theirs to hear."""
    render = _DMS.get(event.kind)
    return render(event) if render else None


def expiry_warning(grant: GrantView, minutes_left: int) -> Message:
    """A DM before a grant closes, with an Extend button."""
    minutes = f"{minutes_left} minute" + ("" if minutes_left == 1 else "s")
    text = (f":alarm_clock: *#{grant.id}* ({what(grant)}) closes in {minutes}, at "
            f"{clock(grant.expires_at)}. Established sessions are not cut when it closes, "
            "but new connections are refused.")
    return message(f"Access #{grant.id} closes in {minutes}", [
        section(text),
        {"type": "actions", "block_id": f"jit_expiry:{grant.id}",
         "elements": [button("Extend", EXTEND, grant.id, "primary")]},
    ])
