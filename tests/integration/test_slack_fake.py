"""The Slack Web API fake, driven by the real slack_sdk WebClient and slack_bolt App."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from tests.fakes.slack_api import SlackApiFake

TOKEN = "xoxb-test"
SAMPLES = Path(__file__).resolve().parents[1] / "fakes" / "reference" / "slack"
TS = re.compile(r"^\d{10}\.\d{6}$")
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*db-1* port 5432"}}


@pytest.fixture
def slack() -> Iterator[SlackApiFake]:
    with SlackApiFake(bot_token=TOKEN) as fake:
        yield fake


@pytest.fixture
def client(slack: SlackApiFake) -> WebClient:
    return WebClient(token=TOKEN, base_url=slack.api_url, timeout=10)


def error_of(call: Callable[[], Any]) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        call()
    return raised.value


# -- answers shaped like Slack's -------------------------------------------------------


def load_sample(method: str) -> dict[str, Any]:
    if not SAMPLES.is_dir():
        pytest.fail(f"Slack reference samples missing: expected the folder {SAMPLES} "
                    "(tests/fakes/reference/slack)")
    path = SAMPLES / f"{method}.json"
    if not path.is_file():
        pytest.fail(f"Slack reference sample missing: {path}")
    sample: dict[str, Any] = json.loads(path.read_text())
    return sample


def same_kind(value: object, sample: object) -> bool:
    """Whether `value` has the JSON type of `sample` (a null in either matches anything)."""
    if value is None or sample is None:
        return True
    if isinstance(sample, bool) or isinstance(value, bool):
        return isinstance(sample, bool) and isinstance(value, bool)
    kinds = (str, int, float, list, dict)
    return any(isinstance(sample, kind) and isinstance(value, kind) for kind in kinds)


def assert_shaped_like(answer: dict[str, Any], sample: dict[str, Any], where: str) -> None:
    extra = set(answer) - set(sample)
    assert not extra, f"{where}: keys the Slack sample lacks: {sorted(extra)}"
    wrong = [key for key in answer if not same_kind(answer[key], sample[key])]
    assert not wrong, f"{where}: JSON types differ from the sample for {wrong}"


SAMPLE_CASES: dict[str, tuple[Callable[[WebClient], Any], set[str], str | None, set[str]]] = {
    # method: (call, essential top-level keys, nested object, its essential keys)
    "auth.test": (
        lambda c: c.auth_test(),
        {"ok", "url", "team", "user", "team_id", "user_id", "bot_id", "is_enterprise_install"},
        None, set(),
    ),
    "chat.postMessage": (
        lambda c: c.chat_postMessage(channel="C0APPROVE", text="hi", blocks=[SECTION],
                                     thread_ts=c.chat_postMessage(channel="C0APPROVE",
                                                                  text="top")["ts"]),
        {"ok", "channel", "ts", "message"},
        "message", {"type", "text", "ts", "bot_id", "user", "blocks", "thread_ts"},
    ),
    "chat.update": (
        lambda c: c.chat_update(channel="C0APPROVE", text="edited", blocks=[SECTION],
                                ts=c.chat_postMessage(channel="C0APPROVE", text="hi")["ts"]),
        {"ok", "channel", "ts", "text", "message"},
        "message", {"type", "text", "bot_id", "user", "blocks"},
    ),
    "conversations.open": (
        lambda c: c.conversations_open(users="U0ALICE", return_im=True),
        {"ok", "channel", "no_op", "already_open"},
        "channel", {"id", "is_im", "user", "is_open"},
    ),
    "views.open": (
        lambda c: c.views_open(trigger_id="1.2.3", view={
            "type": "modal", "callback_id": "jit_request",
            "title": {"type": "plain_text", "text": "Request access"},
            "submit": {"type": "plain_text", "text": "Request"},
            "blocks": [{"type": "input", "block_id": "target", "label": {
                "type": "plain_text", "text": "Target"}, "element": {
                "type": "plain_text_input", "action_id": "value"}}]}),
        {"ok", "view"},
        "view", {"id", "team_id", "type", "title", "blocks", "callback_id", "state", "hash",
                 "root_view_id", "app_id", "bot_id"},
    ),
}


@pytest.mark.parametrize("method", sorted(SAMPLE_CASES))
def test_answers_are_shaped_like_the_reference_samples(client: WebClient, method: str) -> None:
    sample = load_sample(method)
    call, essential, nested, nested_essential = SAMPLE_CASES[method]

    answer = call(client).data

    assert answer["ok"] is True
    assert essential <= set(answer), f"missing {sorted(essential - set(answer))}"
    assert_shaped_like(answer, sample, method)
    if "ts" in answer:
        assert TS.match(answer["ts"]), answer["ts"]
    if nested:
        inner = answer[nested]
        assert nested_essential <= set(inner), f"missing {sorted(nested_essential - set(inner))}"
        assert_shaped_like(inner, sample[nested], f"{method} {nested}")


# -- messages and threads --------------------------------------------------------------


def test_thread_replies_read_back_in_order(slack: SlackApiFake, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C0AUDIT", text="request r-1", blocks=[SECTION])
    for event in ("approved", "opened", "closed"):
        client.chat_postMessage(channel="C0AUDIT", text=event, thread_ts=parent["ts"])
    client.chat_postMessage(channel="C0AUDIT", text="request r-2")

    thread = slack.thread("C0AUDIT", parent["ts"])

    assert [m["text"] for m in thread] == ["request r-1", "approved", "opened", "closed"]
    assert thread[0]["blocks"] == [SECTION] and thread[0]["thread_ts"] is None
    assert {m["thread_ts"] for m in thread[1:]} == {parent["ts"]}
    stamps = [m["ts"] for m in slack.messages("C0AUDIT")]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    assert parent["message"]["bot_id"] == "B0JITBOT" and parent["channel"] == "C0AUDIT"


def test_posting_to_a_user_id_lands_in_their_dm(slack: SlackApiFake, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="U0ALICE", text="your access is open")

    dm = client.conversations_open(users="U0ALICE")["channel"]["id"]

    assert posted["channel"] == dm == slack.dm_channel("U0ALICE")
    assert dm.startswith("D")
    assert [m["text"] for m in slack.messages(dm)] == ["your access is open"]


def test_form_encoded_json_fields_and_token_field_are_understood(slack: SlackApiFake) -> None:
    anonymous = WebClient(base_url=slack.api_url)  # no Authorization header

    anonymous.api_call("chat.postMessage", params={
        "token": TOKEN, "channel": "C0APPROVE", "text": "card",
        "blocks": json.dumps([SECTION]), "unfurl_links": "false"})

    stored = slack.messages("C0APPROVE")[0]
    assert stored["blocks"] == [SECTION]
    assert stored["args"]["unfurl_links"] == "false"
    assert slack.calls[0].token == TOKEN and "token" not in slack.calls[0].args


def test_update_changes_the_stored_message(slack: SlackApiFake, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="C0APPROVE", text="pending", blocks=[SECTION])
    decided = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "Approved"}]}]

    updated = client.chat_update(channel="C0APPROVE", ts=posted["ts"], text="approved",
                                 blocks=decided)

    assert updated["ts"] == posted["ts"] and updated["text"] == "approved"
    stored = slack.messages("C0APPROVE")
    assert len(stored) == 1
    assert (stored[0]["text"], stored[0]["blocks"]) == ("approved", decided)
    assert stored[0]["edits"][0]["text"] == "approved"


def test_update_of_an_unknown_message_fails(client: WebClient) -> None:
    error = error_of(lambda: client.chat_update(channel="C0APPROVE", ts="1.2", text="x"))

    assert error.response["error"] == "message_not_found"


def test_ephemeral_messages_are_recorded(slack: SlackApiFake, client: WebClient) -> None:
    answer = client.chat_postEphemeral(channel="C0GENERAL", user="U0ALICE", text="usage: /jit")

    assert TS.match(answer["message_ts"])
    recorded = slack.ephemerals("U0ALICE")
    assert [(e["channel"], e["text"]) for e in recorded] == [("C0GENERAL", "usage: /jit")]
    assert slack.ephemerals("U0BOB") == [] and slack.messages("C0GENERAL") == []


def test_conversations_open_is_stable_per_user(client: WebClient) -> None:
    first = client.conversations_open(users="U0ALICE")
    again = client.conversations_open(users="U0ALICE")
    other = client.conversations_open(users="U0BOB")

    assert first["channel"]["id"] == again["channel"]["id"] != other["channel"]["id"]
    assert (first["no_op"], first["already_open"]) == (False, False)
    assert (again["no_op"], again["already_open"]) == (True, True)


# -- views -----------------------------------------------------------------------------

MODAL = {"type": "modal", "title": {"type": "plain_text", "text": "jit"},
         "private_metadata": "r-1", "blocks": [SECTION]}


def test_views_open_then_update(slack: SlackApiFake, client: WebClient) -> None:
    opened = client.views_open(trigger_id="1.2.3", view=MODAL)["view"]
    changed = {**MODAL, "blocks": [SECTION, {"type": "divider"}]}

    stale = error_of(lambda: client.views_update(view_id=opened["id"], hash="0.bad", view=MODAL))
    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=changed)["view"]

    assert stale.response["error"] == "hash_conflict"
    assert opened["id"].startswith("V") and opened["private_metadata"] == "r-1"
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    assert slack.view(opened["id"])["blocks"] == changed["blocks"]


def test_views_open_rejects_a_modal_without_title(client: WebClient) -> None:
    error = error_of(lambda: client.views_open(trigger_id="1.2.3", view={
        "type": "modal", "blocks": []}))

    assert error.response["error"] == "invalid_arguments"
    assert "title" in error.response["response_metadata"]["messages"][0]


def test_views_publish_stores_the_home_tab(slack: SlackApiFake, client: WebClient) -> None:
    home = {"type": "home", "blocks": [SECTION]}

    first = client.views_publish(user_id="U0ALICE", view=home)["view"]
    second = client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": []})["view"]

    assert first["type"] == "home" and second["id"] == first["id"]
    stored = slack.home("U0ALICE")
    assert stored is not None and stored["blocks"] == []
    assert slack.home("U0BOB") is None


# -- directory ---------------------------------------------------------------------------


def test_usergroups_map_handles_to_members(slack: SlackApiFake, client: WebClient) -> None:
    slack.set_usergroup("S0OPS", "oncall-ops", ["U0ALICE", "U0BOB"])
    slack.set_usergroup("S0DBA", "dba", ["U0CAROL"])

    groups = client.usergroups_list()["usergroups"]
    with_users = client.usergroups_list(include_users=True)["usergroups"]
    members = client.usergroups_users_list(usergroup="S0OPS")["users"]
    missing = error_of(lambda: client.usergroups_users_list(usergroup="S0NOPE"))

    assert {g["handle"]: g["id"] for g in groups} == {"oncall-ops": "S0OPS", "dba": "S0DBA"}
    assert "users" not in groups[0] and with_users[1]["users"] == ["U0CAROL"]
    assert members == ["U0ALICE", "U0BOB"]
    assert missing.response["error"] == "no_such_subteam"


def test_users_info_knows_configured_users(slack: SlackApiFake, client: WebClient) -> None:
    slack.add_user("U0ALICE", "alice", "Alice Liddell", tz="America/New_York")

    user = client.users_info(user="U0ALICE")["user"]
    missing = error_of(lambda: client.users_info(user="U0NOBODY"))

    assert (user["name"], user["real_name"], user["tz"]) == ("alice", "Alice Liddell",
                                                             "America/New_York")
    assert user["tz_offset"] in (-5 * 3600, -4 * 3600)
    assert missing.response["error"] == "user_not_found"


# -- errors ----------------------------------------------------------------------------


def test_a_wrong_or_missing_token_is_refused(slack: SlackApiFake) -> None:
    wrong = error_of(WebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test)
    missing = error_of(WebClient(base_url=slack.api_url).auth_test)

    assert wrong.response.status_code == 200 and wrong.response["error"] == "invalid_auth"
    assert missing.response["error"] == "not_authed"
    assert [call.error for call in slack.calls] == ["invalid_auth", "not_authed"]


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
@pytest.mark.parametrize(("kwargs", "error"), [
    ({"channel": "", "text": "no channel"}, "channel_not_found"),
    ({"channel": "C0APPROVE"}, "no_text"),
    ({"channel": "C0APPROVE", "text": "x", "blocks": [SECTION] * 51}, "invalid_blocks"),
    ({"channel": "C0APPROVE", "text": "x", "blocks": [{"text": {"type": "mrkdwn", "text": "x"}}]},
     "invalid_blocks"),
    ({"channel": "C0APPROVE", "text": "x", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]}, "invalid_blocks"),
    ({"channel": "C0APPROVE", "text": "x", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 2900}}] * 5},
     "msg_blocks_too_long"),
])
def test_post_message_is_validated_like_slack(
    slack: SlackApiFake, client: WebClient, kwargs: dict[str, Any], error: str
) -> None:
    raised = error_of(lambda: client.chat_postMessage(**kwargs))

    assert raised.response["error"] == error
    assert slack.messages("C0APPROVE") == []


def test_unknown_methods_are_refused(client: WebClient) -> None:
    error = error_of(lambda: client.api_call("chat.postMessages", json={"channel": "C1"}))

    assert error.response["error"] == "unknown_method"


def test_fail_next_fails_one_call_to_that_method(slack: SlackApiFake, client: WebClient) -> None:
    slack.fail_next("chat.postMessage", "not_in_channel")

    client.auth_test()
    failed = error_of(lambda: client.chat_postMessage(channel="C0AUDIT", text="one"))
    client.chat_postMessage(channel="C0AUDIT", text="two")

    assert failed.response["error"] == "not_in_channel"
    assert [m["text"] for m in slack.messages("C0AUDIT")] == ["two"]


def test_rate_limited_calls_are_retried_by_slack_sdk(slack: SlackApiFake) -> None:
    client = WebClient(token=TOKEN, base_url=slack.api_url,
                       retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])
    slack.rate_limit_next(2, retry_after=1)
    started = time.monotonic()

    posted = client.chat_postMessage(channel="C0AUDIT", text="after the storm")

    assert posted["ok"] is True
    assert time.monotonic() - started >= 1.8  # two waits of Retry-After (1s) plus jitter
    calls = slack.calls_to("chat.postMessage")
    assert [call.status for call in calls] == [429, 429, 200]
    assert len(slack.messages("C0AUDIT")) == 1


def test_rate_limit_answers_429_with_retry_after(slack: SlackApiFake, client: WebClient) -> None:
    slack.rate_limit_next(1, retry_after=7, method="chat.postMessage")

    client.auth_test()  # another method is not limited
    limited = error_of(lambda: client.chat_postMessage(channel="C0AUDIT", text="x"))

    assert limited.response.status_code == 429
    assert limited.response.headers["Retry-After"] == "7"
    assert limited.response["error"] == "ratelimited"
    assert client.chat_postMessage(channel="C0AUDIT", text="x")["ok"] is True


# -- waiting ---------------------------------------------------------------------------


def test_wait_for_sees_calls_made_from_another_thread(
    slack: SlackApiFake, client: WebClient
) -> None:
    def post_later() -> None:
        time.sleep(0.2)
        client.chat_postMessage(channel="C0AUDIT", text="late")

    worker = threading.Thread(target=post_later)
    worker.start()
    found = slack.wait_for("chat.postMessage", timeout=5)
    worker.join()

    assert found[0].args["text"] == "late"


def test_wait_for_times_out_listing_what_arrived(slack: SlackApiFake, client: WebClient) -> None:
    client.chat_postMessage(channel="C0AUDIT", text="only this")

    started = time.monotonic()
    with pytest.raises(AssertionError) as timed_out:
        slack.wait_for("chat.update", count=1, timeout=0.3)

    assert time.monotonic() - started >= 0.3
    message = str(timed_out.value)
    assert "'chat.update'" in message and "found 0" in message
    assert "chat.postMessage ok" in message and "only this" in message


# -- slack_bolt ------------------------------------------------------------------------


def test_a_bolt_app_runs_against_the_fake(slack: SlackApiFake, client: WebClient) -> None:
    app = App(client=client, signing_secret="unused", request_verification_enabled=False)

    @app.command("/jit")
    def jit_command(ack: Any, respond: Any, command: dict[str, str]) -> None:
        ack()
        respond(f"working on {command['text']}")
        client.chat_postMessage(channel=command["user_id"], text="request received")

    body = urlencode({"command": "/jit", "text": "ssh db-1 1h", "user_id": "U0ALICE",
                      "channel_id": "C0GENERAL", "team_id": "T0JITTEST", "trigger_id": "1.2.3",
                      "response_url": slack.response_url("r-1")})
    response = app.dispatch(BoltRequest(
        body=body, headers={"content-type": ["application/x-www-form-urlencoded"]}))

    assert response.status == 200
    assert slack.calls_to("auth.test")  # bolt checks its token at start-up
    responded = slack.wait_for("response_url")[0]
    assert responded.args["text"] == "working on ssh db-1 1h"
    assert responded.args["url"] == "/response/r-1"
    slack.wait_for("chat.postMessage")
    assert [m["text"] for m in slack.messages("U0ALICE")] == ["request received"]
