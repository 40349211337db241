"""The playground page's JSON API: what each person sees in the stand-in, and what they do.

Each action becomes the signed request Slack would send jit-bot (slack_requests), with a
trigger id and a response_url the stand-in issued for that person, so that the modal jit
opens and the answers it posts land where Slack would put them. What the page sends is
checked against what the person can see: a click names an element of a message or view on
their screen, a submission their open modal. A bad request raises `PageError` (4xx) and
changes nothing; jit-bot answering an error, or not at all, is a 502.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bot.playground import slack_requests as payloads
from bot.playground.slack_requests import AppAnswer, AppUnreachable, Person, SignedSender
from bot.playground.slack_standin import SlackApiFake
from bot.playground.views import (
    ViewProblem,
    find_element,
    missing_required,
    page_message,
    page_view,
    selected_action,
    state_values,
    thread_messages,
)

Payload = dict[str, Any]
RulesSource = Callable[[], Mapping[str, Any]]

log = logging.getLogger("jit.demo.page")

REQUESTER = Person("U0REQUESTER", "Riley", "requester")
APPROVER = Person("U0APPROVER", "Avery", "approver")
SOC = Person("U0SOC", "Sam", "soc")
PEOPLE = (REQUESTER, APPROVER, SOC)
APPROVALS_CHANNEL, AUDIT_CHANNEL = "C0APPROVALS", "C0AUDIT"
CHANNELS = {APPROVALS_CHANNEL: "jit-approvals", AUDIT_CHANNEL: "jit-audit"}
COMMAND = "/jit"
MAX_COMMAND_TEXT = 4000


class PageError(Exception):
    """A request the page should not have sent (4xx), or jit-bot failing it (502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _text(body: Payload, name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise PageError(400, f"{name!r} must be a non-empty string")
    return value


def _command_text(typed: str) -> str:
    """What follows `/jit`, as Slack sends it; the page may send it with `/jit` or without."""
    text = typed.strip()
    first = text.split(maxsplit=1)[0] if text else ""
    if first == COMMAND:
        text = text[len(COMMAND):].strip()
    elif first.startswith("/"):
        raise PageError(400, f"{first[:50]} is not a command here: jit's is {COMMAND}")
    if len(text) > MAX_COMMAND_TEXT:
        raise PageError(400, f"the command is longer than {MAX_COMMAND_TEXT} characters")
    return text


def _bot_failed(answer: AppAnswer) -> PageError:
    return PageError(502, f"jit-bot answered HTTP {answer.status}: {answer.text()[:300]}")


class PageApi:
    """The endpoints' work; `Workspace` serves it."""

    def __init__(self, standin: SlackApiFake, sender: SignedSender, *,
                 people: Sequence[Person] = PEOPLE, channels: Mapping[str, str] = CHANNELS,
                 rules_source: RulesSource | None = None, policy_text: str = "") -> None:
        self.slack, self._sender = standin, sender
        self.people = {person.id: person for person in people}
        self._channels = dict(channels)
        self._rules_source = rules_source
        self._policy_text = policy_text
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._rules_seen = ""
        self._rules_changes = 0
        for person in people:
            standin.add_user(person.id, person.name.lower(), person.name)

    # -- reading ---------------------------------------------------------------------

    def state(self) -> Payload:
        """Everything the page shows. `version` is read first: a change made while the rest
        is read bumps it again, and the next poll sees it."""
        rules = self._rules()
        with self._lock:
            version = self.slack.version + self._rules_changes
        shown = [*self._channels, *(c for c in self.slack.channels()
                                    if c not in self._channels and c[:1] not in ("D", "G"))]
        return {
            "version": version,
            "people": [{"id": p.id, "name": p.name, "role": p.role}
                       for p in self.people.values()],
            "channels": [{"id": c, "name": self._channels.get(c, c),
                          "messages": thread_messages(self.slack.messages(c))} for c in shown],
            "dms": {p: thread_messages(self.slack.messages(p)) for p in self.people},
            "ephemerals": {p: [page_message(e, []) for e in self.slack.ephemerals(p)]
                           for p in self.people},
            "home": {p: page_view(self.slack.home(p)) for p in self.people},
            "modal": {p: page_view(self.slack.modal(p)) for p in self.people},
            **rules, "policy": self._policy_text,
        }

    def _rules(self) -> Payload:
        """The security group and its inbound rules; a failure to read them is shown, and
        the next poll tries again."""
        found: Payload = {"group": None, "rules": []}
        error: str | None = None
        if self._rules_source is not None:
            try:
                found = dict(self._rules_source())
            except Exception as exc:  # noqa: BLE001 - shown on the page, not acted on
                log.warning("could not read the security group's rules: %s", exc)
                error = f"could not read the security group's rules: {exc}"
        shown = {"group": found.get("group"), "rules": list(found.get("rules") or []),
                 "rules_error": error}
        seen = json.dumps(shown, sort_keys=True, default=str)
        with self._lock:
            if seen != self._rules_seen:
                self._rules_seen, self._rules_changes = seen, self._rules_changes + 1
        return shown

    def _person(self, body: Payload) -> Person:
        user = body.get("user")
        if not isinstance(user, str) or user not in self.people:
            raise PageError(400, f"unknown user {user!r}: the playground's people are "
                                 f"{', '.join(self.people)}")
        return self.people[user]

    def _modal(self, person: Person, body: Payload) -> Payload:
        view_id = _text(body, "view_id")
        modal = self.slack.modal(person.id)
        if modal is None or modal["id"] != view_id:
            raise PageError(404, f"no modal {view_id} is open for {person.id}")
        return modal

    def _send(self, send: Callable[[], AppAnswer]) -> AppAnswer:
        try:
            answer = send()
        except AppUnreachable as exc:
            raise PageError(502, str(exc)) from None
        if not answer.ok:
            raise _bot_failed(answer)
        return answer

    # -- doing -----------------------------------------------------------------------

    def command(self, body: Payload) -> Payload:
        """`/jit <text>` typed by the person in their DM with jit (`text` with or without the
        `/jit`); what jit answers at once is shown to them alone, as Slack shows it."""
        person = self._person(body)
        text = _command_text(_text(body, "text", required=False))
        channel = self.slack.dm_channel(person.id)
        form = payloads.slash_command(
            self.slack, person, text, command=COMMAND, channel_id=channel,
            response_url=self.slack.response_url(f"command-{next(self._numbers)}",
                                                 user=person.id, channel=channel),
            trigger_id=self.slack.issue_trigger(person.id))
        answer = self._send(lambda: self._sender.form(form))
        reply = answer.json()
        if reply is not None and (reply.get("text") or reply.get("blocks")):
            blocks = reply.get("blocks")
            self.slack.add_ephemeral(channel, person.id, str(reply.get("text") or ""),
                                     blocks if isinstance(blocks, list) else None)
        elif reply is None and answer.text():  # Slack shows a plain-text answer as it is
            self.slack.add_ephemeral(channel, person.id, answer.text())
        return {"ok": True}

    def action(self, body: Payload) -> Payload:
        """A click on a button, or a choice in a select, of a message or a view."""
        person = self._person(body)
        container = body.get("container")
        if not isinstance(container, dict) or container.get("type") not in ("message", "view"):
            raise PageError(400, "'container' must be {\"type\": \"message\", \"channel\", "
                                 "\"ts\"} or {\"type\": \"view\", \"view_id\"}")
        action_id = _text(body, "action_id")
        block_id = _text(body, "block_id", required=False)
        trigger = self.slack.issue_trigger(person.id)
        if container["type"] == "view":
            view = self._visible_view(person, container)
            action = self._action(view["blocks"], block_id, action_id, body, "that view")
            view["state"] = {"values": state_values(view, {})}
            payload = payloads.block_actions(
                self.slack, person, action, trigger_id=trigger, view=view,
                container={"type": "view", "view_id": view["id"]})
        else:
            payload = self._message_action(person, container, block_id, action_id, body,
                                           trigger)
        self._send(lambda: self._sender.interaction(payload))
        return {"ok": True}

    def _visible_view(self, person: Person, container: Payload) -> Payload:
        view_id = container.get("view_id")
        for view in (self.slack.modal(person.id), self.slack.home(person.id)):
            if view is not None and view["id"] == view_id:
                return view
        raise PageError(404, f"no view {view_id!r} is open for {person.id} (their modal or "
                             "App Home)")

    def _message_action(self, person: Person, container: Payload, block_id: str,
                        action_id: str, body: Payload, trigger: str) -> Payload:
        channel, ts = container.get("channel"), container.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            raise PageError(400, "a message container needs 'channel' and 'ts' (strings)")
        if channel[:1] in ("D", "G") and channel != self.slack.dm_channel(person.id):
            raise PageError(404, f"{channel} is not {person.id}'s conversation with jit")
        message = self.slack.message_body(channel, ts)
        ephemeral = next((e for e in self.slack.ephemerals(person.id)
                          if e["ts"] == ts and e["channel"] == channel), None)
        if message is None and ephemeral is None:
            raise PageError(404, f"no message {ts} in {channel} that {person.id} can see")
        blocks = (message or ephemeral or {}).get("blocks") or []
        action = self._action(blocks, block_id, action_id, body, "that message")
        name = f"action-{next(self._numbers)}"
        return payloads.block_actions(
            self.slack, person, action, trigger_id=trigger,
            container={"type": "message", "message_ts": ts, "channel_id": channel,
                       "is_ephemeral": message is None},
            message=message, channel={"id": channel, "name": self._channels.get(channel, "")},
            response_url=self.slack.response_url(
                name, user=person.id, channel=channel,
                message_ts=ts if message is not None else None))

    @staticmethod
    def _action(blocks: list[Any], block_id: str, action_id: str, body: Payload,
                where: str) -> Payload:
        found = find_element(blocks, block_id, action_id)
        if found is None:
            raise PageError(404, f"no element {action_id!r} in block {block_id or '(any)'!r} "
                                 f"of {where}")
        try:
            return selected_action(*found, body)
        except ViewProblem as exc:
            raise PageError(400, str(exc)) from None

    def submit(self, body: Payload) -> Payload:
        """Submit the person's modal with the values typed; jit's refusal keeps it open."""
        person = self._person(body)
        view = self._modal(person, body)
        values = body.get("values", {})
        if not isinstance(values, dict):
            raise PageError(400, "'values' must be {block_id: {action_id: {type, ...}}}")
        try:
            view["state"] = {"values": state_values(view, values)}
        except ViewProblem as exc:
            raise PageError(400, str(exc)) from None
        if missing := missing_required(view):  # Slack's client stops it being sent
            return {"ok": False, "errors": missing}
        payload = payloads.view_submission(self.slack, person, view,
                                        trigger_id=self.slack.issue_trigger(person.id))
        reply = self._send(lambda: self._sender.interaction(payload)).json() or {}
        action = reply.get("response_action")
        if action == "errors":
            errors = reply.get("errors")
            return {"ok": False, "errors": errors if isinstance(errors, dict) else {}}
        if action not in (None, "clear"):
            raise PageError(502, f"jit-bot answered response_action {action!r}, which the "
                                 "playground does not show")
        if (self.slack.modal(person.id) or {}).get("id") == view["id"]:
            self.slack.close_modal(person.id)
        return {"ok": True}

    def close(self, body: Payload) -> Payload:
        """Dismiss the person's modal; jit hears of it only if the view asked to."""
        person = self._person(body)
        view = self._modal(person, body)
        self.slack.close_modal(person.id)
        if view.get("notify_on_close"):
            payload = payloads.view_closed(self.slack, person, view)
            self._send(lambda: self._sender.interaction(payload))
        return {"ok": True}

    def home(self, body: Payload) -> Payload:
        """The person opens jit's App Home tab: Slack tells jit with `app_home_opened`."""
        person = self._person(body)
        payload = payloads.app_home_opened(
            self.slack, person, channel_id=self.slack.dm_channel(person.id),
            view=self.slack.home(person.id), event_id=f"Ev{next(self._numbers):08d}PLAY")
        self._send(lambda: self._sender.event(payload))
        return {"ok": True}
