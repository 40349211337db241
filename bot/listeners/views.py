"""Modal submissions: the deny reason, and a request completed in the modal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import blocks
from jitcore.domain import parse_duration
from jitcore.errors import InvalidTransition, NotAllowed, NotFound
from jitcore.policy import Reason
from jitcore.service import JitService

if TYPE_CHECKING:
    from bot.listeners import Later

# Which modal field a refusal is about, so Slack shows the message under it.
_FIELD = {
    Reason.UNKNOWN_TARGET: "target", Reason.NOT_A_REQUESTER: "target",
    Reason.UNKNOWN_PORT: "service", Reason.DURATION_TOO_LONG: "duration",
    Reason.DURATION_INVALID: "duration",
}


def _value(values: dict[str, Any], block: str) -> str:
    element = values.get(block, {}).get(block, {})
    if "selected_option" in element:
        return str((element.get("selected_option") or {}).get("value") or "")
    return str(element.get("value") or "").strip()


def register(app: App, service: JitService, later: Later) -> None:
    @app.view("jit_deny_modal")
    def deny_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        grant_id, user = int(view["private_metadata"]), body["user"]["id"]
        reason = _value(view["state"]["values"], "reason")
        try:
            service.deny(grant_id, user, reason)
        except (NotAllowed, InvalidTransition, NotFound) as exc:
            ack(response_action="errors", errors={"reason": str(exc)})
            return
        ack()

    @app.view("jit_request_modal")
    def request_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                          client: WebClient) -> None:
        user = body["user"]["id"]
        values = view["state"]["values"]
        try:
            duration = parse_duration(_value(values, "duration"))
        except ValueError as exc:
            ack(response_action="errors", errors={"duration": str(exc)})
            return
        try:
            result = service.request(user, _value(values, "target"), _value(values, "service"),
                                     duration, _value(values, "source"),
                                     _value(values, "reason"))
        except NotAllowed as exc:
            field = _FIELD.get(exc.decision.reason, "source")
            ack(response_action="errors", errors={field: str(exc)})
            return
        ack()

        def after() -> None:
            client.chat_postMessage(channel=user, unfurl_links=False, unfurl_media=False,
                                    **blocks.request_ack(result.grant, result.auto_approved))
            if result.auto_approved:
                service.open(result.grant.id)

        later(after)
