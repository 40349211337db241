"""`/jit`: parse, call jitcore, answer. A request is written to the database before ack()."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot import blocks, grammar
from bot.listeners import Later, wired
from bot.listeners.answers import (
    NO_SENDER,
    STORE_ERRORS,
    open_approved,
    sender,
    store_failed,
    unavailable,
)
from jitcore.domain import HOLDS_RULE, GrantView, Status, format_duration
from jitcore.errors import JitError, NotAllowed
from jitcore.policy import check_reason
from jitcore.service import Extension, JitService

log = logging.getLogger(__name__)


def register(app: App, service: JitService, later: Later) -> None:
    app.command("/jit")(wired(jit_command, service=service, later=later))


def jit_command(ack: Ack, command: dict[str, Any], client: WebClient, respond: Respond, *,
                service: JitService, later: Later) -> None:
    """`/jit ...`: answered in the ack with what the database can tell now; a modal, a revoke,
    a cancel or an extension after it (`follow_up`)."""
    user = sender(command.get("user_id"))
    if user is None:  # nobody to act for: nothing is done
        ack(**blocks.error_message(NO_SENDER))
        return
    text = command.get("text")
    parsed = grammar.parse(text if isinstance(text, str) else "")
    if isinstance(parsed, grammar.Request) and not (decision := check_reason(parsed.reason)):
        ack(**blocks.error_message(decision.detail, grammar.REQUEST_EXAMPLE))
        return
    match parsed:
        case grammar.ParseError(message, example):
            ack(**blocks.error_message(message, example))
        case grammar.Help():
            ack(**blocks.help_message())
        case grammar.ListTargets():
            ack(**blocks.targets_message(service.requestable(user)))
        case grammar.ListGrants():
            list_grants(service, user, ack)
        case grammar.Request() if not parsed.missing:
            submit_request(service, user, parsed, ack, later)
        case _:  # a modal to open, or an action on a request: after the ack
            ack()
            later(lambda: follow_up(service, user, parsed, command, client, respond))


def follow_up(service: JitService, user: str,
              parsed: grammar.Request | grammar.Revoke | grammar.Cancel | grammar.Extend,
              command: dict[str, Any], client: WebClient, respond: Respond) -> None:
    """What `/jit` does after its ack: the modal of a request with parts left out, or the
    action on a request, answered privately."""
    match parsed:
        case grammar.Request():
            client.views_open(trigger_id=command.get("trigger_id"),
                              view=request_modal(service, user, parsed))
        case grammar.Revoke(grant_id):
            act(respond, lambda: service.revoke(grant_id, user, "revoked in Slack"),
                f"#{grant_id} revoked", f"revoke #{grant_id}", user)
        case grammar.Cancel(grant_id):
            act(respond, lambda: service.cancel(grant_id, user),
                f"#{grant_id} cancelled", f"cancel #{grant_id}", user)
        case grammar.Extend(grant_id, duration):
            extend(service, respond, user, grant_id, duration)


def list_grants(service: JitService, user: str, ack: Ack) -> None:
    """`/jit list`: the person's open grants and requests, in the ack."""
    try:
        mine = service.grants([*HOLDS_RULE, Status.PENDING, Status.APPROVED],
                              limit=20, requester=user)
    except STORE_ERRORS as exc:
        store_failed(f"/jit list by {user}", exc)
        ack(**blocks.error_message(unavailable("read your requests", exc)))
        return
    ack(**blocks.grants_message(mine))


def extend(service: JitService, respond: Respond, user: str, grant_id: int,
           duration: timedelta) -> None:
    try:
        extension = service.extend(grant_id, user, duration)
    except STORE_ERRORS as exc:
        store_failed(f"extend #{grant_id} by {user}", exc)
        respond(**blocks.error_message(unavailable(f"extend #{grant_id}", exc)),
                response_type="ephemeral")
        return
    except JitError as exc:
        respond(**blocks.error_message(str(exc)), response_type="ephemeral")
        return
    respond(text=blocks.escape(extension_text(extension)), response_type="ephemeral")


def submit_request(service: JitService, user: str, request: grammar.Request, ack: Ack,
                   later: Later) -> None:
    assert request.service and request.target and request.duration and request.source
    try:
        result = service.request(user, request.target, request.service, request.duration,
                                 request.source, request.reason)
    except NotAllowed as exc:
        ack(**blocks.error_message(str(exc), grammar.REQUEST_EXAMPLE))
        return
    except STORE_ERRORS as exc:  # tell the user at once, not with Slack's timeout; the log
        store_failed(f"request by {user}", exc)  # has what the operators need
        ack(**blocks.error_message(unavailable("record the request", exc)))
        return
    except JitError as exc:
        log.error("request by %s failed: %s", user, exc)
        ack(**blocks.error_message(f"jit could not record the request: {exc}"))
        return
    ack(**blocks.request_ack(result.grant, result.auto_approved))
    if result.auto_approved:
        grant_id = result.grant.id
        later(lambda: open_approved(service, grant_id))  # after the ack: the cloud call is slow


def request_modal(service: JitService, user: str, request: grammar.Request) -> dict[str, Any]:
    targets = service.requestable(user)
    prefill = {"service": request.service or "", "target": request.target or "",
               "duration": format_duration(request.duration) if request.duration else "",
               "source": request.source or _last_source(service, user) or "",
               "reason": request.reason}
    services = sorted({p for t in targets for p in t.ports})
    if prefill["source"].endswith(("/32", "/128")):  # shown as the address it was typed as
        prefill["source"] = prefill["source"].rsplit("/", 1)[0]
    return blocks.request_modal({k: v for k, v in prefill.items() if v},
                                [t.name for t in targets], services)


def _last_source(service: JitService, user: str) -> str | None:
    """The address this person declared last, to prefill; without the database, none (the
    form still opens, and its submission says what is wrong)."""
    try:
        return service.last_source(user)
    except STORE_ERRORS as exc:
        store_failed(f"reading the last source of {user}", exc)
        return None


def act(respond: Respond, action: Callable[[], GrantView], done: str, doing: str,
        user: str) -> None:
    """Run a jitcore action after ack(); tell the user what happened, ephemerally."""
    try:
        view = action()
    except STORE_ERRORS as exc:
        store_failed(f"{doing} by {user}", exc)
        respond(**blocks.error_message(unavailable(doing, exc)), response_type="ephemeral")
        return
    except JitError as exc:
        respond(**blocks.error_message(str(exc)), response_type="ephemeral")
        return
    text = done if view.error is None else f"{done}, but: {view.error}"
    respond(text=blocks.escape(text), response_type="ephemeral")


def extension_text(extension: Extension) -> str:
    """What the requester is told after asking for more time."""
    grant, asked = extension.grant, extension.request
    if asked is None:
        until = f"{grant.expires_at:%H:%M}" if grant.expires_at else "?"
        return f"#{grant.id} extended: open until {until} UTC"
    return (f"#{grant.id}: extension request #{asked.grant.id} "
            f"({format_duration(asked.grant.duration)}) sent to the approvers")
