"""The playground's Slack: the Web API stand-in jit-bot talks to, and a page where three
people (Riley asks, Avery approves, Sam watches the audit channel) use it.

    with Workspace(events_url="http://127.0.0.1:3000/slack/events", signing_secret=secret,
                   bot_token=token, rules_source=ec2.rules, policy_text=text) as workspace:
        # jit-bot runs with SLACK_API_URL=workspace.api_url and the same token and secret
        print(workspace.url)  # the page

The page is served on its own port of 127.0.0.1 (the stand-in's Web API has another):

    GET  /                 static/index.html;  GET /static/<file>: the page's files
    GET  /api/state        everything the people see, with a `version` to poll
    POST /api/command      {"user", "text"}: /jit <text>, typed in the person's DM with jit
    POST /api/action       {"user", "container", "action_id", "block_id", "value" |
                           "selected_option"}: a click on a message or a view
    POST /api/submit       {"user", "view_id", "values"}: the person's modal, submitted
    POST /api/close        {"user", "view_id"}: the person's modal, dismissed
    POST /api/home         {"user"}: the person opens jit's App Home tab

Answers are JSON: `{"ok": true}`, or `{"ok": false, "error": "..."}` with 400 (the request is
malformed or names someone or something unknown), 403 (not from this machine's page), 404,
405, 411, 413, or 502 (jit-bot refused it or did not answer); a modal jit refused is
`{"ok": false, "errors": {block_id: message}}` with 200 (see page_api).

A browser on this machine may be steered to the page by any site, so the page accepts only
requests that name it: a `Host` of 127.0.0.1 or localhost (a site rebinding its own name to
127.0.0.1 sends its own name), no `Origin` but its own, and JSON bodies (which another
origin cannot send without a preflight the page never answers).
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from bot.playground.local_server import LocalServer
from bot.playground.page_api import (
    APPROVALS_CHANNEL,
    APPROVER,
    AUDIT_CHANNEL,
    CHANNELS,
    PEOPLE,
    REQUESTER,
    SOC,
    PageApi,
    PageError,
    RulesSource,
)
from bot.playground.slack_requests import SLACK_ACK_TIMEOUT, Person, SignedSender
from bot.playground.slack_standin import SlackApiFake

Payload = dict[str, Any]
_Reply = tuple[int, dict[str, str], bytes]

log = logging.getLogger("jit.demo.page")

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 64 * 1024  # the page's requests are small; a modal's values stay far below this
_LOCAL_NAMES = ("127.0.0.1", "localhost")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".json": "application/json",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
          ".woff2": "font/woff2"}
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer"}


def _json(status: int, payload: Payload) -> _Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _refuse(status: int, error: str) -> _Reply:
    return _json(status, {"ok": False, "error": error})


class Workspace:
    """The stand-in and its page; start() and stop(), or use it as a context manager.

    `slack`: a stand-in to wrap (started and stopped by its owner); by default the
    workspace makes one with `bot_token` and runs it itself. `rules_source` returns
    `{"group": ..., "rules": [...]}` for the page's security group panel; `policy_text`
    is shown as it is. `port` 0 takes a free one.
    """

    def __init__(self, events_url: str, signing_secret: str, *,
                 bot_token: str = "xoxb-playground",  # noqa: S107 (the stand-in's default)
                 slack: SlackApiFake | None = None, rules_source: RulesSource | None = None,
                 policy_text: str = "", channels: Mapping[str, str] = CHANNELS,
                 people: Sequence[Person] = PEOPLE, static_dir: Path = STATIC,
                 port: int = 0, ack_timeout: float = SLACK_ACK_TIMEOUT) -> None:
        self.events_url = events_url
        sender = SignedSender(events_url, signing_secret, ack_timeout)  # checked first
        self._owns_slack = slack is None
        self.slack = slack if slack is not None else SlackApiFake(bot_token=bot_token)
        self.api = PageApi(self.slack, sender, people=people, channels=channels,
                           rules_source=rules_source, policy_text=policy_text)
        self._static = static_dir.resolve()
        self._posts: dict[str, Callable[[Payload], Payload]] = {
            "/api/command": self.api.command, "/api/action": self.api.action,
            "/api/submit": self.api.submit, "/api/close": self.api.close,
            "/api/home": self.api.home}
        try:
            self._server = LocalServer(self._handler(), port=port)
        except OSError as exc:
            if self._owns_slack:
                self.slack.stop()
            raise OSError(exc.errno, f"the playground page cannot listen on 127.0.0.1:{port}: "
                                     f"{exc.strerror}; choose another port") from None

    @property
    def url(self) -> str:
        """The page."""
        return self._server.url

    @property
    def api_url(self) -> str:
        """The stand-in's Web API, for jit-bot's SLACK_API_URL."""
        return self.slack.api_url

    def start(self) -> None:
        if self._owns_slack:
            self.slack.start()
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
        if self._owns_slack:
            self.slack.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        workspace = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "jit-playground"

            def do_GET(self) -> None:
                self._reply(workspace._answer(self, "GET"))

            def do_POST(self) -> None:
                self._reply(workspace._answer(self, "POST"))

            def do_OTHER(self) -> None:
                self._reply(workspace._answer(self, self.command))

            do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_OTHER

            def _reply(self, reply: _Reply) -> None:
                status, headers, data = reply
                self.send_response(status)
                for key, value in {**_HEADERS, **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return Handler

    def _answer(self, request: BaseHTTPRequestHandler, method: str) -> _Reply:
        refusal = self._foreign(request)
        if refusal is not None:
            log.warning("refused %s %s: %s", method, request.path[:200], refusal)
            return _refuse(403, refusal)
        path = urlsplit(request.path).path
        if method == "GET" and path == "/api/state":
            return _json(200, self.api.state())
        if method == "GET" and (path == "/" or path.startswith("/static/")):
            return self._static_file("index.html" if path == "/" else path[len("/static/"):])
        if path in self._posts:
            if method != "POST":
                return _refuse(405, f"{path} takes POST")
            return self._post(request, self._posts[path])
        if path == "/api/state" or path == "/" or path.startswith("/static/"):
            return _refuse(405, f"{path[:200]} takes GET")
        return _refuse(404, f"no such page or endpoint: {path[:200]}")

    def _foreign(self, request: BaseHTTPRequestHandler) -> str | None:
        """Why the request is not from this machine's page, or None."""
        host = request.headers.get("Host") or ""
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
        if name.lower() not in _LOCAL_NAMES or port not in ("", str(self._server.port)):
            return (f"Host {host[:100]!r} is not this page's (127.0.0.1 or localhost, port "
                    f"{self._server.port}); open {self.url}")
        origin = request.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if (parts.scheme != "http" or (parts.hostname or "") not in _LOCAL_NAMES
                    or parts.port != self._server.port):
                return f"Origin {origin[:100]!r} is not this page's; open {self.url}"
        return None

    def _post(self, request: BaseHTTPRequestHandler,
              endpoint: Callable[[Payload], Payload]) -> _Reply:
        if request.headers.get_content_type() != "application/json":
            return _refuse(400, "send a JSON object with Content-Type: application/json")
        declared = (request.headers.get("Content-Length") or "").strip()
        if not declared.isdigit():
            return _refuse(411, "a POST needs a Content-Length")
        if int(declared) > MAX_BODY:
            return _refuse(413, f"a request body may hold at most {MAX_BODY} bytes")
        try:
            body = json.loads(request.rfile.read(int(declared)))
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            return _refuse(400, "the body is not a JSON object")
        try:
            return _json(200, endpoint(body))
        except PageError as exc:
            return _refuse(exc.status, exc.message)
        except Exception as exc:  # a fault of the playground: said, and logged
            log.exception("the playground failed a request")
            return _refuse(500, f"the playground failed: {exc}; see its log")

    def _static_file(self, name: str) -> _Reply:
        """A file of the page; nothing outside its folder, whatever the path says."""
        relative = unquote(name)
        if "\x00" in relative or "\\" in relative:
            return _refuse(404, "no such file")
        path = (self._static / relative).resolve()
        if not path.is_relative_to(self._static) or not path.is_file():
            return _refuse(404, f"no such file: {relative[:200]}")
        kind = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        return 200, {"Content-Type": kind or "application/octet-stream"}, path.read_bytes()


__all__ = ["APPROVALS_CHANNEL", "APPROVER", "AUDIT_CHANNEL", "CHANNELS", "PEOPLE", "REQUESTER",
           "SOC", "Person", "Workspace"]
