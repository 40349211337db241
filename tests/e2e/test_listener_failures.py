"""jit-bot as a process, in HTTP mode, sent what Slack never sends but a signed request can
carry, and left without its database: every case is answered in words, changes nothing,
and leaves no traceback in the process log.

    tampered buttons        every button's value, and the deny modal's private_metadata
    no sender               a command, a click and a submission without a user id
    what people type        a reason too long or with a NUL, on SQLite and on PostgreSQL
    no database             /jit list, Approve, Deny and App Home while PostgreSQL refuses
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from jitcore.policy import MAX_REASON_CHARS
from jitcore.store import make_engine, upgrade
from tests.e2e.test_slack_bot import (
    ALICE,
    APPROVALS,
    BOB,
    BOT_TOKEN,
    Bot,
    running_bot,
    signed_post,
    wait_until,
)
from tests.fakes.slack_api import Call, SlackApiFake
from tests.support.aws import jit_rules
from tests.support.bot_process import bot_process
from tests.support.fixtures import new_postgres_database, postgres_url
from tests.support.policies import write_bot_policy

BUTTONS = ("jit_approve", "jit_deny", "jit_revoke", "jit_cancel", "jit_extend")
TAMPERED = ("abc", "", "null", "2;1", "-1", "0", "#", " 7 ", "\u0663", str(2**31), str(2**63),
            "9" * 5000)
UNAVAILABLE = "its database is unavailable. Try again in a minute; if it keeps failing, " \
              "tell jit's operators."
NO_SENDER = "jit could not tell who sent this"
REQUEST = "ssh prod-db 20m from 203.0.113.7"
ANSWER_WITHIN = 3.0  # seconds: Slack's own deadline for an answer


# ---- what a signed request can carry ---------------------------------------------------

def interaction(bot: Bot, payload: dict[str, Any]) -> tuple[int, str]:
    """Post an interaction payload (a click, a submission) as Slack does, signed."""
    return signed_post(bot.url, urllib.parse.urlencode({"payload": json.dumps(payload)}).encode())


def press(bot: Bot, action_id: str, value: object, *, user: object = BOB,
          answer_to: str) -> tuple[int, str]:
    """A click on a card's button carrying `value`, answered at the response_url `answer_to`."""
    payload: dict[str, Any] = {
        "type": "block_actions", "team": {"id": "T0JITTEST"}, "api_app_id": "A0JITAPP",
        "trigger_id": "1.2.3", "container": {"type": "message", "channel_id": APPROVALS},
        "channel": {"id": APPROVALS}, "response_url": bot.slack.response_url(answer_to),
        "actions": [{"type": "button", "action_id": action_id, "block_id": "jit_decide:1",
                     "value": value, "action_ts": str(time.time())}],
    }
    if user is not None:
        payload["user"] = {"id": user}
    return interaction(bot, payload)


def submit_deny(bot: Bot, metadata: object, reason: str, *, user: object = BOB,
                ) -> dict[str, Any]:
    """The deny modal submitted with this private_metadata; its view errors, if any."""
    view: dict[str, Any] = {
        "id": "V0DENY", "type": "modal", "callback_id": "jit_deny_modal",
        "state": {"values": {"reason": {"reason": {"type": "plain_text_input",
                                                   "value": reason}}}}}
    if metadata is not ...:
        view["private_metadata"] = metadata
    payload: dict[str, Any] = {"type": "view_submission", "team": {"id": "T0JITTEST"},
                               "api_app_id": "A0JITAPP", "view": view}
    if user is not None:
        payload["user"] = {"id": user}
    status, body = interaction(bot, payload)
    assert status == 200, body
    return dict(json.loads(body).get("errors", {})) if body else {}


def command(bot: Bot, fields: dict[str, str]) -> tuple[int, str]:
    """A signed /jit command with exactly these form fields."""
    return signed_post(bot.url, urllib.parse.urlencode({"command": "/jit", **fields}).encode())


def answered(bot: Bot, name: str, timeout: float = 10) -> str:
    """The text posted, once and privately, to the response_url `name`."""
    calls = bot.slack.wait_for(lambda c: c.method == "response_url" and c.args["url"].endswith(
        f"/{name}"), timeout=timeout)
    assert len(calls) == 1, calls
    assert calls[0].args["response_type"] == "ephemeral", calls[0].args
    return str(calls[0].args["text"])


def listed(bot: Bot, user: str = ALICE) -> str:
    status, body = bot.command(user, "list")
    assert status == 200, body
    return body


@pytest.fixture
def bot(aws_group: Any, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(aws_group, tmp_path) as running:
        yield running


# ---- tampered values ---------------------------------------------------------------------

def test_tampered_buttons_are_answered_and_change_nothing(bot: Bot, aws_group: Any) -> None:
    status, body = bot.command(ALICE, f"{REQUEST} tampering")
    assert status == 200 and "#1" in body
    for action_id in BUTTONS:
        for index, value in enumerate((*TAMPERED, None, 7, ["1"])):
            name = f"{action_id}-{index}"
            status, body = press(bot, action_id, value, answer_to=name)
            assert (status, body) == (200, ""), (action_id, value)
            said = answered(bot, name)
            assert said.endswith("is not a request number"), (action_id, value, said)
    assert "\u0663" in answered(bot, "jit_approve-8")  # what was sent is quoted back
    assert "`9999999999999999999999999999999999999999\u2026`" in answered(bot, "jit_deny-11")

    assert bot.slack.calls_to("views.open") == []  # Deny with a bad value opens no modal
    assert "waiting for approval" in listed(bot)  # #1 is still pending
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []

    # The same buttons with the right value still work.
    press(bot, "jit_approve", "#1", answer_to="approve-ok")
    wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 10, "the rule to open")


def test_tampered_deny_modal_is_refused_in_the_modal(bot: Bot) -> None:
    status, body = bot.command(ALICE, f"{REQUEST} deny me")
    assert status == 200 and "#1" in body
    for metadata in ("abc", "", "null", "2;1", str(2**63), None, 1, ...):
        errors = submit_deny(bot, metadata, "no")
        assert list(errors) == ["reason"], (metadata, errors)
        assert "is not a request number; nothing was denied" in errors["reason"], metadata
    assert submit_deny(bot, "1", "no\x00way") == {"reason": (
        "the reason contains a control character (U+0000); write it as plain text "
        "(line breaks and tabs are fine)")}
    assert submit_deny(bot, "1", "n" * (MAX_REASON_CHARS + 1)) == {"reason": (
        f"the reason is {MAX_REASON_CHARS + 1} characters; keep it to {MAX_REASON_CHARS}")}
    assert "waiting for approval" in listed(bot)

    assert submit_deny(bot, "1", "not today\nask again tomorrow") == {}
    assert "#1" not in listed(bot)  # no longer open or pending
    dm = wait_until(lambda: bot.slack.messages(ALICE), 10, "the requester's DM")
    assert "was denied by <@U0BOB>: not today ask again tomorrow" in dm[0]["blocks"][0][
        "text"]["text"]


def test_no_sender_is_answered_and_nothing_done(bot: Bot) -> None:
    base = {"team_id": "T0JITTEST", "text": f"{REQUEST} who am I",
            "response_url": bot.slack.response_url("nobody"), "trigger_id": "1.2.3"}
    for user in (None, "", "U0\x00X", "U0 ALICE", "x" * 100):
        fields = base if user is None else {**base, "user_id": user}
        status, body = command(bot, fields)
        assert status == 200, (user, body)
        assert NO_SENDER in json.loads(body)["text"], user

    for index, user in enumerate((None, 7, "", {"id": "U0BOB"})):
        name = f"nobody-{index}"
        status, _ = press(bot, "jit_approve", "1", user=user, answer_to=name)
        assert status == 200
        assert NO_SENDER in answered(bot, name), user
        assert NO_SENDER in submit_deny(bot, "1", "no", user=user)["reason"]
    assert "no requests" in listed(bot).lower()
    assert bot.slack.calls_to("chat.postMessage") == []


# ---- what people type ---------------------------------------------------------------------

@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A migrated database on this backend, of this test alone."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/jit.db"
        return
    with new_postgres_database("jit_listener_reasons") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reasons_too_long_or_with_a_nul_are_refused(backend: str, aws_group: Any,
                                                   tmp_path: Path) -> None:
    with database(backend, tmp_path) as url, running_bot(
            aws_group, tmp_path, env={"JIT_DATABASE_URL": url}) as bot:
        status, body = bot.command(ALICE, f"{REQUEST} " + "r" * (MAX_REASON_CHARS + 1))
        assert status == 200
        assert json.loads(body)["text"] == (
            f"the reason is {MAX_REASON_CHARS + 1} characters; keep it to {MAX_REASON_CHARS}")
        status, body = bot.command(ALICE, f"{REQUEST} fix\x00it")
        assert status == 200
        assert json.loads(body)["text"] == (
            "the reason contains a control character (U+0000); write it as plain text "
            "(line breaks and tabs are fine)")
        # A request with parts left out opens no form for a reason jit would refuse.
        status, body = bot.command(ALICE, "ssh prod-db reason: fix\x00it")
        assert status == 200 and "U+0000" in body
        # (10 MB never reaches a listener: the signed endpoint takes at most 1 MiB. The
        # policy check refuses it all the same: test_grammar_properties.)
        assert "no requests" in listed(bot).lower()
        assert bot.slack.calls_to("views.open") == []

        status, body = bot.command(ALICE, f"{REQUEST} " + "r" * MAX_REASON_CHARS)
        assert status == 200 and "#1" in body


# ---- no database --------------------------------------------------------------------------

@contextmanager
def logged_bot(aws_group: Any, tmp_path: Path, database_url: str) -> Iterator[tuple[Bot, Path]]:
    """jit-bot on this database with its output in a file, read after it stops (the engine's
    own sweeps log their tracebacks while the database is away: not this test's business)."""
    config = write_bot_policy(tmp_path / "jit.yaml", aws_group.group_id)
    log = tmp_path / "jit-bot.log"
    with SlackApiFake(bot_token=BOT_TOKEN) as slack, \
            bot_process(slack, config, database_url, log, clean_exit=False) as bot:
        yield bot, log


def refuse_connections(url: str, refused: bool) -> None:
    """PostgreSQL takes no new connection to this database, and drops the ones it has."""
    name = make_url(url).database
    admin = make_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {not refused}'))
            if refused:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :name"), {"name": name})
    finally:
        admin.dispose()


def answer_of(bot: Bot, name: str, since: float) -> Call:
    [call] = bot.slack.wait_for(lambda c: c.method == "response_url"
                                and c.args["url"].endswith(f"/{name}"), timeout=10)
    assert call.at - since < ANSWER_WITHIN, call.at - since
    return call


def test_without_the_database_people_are_told_in_words(aws_group: Any, tmp_path: Path) -> None:
    with new_postgres_database("jit_listener_outage") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        with logged_bot(aws_group, tmp_path, url) as (bot, log):
            status, body = bot.command(ALICE, f"{REQUEST} before the outage")
            assert status == 200 and "#1" in body
            try:
                refuse_connections(url, True)

                started = time.monotonic()
                status, body = bot.command(ALICE, "list")
                assert status == 200 and time.monotonic() - started < ANSWER_WITHIN
                assert json.loads(body)["text"] == (
                    f"jit could not read your requests: {UNAVAILABLE}")

                started = time.monotonic()
                status, _ = press(bot, "jit_approve", "1", answer_to="approve-outage")
                assert status == 200
                said = answer_of(bot, "approve-outage", started).args["text"]
                assert said == f"jit could not approve #1: {UNAVAILABLE}"

                started = time.monotonic()
                status, _ = press(bot, "jit_revoke", "1", answer_to="revoke-outage")
                assert status == 200
                said = answer_of(bot, "revoke-outage", started).args["text"]
                assert said == f"jit could not revoke #1: {UNAVAILABLE}"

                started = time.monotonic()
                status, _ = bot.command(ALICE, "cancel #1")
                assert status == 200
                said = answer_of(bot, f"cmd-{ALICE}", started).args["text"]
                assert said == f"jit could not cancel #1: {UNAVAILABLE}"

                started = time.monotonic()
                errors = submit_deny(bot, "1", "not now")
                assert time.monotonic() - started < ANSWER_WITHIN
                assert errors == {"reason": f"jit could not deny #1: {UNAVAILABLE}"}

                started = time.monotonic()
                status, _ = signed_post(bot.url, json.dumps({
                    "token": "unused", "team_id": "T0JITTEST", "api_app_id": "A0JITAPP",
                    "type": "event_callback", "event_id": "Ev0OUTAGE", "event_time": 1,
                    "event": {"type": "app_home_opened", "user": ALICE, "tab": "home"},
                }).encode(), content_type="application/json")
                assert status == 200
                home = wait_until(lambda: bot.slack.home(ALICE), ANSWER_WITHIN,
                                  "App Home to say the list is unavailable")
                assert "jit could not show your requests and grants: " + (
                    "its database is unavailable") in json.dumps(home)
            finally:
                refuse_connections(url, False)

            # Nothing changed: #1 still waits, and can be approved now.
            wait_until(lambda: "waiting for approval" in listed(bot), 10, "/jit list again")
            press(bot, "jit_approve", "1", answer_to="approve-after")
            wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 10,
                       "the rule to open once the database is back")
        output = log.read_text()

    records = [json.loads(line) for line in output.splitlines()]
    # The expiry engine's own sweeps log theirs with a traceback (jitcore.scheduler's way).
    engine = ("sweep failed", "reconcile failed", "posture check failed")
    traced = [r for r in records if ("exc" in r or "Traceback" in r["message"])
              and not r["message"].startswith(engine)]
    assert traced == [], output
    said = [r for r in records if r["logger"].startswith("bot.") and r["level"] == "error"]
    for doing in (f"/jit list by {ALICE}", f"approve #1 by {BOB}", f"revoke #1 by {BOB}",
                  f"cancel #1 by {ALICE}", f"deny #1 by {BOB}", f"App Home of {ALICE}"):
        [record] = [r for r in said if r["message"].startswith(f"{doing} failed: ")]
        assert "OperationalError" in record["message"], record
