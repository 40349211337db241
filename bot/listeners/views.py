"""Modal submissions: the deny reason, and a request completed in the modal.

A refusal is a view error under the field it is about (the Slack way: the modal stays open
with what was typed); so is a submission jit cannot act on: its sender unknown, its request
number not one, or the database unavailable.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import blocks, grammar
from bot.listeners import Later, wired
from bot.listeners.answers import (
    NO_SENDER,
    STORE_ERRORS,
    clicker,
    open_approved,
    store_failed,
    unavailable,
)
from jitcore.domain import parse_duration
from jitcore.errors import JitError, NotAllowed
from jitcore.policy import Reason, check_reason
from jitcore.service import JitService

# Which modal field a refusal is about, so Slack shows the message under it.
_FIELD = {
    Reason.UNKNOWN_TARGET: "target", Reason.NOT_A_REQUESTER: "target",
    Reason.UNKNOWN_PORT: "service", Reason.DURATION_TOO_LONG: "duration",
    Reason.DURATION_INVALID: "duration", Reason.REASON_TOO_LONG: "reason",
    Reason.REASON_UNPRINTABLE: "reason",
}


def _values(view: dict[str, Any]) -> dict[str, Any]:
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    return values if isinstance(values, dict) else {}


def _value(values: dict[str, Any], block: str) -> str:
    element = (values.get(block) or {}).get(block) or {}
    if not isinstance(element, dict):
        return ""
    if "selected_option" in element:
        option = element.get("selected_option") or {}
        return str(option.get("value") or "") if isinstance(option, dict) else ""
    value = element.get("value")
    return value.strip() if isinstance(value, str) else ""


def _refuse(ack: Ack, field: str, message: str) -> None:
    ack(response_action="errors", errors={field: message})


def register(app: App, service: JitService, later: Later) -> None:
    app.view("jit_deny_modal")(wired(deny_submitted, service=service))
    app.view("jit_request_modal")(wired(request_submitted, service=service, later=later))


def deny_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any], *,
                   service: JitService) -> None:
    """Record the denial, or keep the modal open with why not under the reason."""
    user = clicker(body)
    if user is None:
        _refuse(ack, "reason", NO_SENDER)
        return
    grant_id = grammar.request_id(view.get("private_metadata"))
    if isinstance(grant_id, grammar.NotARequestNumber):
        _refuse(ack, "reason", f"{grant_id.message}; nothing was denied")
        return
    reason = _value(_values(view), "reason")
    if not (decision := check_reason(reason)):
        _refuse(ack, "reason", decision.detail)
        return
    try:
        service.deny(grant_id, user, reason)
    except STORE_ERRORS as exc:
        store_failed(f"deny #{grant_id} by {user}", exc)
        _refuse(ack, "reason", unavailable(f"deny #{grant_id}", exc))
        return
    except JitError as exc:  # not an approver, decided already, no such request
        _refuse(ack, "reason", str(exc))
        return
    ack()


def request_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                      client: WebClient, *, service: JitService, later: Later) -> None:
    """Record the request the modal completes before the ack, or keep the modal open with
    why not under the field it is about; after the ack, confirm it in the requester's DM
    and open it if policy approved it."""
    user = clicker(body)
    if user is None:
        _refuse(ack, "service", NO_SENDER)
        return
    values = _values(view)
    try:
        duration = parse_duration(_value(values, "duration"))
    except ValueError as exc:
        _refuse(ack, "duration", str(exc))
        return
    reason = _value(values, "reason")
    if not (decision := check_reason(reason)):
        _refuse(ack, "reason", decision.detail)
        return
    try:
        result = service.request(user, _value(values, "target"), _value(values, "service"),
                                 duration, _value(values, "source"), reason)
    except NotAllowed as exc:
        _refuse(ack, _FIELD.get(exc.decision.reason, "source"), str(exc))
        return
    except STORE_ERRORS as exc:  # at the top of the form, where it is seen first
        store_failed(f"request by {user}", exc)
        _refuse(ack, "service", unavailable("record the request", exc))
        return
    ack()

    def after() -> None:
        client.chat_postMessage(channel=user, unfurl_links=False, unfurl_media=False,
                                **blocks.request_ack(result.grant, result.auto_approved))
        if result.auto_approved:
            open_approved(service, result.grant.id)

    later(after)
