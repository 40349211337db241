"""The App Home: your active grants, your pending requests, and what waits for you, in at
most 100 blocks shared fairly between the three."""

from __future__ import annotations

from collections.abc import Sequence

from bot.blocks.kit import (
    CANCEL,
    MAX_VIEW_BLOCKS,
    REVOKE,
    Block,
    View,
    button,
    context,
    decision_buttons,
    header,
    plain,
    section,
)
from bot.blocks.text import REASON_IN_LINE, code, connect, escape, inline, state, what, who
from bot.grammar import REQUEST_EXAMPLE
from jitcore.domain import GrantView, format_duration

_INTRO = f"Ask for access with {code(REQUEST_EXAMPLE)}, or `/jit help`."


def share(demands: Sequence[int], capacity: int) -> list[int]:
    """Split capacity fairly: each gets what it needs up to an equal share of what is left."""
    given = [0] * len(demands)
    waiting = [i for i, need in enumerate(demands) if need > 0]
    while waiting and capacity > 0:
        capacity = _share_round(demands, given, waiting, capacity)
        waiting = [i for i in waiting if given[i] < demands[i]]
    return given


def _share_round(demands: Sequence[int], given: list[int], waiting: list[int],
                 capacity: int) -> int:
    """One round: whoever needs no more than an equal share gets all of it; when nobody
    does, each gets that share (at least one, while any is left). Returns what is left."""
    equal = capacity // len(waiting)
    satisfied = [i for i in waiting if demands[i] - given[i] <= equal]
    for i in satisfied or waiting:
        portion = min(demands[i] - given[i], max(equal, 1), capacity)
        given[i] += portion
        capacity -= portion
    return capacity


def _home_section(title: str, empty: str, items: list[list[Block]], room: int) -> list[Block]:
    blocks = [header(title)]
    if not items:
        return [*blocks, context(empty)]
    size = len(items[0])
    shown = items[: room // size]
    for item in shown:
        blocks.extend(item)
    if len(shown) < len(items):
        blocks.append(context(f"…and {len(items) - len(shown)} more"))
    return blocks


_CONFIRM_REVOKE: Block = {"title": plain("Revoke this grant?", 100),
                          "text": plain("The rule is removed now.", 300),
                          "confirm": plain("Revoke", 30), "deny": plain("Keep it", 30)}


def _active(grant: GrantView) -> list[Block]:
    through = connect(grant)
    return [section(f"*#{grant.id}* {what(grant)} · {state(grant)}"
                    + (f"\n{through}" if through else ""),
                    f"jit_home_active:{grant.id}",
                    button("Revoke", REVOKE, grant.id, "danger", _CONFIRM_REVOKE))]


def _pending(grant: GrantView) -> list[Block]:
    return [section(f"*#{grant.id}* {what(grant)} for {format_duration(grant.duration)} · "
                    f"{state(grant)}", f"jit_home_pending:{grant.id}",
                    button("Cancel", CANCEL, grant.id))]


def _to_approve(grant: GrantView) -> list[Block]:
    reason = inline(grant.reason, REASON_IN_LINE) or "_no reason given_"
    return [section(f"*#{grant.id}* {who(grant.requester)} asks for {what(grant)} for "
                    f"{format_duration(grant.duration)}\n>{reason}"),
            {"type": "actions", "block_id": f"jit_home_decide:{grant.id}",
             "elements": decision_buttons(grant.id)}]


def home_view(active: list[GrantView], pending: list[GrantView],
              to_approve: list[GrantView]) -> View:
    """The App Home: your active grants, your pending requests, and what waits for you."""
    sections = [
        ("Your active grants", "No active grants.", [_active(g) for g in active]),
        ("Your pending requests", "No pending requests.", [_pending(g) for g in pending]),
        ("Waiting for your approval", "Nothing waits for you.",
         [_to_approve(g) for g in to_approve]),
    ]
    # Fixed: the intro, a header and a closing line per section, and the dividers between.
    fixed = 1 + 2 * len(sections) + len(sections) - 1
    rooms = share([sum(map(len, items)) for _, _, items in sections], MAX_VIEW_BLOCKS - fixed)
    blocks: list[Block] = [context(_INTRO)]
    for index, ((title, empty, items), room) in enumerate(zip(sections, rooms, strict=True)):
        if index:
            blocks.append({"type": "divider"})
        blocks.extend(_home_section(title, empty, items, room))
    return {"type": "home", "blocks": blocks}


def home_unavailable(why: str) -> View:
    """The App Home when jit cannot read the grants: why, in words, and what to do."""
    return {"type": "home", "blocks": [context(_INTRO), section(f":warning: {escape(why)}")]}
