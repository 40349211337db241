"""What a listener answers when it cannot act: it cannot tell who sent the request, or
jit's database cannot be read or written. Said in words, at once; the database's own
reason goes to the log (once, without a traceback: an outage is expected), never to Slack.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import Respond
from slack_sdk import WebClient
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot import blocks
from jitcore.errors import StoreError
from jitcore.service import JitService

log = logging.getLogger(__name__)

# jitcore's service raises StoreError on the request path and SQLAlchemy's own errors
# elsewhere: a listener catches both.
STORE_ERRORS: tuple[type[Exception], ...] = (StoreError, SQLAlchemyError)
# Errors that mean the database cannot be reached or answered in time (not that it refused).
_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
# A Slack user (or enterprise user) id: letters and digits; anything else was not Slack's.
_SLACK_USER = re.compile(r"[A-Za-z0-9]{1,64}")

NO_SENDER = ("jit could not tell who sent this, so it did nothing. Try again from Slack; "
             "if it keeps happening, tell jit's operators.")


def sender(value: object) -> str | None:
    """The Slack user id a request names, or None when it names none (or not as Slack does)."""
    return value if isinstance(value, str) and _SLACK_USER.fullmatch(value) else None


def clicker(body: dict[str, Any]) -> str | None:
    """Who clicked or submitted: `user.id` of an interaction payload."""
    user = body.get("user")
    return sender(user.get("id")) if isinstance(user, dict) else None


def _is_outage(exc: BaseException) -> bool:
    """StoreError carries the SQLAlchemy error as its cause; one without a cause is about
    reaching or migrating the database, which the operators fix."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    return cause is None or isinstance(cause, _OUTAGES)


def _db_reason(exc: BaseException) -> str:
    """The driver's words (not the SQL and its parameters, which carry what people typed)."""
    cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ else exc
    if isinstance(cause, DBAPIError) and cause.orig is not None:
        return f"{type(cause).__name__}: {cause.orig}"
    return str(exc)


def store_failed(doing: str, exc: BaseException) -> None:
    """Log, once, why the database did not do what a person asked."""
    log.error("%s failed: %s", doing, str(exc) if isinstance(exc, StoreError)
              else _db_reason(exc))


def unavailable(could_not: str, exc: BaseException) -> str:
    """What the person is told: `jit could not <could_not>: ...`, and what to do."""
    if _is_outage(exc):
        return (f"jit could not {could_not}: its database is unavailable. Try again in a "
                "minute; if it keeps failing, tell jit's operators.")
    return (f"jit could not {could_not}: its database refused it. Nothing was changed; "
            "tell jit's operators.")


def say(respond: Respond | None, client: WebClient, user: str | None,
        message: blocks.Message) -> None:
    """Answer whoever clicked, privately: where they clicked (a message has a response_url),
    else in their DM with jit (App Home clicks have none)."""
    if respond is not None and respond.response_url:
        respond(replace_original=False, response_type="ephemeral", **message)
    elif user is not None:
        client.chat_postMessage(channel=user, **message)
    else:
        log.warning("a click with neither a response_url nor a user: %s", message["text"])


def tell(respond: Respond | None, client: WebClient, user: str | None, text: str) -> None:
    """Tell whoever clicked what was wrong (escaped)."""
    say(respond, client, user, blocks.error_message(text))


def open_approved(service: JitService, grant_id: int) -> None:
    """Open an approved grant now (after the ack); without the database, the sweep opens it
    once the database is back: the approval is recorded."""
    try:
        service.open(grant_id)
    except STORE_ERRORS as exc:
        store_failed(f"opening #{grant_id} after its approval", exc)
