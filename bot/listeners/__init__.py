"""Bolt listeners, one module per kind; each has `register(app, service)`."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners import actions, commands, home, views
from jitcore.service import JitService


def register_all(app: App, service: JitService) -> None:
    for kind in (commands, actions, views, home):
        kind.register(app, service)
