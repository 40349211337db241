"""Block Kit's pieces (text objects, sections, buttons ...) and the limits they keep."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from bot.blocks.text import clip

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
# All the text in one message's blocks. Slack refuses more than about 13,200 characters
# (`msg_blocks_too_long`, not in its documentation and varying with the blocks), however
# few blocks hold them: a list stops well short of it.
MAX_MESSAGE_CHARS = 12_000


def mrkdwn(text: str, limit: int = MAX_TEXT) -> Block:
    return {"type": "mrkdwn", "text": clip(text, limit), "verbatim": True}


def plain(text: str, limit: int = MAX_LABEL) -> Block:
    return {"type": "plain_text", "text": text if len(text) <= limit else text[: limit - 1] + "…"}


def section(text: str, block_id: str | None = None, accessory: Block | None = None) -> Block:
    block: Block = {"type": "section", "text": mrkdwn(text)}
    if block_id:
        block["block_id"] = block_id
    if accessory:
        block["accessory"] = accessory
    return block


def context(text: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(text)]}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text, 150)}


def button(label: str, action_id: str, grant_id: int, style: str | None = None,
           confirm: Block | None = None) -> Block:
    made: Block = {"type": "button", "text": plain(label), "action_id": action_id,
                   "value": str(grant_id)}
    if style:
        made["style"] = style
    if confirm:
        made["confirm"] = confirm
    return made


def decision_buttons(grant_id: int) -> list[Block]:
    return [button("Approve", APPROVE, grant_id, "primary"),
            button("Deny", DENY, grant_id, "danger")]


def message(fallback: str, blocks: list[Block]) -> Message:
    return {"text": clip(fallback, MAX_FALLBACK), "blocks": blocks}


def _more(left: int) -> str:
    return f"…and {left} more"


def packed(lines: Sequence[str], max_blocks: int, max_chars: int = MAX_MESSAGE_CHARS,
           more: Callable[[int], str] = _more) -> list[Block]:
    """Lines in as few sections as fit, in at most `max_blocks` blocks holding at most
    `max_chars` characters; when not all fit, a closing context line `more(left out)`."""
    texts, used = _fill(lines, max_blocks, max_chars)
    if used < len(lines):
        room = len(more(len(lines)))  # the longest the closing line can be
        texts, used = _fill(lines, max_blocks - 1, max_chars - room)
        return [*map(section, texts), context(more(len(lines) - used))]
    return [section(text) for text in texts]


def _fill(lines: Sequence[str], max_sections: int, max_chars: int) -> tuple[list[str], int]:
    """The first lines that fit, as section texts of at most MAX_TEXT characters; and how
    many lines they hold."""
    texts: list[str] = []
    total = 0
    for used, raw in enumerate(lines):
        line = clip(raw, MAX_TEXT)
        joins = bool(texts) and len(texts[-1]) + 1 + len(line) <= MAX_TEXT
        cost = len(line) + 1 if joins else len(line)
        if total + cost > max_chars or (not joins and len(texts) == max_sections):
            return texts, used
        if joins:
            texts[-1] += "\n" + line
        else:
            texts.append(line)
        total += cost
    return texts, len(lines)
