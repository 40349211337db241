"""`jit-bot`: settings -> service -> Bolt app -> Socket Mode or HTTP.

Runs the expiry engine in the same process. Stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from jitcore.domain import parse_duration

REQUIRED = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
EVENTS_PATH = "/slack/events"
HTTP_THREADS = 4  # requests answered at once; more wait in waitress's queue
MAX_REQUEST_BODY = 1024 * 1024  # waitress answers 413 past this without reading it all

log = logging.getLogger("jit.bot")


class SettingsError(Exception):
    """A missing or malformed setting; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class BotSettings:
    bot_token: str
    signing_secret: str
    app_token: str | None
    http_port: int
    api_url: str | None
    expiry_warning: timedelta | None = timedelta(minutes=5)
    outbox_retention: timedelta = timedelta(days=7)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BotSettings:
        missing = missing_settings(env)
        if missing:
            raise SettingsError(
                f"jit-bot cannot start: {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set. Create the Slack app from "
                "manifest.yml, install it to your workspace, then export SLACK_BOT_TOKEN (the "
                "xoxb- bot token) and SLACK_SIGNING_SECRET (Basic Information > App "
                "Credentials); set SLACK_APP_TOKEN (xapp-) too for Socket Mode, or leave it "
                "unset to serve HTTP on JIT_HTTP_PORT (default 3000).")
        bot_token = env["SLACK_BOT_TOKEN"].strip()
        if not bot_token.startswith("xoxb-"):
            raise SettingsError("jit-bot cannot start: SLACK_BOT_TOKEN must be a bot token "
                                "(it starts with xoxb-)")
        app_token = env.get("SLACK_APP_TOKEN", "").strip() or None
        if app_token is not None and not app_token.startswith("xapp-"):
            raise SettingsError("jit-bot cannot start: SLACK_APP_TOKEN must be an app-level "
                                "token (it starts with xapp-); unset it to serve HTTP instead")
        port_text = env.get("JIT_HTTP_PORT", "3000").strip() or "3000"
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise SettingsError(f"jit-bot cannot start: JIT_HTTP_PORT={port_text!r} is not a "
                                "port number (1-65535)")
        api_url = env.get("SLACK_API_URL", "").strip() or None
        if api_url is not None:
            parts = urlsplit(api_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SettingsError(f"jit-bot cannot start: SLACK_API_URL={api_url!r} is not an "
                                    "http(s) URL, e.g. https://slack.com/api/")
            if not api_url.endswith("/"):
                api_url += "/"
        warning_text = env.get("JIT_EXPIRY_WARNING", "5m").strip() or "5m"
        try:
            warning = None if warning_text == "0" else parse_duration(warning_text)
        except ValueError as exc:
            raise SettingsError(f"jit-bot cannot start: JIT_EXPIRY_WARNING: {exc}") from None
        retention_text = env.get("JIT_OUTBOX_RETENTION", "7d").strip() or "7d"
        try:
            retention = parse_duration(retention_text)
        except ValueError as exc:
            raise SettingsError(f"jit-bot cannot start: JIT_OUTBOX_RETENTION (how long "
                                f"delivered Slack posts are kept): {exc}") from None
        return cls(bot_token, env["SLACK_SIGNING_SECRET"].strip(), app_token, int(port_text),
                   api_url, warning, retention)


    def secrets(self, env: Mapping[str, str]) -> list[str]:
        """What must never appear in a log line: the tokens, the signing secret and the
        database password."""
        from jitcore.logs import url_password

        found = (self.bot_token, self.signing_secret, self.app_token or "",
                 url_password(env.get("JIT_DATABASE_URL", "")))
        return [s for s in found if s]


def missing_settings(env: Mapping[str, str]) -> list[str]:
    return [name for name in REQUIRED if not env.get(name, "").strip()]


def main() -> None:
    from jitcore import logs
    from jitcore.bootstrap import engine_settings
    from jitcore.errors import JitError
    from jitcore.errors import SettingsError as EngineSettingsError

    try:
        settings = BotSettings.from_env(os.environ)
        engine_settings(os.environ)  # JIT_LEASE, JIT_SWEEP_BATCH: checked before anything runs
        logs.check_format(os.environ)
    except (SettingsError, EngineSettingsError) as exc:
        message = str(exc)
        print(message if message.startswith("jit-bot cannot start") else
              f"jit-bot cannot start: {message}", file=sys.stderr)
        sys.exit(2)

    logs.configure(secrets=settings.secrets(os.environ))
    # waitress warns "Task queue depth is N" for each request that waits for a thread: in a
    # burst that is one log line per request, paid for by the acks.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    try:
        run(settings)
    except JitError as exc:
        print(f"jit-bot cannot start: {exc}", file=sys.stderr)
        sys.exit(1)


def run(settings: BotSettings) -> None:
    from slack_bolt.error import BoltError
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    from bot.app import AfterAck, Foreground, build_app
    from bot.delivery import Delivery, delivery_client
    from bot.directory import SlackDirectory
    from bot.ops import Readiness, ops_app
    from jitcore.bootstrap import Paths, build_service, engine_settings
    from jitcore.errors import JitError, PolicyError
    from jitcore.policy_file import load_policy
    from jitcore.scheduler import Engine
    from jitcore.store import Store, upgrade

    paths = Paths.from_env()
    policy = load_policy(paths.config)
    if policy.slack is None:
        raise PolicyError(f"{paths.config}: slack: is required by jit-bot "
                          "(approvals_channel and audit_channel)")
    store = Store.from_url(paths.database_url)
    if store.dialect == "sqlite":
        upgrade(store.engine)  # one process owns a SQLite file; PostgreSQL: `jit db upgrade`
    client = WebClient(token=settings.bot_token,
                       base_url=settings.api_url or WebClient.BASE_URL)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=3))
    foreground = Foreground()
    # A client of its own: the outbox retries by itself, without holding a thread.
    delivery = Delivery(delivery_client(settings.bot_token, settings.api_url), policy, store,
                        foreground=foreground, retention=settings.outbox_retention)
    service = build_service(paths, notifier=delivery, directory=SlackDirectory(client),
                            policy=policy, store=store, metrics=True,
                            settings=engine_settings(warn_before=settings.expiry_warning))
    delivery.metrics = service.metrics
    later = AfterAck()
    try:  # Bolt checks the token with auth.test here: the first call to Slack
        app = build_app(service, client, settings.signing_secret, later, foreground)
    except (OSError, SlackApiError, BoltError) as exc:  # unreachable, or the token refused
        store.dispose()
        raise JitError(f"cannot check the bot token with Slack at "
                       f"{settings.api_url or WebClient.BASE_URL}auth.test: {exc}") from None
    engine = Engine(service)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service.warm_up()
    delivery.start()  # what a previous process owed goes first
    engine.start()
    # Everything built so far (SDK models, SQLAlchemy's mappers, Bolt) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it all and
    # stalls every request in flight for a tenth of a second.
    gc.freeze()
    readiness = Readiness(store, engine)
    try:
        if settings.app_token:
            from bot.socket_mode import connect

            handler = connect(app, settings.app_token)
            log.info("jit-bot connected over Socket Mode")
            serve_http(ops_app(readiness), settings.http_port, stop)  # the probes, /metrics
            handler.close()
        else:
            from slack_bolt.adapter.wsgi import SlackRequestHandler

            from bot.signing import SignedOnly

            # Bolt parses a body before it checks its signature: unsigned junk must not reach it
            slack = SignedOnly(SlackRequestHandler(app, path=EVENTS_PATH),
                               settings.signing_secret, path=EVENTS_PATH)
            serve_http(ops_app(readiness, slack), settings.http_port, stop)
    finally:
        later.close()
        engine.shutdown()
        delivery.close()
        store.dispose()
        log.info("jit-bot stopped")


def serve_http(wsgi_app: Any, port: int, stop: threading.Event) -> None:
    """Serve `wsgi_app` with waitress until `stop` is set."""
    from waitress.server import create_server

    server = create_server(wsgi_app, host="0.0.0.0", port=port, threads=HTTP_THREADS,  # noqa: S104 (Slack must reach it)
                           backlog=socket.SOMAXCONN, ident="jit-bot",
                           max_request_body_size=MAX_REQUEST_BODY)
    thread = threading.Thread(target=server.run, name="jit-http", daemon=True)
    thread.start()
    log.info("jit-bot listening on http://0.0.0.0:%d (%s, /healthz, /readyz, /metrics)",
             port, EVENTS_PATH)
    stop.wait()
    # The requests being answered finish first (up to 5 s); closing the server before would
    # close the trigger their answers use to wake the I/O loop (EBADF in the log). Their
    # answers are then flushed by the loop, and the sockets closed.
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(
            getattr(channel, "total_outbufs_len", 0) for channel in list(server._map.values())):
        time.sleep(0.02)
    # Close every socket from the I/O loop's own thread (closing them from here while it
    # sits in select() fails it with EBADF); with nothing left to watch, the loop ends.
    from waitress import wasyncore

    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
