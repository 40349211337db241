"""Words and mrkdwn: escaping, clipping, people, times, and a grant in a few words."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from jitcore.domain import GrantView, Status

REASON_IN_CARD = 1500
REASON_IN_LINE = 200
DETAIL_IN_AUDIT = 500

_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")


def escape(text: str) -> str:
    """Make text inert in mrkdwn: `&` first, then `<` and `>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(mrkdwn: str, limit: int) -> str:
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


def inline(raw: str, limit: int) -> str:
    """User text on one line, escaped and clipped."""
    return clip(escape(" ".join(raw.split())), limit)


def code(raw: str) -> str:
    """Raw text in a code span it cannot break out of."""
    return "`" + escape(raw).replace("`", "'") + "`"


def who(actor: str | None) -> str:
    """A Slack user id as a mention; any other actor as plain (escaped) text."""
    if not actor:
        return "nobody"
    return f"<@{actor}>" if _SLACK_USER.fullmatch(actor) else escape(actor)


def utc(at: datetime) -> datetime:
    """A time in UTC; a naive one is taken to be UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def clock(at: datetime | None) -> str:
    """`14:30 UTC`."""
    return f"{utc(at):%H:%M} UTC" if at else "an unknown time"


def port(grant: GrantView) -> str:
    """`ssh tcp/22`, or `tcp/8443` when the service is named by its number."""
    numbered = f"{grant.protocol}/{grant.port}"
    return numbered if grant.service == str(grant.port) else f"{escape(grant.service)} {numbered}"


def what(grant: GrantView) -> str:
    """`ssh tcp/22 on *prod-db* from `203.0.113.7/32``."""
    return f"{port(grant)} on *{escape(grant.target)}* from {code(grant.source)}"


def connect(grant: GrantView) -> str:
    """Where the requester connects to an open grant through a DNAT, as mrkdwn: `Connect to
    `20.30.40.50:50007 -> 10.1.0.4:22``, and for ssh the command; "" for any other grant."""
    entry = grant.entry
    if entry is None or grant.status is not Status.ACTIVE:
        return ""
    line = f"Connect to {code(str(entry))}"
    return f"{line} with {code(entry.ssh_command())}" if grant.service == "ssh" else line


# Where a grant stands, in a few words, by its status.
_STATE: dict[Status, Callable[[GrantView], str]] = {
    Status.PENDING: lambda g: f"waiting for approval since {clock(g.created_at)}",
    Status.APPROVED: lambda g: "approved, opening",
    Status.OPENING: lambda g: "approved, opening",
    Status.ACTIVE: lambda g: f"open until {clock(g.expires_at)}",
    Status.CLOSING: lambda g: "closing",
    Status.CLOSED: lambda g: (f"closed at {clock(g.closed_at)} "
                              f"({escape(g.close_reason or 'closed')})"),
    Status.CLOSE_FAILED: lambda g: "close failed; jit keeps retrying and the SOC is alerted",
    Status.DENIED: lambda g: f"denied by {who(g.decided_by)}",
    Status.CANCELLED: lambda g: "cancelled",
    Status.LAPSED: lambda g: "lapsed: no decision in time",
    Status.FAILED: lambda g: f"failed: {inline(g.error or 'unknown error', REASON_IN_LINE)}",
}


def state(grant: GrantView) -> str:
    """Where a grant stands, in a few words."""
    return _STATE[grant.status](grant)
