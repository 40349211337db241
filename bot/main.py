"""`jit-bot`: settings -> service -> Bolt app -> Socket Mode or HTTP.

Runs the expiry engine in the same process. Stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from jitcore.domain import parse_duration
from jitcore.errors import SettingsError

EVENTS_PATH = "/slack/events"
HTTP_THREADS = 4  # requests answered at once; more wait in waitress's queue
MAX_REQUEST_BODY = 1024 * 1024  # waitress answers 413 past this without reading it all

log = logging.getLogger("jit.bot")

MISSING_HELP = (
    "Create the Slack app from manifest.yml, install it to your workspace, then export "
    "SLACK_BOT_TOKEN (the xoxb- bot token) and SLACK_SIGNING_SECRET (Basic Information > App "
    "Credentials); set SLACK_APP_TOKEN (xapp-) too for Socket Mode, or leave it unset to "
    "serve HTTP on JIT_HTTP_PORT (default 3000).")


class BotSettings(BaseSettings):
    """jit-bot's settings, read from the environment. A blank value counts as unset; a
    malformed one is a SettingsError naming the variable (and never echoing a secret)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True,
                                      validate_default=False)

    bot_token: str = Field(validation_alias="SLACK_BOT_TOKEN", repr=False)
    signing_secret: str = Field(validation_alias="SLACK_SIGNING_SECRET", repr=False)
    app_token: str | None = Field(None, validation_alias="SLACK_APP_TOKEN", repr=False)
    http_port: int = Field(3000, validation_alias="JIT_HTTP_PORT")
    http_host: str = Field("0.0.0.0", validation_alias="JIT_HTTP_HOST")  # noqa: S104 (Slack must reach it)
    api_url: str | None = Field(None, validation_alias="SLACK_API_URL")
    expiry_warning: timedelta | None = Field(timedelta(minutes=5),
                                             validation_alias="JIT_EXPIRY_WARNING")
    outbox_retention: timedelta = Field(timedelta(days=7), validation_alias="JIT_OUTBOX_RETENTION")

    @classmethod
    def from_env(cls) -> BotSettings:
        """The settings in this process's environment; SettingsError if one is missing or
        malformed (the missing ones first)."""
        try:
            return cls(**{})  # every field comes from the environment
        except ValidationError as exc:
            raise SettingsError(_first_problem(exc)) from None

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings,)  # the environment only: no .env file, no secrets directory

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        names = [field.validation_alias for field in cls.model_fields.values()]
        given = {name: data.get(name) for name in names if isinstance(name, str)}
        return {name: value.strip() for name, value in given.items()
                if isinstance(value, str) and value.strip()}

    @field_validator("bot_token")
    @classmethod
    def _bot_token(cls, token: str) -> str:
        if not token.startswith("xoxb-"):
            raise ValueError("SLACK_BOT_TOKEN must be a bot token (it starts with xoxb-)")
        return token

    @field_validator("app_token")
    @classmethod
    def _app_token(cls, token: str | None) -> str | None:
        if token is not None and not token.startswith("xapp-"):
            raise ValueError("SLACK_APP_TOKEN must be an app-level token (it starts with "
                             "xapp-); unset it to serve HTTP instead")
        return token

    @field_validator("http_port", mode="before")
    @classmethod
    def _http_port(cls, text: str) -> int:
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
            raise ValueError(f"JIT_HTTP_PORT={text!r} is not a port number (1-65535)")
        return int(text)

    @field_validator("http_host")
    @classmethod
    def _http_host(cls, text: str) -> str:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(f"JIT_HTTP_HOST={text!r} is not an IP address to listen on, "
                             "e.g. 0.0.0.0 (all) or 127.0.0.1 (this machine only)") from None

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"SLACK_API_URL={url!r} is not an http(s) URL, "
                             "e.g. https://slack.com/api/")
        return url if url.endswith("/") else url + "/"

    @field_validator("expiry_warning", mode="before")
    @classmethod
    def _expiry_warning(cls, text: str) -> timedelta | None:
        try:
            return None if text == "0" else parse_duration(text)
        except ValueError as exc:
            raise ValueError(f"JIT_EXPIRY_WARNING: {exc}") from None

    @field_validator("outbox_retention", mode="before")
    @classmethod
    def _outbox_retention(cls, text: str) -> timedelta:
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise ValueError("JIT_OUTBOX_RETENTION (how long delivered Slack posts are "
                             f"kept): {exc}") from None

    def secrets(self, env: Mapping[str, str]) -> list[str]:
        """What must never appear in a log line: the tokens, the signing secret and the
        database password."""
        from jitcore.logs import url_password

        found = (self.bot_token, self.signing_secret, self.app_token or "",
                 url_password(env.get("JIT_DATABASE_URL", "")))
        return [s for s in found if s]


def _first_problem(exc: ValidationError) -> str:
    """What to tell the operator: every variable that is missing, else the first malformed."""
    problems = exc.errors(include_url=False, include_input=False)
    missing = [str(problem["loc"][0]) for problem in problems if problem["type"] == "missing"]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return f"{' and '.join(missing)} {verb} not set. {MISSING_HELP}"
    first = problems[0]
    cause = (first.get("ctx") or {}).get("error")
    return str(cause) if cause is not None else f"{first['loc'][0]}: {first['msg']}"


def main() -> None:
    from jitcore import logs
    from jitcore.bootstrap import engine_settings
    from jitcore.errors import JitError

    try:
        settings = BotSettings.from_env()
        engine_settings(os.environ)  # JIT_LEASE, JIT_SWEEP_BATCH: checked before anything runs
        logs.check_format(os.environ)
    except SettingsError as exc:
        print(f"jit-bot cannot start: {exc}", file=sys.stderr)
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


def run(settings: BotSettings, stop: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; or, given `stop` (jit-bot inside another program, such
    as `jit demo`), until it is set, leaving the signals to that program."""
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
    if stop is None:
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
            serve_http(ops_app(readiness), settings.http_port, stop,  # the probes, /metrics
                       host=settings.http_host)
            handler.close()
        else:
            from slack_bolt.adapter.wsgi import SlackRequestHandler

            from bot.signing import SignedOnly

            # Bolt parses a body before it checks its signature: unsigned junk must not reach it
            slack = SignedOnly(SlackRequestHandler(app, path=EVENTS_PATH),
                               settings.signing_secret, path=EVENTS_PATH)
            serve_http(ops_app(readiness, slack), settings.http_port, stop,
                       host=settings.http_host)
    finally:
        later.close()
        engine.shutdown()
        delivery.close()
        store.dispose()
        log.info("jit-bot stopped")


def serve_http(wsgi_app: Any, port: int, stop: threading.Event,
               host: str = "0.0.0.0") -> None:  # noqa: S104 (Slack must reach it)
    """Serve `wsgi_app` with waitress until `stop` is set."""
    from waitress.server import create_server

    server = create_server(wsgi_app, host=host, port=port, threads=HTTP_THREADS,
                           backlog=socket.SOMAXCONN, ident="jit-bot",
                           max_request_body_size=MAX_REQUEST_BODY)
    thread = threading.Thread(target=server.run, name="jit-http", daemon=True)
    thread.start()
    log.info("jit-bot listening on http://%s:%d (%s, /healthz, /readyz, /metrics)",
             host, port, EVENTS_PATH)
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
