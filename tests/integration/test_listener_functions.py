"""The Slack listeners called directly, as plain functions: a recording `ack`, `respond` and
`later`, jit's real service on each database, the AWS provider against moto. What each
answers in the ack, and what it leaves for after it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.listeners import actions, commands, home, views, wired
from bot.listeners.answers import NO_SENDER
from jitcore.domain import Status
from jitcore.ports import SystemClock
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store
from tests.support.fixtures import RecordingNotifier
from tests.support.policies import APPROVER, REQUESTER, aws_policy

REQUEST = "ssh prod-db 20m from 203.0.113.7 fix replication"


@dataclass
class Responder:
    """Stands in for Bolt's `respond`: what was posted to the request's response_url."""

    response_url: str = "https://hooks.slack.com/commands/T0JITTEST/1/abc"
    answers: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, **answer: Any) -> None:
        self.answers.append(answer)


@dataclass
class Recorder:
    """Stands in for Bolt's ack and respond (Slack's side) and for jit-bot's `later`."""

    acks: list[dict[str, Any]] = field(default_factory=list)
    respond: Responder = field(default_factory=Responder)
    after: list[Callable[[], object]] = field(default_factory=list)

    def ack(self, **answer: Any) -> None:
        self.acks.append(answer)

    def later(self, work: Callable[[], object]) -> None:
        self.after.append(work)

    @property
    def responses(self) -> list[dict[str, Any]]:
        return self.respond.answers

    def run_after(self) -> None:
        work, self.after = self.after, []
        for job in work:
            job()

    @property
    def acked_text(self) -> str:
        assert len(self.acks) == 1, self.acks
        return str(self.acks[0].get("text", ""))


@pytest.fixture
def service(aws_group: Any, store: Store) -> JitService:
    return JitService(store, aws_policy(aws_group.group_id), {"aws": AwsProvider()},
                      RecordingNotifier(), SystemClock())


@pytest.fixture
def slack() -> Recorder:
    return Recorder()


def slash(service: JitService, slack: Recorder, text: str, user: str | None = REQUESTER,
          ) -> None:
    command = {"command": "/jit", "text": text, "trigger_id": "1.2.3"}
    if user is not None:
        command["user_id"] = user
    commands.jit_command(slack.ack, command, None, slack.respond,  # type: ignore[arg-type]
                         service=service, later=slack.later)


def test_a_request_is_recorded_before_the_ack_and_leaves_nothing_after(
        service: JitService, slack: Recorder) -> None:
    slash(service, slack, REQUEST)
    assert "Request #1 is waiting for an approver" in slack.acked_text
    grant = service.get(1)
    assert (grant.status, grant.requester, grant.source) == (
        Status.PENDING, REQUESTER, "203.0.113.7/32")
    assert slack.after == []


def test_a_command_without_a_sender_does_nothing(service: JitService, slack: Recorder) -> None:
    slash(service, slack, REQUEST, user=None)
    assert NO_SENDER in slack.acked_text
    assert slack.after == []
    assert service.grants() == []


def test_a_parse_error_is_answered_in_the_ack(service: JitService, slack: Recorder) -> None:
    slash(service, slack, "revoke abc")
    assert "'abc' is not a grant id" in slack.acked_text
    assert slack.after == []


def test_cancel_acks_at_once_and_answers_after(service: JitService, slack: Recorder) -> None:
    slash(service, slack, REQUEST)
    slack.acks.clear()
    slash(service, slack, "cancel #1")
    assert slack.acks == [{}]  # the empty ack: the answer follows
    assert service.get(1).status is Status.PENDING  # nothing happens before `later` runs it
    slack.run_after()
    assert service.get(1).status is Status.CANCELLED
    assert [r["text"] for r in slack.responses] == ["#1 cancelled"]
    assert slack.responses[0]["response_type"] == "ephemeral"


def test_a_tampered_button_is_answered_after_the_ack(service: JitService,
                                                     slack: Recorder) -> None:
    body = {"user": {"id": APPROVER}, "response_url": slack.respond.response_url,
            "actions": [{"action_id": "jit_approve", "value": "2;1"}]}
    actions.approve(slack.ack, body, None, slack.respond,  # type: ignore[arg-type]
                    service=service, later=slack.later)
    assert slack.acks == [{}]
    slack.run_after()
    assert len(slack.responses) == 1
    assert slack.responses[0]["text"] == "`2;1` is not a request number"


def test_a_deny_without_a_sender_keeps_the_modal_open(service: JitService,
                                                      slack: Recorder) -> None:
    view = {"private_metadata": "1",
            "state": {"values": {"reason": {"reason": {"value": "no"}}}}}
    views.deny_submitted(slack.ack, {}, view, service=service)  # type: ignore[arg-type]
    assert slack.acks == [{"response_action": "errors", "errors": {"reason": NO_SENDER}}]


def test_app_home_of_nobody_is_not_published(service: JitService, slack: Recorder) -> None:
    home.home_opened({"type": "app_home_opened", "tab": "home"}, None,  # type: ignore[arg-type]
                     service=service, later=slack.later)
    assert slack.after == []


def test_wired_passes_what_bolt_names_and_what_jit_gives() -> None:
    seen: dict[str, object] = {}

    def listener(ack: object, body: object, *, service: object) -> None:
        seen.update(ack=ack, body=body, service=service)

    bolt_view = wired(listener, service="the service")
    assert bolt_view.__wrapped__ is listener  # type: ignore[attr-defined]  # Bolt reads names here
    bolt_view(ack="ack", body="body")
    assert seen == {"ack": "ack", "body": "body", "service": "the service"}
