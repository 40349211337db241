"""What Slack sends an app, built and signed as Slack does, and posted to the app's events URL.

Slack signs each request: `X-Slack-Request-Timestamp` is the time in seconds, and
`X-Slack-Signature` is `v0=` and the hex HMAC-SHA256, keyed with the app's signing secret,
of `v0:<timestamp>:<body>` (bot.signing checks exactly that). Slash commands and
interactions are forms (an interaction is one field, `payload`, holding JSON); events are
JSON. The payloads carry the fields of Slack's own samples in tests/fakes/reference/slack/.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

Payload = dict[str, Any]
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
SLACK_ACK_TIMEOUT = 3.0  # Slack shows the person an error when the app takes longer
# Slack's deprecated verification token: sent, as Slack does, and checked by nobody.
_VERIFICATION_TOKEN = "playground-verification-token"  # noqa: S105
# Never through a proxy: the app is on this machine, and what is sent stays on it.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` of `body` sent at `timestamp` (seconds, as text)."""
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body,
                      hashlib.sha256).hexdigest()
    return f"v0={digest}"


class Team(Protocol):
    """Who the requests come from: the workspace and the app installed in it."""

    team_id: str
    team: str
    app_id: str
    bot_user_id: str


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class AppAnswer:
    """The app's HTTP answer."""

    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Payload | None:
        """The body as a JSON object (what bolt's ack(...) sends), or None."""
        try:
            parsed = json.loads(self.body)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()


class AppUnreachable(Exception):
    """The app did not answer at all (refused, reset, or not within the timeout)."""


class SignedSender:
    """Posts signed requests to one app's events URL, as Slack does."""

    def __init__(self, events_url: str, signing_secret: str,
                 timeout: float = SLACK_ACK_TIMEOUT) -> None:
        if not signing_secret:
            raise ValueError("the signing secret is empty: give the one jit-bot checks "
                             "(SLACK_SIGNING_SECRET)")
        if urllib.parse.urlsplit(events_url).scheme not in ("http", "https"):
            raise ValueError(f"jit-bot's events URL must be http(s)://...: {events_url!r}")
        self.events_url, self._secret, self._timeout = events_url, signing_secret, timeout

    def form(self, fields: dict[str, str]) -> AppAnswer:
        return self.post(urllib.parse.urlencode(fields).encode(), FORM)

    def interaction(self, payload: Payload) -> AppAnswer:
        return self.form({"payload": json.dumps(payload)})

    def event(self, payload: Payload) -> AppAnswer:
        return self.post(json.dumps(payload).encode(), JSON)

    def post(self, body: bytes, content_type: str) -> AppAnswer:
        timestamp = str(int(time.time()))
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": slack_signature(self._secret, timestamp, body),
                   "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked above)
            self.events_url, data=body, method="POST", headers=headers)
        try:
            with _DIRECT.open(request, timeout=self._timeout) as response:
                return AppAnswer(response.status, response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return AppAnswer(exc.code, exc.read())
        except (OSError, urllib.error.URLError) as exc:  # TimeoutError is an OSError
            raise AppUnreachable(f"jit-bot did not answer at {self.events_url} within "
                                 f"{self._timeout:g} s ({exc}); is it running?") from None


def _user(team: Team, person: Person) -> Payload:
    return {"id": person.id, "username": person.name.lower(), "name": person.name.lower(),
            "team_id": team.team_id}


def _common(team: Team, person: Person, kind: str, trigger_id: str) -> Payload:
    return {"type": kind, "team": {"id": team.team_id, "domain": team.team},
            "user": _user(team, person), "api_app_id": team.app_id,
            "token": _VERIFICATION_TOKEN, "trigger_id": trigger_id, "enterprise": None,
            "is_enterprise_install": False}


def slash_command(team: Team, person: Person, text: str, *, channel_id: str,
                  response_url: str, trigger_id: str, command: str = "/jit") -> dict[str, str]:
    """The form of a slash command typed in the person's DM with the app."""
    return {
        "token": _VERIFICATION_TOKEN, "team_id": team.team_id, "team_domain": team.team,
        "channel_id": channel_id, "channel_name": "directmessage", "user_id": person.id,
        "user_name": person.name.lower(), "command": command, "text": text,
        "api_app_id": team.app_id, "is_enterprise_install": "false",
        "response_url": response_url, "trigger_id": trigger_id,
    }


def block_actions(team: Team, person: Person, action: Payload, *, trigger_id: str,
                  container: Payload, message: Payload | None = None,
                  channel: Payload | None = None, view: Payload | None = None,
                  response_url: str | None = None) -> Payload:
    """A click (or a choice) on a message (`message`, `channel`, `response_url`) or on a
    view (`view`); `action` is the element's entry of `actions`."""
    payload = {**_common(team, person, "block_actions", trigger_id), "container": container,
               "actions": [{**action, "action_ts": f"{time.time():.6f}"}]}
    if view is not None:
        payload["view"] = view
        payload["state"] = view.get("state", {"values": {}})
    else:
        payload.update(channel=channel, message=message, response_url=response_url,
                       state={"values": {}})
    return payload


def view_submission(team: Team, person: Person, view: Payload, *, trigger_id: str) -> Payload:
    """`view` carries the inputs' values in `state.values`."""
    return {**_common(team, person, "view_submission", trigger_id), "view": view,
            "response_urls": []}


def view_closed(team: Team, person: Person, view: Payload) -> Payload:
    payload = _common(team, person, "view_closed", "")
    del payload["trigger_id"]  # a dismissal opens nothing
    return {**payload, "view": view, "is_cleared": False}


def app_home_opened(team: Team, person: Person, *, channel_id: str, view: Payload | None,
                    event_id: str) -> Payload:
    """The Events API callback Slack sends when the person opens the app's Home tab."""
    now = time.time()
    event: Payload = {"type": "app_home_opened", "user": person.id, "channel": channel_id,
                      "tab": "home", "event_ts": f"{now:.6f}"}
    if view is not None:
        event["view"] = view
    return {"token": _VERIFICATION_TOKEN, "team_id": team.team_id, "api_app_id": team.app_id,
            "event": event, "type": "event_callback", "event_id": event_id,
            "event_time": int(now), "authorizations": [{
                "enterprise_id": None, "team_id": team.team_id, "user_id": team.bot_user_id,
                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False, "event_context": f"4-{event_id}"}
