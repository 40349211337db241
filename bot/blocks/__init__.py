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
text object, 2000 per section field, 75 per button or option label, 24 per modal title,
and about 12,000 characters of text in all of a message's blocks (Slack refuses a message
past about 13,200 with `msg_blocks_too_long`): a list (`/jit targets`, `/jit list`) shows
what fits and says how many more there are.

Event rendering is by tables keyed by the event's kind: `audit.py` (the audit channel's
lines), `cards.py` (the approval card and what it says once the request moves on),
`dms.py` (what the requester is told). `replies.py` answers the person who typed `/jit`;
`home.py` is the App Home, `modals.py` the forms; `text.py` and `kit.py` are the words and
the Block Kit pieces they are made of.
"""

from __future__ import annotations

from bot.blocks.audit import alert_message, audit_alert, audit_line, audit_message
from bot.blocks.cards import CARD_OUTCOME, approval_card, card_update, decided_card, rule_change
from bot.blocks.dms import dm_for, expiry_warning
from bot.blocks.home import home_unavailable, home_view
from bot.blocks.kit import (
    APPROVE,
    CANCEL,
    DENY,
    DENY_MODAL,
    EXTEND,
    MAX_FALLBACK,
    MAX_FIELD,
    MAX_LABEL,
    MAX_MESSAGE_BLOCKS,
    MAX_MESSAGE_CHARS,
    MAX_OPTIONS,
    MAX_TEXT,
    MAX_VIEW_BLOCKS,
    REQUEST_MODAL,
    REVOKE,
    Block,
    Message,
    View,
)
from bot.blocks.modals import REASON_INPUT_MAX, deny_modal, request_modal
from bot.blocks.replies import (
    error_message,
    grants_message,
    help_message,
    request_ack,
    targets_message,
)
from bot.blocks.text import DETAIL_IN_AUDIT, REASON_IN_CARD, REASON_IN_LINE, escape

__all__ = [
    "APPROVE", "CANCEL", "CARD_OUTCOME", "DENY", "DENY_MODAL", "DETAIL_IN_AUDIT", "EXTEND",
    "MAX_FALLBACK", "MAX_FIELD", "MAX_LABEL", "MAX_MESSAGE_BLOCKS", "MAX_MESSAGE_CHARS",
    "MAX_OPTIONS", "MAX_TEXT", "MAX_VIEW_BLOCKS", "REASON_INPUT_MAX", "REASON_IN_CARD",
    "REASON_IN_LINE", "REQUEST_MODAL", "REVOKE", "Block", "Message", "View", "alert_message",
    "approval_card", "audit_alert", "audit_line", "audit_message", "card_update",
    "decided_card", "deny_modal", "dm_for", "error_message", "escape", "expiry_warning",
    "grants_message", "help_message", "home_unavailable", "home_view", "request_ack",
    "request_modal", "rule_change", "targets_message",
]
