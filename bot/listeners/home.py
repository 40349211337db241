"""App Home: my active grants, my pending requests, and what waits for my approval."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt import App
from slack_sdk import WebClient

from bot import blocks
from jitcore.domain import Status
from jitcore.service import JitService

if TYPE_CHECKING:
    from bot.listeners import Later


def publish_home(client: WebClient, service: JitService, user: str) -> None:
    active = service.grants([Status.ACTIVE, Status.OPENING], limit=50, requester=user)
    pending = service.grants([Status.PENDING], limit=50, requester=user)
    client.views_publish(user_id=user,
                         view=blocks.home_view(active, pending, service.awaiting(user)))


def register(app: App, service: JitService, later: Later) -> None:
    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any], client: WebClient) -> None:
        if event.get("tab", "home") == "home":
            user = event["user"]
            later(lambda: publish_home(client, service, user))
