"""Bolt listeners, one module per kind; each has `register(app, service, later)`.

A listener is a module-level function: Bolt passes it the arguments it names (`ack`, `body`,
`client`, `respond`...), and `wired` adds what jit gives it (`service`, `later`) as keywords,
so a test can call one directly with its own.

A listener acks first, with what only the database can tell; `later(fn)` runs the rest
(cloud calls, Web API calls) after the ack has gone (see bot.app).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from slack_bolt import App

from jitcore.service import JitService

Later = Callable[[Callable[[], object]], None]
Listener = Callable[..., None]


def wired(listener: Listener, **given: object) -> Listener:
    """`listener` as Bolt calls it: Bolt passes the arguments it names, and `given` (jit's
    service, `later`) follow as keywords."""
    @functools.wraps(listener)  # Bolt reads the argument names through __wrapped__
    def run(**kwargs: Any) -> None:
        listener(**kwargs, **given)
    return run


def register_all(app: App, service: JitService, later: Later) -> None:
    from bot.listeners import actions, commands, home, views

    for kind in (commands, actions, views, home):
        kind.register(app, service, later)
