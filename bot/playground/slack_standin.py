"""A local stand-in for the Slack Web API, the way moto stands in for AWS.

jit's real `slack_sdk.WebClient` (and slack_bolt's `App`) talk to it over HTTP:

    with SlackApiFake() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.api_url)
        client.chat_postMessage(channel="C0APPROVE", text="hi")
        assert slack.messages("C0APPROVE")[0]["text"] == "hi"

Every call is recorded (`calls`, `calls_to`, `wait_for`), messages are kept per channel
(`messages`, `thread`), and answers are shaped after Slack's own (the methods are in
slack_methods). Errors are `{"ok": false, "error": ...}` with HTTP 200, rate limits HTTP 429
with `Retry-After`, exactly as Slack sends them. `response_url(name)` gives a URL that
records what bolt's `respond()` posts to it, as method "response_url"; given the user (and
the message) it was issued for, the post also does what it does in Slack (an ephemeral, an
in-channel message, the message replaced). `issue_trigger(user)` gives a trigger id with
which views.open opens that user's modal (`modal(user)`). `version` counts the changes
anyone could see, for a page that polls.

It serves on 127.0.0.1 only, and trusts whoever reaches it: a test's, or a playground's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from bot.playground.local_server import LocalServer
from bot.playground.slack_methods import Args, ResponseTarget, SlackError, WebApi

# Fields Slack accepts as JSON text inside a form-encoded body.
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata")
# The methods whose success changes what a person would see.
_CHANGES = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral", "views.open",
                      "views.update", "views.publish"})
_Reply = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Call:
    """One request the fake received; `at` is `time.monotonic()` on arrival."""

    method: str
    args: Args
    token: str | None
    at: float
    status: int = 200
    error: str | None = None  # the `error` the fake answered with, if any

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class _Fault:
    method: str | None  # None: any method
    remaining: int
    error: str
    retry_after: int | None = None  # set: answer HTTP 429


class SlackApiFake(LocalServer):
    """A threaded Slack Web API on 127.0.0.1; use as a context manager. Thread-safe."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",  # noqa: S107 (the tests' made-up token)
        *,
        team_id: str = "T0JITTEST",
        team: str = "jit-test",
        bot_user_id: str = "U0JITBOT",
        bot_id: str = "B0JITBOT",
        app_id: str = "A0JITAPP",
        port: int = 0,
    ) -> None:
        self.bot_token = bot_token
        self.team_id, self.team = team_id, team
        self.bot_user_id, self.bot_id, self.app_id = bot_user_id, bot_id, app_id
        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._outage: tuple[float, int] | None = None  # (until, HTTP status)
        self._version = 0
        self._api = WebApi(team_id=team_id, team=team, bot_user_id=bot_user_id, bot_id=bot_id,
                           app_id=app_id)
        self._methods: dict[str, Callable[[Args], Args]] = self._api.methods()
        super().__init__(_handler(self), port=port)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The `base_url` for `WebClient`."""
        return f"{self.url}/api/"

    def response_url(self, name: str = "default", *, user: str | None = None,
                     channel: str | None = None, message_ts: str | None = None) -> str:
        """A response_url for interaction payloads; posts to it are recorded. Given `user`,
        they also land as Slack lands them: ephemerals for `user` in `channel` (their DM
        with the app by default), and with `message_ts` replace_original and
        delete_original act on that message."""
        if user is not None:
            with self._lock:
                where = self._api.resolve(channel or user)
                self._api.response_targets[name] = ResponseTarget(user, where, message_ts)
        return f"{self.url}/response/{name}"

    # -- configuration -----------------------------------------------------------------

    def set_usergroup(self, group_id: str, handle: str, members: list[str],
                      name: str | None = None) -> None:
        with self._lock:
            self._api.usergroups[group_id] = _usergroup(self, group_id, handle, members, name)

    def add_user(self, user_id: str, name: str, real_name: str | None = None, *,
                 tz: str = "Europe/London", email: str | None = None) -> None:
        with self._lock:
            self._api.users[user_id] = _user(self.team_id, user_id, name, real_name, tz, email)

    def rate_limit_next(self, n: int = 1, retry_after: int = 1, method: str | None = None) -> None:
        """The next `n` calls (to `method`, or to any) answer HTTP 429 `ratelimited`."""
        with self._lock:
            self._faults.append(_Fault(method, n, "ratelimited", retry_after))

    def outage(self, seconds: float = 3600.0, status: int = 503) -> None:
        """For `seconds` (or until `end_outage`), every Web API call answers HTTP `status`
        with an HTML page, as Slack's edge does when Slack is down."""
        with self._lock:
            self._outage = (time.monotonic() + seconds, status)

    def end_outage(self) -> None:
        with self._lock:
            self._outage = None

    def break_channel(self, channel: str, error: str = "channel_not_found") -> None:
        """Every post to, or update in, `channel` answers `error` until `mend_channel`."""
        with self._lock:
            self._api.broken_channels[channel] = error

    def mend_channel(self, channel: str) -> None:
        with self._lock:
            self._api.broken_channels.pop(channel, None)

    def fail_next(self, method: str, error: str) -> None:
        """The next call to `method` answers `{"ok": false, "error": error}`."""
        with self._lock:
            self._faults.append(_Fault(method, 1, error))

    # -- what a person does in Slack ---------------------------------------------------

    def issue_trigger(self, user: str) -> str:
        """A fresh trigger id for an interaction by `user` (a slash command, a click, a
        submission): views.open with it opens a modal for `user`, once."""
        with self._lock:
            return self._api.issue_trigger(user)

    def close_modal(self, user: str) -> Args | None:
        """Close the modal open for `user` (they submitted it, or dismissed it); the view
        that was open, or None."""
        with self._lock:
            view_id = self._api.modals.pop(user, None)
            if view_id is None:
                return None
            self._version += 1
            return copy.deepcopy(self._api.views[view_id])

    def add_ephemeral(self, channel: str, user: str, text: str,
                      blocks: list[Any] | None = None) -> str:
        """Show `user` an ephemeral message in `channel` (an app's synchronous answer to a
        slash command lands so); its ts."""
        with self._lock:
            self._version += 1
            args: Args = {"text": text} if blocks is None else {"text": text, "blocks": blocks}
            return self._api.add_ephemeral(self._api.resolve(channel), user, args)

    # -- reading back ------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Bumped by every change a person could see (a post, an update, a view, a modal)."""
        with self._lock:
            return self._version

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def wait_for(self, what: str | Callable[[Call], bool], count: int = 1,
                 timeout: float = 5.0) -> list[Call]:
        """Poll until `count` calls match; a method name matches its successful calls."""
        matches: Callable[[Call], bool] = (
            (lambda call: call.method == what and call.ok) if isinstance(what, str) else what
        )
        deadline = time.monotonic() + timeout
        while True:
            found = [call for call in self.calls if matches(call)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        arrived = "\n".join(
            f"  {call.method} {call.error or 'ok'} {call.args!r}"[:300] for call in self.calls
        ) or "  (none)"
        raise AssertionError(
            f"waited {timeout}s for {count} call(s) matching {what!r}, "
            f"found {len(found)}; the fake received:\n{arrived}"
        )

    def messages(self, channel: str) -> list[Args]:
        """Messages posted to `channel` (a user id reads that user's DM), oldest first."""
        with self._lock:
            return copy.deepcopy(self._api.messages.get(self._api.resolve(channel), []))

    def channels(self) -> list[str]:
        """The channels that hold messages, in the order of their first message."""
        with self._lock:
            return list(self._api.messages)

    def thread(self, channel: str, ts: str) -> list[Args]:
        """The parent message `ts` followed by its replies, oldest first."""
        stored = self.messages(channel)
        parent = [m for m in stored if m["ts"] == ts]
        if not parent:
            raise AssertionError(f"no message {ts} in {channel}; it holds "
                                 f"{[m['ts'] for m in stored]}")
        return parent + [m for m in stored if m["thread_ts"] == ts and m["ts"] != ts]

    def message_body(self, channel: str, ts: str) -> Args | None:
        """Message `ts` in `channel` as Slack puts it in an interaction payload, or None."""
        with self._lock:
            try:
                stored = self._api.find(self._api.resolve(channel), ts)
            except SlackError:
                return None
            return {**self._api.message_body(stored), "ts": ts}

    def ephemerals(self, user: str | None = None) -> list[Args]:
        with self._lock:
            return [copy.deepcopy(e) for e in self._api.ephemerals if user in (None, e["user"])]

    def home(self, user: str) -> Args | None:
        """The home tab last published for `user`, or None."""
        with self._lock:
            view_id = self._api.homes.get(user)
            return copy.deepcopy(self._api.views[view_id]) if view_id else None

    def modal(self, user: str) -> Args | None:
        """The modal open for `user` (opened with a trigger from `issue_trigger`), or None."""
        with self._lock:
            view_id = self._api.modals.get(user)
            return copy.deepcopy(self._api.views[view_id]) if view_id else None

    def view(self, view_id: str) -> Args:
        with self._lock:
            return copy.deepcopy(self._api.views[view_id])

    def dm_channel(self, user: str) -> str:
        """The DM channel id for `user` (the same one conversations.open answers)."""
        with self._lock:
            return self._api.dm_for([user])[0]

    # -- HTTP --------------------------------------------------------------------------

    def _serve(self, method: str, request: BaseHTTPRequestHandler, body: bytes) -> _Reply:
        status, headers, answer = 200, {"Content-Type": "application/json; charset=utf-8"}, {}
        args: Args = {}
        token: str | None = None
        with self._lock:
            if self._outage is not None and time.monotonic() < self._outage[0]:
                outage_status = self._outage[1]
                with contextlib.suppress(SlackError):
                    args, token = _parse(request, body)
                self._calls.append(Call(method, args, token, time.monotonic(), outage_status,
                                        "outage"))
                return (outage_status, {"Content-Type": "text/html"},
                        b"<html><body><h1>Service Unavailable</h1></body></html>")
            try:
                args, token = _parse(request, body)
                if method not in self._methods:
                    raise SlackError("unknown_method")
                self._check_token(method, token)
                fault = self._take_fault(method)
                if fault and fault.retry_after is not None:
                    status = 429
                    headers["Retry-After"] = str(fault.retry_after)
                if fault:
                    raise SlackError(fault.error)
                answer = {"ok": True, **self._methods[method](args)}
                if method in _CHANGES:
                    self._version += 1
            except SlackError as exc:
                answer = {"ok": False, "error": exc.error}
                if exc.messages:
                    answer["response_metadata"] = {"messages": list(exc.messages)}
            self._calls.append(Call(method, args, token, time.monotonic(), status,
                                    answer.get("error")))
        return status, headers, json.dumps(answer).encode()

    def _check_token(self, method: str, token: str | None) -> None:
        """Raise Slack's error unless `token` may call `method` (here: the bot token)."""
        if token != self.bot_token:
            raise SlackError("not_authed" if not token else "invalid_auth")

    def _record_response_url(self, path: str, body: bytes) -> _Reply:
        args = json.loads(body) if body else {}
        error: str | None = None
        with self._lock:
            try:
                if isinstance(args, dict) and self._api.respond(path[len("/response/"):], args):
                    self._version += 1
            except SlackError as exc:
                error = exc.error
            self._calls.append(Call("response_url", {"url": path, **args}, None,
                                    time.monotonic(), error=error))
        if error is not None:
            return 404, {"Content-Type": "text/plain"}, error.encode()
        return 200, {"Content-Type": "text/plain"}, b"ok"

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in (None, method):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None


def _usergroup(fake: SlackApiFake, group_id: str, handle: str, members: list[str],
               name: str | None) -> Args:
    now = int(time.time())
    return {
        "id": group_id, "team_id": fake.team_id, "is_usergroup": True,
        "name": name or handle, "description": "", "handle": handle,
        "is_external": False, "date_create": now, "date_update": now, "date_delete": 0,
        "auto_type": None, "created_by": fake.bot_user_id, "updated_by": fake.bot_user_id,
        "deleted_by": None, "prefs": {"channels": [], "groups": []},
        "user_count": len(members), "users": list(members),
    }


def _user(team_id: str, user_id: str, name: str, real_name: str | None, tz: str,
          email: str | None) -> Args:
    now = datetime.now(ZoneInfo(tz))
    offset = now.utcoffset()
    profile: Args = {"real_name": real_name or name, "display_name": name}
    if email:
        profile["email"] = email
    return {
        "id": user_id, "team_id": team_id, "name": name, "deleted": False,
        "real_name": real_name or name, "tz": tz, "tz_label": now.tzname() or tz,
        "tz_offset": int(offset.total_seconds()) if offset else 0, "profile": profile,
        "is_admin": False, "is_owner": False, "is_bot": False, "is_app_user": False,
        "updated": int(time.time()),
    }


def _parse(request: BaseHTTPRequestHandler, body: bytes) -> tuple[Args, str | None]:
    """A Web API call's arguments (query, form or JSON) and its token (header or form)."""
    args: Args = dict(parse_qsl(urlsplit(request.path).query, keep_blank_values=True))
    content_type = request.headers.get_content_type()
    if content_type == "application/json" and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise SlackError("invalid_json")
        args.update(parsed)
    elif content_type == "application/x-www-form-urlencoded":
        args.update(parse_qsl(body.decode(), keep_blank_values=True))
    form_token = args.pop("token", None)
    authorization = request.headers.get("Authorization", "")
    token = authorization.removeprefix("Bearer ") if authorization else form_token
    for key in _JSON_FIELDS:
        if isinstance(args.get(key), str):
            # Unparsable text stays text; validation then answers the way Slack does.
            with contextlib.suppress(ValueError):
                args[key] = json.loads(args[key])
    return args, token


def _handler(fake: SlackApiFake) -> type[BaseHTTPRequestHandler]:
    """The request handler of `fake`'s server: /api/<method> and /response/<name>."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path.startswith("/response/"):
                status, headers, reply = fake._record_response_url(path, body)
            elif path.startswith("/api/"):
                status, headers, reply = fake._serve(path[len("/api/"):], self, body)
            else:
                status, headers, reply = 404, {"Content-Type": "text/plain"}, b"not found"
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: tests read `calls` instead

    return Handler


__all__ = ["Call", "SlackApiFake", "SlackError"]
