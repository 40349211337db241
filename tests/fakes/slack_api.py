"""A local stand-in for the Slack Web API, the way moto stands in for AWS.

jit's real `slack_sdk.WebClient` (and slack_bolt's `App`) talk to it over HTTP:

    with SlackApiFake() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.api_url)
        client.chat_postMessage(channel="C0APPROVE", text="hi")
        assert slack.messages("C0APPROVE")[0]["text"] == "hi"

Every call is recorded (`calls`, `calls_to`, `wait_for`), messages are kept per channel
(`messages`, `thread`), and answers are shaped after Slack's own (see
tests/fakes/reference/slack/). Errors are `{"ok": false, "error": ...}` with HTTP 200, rate
limits HTTP 429 with `Retry-After`, exactly as Slack sends them. `response_url(name)`
gives a URL that records what bolt's `respond()` posts to it, as method "response_url".
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
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

from tests.fakes.local_server import LocalServer

Args = dict[str, Any]
# Fields Slack accepts as JSON text inside a form-encoded body.
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata")
MAX_BLOCKS = 50  # per message; a view may hold 100
MAX_VIEW_BLOCKS = 100
MAX_TEXT = 40_000
MAX_SECTION_TEXT = 3_000  # a section's text object (Block Kit reference)
# Undocumented: Slack answers msg_blocks_too_long once a message's blocks hold about this
# many characters of text in all (reported in slackapi/bolt-js#2509).
MAX_BLOCKS_TEXT = 13_200
_TS_EPOCH = 1_700_000_000


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


class SlackError(Exception):
    """An `{"ok": false, "error": ...}` answer, raised inside a method handler."""

    def __init__(self, error: str, *messages: str) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages


@dataclass
class _Fault:
    method: str | None  # None: any method
    remaining: int
    error: str
    retry_after: int | None = None  # set: answer HTTP 429


def _truthy(value: object) -> bool:
    return value in (True, 1, "1", "true", "True")


def _check_blocks(blocks: object, limit: int, error: str) -> None:
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    if len(blocks) > limit:
        raise SlackError(error, f"[ERROR] no more than {limit} items allowed "
                                "[json-pointer:/blocks]")
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not block.get("type"):
            raise SlackError(error, f"[ERROR] missing required field: type "
                                    f"[json-pointer:/blocks/{index}/type]")
        text = block.get("text")
        if (block["type"] == "section" and isinstance(text, dict)
                and len(str(text.get("text", ""))) > MAX_SECTION_TEXT):
            raise SlackError(error, f"[ERROR] must be less than {MAX_SECTION_TEXT + 1} "
                                    f"characters [json-pointer:/blocks/{index}/text/text]")


def _text_in(value: object) -> int:
    """The characters of every text string in some blocks."""
    if isinstance(value, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else _text_in(v)
                   for k, v in value.items())
    if isinstance(value, list):
        return sum(_text_in(item) for item in value)
    return 0


class SlackApiFake(LocalServer):
    """A threaded Slack Web API on 127.0.0.1; use as a context manager. Thread-safe."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        *,
        team_id: str = "T0JITTEST",
        team: str = "jit-test",
        bot_user_id: str = "U0JITBOT",
        bot_id: str = "B0JITBOT",
        app_id: str = "A0JITAPP",
    ) -> None:
        self.bot_token = bot_token
        self.team_id, self.team = team_id, team
        self.bot_user_id, self.bot_id, self.app_id = bot_user_id, bot_id, app_id
        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._outage: tuple[float, int] | None = None  # (until, HTTP status)
        self._broken_channels: dict[str, str] = {}  # channel id -> error
        self._counter = 0
        self._messages: dict[str, list[Args]] = {}
        self._ephemerals: list[Args] = []
        self._dms: dict[str, str] = {}  # user id (or sorted ids joined by ",") -> channel id
        self._views: dict[str, Args] = {}
        self._homes: dict[str, str] = {}  # user id -> view id
        self._usergroups: dict[str, Args] = {}
        self._users: dict[str, Args] = {}
        self._methods: dict[str, Callable[[Args], Args]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "conversations.open": self._open_conversation,
            "views.open": self._open_view,
            "views.update": self._update_view,
            "views.publish": self._publish_view,
            "usergroups.list": self._list_usergroups,
            "usergroups.users.list": self._list_usergroup_users,
            "users.info": self._user_info,
        }
        super().__init__(self._handler())

    # -- lifecycle -------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The `base_url` for `WebClient`."""
        return f"{self.url}/api/"

    def response_url(self, name: str = "default") -> str:
        """A response_url for interaction payloads; posts to it are recorded."""
        return f"{self.url}/response/{name}"

    # -- configuration -----------------------------------------------------------------

    def set_usergroup(self, group_id: str, handle: str, members: list[str],
                      name: str | None = None) -> None:
        now = int(time.time())
        with self._lock:
            self._usergroups[group_id] = {
                "id": group_id, "team_id": self.team_id, "is_usergroup": True,
                "name": name or handle, "description": "", "handle": handle,
                "is_external": False, "date_create": now, "date_update": now, "date_delete": 0,
                "auto_type": None, "created_by": self.bot_user_id, "updated_by": self.bot_user_id,
                "deleted_by": None, "prefs": {"channels": [], "groups": []},
                "user_count": len(members), "users": list(members),
            }

    def add_user(self, user_id: str, name: str, real_name: str | None = None, *,
                 tz: str = "Europe/London", email: str | None = None) -> None:
        zone = ZoneInfo(tz)
        now = datetime.now(zone)
        offset = now.utcoffset()
        profile: Args = {"real_name": real_name or name, "display_name": name}
        if email:
            profile["email"] = email
        with self._lock:
            self._users[user_id] = {
                "id": user_id, "team_id": self.team_id, "name": name, "deleted": False,
                "real_name": real_name or name, "tz": tz, "tz_label": now.tzname() or tz,
                "tz_offset": int(offset.total_seconds()) if offset else 0, "profile": profile,
                "is_admin": False, "is_owner": False, "is_bot": False, "is_app_user": False,
                "updated": int(time.time()),
            }

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
            self._broken_channels[channel] = error

    def mend_channel(self, channel: str) -> None:
        with self._lock:
            self._broken_channels.pop(channel, None)

    def fail_next(self, method: str, error: str) -> None:
        """The next call to `method` answers `{"ok": false, "error": error}`."""
        with self._lock:
            self._faults.append(_Fault(method, 1, error))

    # -- reading back ------------------------------------------------------------------

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
            return copy.deepcopy(self._messages.get(self._resolve(channel), []))

    def thread(self, channel: str, ts: str) -> list[Args]:
        """The parent message `ts` followed by its replies, oldest first."""
        stored = self.messages(channel)
        parent = [m for m in stored if m["ts"] == ts]
        if not parent:
            raise AssertionError(f"no message {ts} in {channel}; it holds "
                                 f"{[m['ts'] for m in stored]}")
        return parent + [m for m in stored if m["thread_ts"] == ts and m["ts"] != ts]

    def ephemerals(self, user: str | None = None) -> list[Args]:
        with self._lock:
            return [copy.deepcopy(e) for e in self._ephemerals if user in (None, e["user"])]

    def home(self, user: str) -> Args | None:
        """The home tab last published for `user`, or None."""
        with self._lock:
            view_id = self._homes.get(user)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def view(self, view_id: str) -> Args:
        with self._lock:
            return copy.deepcopy(self._views[view_id])

    def dm_channel(self, user: str) -> str:
        """The DM channel id for `user` (the same one conversations.open answers)."""
        with self._lock:
            return self._dm_for([user])[0]

    # -- HTTP --------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

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

    def _serve(self, method: str, request: BaseHTTPRequestHandler,
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        status, headers, answer = 200, {"Content-Type": "application/json; charset=utf-8"}, {}
        args: Args = {}
        token: str | None = None
        with self._lock:
            if self._outage is not None and time.monotonic() < self._outage[0]:
                outage_status = self._outage[1]
                with contextlib.suppress(SlackError):
                    args, token = self._parse(request, body)
                self._calls.append(Call(method, args, token, time.monotonic(), outage_status,
                                        "outage"))
                return (outage_status, {"Content-Type": "text/html"},
                        b"<html><body><h1>Service Unavailable</h1></body></html>")
            try:
                args, token = self._parse(request, body)
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

    def _parse(self, request: BaseHTTPRequestHandler, body: bytes) -> tuple[Args, str | None]:
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

    def _record_response_url(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        args = json.loads(body) if body else {}
        with self._lock:
            self._calls.append(Call("response_url", {"url": path, **args}, None, time.monotonic()))
        return 200, {"Content-Type": "text/plain"}, b"ok"

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in (None, method):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # -- helpers (called with the lock held) -------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        digest = hashlib.sha256(f"{prefix}{self._counter}".encode()).hexdigest()
        return prefix + digest[:10].upper()

    def _next_ts(self) -> str:
        self._counter += 1
        micros = self._counter * 100
        return f"{_TS_EPOCH + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _dm_for(self, users: list[str]) -> tuple[str, bool]:
        """The DM (or group DM) channel for `users`, and whether it already existed."""
        key = ",".join(sorted(users))
        existed = key in self._dms
        if not existed:
            self._dms[key] = self._new_id("D" if len(users) == 1 else "G")
        return self._dms[key], existed

    def _resolve(self, channel: str) -> str:
        """Slack posts to a user id (U.../W...) in the DM with that user."""
        if channel[:1] in ("U", "W"):
            return self._dm_for([channel])[0]
        return channel

    def _channel_arg(self, args: Args) -> str:
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            raise SlackError("channel_not_found")
        if channel in self._broken_channels:
            raise SlackError(self._broken_channels[channel])
        return self._resolve(channel)

    def _check_content(self, args: Args) -> None:
        text = args.get("text")
        if not text and not args.get("blocks") and not args.get("attachments"):
            raise SlackError("no_text")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        if "blocks" in args:
            _check_blocks(args["blocks"], MAX_BLOCKS, "invalid_blocks")
            if _text_in(args["blocks"]) > MAX_BLOCKS_TEXT:
                raise SlackError("msg_blocks_too_long")

    def _find(self, channel: str, ts: object) -> Args:
        for stored in self._messages.get(channel, []):
            if stored["ts"] == ts:
                return stored
        raise SlackError("message_not_found")

    def _message_body(self, stored: Args) -> Args:
        body: Args = {"type": "message", "text": stored["text"], "user": self.bot_user_id,
                      "bot_id": self.bot_id}
        for key in ("blocks", "attachments", "thread_ts"):
            if stored.get(key) is not None:
                body[key] = copy.deepcopy(stored[key])
        return body

    # -- methods -----------------------------------------------------------------------

    def _auth_test(self, args: Args) -> Args:
        return {"url": f"https://{self.team}.slack.com/", "team": self.team, "user": "jit",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _post_message(self, args: Args) -> Args:
        channel = self._channel_arg(args)
        self._check_content(args)
        ts = self._next_ts()
        stored: Args = {
            "channel": channel, "ts": ts, "thread_ts": args.get("thread_ts") or None,
            "text": args.get("text") or "", "blocks": args.get("blocks"),
            "attachments": args.get("attachments"), "args": copy.deepcopy(args), "edits": [],
        }
        self._messages.setdefault(channel, []).append(stored)
        return {"channel": channel, "ts": ts, "message": {**self._message_body(stored), "ts": ts}}

    def _update(self, args: Args) -> Args:
        channel = self._channel_arg(args)
        stored = self._find(channel, args.get("ts"))
        self._check_content(args)
        for key in ("text", "blocks", "attachments"):  # omitted fields keep their old value
            if key in args:
                stored[key] = args[key]
        stored["edits"].append(copy.deepcopy(args))
        return {"channel": channel, "ts": stored["ts"], "text": stored["text"],
                "message": self._message_body(stored)}

    def _post_ephemeral(self, args: Args) -> Args:
        channel = self._channel_arg(args)
        if not args.get("user"):
            raise SlackError("user_not_in_channel")
        self._check_content(args)
        ts = self._next_ts()
        self._ephemerals.append({
            "channel": channel, "user": args["user"], "ts": ts, "text": args.get("text") or "",
            "blocks": args.get("blocks"), "args": copy.deepcopy(args),
        })
        return {"message_ts": ts}

    def _open_conversation(self, args: Args) -> Args:
        users = args.get("users") or ""
        members = users if isinstance(users, list) else [u for u in users.split(",") if u]
        if not members:
            raise SlackError("users_list_not_supplied")
        channel_id, existed = self._dm_for(members)
        channel: Args = {"id": channel_id}
        if _truthy(args.get("return_im")):
            channel.update({
                "created": _TS_EPOCH, "is_archived": False, "is_im": len(members) == 1,
                "is_org_shared": False, "user": members[0], "last_read": "0000000000.000000",
                "unread_count": 0, "unread_count_display": 0, "is_open": True, "priority": 0,
                "context_team_id": self.team_id,
            })
        return {"no_op": existed, "already_open": existed, "channel": channel}

    def _store_view(self, submitted: object, kinds: tuple[str, ...], view_id: str | None = None,
                    root_view_id: str | None = None) -> Args:
        if not isinstance(submitted, dict) or submitted.get("type") not in kinds:
            raise SlackError("invalid_arguments",
                             f"[ERROR] must be a view of type {' or '.join(kinds)} "
                             "[json-pointer:/view/type]")
        if submitted["type"] == "modal" and not submitted.get("title"):
            raise SlackError("invalid_arguments",
                             "[ERROR] missing required field: title [json-pointer:/view/title]")
        blocks = submitted.get("blocks", [])
        _check_blocks(blocks, MAX_VIEW_BLOCKS, "invalid_arguments")
        view_id = view_id or self._new_id("V")
        view: Args = {
            "id": view_id, "team_id": self.team_id, "type": submitted["type"],
            "blocks": copy.deepcopy(blocks),
            "private_metadata": submitted.get("private_metadata", ""),
            "callback_id": submitted.get("callback_id", ""),
            "external_id": submitted.get("external_id", ""), "state": {"values": {}},
            "hash": f"{_TS_EPOCH + self._counter}.{self._new_id('')[:8].lower()}",
            "clear_on_close": bool(submitted.get("clear_on_close", False)),
            "notify_on_close": bool(submitted.get("notify_on_close", False)),
            "root_view_id": root_view_id or view_id, "previous_view_id": None,
            "app_id": self.app_id, "app_installed_team_id": self.team_id, "bot_id": self.bot_id,
        }
        for key in ("title", "submit", "close", "submit_disabled"):
            if key in submitted:
                view[key] = copy.deepcopy(submitted[key])
        self._views[view_id] = view
        return {"view": copy.deepcopy(view)}

    def _open_view(self, args: Args) -> Args:
        if not args.get("trigger_id"):
            raise SlackError("invalid_arguments", "[ERROR] missing required field: trigger_id")
        return self._store_view(args.get("view"), ("modal",))

    def _update_view(self, args: Args) -> Args:
        external_id = args.get("external_id")
        view_id = args.get("view_id") or next(
            (v["id"] for v in self._views.values() if external_id and
             v["external_id"] == external_id), None)
        if view_id not in self._views:
            raise SlackError("not_found")
        current = self._views[view_id]
        if args.get("hash") and args["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        return self._store_view(args.get("view"), (current["type"],), view_id,
                                current["root_view_id"])

    def _publish_view(self, args: Args) -> Args:
        user = args.get("user_id")
        if not user:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: user_id")
        published = self._store_view(args.get("view"), ("home",), self._homes.get(user))
        self._homes[user] = published["view"]["id"]
        return published

    def _list_usergroups(self, args: Args) -> Args:
        groups = [copy.deepcopy(group) for group in self._usergroups.values()]
        if not _truthy(args.get("include_users")):
            for group in groups:
                del group["users"]
        return {"usergroups": groups}

    def _list_usergroup_users(self, args: Args) -> Args:
        group = self._usergroups.get(args.get("usergroup") or "")
        if group is None:
            raise SlackError("no_such_subteam")
        return {"users": list(group["users"])}

    def _user_info(self, args: Args) -> Args:
        user = self._users.get(args.get("user") or "")
        if user is None:
            raise SlackError("user_not_found")
        return {"user": copy.deepcopy(user)}


__all__ = ["Call", "SlackApiFake", "SlackError"]
