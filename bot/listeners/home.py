"""App Home: my active grants, my pending requests, and what waits for my approval."""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from bot import blocks
from bot.listeners import Later, wired
from bot.listeners.answers import STORE_ERRORS, sender, store_failed, unavailable
from jitcore.domain import Status
from jitcore.service import JitService


def register(app: App, service: JitService, later: Later) -> None:
    app.event("app_home_opened")(wired(home_opened, service=service, later=later))


def home_opened(event: dict[str, Any], client: WebClient, *, service: JitService,
                later: Later) -> None:
    """Publish the Home tab of whoever opened it (after the ack: it reads the database)."""
    user = sender(event.get("user"))
    if user is not None and event.get("tab", "home") == "home":  # no user: no Home
        later(lambda: publish_home(client, service, user))


def publish_home(client: WebClient, service: JitService, user: str) -> None:
    """Publish the person's App Home; without the database, a page that says so."""
    try:
        active = service.grants([Status.ACTIVE, Status.OPENING], limit=50, requester=user)
        pending = service.grants([Status.PENDING], limit=50, requester=user)
        view = blocks.home_view(active, pending, service.awaiting(user))
    except STORE_ERRORS as exc:
        store_failed(f"App Home of {user}", exc)
        view = blocks.home_unavailable(unavailable("show your requests and grants", exc))
    client.views_publish(user_id=user, view=view)
