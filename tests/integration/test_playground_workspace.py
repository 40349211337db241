"""The playground's Slack, driven through its page's JSON API only, against jit-bot as a
process in HTTP mode (its Web API client on the stand-in) and moto's EC2: a command puts the
card in the approvals channel, the approver's click opens the rule, a command with parts left
out opens a modal whose submission makes the request, and what the page must not send is
refused with a clear 4xx and changes nothing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.playground.slack_standin import SlackApiFake
from bot.playground.views import REQUIRED
from bot.playground.workspace import APPROVER, REQUESTER, SOC, Workspace
from tests.e2e.test_slack_bot import BOT_TOKEN, SECRET, free_port
from tests.support.aws import jit_rules
from tests.support.bot_process import bot_process
from tests.support.policies import write_bot_policy

APPROVALS, AUDIT = "C0APPROVE", "C0AUDIT"  # write_bot_policy's channels
CHANNELS = {APPROVALS: "jit-approvals", AUDIT: "jit-audit"}
JSON = "application/json"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Page:
    """What the page's JavaScript does: fetch JSON from the workspace."""

    url: str
    workspace: Workspace

    def call(self, method: str, path: str, body: object = None, *,
             content_type: str = JSON, headers: dict[str, str] | None = None,
             ) -> tuple[int, dict[str, Any]]:
        data = None if body is None else (
            body if isinstance(body, bytes) else json.dumps(body).encode())
        sent = {"Content-Type": content_type, **(headers or {})} if data is not None else {
            **(headers or {})}
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=sent)
        try:
            with _DIRECT.open(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def post(self, path: str, body: object, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return self.call("POST", path, body, **kwargs)

    def ok(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.post(path, body)
        assert (status, answer.get("ok")) == (200, True), (path, status, answer)
        return answer

    def state(self) -> dict[str, Any]:
        status, state = self.call("GET", "/api/state")
        assert status == 200, state
        return state

    def settled(self) -> dict[str, Any]:
        """The state once jit has posted all it was going to (it stays the same a while)."""
        deadline = time.monotonic() + 10
        last = self.state()
        while True:
            time.sleep(0.5)
            now = self.state()
            if now == last:
                return now
            assert time.monotonic() < deadline, "the page kept changing for 10 s"
            last = now

    def wait(self, check: Callable[[dict[str, Any]], Any], what: str,
             timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            found = check(state)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"the page shows {json.dumps(state)[:3000]}")
            time.sleep(0.1)


def channel(state: dict[str, Any], channel_id: str) -> list[dict[str, Any]]:
    return next(c["messages"] for c in state["channels"] if c["id"] == channel_id)


def action_ids(message: dict[str, Any]) -> dict[str, str]:
    """The buttons of a message or view: action_id -> its block_id."""
    return {element["action_id"]: block["block_id"] for block in message["blocks"] or []
            if block["type"] == "actions" for element in block["elements"]}


def words(messages: list[dict[str, Any]]) -> str:
    return json.dumps([[m["text"], m["blocks"]] for m in messages])


@pytest.fixture
def page(aws_group: Any, tmp_path: Path) -> Iterator[Page]:
    config = write_bot_policy(tmp_path / "jit.yaml", aws_group.group_id,
                              approvers=[APPROVER.id])

    def rules() -> dict[str, Any]:
        return {"group": {"id": aws_group.group_id},
                "rules": [{"cidr": r["CidrIpv4"], "from_port": r["FromPort"]}
                          for r in jit_rules(aws_group.ec2, aws_group.group_id)]}

    with SlackApiFake(bot_token=BOT_TOKEN) as slack, bot_process(
            slack, config, f"sqlite:///{tmp_path}/jit.db", tmp_path / "bot.log") as bot, \
            Workspace(bot.url, SECRET, slack=slack, channels=CHANNELS, rules_source=rules,
                      policy_text=config.read_text()) as workspace:
        yield Page(workspace.url, workspace)


def request_card(page: Page, text: str, grant_id: int) -> dict[str, Any]:
    """Riley's /jit <text>: the card #grant_id the approvers get."""
    page.ok("/api/command", {"user": REQUESTER.id, "text": text})
    return page.wait(lambda s: next((m for m in channel(s, APPROVALS)
                                     if f"jit #{grant_id}:" in m["text"]), None),
                     f"the card of #{grant_id}")


def test_a_command_makes_the_card_and_the_approvers_click_opens_the_rule(
        page: Page, aws_group: Any) -> None:
    first = page.state()
    assert first["people"] == [
        {"id": "U0REQUESTER", "name": "Riley", "role": "requester"},
        {"id": "U0APPROVER", "name": "Avery", "role": "approver"},
        {"id": "U0SOC", "name": "Sam", "role": "soc"}]
    assert [(c["id"], c["name"], c["messages"]) for c in first["channels"]] == [
        (APPROVALS, "jit-approvals", []), (AUDIT, "jit-audit", [])]
    assert first["rules"] == [] and first["group"] == {"id": aws_group.group_id}
    assert "prod-db" in first["policy"]
    assert first["modal"] == {REQUESTER.id: None, APPROVER.id: None, SOC.id: None}

    card = request_card(page, "ssh prod-db 20m from 203.0.113.7 fix replication", 1)
    buttons = action_ids(card)
    assert set(buttons) == {"jit_approve", "jit_deny"}
    state = page.state()
    assert state["version"] > first["version"]
    acked = words(state["ephemerals"][REQUESTER.id])  # jit's answer to the command
    assert "#1" in acked and "waiting for an approver" in acked
    assert state["ephemerals"][APPROVER.id] == []
    parent = page.wait(lambda s: channel(s, AUDIT), "the audit thread")[0]
    assert "requested" in parent["text"] and parent["channel"] == AUDIT

    on_card = {"user": REQUESTER.id, "action_id": "jit_approve", "block_id": buttons["jit_approve"],
               "value": "1", "container": {"type": "message", "channel": APPROVALS,
                                           "ts": card["ts"]}}
    page.ok("/api/action", on_card)  # Riley may not approve their own request
    page.wait(lambda s: "own request" in words(s["ephemerals"][REQUESTER.id]),
              "the refusal, shown to Riley only")
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []

    page.ok("/api/action", {**on_card, "user": APPROVER.id})
    rules = page.wait(lambda s: s["rules"], "the rule on the page")
    assert rules == [{"cidr": "203.0.113.7/32", "from_port": 22}]
    assert [r["CidrIpv4"] for r in jit_rules(aws_group.ec2, aws_group.group_id)] == [
        "203.0.113.7/32"]
    done = page.wait(lambda s: next((m for m in channel(s, APPROVALS)
                                     if m["ts"] == card["ts"] and not action_ids(m)), None),
                     "the card, decided")
    assert "Avery" in words([done]) or APPROVER.id in words([done])
    thread = page.wait(lambda s: (t := channel(s, AUDIT)[0])["replies"]
                       and "opened" in words(t["replies"]) and t, "the audit thread's replies")
    assert thread["ts"] == parent["ts"] and len(channel(page.state(), AUDIT)) == 1
    assert "approved" in words(thread["replies"])
    page.wait(lambda s: "is open" in words(s["dms"][REQUESTER.id]).lower(),
              "Riley's DM: it is open")


def test_a_command_with_parts_left_out_opens_a_modal_whose_submission_requests(
        page: Page, aws_group: Any) -> None:
    page.ok("/api/command", {"user": REQUESTER.id, "text": " /jit ssh prod-db"})
    modal = page.wait(lambda s: s["modal"][REQUESTER.id], "the request modal")
    assert modal["callback_id"] == "jit_request_modal" and modal["type"] == "modal"
    assert modal["title"]["text"] and modal["submit"]["text"] == "Request"
    assert page.state()["modal"][APPROVER.id] is None
    submit = {"user": REQUESTER.id, "view_id": modal["id"]}

    # What Slack's client stops: a required field left empty; nothing reaches jit.
    status, answer = page.post("/api/submit", {**submit, "values": {}})
    assert (status, answer) == (200, {"ok": False, "errors": {"duration": REQUIRED,
                                                               "source": REQUIRED}})
    # What jit refuses: the modal stays open, the message under the field.
    too_long = {"duration": {"duration": {"type": "plain_text_input", "value": "2h"}},
                "source": {"source": {"type": "plain_text_input", "value": "203.0.113.9"}}}
    status, answer = page.post("/api/submit", {**submit, "values": too_long})
    assert status == 200 and answer["ok"] is False and set(answer["errors"]) == {"duration"}
    assert page.state()["modal"][REQUESTER.id]["id"] == modal["id"]
    assert channel(page.state(), APPROVALS) == []

    values = {**too_long, "duration": {"duration": {"type": "plain_text_input",
                                                    "value": "15m"}},
              "reason": {"reason": {"type": "plain_text_input", "value": "from the modal"}}}
    page.ok("/api/submit", {**submit, "values": values})
    assert page.state()["modal"][REQUESTER.id] is None
    card = page.wait(lambda s: next(iter(channel(s, APPROVALS)), None), "the card")
    assert "203.0.113.9" in words([card]) and "15m" in words([card])
    page.wait(lambda s: "#1" in words(s["dms"][REQUESTER.id]), "the confirmation in the DM")
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []


def test_deny_opens_the_reason_modal_for_the_approver_and_app_home_shows_requests(
        page: Page) -> None:
    card = request_card(page, "ssh prod-db 10m from 203.0.113.8 look at logs", 1)
    page.ok("/api/home", {"user": APPROVER.id})
    home = page.wait(lambda s: s["home"][APPROVER.id], "Avery's App Home")
    assert home["type"] == "home" and set(action_ids(home)) == {"jit_approve", "jit_deny"}

    page.ok("/api/action", {"user": APPROVER.id, "action_id": "jit_deny", "block_id": "",
                            "container": {"type": "view", "view_id": home["id"]}})
    modal = page.wait(lambda s: s["modal"][APPROVER.id], "the deny modal")
    assert modal["callback_id"] == "jit_deny_modal" and modal["private_metadata"] == "1"
    assert page.state()["modal"][REQUESTER.id] is None
    page.ok("/api/submit", {"user": APPROVER.id, "view_id": modal["id"], "values": {
        "reason": {"reason": {"type": "plain_text_input", "value": "use the bastion"}}}})
    decided = page.wait(lambda s: next((m for m in channel(s, APPROVALS)
                                        if m["ts"] == card["ts"] and not action_ids(m)), None),
                        "the card, denied")
    assert "use the bastion" in words([decided])
    assert page.state()["modal"][APPROVER.id] is None

    page.ok("/api/command", {"user": REQUESTER.id, "text": "ssh prod-db"})
    modal = page.wait(lambda s: s["modal"][REQUESTER.id], "the request modal")
    page.ok("/api/close", {"user": REQUESTER.id, "view_id": modal["id"]})
    assert page.state()["modal"][REQUESTER.id] is None


def test_what_the_page_must_not_send_is_refused_and_changes_nothing(page: Page) -> None:
    card = request_card(page, "ssh prod-db 20m from 203.0.113.7 fix", 1)
    page.ok("/api/command", {"user": REQUESTER.id, "text": "ssh prod-db"})
    modal = page.wait(lambda s: s["modal"][REQUESTER.id], "the request modal")
    page.wait(lambda s: channel(s, AUDIT), "the audit line")
    before, calls = page.settled(), len(page.workspace.slack.calls)
    port = page.url.rsplit(":", 1)[1]
    command = {"user": REQUESTER.id, "text": "ssh prod-db 20m from 203.0.113.7"}
    on_card = {"user": APPROVER.id, "action_id": "jit_approve", "block_id": "jit_decide:1",
               "container": {"type": "message", "channel": APPROVALS, "ts": card["ts"]}}
    refused = [
        (page.post("/api/command", json.dumps(command).encode(), content_type="text/plain"),
         400, "Content-Type: application/json"),
        (page.post("/api/command", b"user=U0REQUESTER&text=help",
                   content_type="application/x-www-form-urlencoded"), 400, "Content-Type"),
        (page.post("/api/command", b"[1, 2]"), 400, "not a JSON object"),
        (page.post("/api/command", command, headers={"Host": "evil.example"}), 403,
         "Host 'evil.example'"),
        (page.post("/api/command", command, headers={"Host": f"evil.example:{port}"}), 403,
         "is not this page's"),
        (page.call("GET", "/api/state", headers={"Host": "jit.attacker.test"}), 403, "Host"),
        (page.post("/api/command", command, headers={"Origin": "https://evil.example"}), 403,
         "Origin 'https://evil.example'"),
        (page.post("/api/command", {**command, "user": "U0MALLORY"}), 400,
         "unknown user 'U0MALLORY'"),
        (page.post("/api/command", {"text": "help"}), 400, "unknown user None"),
        (page.post("/api/action", {**on_card, "user": "U0BOB"}), 400, "unknown user"),
        (page.post("/api/submit", {"user": REQUESTER.id, "view_id": "VNOPE", "values": {}}),
         404, "no modal VNOPE is open for U0REQUESTER"),
        (page.post("/api/submit", {"user": APPROVER.id, "view_id": modal["id"],
                                   "values": {}}), 404, f"no modal {modal['id']}"),
        (page.post("/api/close", {"user": REQUESTER.id, "view_id": "VNOPE"}), 404,
         "no modal VNOPE"),
        (page.post("/api/submit", {"user": REQUESTER.id, "view_id": modal["id"],
                                   "values": {"nope": {}}}), 400, "no input block 'nope'"),
        (page.post("/api/action", {**on_card, "container": {"type": "view",
                                                            "view_id": "VNOPE"}}), 404,
         "no view 'VNOPE'"),
        (page.post("/api/action", {**on_card, "container": {**on_card["container"],
                                                            "ts": "1.000001"}}), 404,
         "no message 1.000001"),
        (page.post("/api/action", {**on_card, "action_id": "jit_explode"}), 404,
         "no element 'jit_explode'"),
        (page.post("/api/action", {**on_card, "container": "card"}), 400, "'container'"),
        (page.call("GET", "/api/command"), 405, "takes POST"),
        (page.call("DELETE", "/api/state"), 405, "takes GET"),
        (page.post("/api/command", {**command, "text": "/giphy cats"}), 400,
         "/giphy is not a command here"),
        (page.post("/api/nothing", command), 404, "no such page or endpoint"),
    ]
    for (status, answer), expected, says in refused:
        assert (status, answer["ok"]) == (expected, False), (expected, says, answer)
        assert says in answer["error"], (says, answer)
    assert page.state() == before
    assert len(page.workspace.slack.calls) == calls  # jit heard of none of it


def test_a_bot_that_refuses_or_does_not_answer_is_a_502(page: Page) -> None:
    events = page.workspace.events_url
    slack = page.workspace.slack
    for sender, says in [(Workspace(events, "not-the-secret", slack=slack), "HTTP 401"),
                         (Workspace(f"http://127.0.0.1:{free_port()}/slack/events", SECRET,
                                    slack=slack), "did not answer")]:
        with sender:
            status, answer = Page(sender.url, sender).post(
                "/api/command", {"user": REQUESTER.id, "text": "help"})
        assert (status, answer["ok"]) == (502, False) and says in answer["error"], answer
    assert page.state()["ephemerals"][REQUESTER.id] == []


def test_the_page_files_are_served_and_nothing_beside_them(tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>jit</title>")
    (static / "app.js").write_text("console.log('jit')")
    (static / "style.css").write_text("body {}")
    (tmp_path / "secret.txt").write_text("not for the page")
    with Workspace("http://127.0.0.1:9/slack/events", SECRET, static_dir=static) as workspace:
        for path, kind, text in [("/", "text/html", "<title>jit"),
                                 ("/static/app.js", "text/javascript", "console.log"),
                                 ("/static/style.css", "text/css", "body")]:
            with _DIRECT.open(workspace.url + path, timeout=10) as response:
                assert response.headers.get_content_type() == kind
                assert text in response.read().decode()
                assert response.headers["X-Content-Type-Options"] == "nosniff"
        for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt",
                     "/static/..%2fsecret.txt", "/static/nope.js", "/static/", "/index.html"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                _DIRECT.open(workspace.url + path, timeout=10)
            with refused.value as answer:
                assert answer.code == 404 and b"not for the page" not in answer.read(), path
