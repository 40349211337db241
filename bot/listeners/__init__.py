"""Bolt listeners, one module per kind; each has `register(app, service, later)`.

A listener acks first, with what only the database can tell; `later(fn)` runs the rest
(cloud calls, Web API calls) after the ack has gone (see bot.app).
"""

from __future__ import annotations

from collections.abc import Callable

from slack_bolt import App

from bot.listeners import actions, commands, home, views
from jitcore.service import JitService

Later = Callable[[Callable[[], object]], None]


def register_all(app: App, service: JitService, later: Later) -> None:
    for kind in (commands, actions, views, home):
        kind.register(app, service, later)
