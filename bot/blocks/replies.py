"""Answers to the person who typed `/jit`: the request's id, errors, help and lists."""

from __future__ import annotations

from bot.blocks.kit import (
    MAX_MESSAGE_BLOCKS,
    MAX_MESSAGE_CHARS,
    Message,
    context,
    message,
    packed,
    section,
)
from bot.blocks.text import code, connect, escape, state, what
from bot.grammar import HELP_TEXT, REQUEST_EXAMPLE
from jitcore.domain import GrantView, format_duration
from jitcore.policy import Target

TARGETS_TITLE = "*Targets you may ask for*"
GRANTS_TITLE = "*Your requests and grants*"


def request_ack(grant: GrantView, auto_approved: bool) -> Message:
    """The ephemeral answer to a request: its id and what happens next."""
    asked = f"Request *#{grant.id}*: {what(grant)} for {format_duration(grant.duration)}"
    if auto_approved:
        text = (f":white_check_mark: {asked} is approved by policy. I'll message you when it "
                "is open.")
        fallback = f"Request #{grant.id} is approved by policy"
    else:
        text = (f":hourglass_flowing_sand: {asked} is waiting for an approver. I'll message "
                f"you when someone decides; withdraw it with `/jit cancel {grant.id}`.")
        fallback = f"Request #{grant.id} is waiting for an approver"
    return message(fallback, [section(text)])


def error_message(text: str, example: str | None = None) -> Message:
    """What was wrong (escaped), and a correct example in a code span."""
    blocks = [section(f":warning: {escape(text)}")]
    if example:
        blocks.append(context(f"For example: {code(example)}"))
    return message(escape(text), blocks)


def help_message() -> Message:
    return message("How to use /jit", [section(HELP_TEXT)])


def _target_line(target: Target) -> str:
    ports = ", ".join(
        f"{escape(p.name)} {p.protocol}/{p.port} up to "
        f"{format_duration(target.port_max_duration(p))}" for p in target.ports.values())
    return f"*{escape(target.name)}* · {code(target.location.resource)} · {ports}"


def _more_targets(left: int) -> str:
    return (f"…and {left} more: one Slack message cannot hold them all. Ask for any target "
            "by its name, as in `/jit ssh <target> 30m`.")


def targets_message(targets: list[Target]) -> Message:
    """`/jit targets`: each target, where it is, and its ports with their longest grant; as
    many as one message holds, then how many more there are."""
    if not targets:
        return message("No targets", [section("There are no targets you may ask for.")])
    blocks = [section(TARGETS_TITLE), *packed(
        [_target_line(t) for t in targets], MAX_MESSAGE_BLOCKS - 1,
        MAX_MESSAGE_CHARS - len(TARGETS_TITLE), _more_targets)]
    return message(f"/jit targets: {len(targets)}", blocks)


def grants_message(grants: list[GrantView]) -> Message:
    """`/jit list`: each request or grant and where it stands; for an open grant through a
    DNAT, where to connect."""
    if not grants:
        return message("No requests or grants", [section(
            f"You have no requests or grants. Ask with {code(REQUEST_EXAMPLE)}.")])
    lines = [" · ".join(part for part in (f"*#{g.id}* {what(g)}", state(g), connect(g)) if part)
             for g in grants]
    blocks = [section(GRANTS_TITLE), *packed(lines, MAX_MESSAGE_BLOCKS - 1,
                                             MAX_MESSAGE_CHARS - len(GRANTS_TITLE))]
    return message(f"/jit list: {len(grants)}", blocks)
