"""Buttons: Approve and Deny on the card, Revoke/Cancel on App Home, Extend in the warning.

Each acks first; the decision and any cloud work happen after. A click that comes too late
(someone else decided, the grant closed) is answered, not acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot import blocks
from bot.listeners.commands import extension_text
from bot.listeners.home import publish_home
from jitcore.errors import JitError
from jitcore.service import JitService

if TYPE_CHECKING:
    from bot.listeners import Later


def _clicked(body: dict[str, Any]) -> tuple[int, str]:
    return int(body["actions"][0]["value"]), body["user"]["id"]


def _refused(respond: Respond, exc: JitError) -> None:
    respond(replace_original=False, response_type="ephemeral", **blocks.error_message(str(exc)))


def register(app: App, service: JitService, later: Later) -> None:
    def approve_clicked(body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        grant_id, user = _clicked(body)
        try:
            service.approve(grant_id, user)
        except JitError as exc:
            _refused(respond, exc)
            return
        service.open(grant_id)
        if body.get("view", {}).get("type") == "home":
            publish_home(client, service, user)

    @app.action("jit_approve")
    def approve(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        later(lambda: approve_clicked(body, client, respond))

    @app.action("jit_deny")
    def deny(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        grant_id, _ = _clicked(body)
        later(lambda: client.views_open(trigger_id=body["trigger_id"],
                                        view=blocks.deny_modal(grant_id)))

    def from_home(body: dict[str, Any], client: WebClient, respond: Respond,
                  action: Callable[[int, str], object]) -> None:
        grant_id, user = _clicked(body)
        try:
            action(grant_id, user)
        except JitError as exc:
            _refused(respond, exc)
        publish_home(client, service, user)

    @app.action("jit_revoke")
    def revoke(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        later(lambda: from_home(body, client, respond,
                                lambda gid, user: service.revoke(gid, user,
                                                                 "revoked from App Home")))

    @app.action("jit_cancel")
    def cancel(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        later(lambda: from_home(body, client, respond, service.cancel))

    def extend_clicked(body: dict[str, Any], respond: Respond) -> None:
        grant_id, user = _clicked(body)
        try:
            extension = service.extend(grant_id, user, service.get(grant_id).duration)
        except JitError as exc:
            _refused(respond, exc)
            return
        respond(replace_original=False, response_type="ephemeral",
                text=blocks.escape(extension_text(extension)))

    @app.action("jit_extend")
    def extend(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        later(lambda: extend_clicked(body, respond))
