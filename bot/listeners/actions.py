"""Buttons: Approve and Deny on the card, Revoke/Cancel on App Home, Extend in the warning.

Each acks first; the decision and any cloud work happen after. A click that comes too late
(someone else decided, the grant closed) is answered, not acted on; so is a click whose
value is not a request number, whose sender is unknown, or that the database cannot record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot import blocks, grammar
from bot.listeners import Later, Listener, wired
from bot.listeners.answers import (
    NO_SENDER,
    STORE_ERRORS,
    clicker,
    open_approved,
    say,
    store_failed,
    tell,
    unavailable,
)
from bot.listeners.commands import extension_text
from bot.listeners.home import publish_home
from jitcore.errors import JitError
from jitcore.service import JitService


@dataclass(frozen=True, slots=True)
class Click:
    """A button someone pressed: on which request, and who they are."""

    grant_id: int
    user: str


def register(app: App, service: JitService, later: Later) -> None:
    buttons: dict[str, Listener] = {"jit_approve": approve, "jit_deny": deny,
                                    "jit_revoke": revoke, "jit_cancel": cancel,
                                    "jit_extend": extend}
    for action_id, pressed in buttons.items():
        app.action(action_id)(wired(pressed, service=service, later=later))


def approve(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond, *,
            service: JitService, later: Later) -> None:
    ack()

    def approved(click: Click) -> None:
        service.approve(click.grant_id, click.user)
        open_approved(service, click.grant_id)

    on_click(service, later, body, client, respond, "approve", approved)


def deny(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond, *,
         service: JitService, later: Later) -> None:
    ack()  # the denial is recorded when the modal, which asks why, is submitted
    on_click(service, later, body, client, respond, "deny", lambda click: client.views_open(
        trigger_id=body.get("trigger_id"), view=blocks.deny_modal(click.grant_id)))


def revoke(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond, *,
           service: JitService, later: Later) -> None:
    ack()
    on_click(service, later, body, client, respond, "revoke", lambda click: service.revoke(
        click.grant_id, click.user, "revoked from App Home"), from_home=True)


def cancel(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond, *,
           service: JitService, later: Later) -> None:
    ack()
    on_click(service, later, body, client, respond, "cancel",
             lambda click: service.cancel(click.grant_id, click.user), from_home=True)


def extend(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond, *,
           service: JitService, later: Later) -> None:
    ack()

    def extended(click: Click) -> None:
        extension = service.extend(click.grant_id, click.user,
                                   service.get(click.grant_id).duration)
        say(respond, client, click.user, {"text": blocks.escape(extension_text(extension))})

    on_click(service, later, body, client, respond, "extend", extended)


def on_click(service: JitService, later: Later, body: dict[str, Any], client: WebClient,
             respond: Respond, verb: str, act: Callable[[Click], object], *,
             from_home: bool = False) -> None:
    """Run `act` after the ack; a refusal, a stale click or an outage is told in words. App
    Home is republished after a click on it (Revoke and Cancel are only there), so what
    changed, or did not, shows at once."""
    click = _clicked(body)
    if isinstance(click, str):
        later(lambda: tell(respond, client, clicker(body), click))
        return

    def run() -> None:
        try:
            act(click)
        except STORE_ERRORS as exc:  # nothing was recorded: say so, change nothing
            store_failed(f"{verb} #{click.grant_id} by {click.user}", exc)
            tell(respond, client, click.user, unavailable(f"{verb} #{click.grant_id}", exc))
            return
        except JitError as exc:
            tell(respond, client, click.user, str(exc))
        view = body.get("view")
        if from_home or (isinstance(view, dict) and view.get("type") == "home"):
            publish_home(client, service, click.user)
    later(run)


def _clicked(body: dict[str, Any]) -> Click | str:
    """The click, or what to tell the clicker instead (the button's value is Slack's echo
    of what jit put there, but a signed request can carry anything)."""
    user = clicker(body)
    if user is None:
        return NO_SENDER
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    found = grammar.request_id(action.get("value") if isinstance(action, dict) else None)
    if isinstance(found, grammar.NotARequestNumber):
        return found.message
    return Click(found, user)
