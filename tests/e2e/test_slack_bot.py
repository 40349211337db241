"""jit-bot as a process, in HTTP mode, against moto's server and the Slack Web API fake:
signed slash command -> approval card -> Approve click -> rule open -> expiry -> closed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.hanging import HangingServer
from tests.fakes.slack_api import SlackApiFake
from tests.support.aws import jit_rules
from tests.support.policies import write_bot_policy

SECRET = "e2e-signing-secret"
BOT_TOKEN = "xoxb-test"
APPROVALS, AUDIT = "C0APPROVE", "C0AUDIT"
ALICE, BOB = "U0ALICE", "U0BOB"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signed_post(url: str, body: bytes, *, secret: str = SECRET, age: float = 0,
                content_type: str = "application/x-www-form-urlencoded") -> tuple[int, str]:
    timestamp = str(int(time.time() - age))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body,
                      hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Bot:
    def __init__(self, url: str, slack: SlackApiFake, proc: subprocess.Popen[str]) -> None:
        self.url, self.slack, self.proc = url, slack, proc

    def command(self, user: str, text: str, **signing: Any) -> tuple[int, str]:
        body = urllib.parse.urlencode({
            "token": "unused", "team_id": "T0JITTEST", "channel_id": "C0GENERAL",
            "user_id": user, "user_name": user.lower(), "command": "/jit", "text": text,
            "response_url": self.slack.response_url(f"cmd-{user}"),
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        }).encode()
        return signed_post(self.url, body, **signing)

    def click(self, user: str, action_id: str, grant_id: int) -> tuple[int, str]:
        payload = {
            "type": "block_actions", "team": {"id": "T0JITTEST"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0JITTEST"},
            "api_app_id": "A0JITAPP", "token": "unused", "trigger_id": "1.2.3",
            "container": {"type": "message", "channel_id": APPROVALS,
                          "message_ts": "1700000000.000100"},
            "channel": {"id": APPROVALS}, "message": {"ts": "1700000000.000100", "text": ""},
            "response_url": self.slack.response_url(f"click-{user}"),
            "actions": [{"type": "button", "action_id": action_id,
                         "block_id": f"jit_decide:{grant_id}", "value": str(grant_id),
                         "action_ts": str(time.time())}],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return signed_post(self.url, body)


@contextmanager
def running_bot(aws_group: Any, tmp_path: Path, env: dict[str, str] | None = None,
                **target: Any) -> Iterator[Bot]:
    config = write_bot_policy(tmp_path / "jit.yaml", aws_group.group_id, **target)
    port = free_port()
    with SlackApiFake(bot_token=BOT_TOKEN) as slack:
        bot_env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                   "SLACK_API_URL": slack.api_url, "JIT_HTTP_PORT": str(port),
                   "JIT_CONFIG": str(config),
                   "JIT_DATABASE_URL": f"sqlite:///{tmp_path}/jit.db", **(env or {})}
        bot_env.pop("SLACK_APP_TOKEN", None)
        proc = subprocess.Popen([sys.executable, "-m", "bot.main"], env=bot_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            def listening() -> bool:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0
            wait_until(listening, 20, "jit-bot to listen")
            yield Bot(f"http://127.0.0.1:{port}/slack/events", slack, proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, output
        assert "Traceback" not in output, output
        for secret in (BOT_TOKEN, SECRET):
            assert secret not in output


@pytest.fixture
def bot(aws_group: Any, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(aws_group, tmp_path) as bot:
        yield bot


def test_request_approve_open_expire(bot: Bot, aws_group: Any) -> None:
    slack = bot.slack
    slack.rate_limit_next(1, retry_after=1, method="chat.postMessage")  # Slack says 429 once
    status, body = bot.command(
        ALICE, "ssh prod-db 20s from 203.0.113.7 fix <!channel> <@U123> <https://evil|click> r")
    assert status == 200 and "#1" in body

    card_call = slack.wait_for(lambda c: c.method == "chat.postMessage"
                               and c.args.get("channel") == APPROVALS, timeout=10)[0]
    actions = [e for b in card_call.args["blocks"] if b["type"] == "actions"
               for e in b["elements"]]
    assert {a["action_id"] for a in actions} == {"jit_approve", "jit_deny"}
    assert "<!channel>" not in json.dumps(card_call.args)
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []

    status, _ = bot.click(BOB, "jit_approve", 1)
    assert status == 200
    rules = wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 10,
                       "the rule to open")
    assert rules[0]["CidrIpv4"] == "203.0.113.7/32" and rules[0]["FromPort"] == 22

    wait_until(lambda: not jit_rules(aws_group.ec2, aws_group.group_id), 40,
               "the rule to close at expiry")
    parent = slack.messages(AUDIT)[0]
    wait_until(lambda: len(slack.thread(AUDIT, parent["ts"])) >= 7, 10, "the audit thread")
    lines = [m["text"] for m in slack.thread(AUDIT, parent["ts"])]
    kinds = [line.split()[2] for line in lines]
    assert kinds == ["requested", "approved", "opening", "opened", "expiring", "closing",
                     "closed"]
    assert all(line.startswith("jit #1 ") for line in lines)
    assert "fix @channel @U123 click r" in lines[0]  # the reason, as plain text

    wait_until(lambda: len(slack.messages(ALICE)) >= 4, 10, "the closing DM")
    dms = [m["text"] + json.dumps(m["blocks"]) for m in slack.messages(ALICE)]
    assert len(dms) == 4
    assert "approved" in dms[0].lower() and "is open" in dms[1].lower()
    assert '"action_id": "jit_extend"' in dms[2]  # the warning before expiry
    assert "established" in dms[3].lower()
    everything = json.dumps([c.args for c in slack.calls])
    for live in ("<!channel>", "<@U123>", "<https://evil"):
        assert live not in everything

    card = slack.messages(APPROVALS)[0]
    assert card["edits"], "the approval card was not updated in place"
    assert not any(b["type"] == "actions" for b in card["blocks"])


def test_refusals_change_nothing(bot: Bot, aws_group: Any) -> None:
    status, body = bot.command(ALICE, "ssh prod-db 20m from 0.0.0.0/0 yolo")
    assert status == 200 and "whole internet" in body
    status, body = bot.command(ALICE, "ssh prod-db 2h from 203.0.113.7")
    assert status == 200 and "longer than" in body
    status, body = bot.command(ALICE, "ssh nope 20m from 203.0.113.7")
    assert status == 200 and "unknown target" in body
    status, body = bot.command(ALICE, "rdp prod-db 20m from 203.0.113.7")
    assert status == 200 and "has no port" in body
    status, body = bot.command(ALICE, "ssh prod-db 20m from 10.1.2.3")
    assert status == 200 and "private address" in body
    status, _ = bot.command(ALICE, "ssh prod-db 20m from 203.0.113.7", secret="wrong")
    assert status == 401
    status, _ = bot.command(ALICE, "ssh prod-db 20m from 203.0.113.7", age=6 * 60)
    assert status == 401
    assert bot.slack.calls_to("chat.postMessage") == []

    status, body = bot.command(ALICE, "ssh prod-db 20m from 203.0.113.7 ok")
    assert status == 200 and "#1" in body
    bot.click(ALICE, "jit_approve", 1)  # self-approval
    refusal = bot.slack.wait_for(lambda c: c.method == "response_url"
                                 and "click-U0ALICE" in c.args["url"], timeout=10)[0]
    assert "own request" in json.dumps(refusal.args)
    bot.click("U0MALLORY", "jit_approve", 1)  # not an approver in the policy
    stranger = bot.slack.wait_for(lambda c: c.method == "response_url"
                                  and "click-U0MALLORY" in c.args["url"], timeout=10)[0]
    assert "not an approver" in json.dumps(stranger.args)
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []
    bot.click(BOB, "jit_approve", 1)
    wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 10, "the rule to open")
    bot.click(BOB, "jit_approve", 1)  # a double click after the decision
    late = bot.slack.wait_for(lambda c: c.method == "response_url"
                              and "click-U0BOB" in c.args["url"], timeout=10)[0]
    assert "already" in json.dumps(late.args)
    assert len(jit_rules(aws_group.ec2, aws_group.group_id)) == 1


def test_acks_do_not_wait_for_the_cloud(aws_group: Any, tmp_path: Path) -> None:
    """EC2 hangs; the slash command and the Approve click are still acknowledged at once."""
    with HangingServer() as ec2, running_bot(
            aws_group, tmp_path, env={"AWS_ENDPOINT_URL_EC2": ec2.url},
            auto_approve={"users": [ALICE], "max_duration": "10m"}) as bot:
        started = time.monotonic()
        status, body = bot.command(ALICE, "ssh prod-db 5m from 203.0.113.7 auto")
        auto_ack = time.monotonic() - started
        assert status == 200 and "#1" in body
        wait_until(lambda: ec2.requests >= 1, 10, "the open to reach EC2")

        bot.command(ALICE, "ssh prod-db 20m from 203.0.113.8 needs approval")
        started = time.monotonic()
        status, _ = bot.click(BOB, "jit_approve", 2)
        click_ack = time.monotonic() - started
        assert status == 200
        wait_until(lambda: ec2.requests >= 2, 10, "the second open to reach EC2")
        assert auto_ack < 1.5 and click_ack < 1.5, (auto_ack, click_ack)
        ec2.release()


def signed_event(bot: Bot, event: dict[str, Any]) -> tuple[int, str]:
    body = json.dumps({"token": "unused", "team_id": "T0JITTEST", "api_app_id": "A0JITAPP",
                       "type": "event_callback", "event_id": "Ev0001", "event_time": 1,
                       "event": event}).encode()
    return signed_post(bot.url, body, content_type="application/json")


def test_modal_home_and_groups(aws_group: Any, tmp_path: Path) -> None:
    with running_bot(aws_group, tmp_path, approvers=["@sre-leads"]) as bot:
        bot.slack.set_usergroup("S0SRE", "sre-leads", [BOB])
        status, _ = bot.command(ALICE, "ssh prod-db 20m from 203.0.113.9 first")
        assert status == 200
        # Missing parts open a modal, prefilled with the address declared last time.
        status, _ = bot.command(ALICE, "ssh prod-db")
        assert status == 200
        opened = bot.slack.wait_for("views.open", timeout=10)[0]
        view = json.dumps(opened.args["view"])
        assert '"initial_value": "203.0.113.9"' in view and "jit_request_modal" in view

        # Bob approves through the @sre-leads usergroup; App Home shows him what waits.
        status, _ = signed_event(bot, {"type": "app_home_opened", "user": BOB, "tab": "home"})
        assert status == 200
        home = wait_until(lambda: bot.slack.home(BOB), 10, "Bob's App Home")
        assert '"action_id": "jit_approve"' in json.dumps(home)
        bot.click(BOB, "jit_approve", 1)
        wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 10, "the rule to open")
        status, _ = signed_event(bot, {"type": "app_home_opened", "user": ALICE, "tab": "home"})
        mine = wait_until(lambda: bot.slack.home(ALICE), 10, "Alice's App Home")
        assert '"action_id": "jit_revoke"' in json.dumps(mine)
        bot.click(ALICE, "jit_revoke", 1)  # from her App Home
        wait_until(lambda: not jit_rules(aws_group.ec2, aws_group.group_id), 10,
                   "the rule to close on revoke")
        refreshed = wait_until(lambda: "jit_revoke" not in json.dumps(bot.slack.home(ALICE)),
                               10, "App Home to refresh")
        assert refreshed
