"""Properties of `/slack/events` over jit-bot's real WSGI stack, in process: ops_app ->
SignedOnly -> Bolt's WSGI handler -> jit's listeners -> the service on SQLite, Slack's Web
API the fake, AWS moto.

(a) whatever arrives unsigned is refused (400, 401, 411, 413), with one warning; nothing
    raises, nothing answers 500, nothing logs an error;
(b) whatever follows `/jit` in a signed slash command is acknowledged (200) within Slack's
    3 s, logs no error, and approves nothing: the policy has no auto-approval, so no grant
    is approved or holds a rule, and the security group gets no jit rule.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import logging
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from sqlalchemy import select

from bot.app import AfterAck, build_app
from bot.directory import SlackDirectory
from bot.ops import Readiness, WsgiApp, ops_app
from bot.signing import MAX_BODY, SignedOnly
from jitcore.domain import HOLDS_RULE, Status
from jitcore.policy_file import load_policy
from jitcore.ports import SystemClock
from jitcore.providers.aws import AwsProvider
from jitcore.scheduler import Engine
from jitcore.service import JitService
from jitcore.store import Store
from jitcore.store.models import Grant
from tests.fakes.slack_api import SlackApiFake
from tests.support.aws import jit_rules
from tests.support.fixtures import RecordingNotifier
from tests.support.policies import write_bot_policy

SECRET = "property-signing-secret"
BOT_TOKEN = "xoxb-test"
EVENTS = "/slack/events"
ALLOWED = ipaddress.IPv4Network("203.0.113.0/24")  # the only sources prod-db's ssh admits
ACK_BUDGET = 3.0  # seconds Slack waits for an ack
REFUSED = {400, 401, 411, 413}
FORM, JSON = "application/x-www-form-urlencoded", "application/json"
# A fixed budget and a fixed sequence: the same examples on every run, no example database.
BUDGET = settings(max_examples=300, deadline=None, derandomize=True, database=None)


@dataclass
class Stack:
    wsgi: WsgiApp
    store: Store
    slack: SlackApiFake
    later: AfterAck

    def post(self, body: bytes, headers: dict[str, Any]) -> tuple[int, bytes]:
        """POST `body` to /slack/events; `headers` are WSGI environ keys (CONTENT_TYPE,
        HTTP_X_SLACK_SIGNATURE...). The status and the body answered."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST", "PATH_INFO": EVENTS, "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "198.51.100.20",
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), **headers}
        environ = {k: v for k, v in environ.items() if v is not None}
        statuses: list[str] = []
        answer = self.wsgi(environ, lambda status, _headers, *_: statuses.append(status))
        data = b"".join(answer)
        assert len(statuses) == 1
        return int(statuses[0].split()[0]), data


def signed(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body,
                      hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": stamp, "HTTP_X_SLACK_SIGNATURE": f"v0={digest}"}


def slash_command(slack: SlackApiFake, user: str, text: str) -> bytes:
    return urllib.parse.urlencode({
        "token": "unused", "team_id": "T0JITTEST", "channel_id": "C0GENERAL",
        "user_id": user, "user_name": user.lower(), "command": "/jit", "text": text,
        "response_url": slack.response_url(f"cmd-{user}"),
        "trigger_id": "13345224609.738474920.8088930838d88f008e0"}).encode()


@pytest.fixture
def stack(aws_group: Any, store: Store, tmp_path: Path) -> Iterator[Stack]:
    """jit-bot's HTTP stack as main.py wires it, on a policy without auto-approval."""
    policy = load_policy(write_bot_policy(
        tmp_path / "jit.yaml", aws_group.group_id,
        ports={"ssh": {"port": 22, "max_duration": "30m", "allowed_sources": [str(ALLOWED)]}}))
    with SlackApiFake(bot_token=BOT_TOKEN) as slack:
        client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
        service = JitService(store, policy, {"aws": AwsProvider()}, RecordingNotifier(),
                             SystemClock(), directory=SlackDirectory(client))
        later = AfterAck()
        app = build_app(service, client, SECRET, later)
        slack_wsgi = SignedOnly(SlackRequestHandler(app, path=EVENTS), SECRET, path=EVENTS)
        try:
            yield Stack(ops_app(Readiness(store, Engine(service)), slack_wsgi), store, slack,
                        later)
        finally:
            later.close()


def admitted(source: str) -> bool:
    """Whether the policy allows `source` for ssh on prod-db."""
    network = ipaddress.ip_network(source)
    return isinstance(network, ipaddress.IPv4Network) and network.subnet_of(ALLOWED)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


latin1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
hostile_bodies = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from([b"{x", b"[1]", b"[]", b'{"team": 5}', b"payload=abc", b"payload=%5B1%5D",
                     b"payload=", b"payload", b"a=\xff", b"[" * 5000, b"null", b""]),
    st.text(max_size=300).map(lambda t: urllib.parse.urlencode({"payload": t}).encode()),
)
content_types = st.one_of(st.none(), st.sampled_from(
    [FORM, JSON, "text/plain", f"{JSON}; charset=utf-8", "APPLICATION/JSON", ""]), latin1)
timestamps = st.one_of(
    st.none(), latin1, st.integers().map(str),
    st.integers(-400, 400).map(lambda skew: str(int(time.time()) + skew)))
signatures = st.one_of(
    st.none(), latin1,
    st.binary(min_size=32, max_size=32).map(lambda raw: f"v0={raw.hex()}"))
lengths = st.one_of(st.just("exact"), st.none(), latin1,
                    st.integers(0, 10 * MAX_BODY).map(str))
other_headers = st.dictionaries(
    st.from_regex(r"HTTP_[A-Z][A-Z0-9_]{0,24}", fullmatch=True), latin1, max_size=4)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unsigned_requests_are_refused_and_nothing_breaks(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    @BUDGET
    @given(body=hostile_bodies, content_type=content_types, timestamp=timestamps,
           signature=signatures, length=lengths, extra=other_headers)
    def unsigned(body: bytes, content_type: str | None, timestamp: str | None,
                 signature: str | None, length: str | None, extra: dict[str, str]) -> None:
        headers: dict[str, Any] = {**extra, "CONTENT_TYPE": content_type,
                                   "HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp,
                                   "HTTP_X_SLACK_SIGNATURE": signature}
        if length != "exact":
            headers["CONTENT_LENGTH"] = length
        caplog.clear()
        status, _ = stack.post(body, headers)
        assert status in REFUSED
        refusals = [r for r in caplog.records if r.name == "jit.bot.signing"]
        assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
        assert errors(caplog) == []

    unsigned()
    assert stack.slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_oversized_body_is_refused_unread(stack: Stack) -> None:
    class Unreadable(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise AssertionError("the body of a refused request was read")

    status, _ = stack.post(b"", {"CONTENT_LENGTH": str(MAX_BODY + 1), "CONTENT_TYPE": FORM,
                                 "wsgi.input": Unreadable(), **signed(b"")})
    assert status == 413


words = st.text(st.characters(codec="utf-8"), max_size=40)
sources = st.one_of(
    st.ip_addresses().map(str), st.ip_addresses(network=str(ALLOWED)).map(str),
    st.builds(lambda net, prefix: f"{net}/{prefix}",
              st.ip_addresses(v=4), st.integers(0, 32)),
    st.sampled_from(["203.0.113.7", "203.0.113.0/24", "0.0.0.0/0", "::/0", "10.1.2.3",
                     "198.51.100.7", "127.0.0.1", "localhost"]),
    words)
requests = st.builds(
    lambda service, target, duration, source, reason:
        f"{service} {target} {duration} from {source} {reason}",
    st.sampled_from(["ssh", "rdp", "SSH", "http"]) | words,
    st.sampled_from(["prod-db", "nope", "PROD-DB"]) | words,
    st.sampled_from(["20m", "30m", "2h", "0s", "5", "-1m", "999999999h"]) | words,
    sources, words)
well_formed = st.builds(  # only the source and the reason vary: most are recorded, PENDING
    lambda duration, source, reason: f"ssh prod-db {duration} from {source} {reason}",
    st.sampled_from(["5m", "20m", "30m", "31m"]),
    st.ip_addresses(network=str(ALLOWED)).map(str) | sources,
    st.sampled_from(["", "fix replication", "<!channel> <@U0BOB> *now*"]) | words)
verbs = st.builds(
    lambda verb, number, rest: f"{verb} {number} {rest}".strip(),
    st.sampled_from(["revoke", "cancel", "extend", "list", "help", "targets", "approve"]),
    st.integers(-2, 2**70).map(str) | words, words)
# Half noise, half requests the policy may record (and leave for an approver)
command_texts = st.one_of(st.one_of(words, st.text(max_size=300), requests, verbs),
                          well_formed)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_any_signed_slash_command_is_acked_and_opens_nothing(
        stack: Stack, aws_group: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    @BUDGET
    @given(user=st.sampled_from(["U0ALICE", "U0BOB", "U0MALLORY"]), text=command_texts)
    def command(user: str, text: str) -> None:
        body = slash_command(stack.slack, user, text)
        started = time.monotonic()
        status, answer = stack.post(body, {"CONTENT_TYPE": FORM, **signed(body)})
        assert status == 200, answer
        assert time.monotonic() - started < ACK_BUDGET
        assert errors(caplog) == []

    command()
    stack.later.close()  # what the acks handed on (modals, replies) has run
    assert errors(caplog) == []
    with stack.store.read() as session:
        grants = list(session.scalars(select(Grant)))
    assert not [g for g in grants if g.status in {Status.APPROVED, *HOLDS_RULE}]
    assert [g.source for g in grants if not admitted(g.source)] == []
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_command_mentioning_payload_is_acked(stack: Stack) -> None:
    """Bolt takes a form whose text says "payload" for an interaction; SignedOnly hands it
    the same form with the word encoded, so the command still reaches its listener."""
    body = slash_command(stack.slack, "U0ALICE", "ssh prod-db 20m from 203.0.113.7 payload")
    status, answer = stack.post(body, {"CONTENT_TYPE": FORM, **signed(body)})
    assert status == 200 and b"Request #1 is waiting for an approver" in answer, answer
    with stack.store.read() as session:
        assert [g.reason for g in session.scalars(select(Grant))] == ["payload"]
