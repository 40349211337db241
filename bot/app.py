"""build_app(service, settings) -> slack_bolt.App, with every listener registered."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot.listeners import register_all
from jitcore.service import JitService


def build_app(service: JitService, client: WebClient, signing_secret: str) -> App:
    """Listeners ack before any cloud or Web API call; the work runs after the ack."""
    app = App(client=client, signing_secret=signing_secret, process_before_response=False)
    register_all(app, service)
    return app
