"""jit-bot as a process, in HTTP mode, against requests Slack never sends: unsigned, forged,
stale, oversized, signed but malformed. Each is refused with its own status before Bolt
parses it, and leaves one warning naming why (never the body), no error and no traceback;
a correctly signed `/jit` still works."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bot.signing import MAX_BODY
from tests.e2e.test_ops_endpoints import stop
from tests.e2e.test_slack_bot import ALICE, SECRET, Bot, running_bot, signed_post

FORM, JSON = "application/x-www-form-urlencoded", "application/json"
MARK = "hostile-body-7f3a"  # in every refused body: must never reach the log


def post(bot: Bot, body: bytes | None, headers: dict[str, str]) -> int:
    """POST exactly these headers (no Content-Length unless given); the status answered."""
    url = urllib.parse.urlsplit(bot.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        conn.putrequest("POST", url.path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def signature(body: bytes, timestamp: str, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return f"v0={digest.hexdigest()}"


def unsigned(bot: Bot, body: bytes, content_type: str) -> int:
    return post(bot, body, {"Content-Type": content_type, "Content-Length": str(len(body))})


def form(payload: str) -> bytes:
    return urllib.parse.urlencode({"payload": payload, "mark": MARK}).encode()


def log_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for line in output.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"level": "?", "message": line})
    return lines


def test_hostile_requests_are_refused_quietly(aws_group: Any, tmp_path: Path) -> None:
    now = str(int(time.time()))
    junk = f"{{x {MARK}".encode()
    json_array = json.dumps([MARK]).encode()
    json_object = json.dumps({"type": "event_callback", "mark": MARK}).encode()
    with running_bot(aws_group, tmp_path) as bot:
        sent = [  # (what was sent, the status answered, the reason logged)
            ("unsigned {x as text/plain", unsigned(bot, junk, "text/plain"), 401,
             "no signature"),
            ("unsigned JSON", unsigned(bot, json_object, JSON), 401, "no signature"),
            ("unsigned non-JSON payload", unsigned(bot, form("not json"), FORM), 401,
             "no signature"),
            ("unsigned array payload", unsigned(bot, form("[1]"), FORM), 401,
             "no signature"),
            ("a timestamp that is no number", post(bot, json_object, {
                "Content-Type": JSON, "Content-Length": str(len(json_object)),
                "X-Slack-Request-Timestamp": "ts-9c1e",
                "X-Slack-Signature": signature(json_object, "ts-9c1e")}), 401,
             "timestamp is not a number"),
            ("a stale timestamp", signed_post(bot.url, form("{}"), age=6 * 60)[0], 401,
             "more than 5 minutes away"),
            ("a forged signature", signed_post(bot.url, form("{}"), secret="guessed")[0], 401,
             "signature does not match"),
            # waitress answers this one from its Content-Length (max_request_body_size),
            # before any body is read: no jit log line. (Sending the body too races the
            # answer: the server closes while it still arrives, a reset for the client.)
            ("an oversized body", post(bot, None, {
                "Content-Type": FORM, "Content-Length": str(MAX_BODY + 1),
                "X-Slack-Request-Timestamp": now, "X-Slack-Signature": signature(b"", now)}),
             413, None),
            ("no Content-Length", post(bot, None, {
                "Content-Type": FORM, "X-Slack-Request-Timestamp": now,
                "X-Slack-Signature": signature(b"", now)}), 411, "no Content-Length"),
            ("signed {x as text/plain", signed_post(bot.url, junk, content_type="text/plain")[0],
             400, "content type is neither a form nor JSON"),
            ("signed JSON array", signed_post(bot.url, json_array, content_type=JSON)[0], 400,
             "JSON body is not an object"),
            ("signed JSON that is not JSON", signed_post(bot.url, junk, content_type=JSON)[0],
             400, "JSON body is not an object"),
            ("signed non-JSON payload", signed_post(bot.url, form("not json"))[0], 400,
             "payload is not a JSON object"),
            ("signed array payload", signed_post(bot.url, form("[1]"))[0], 400,
             "payload is not a JSON object"),
            ("signed body not UTF-8", signed_post(bot.url, MARK.encode() + b"=\xff")[0], 400,
             "not UTF-8"),
        ]
        status, answer = bot.command(ALICE, "ssh prod-db 20m from 203.0.113.7 still works")
        assert status == 200 and "#1" in answer
        output = stop(bot.proc)

    assert [(what, got) for what, got, _, _ in sent] == [
        (what, wanted) for what, _, wanted, _ in sent]
    lines = log_lines(output)
    assert [line for line in lines if line["level"] in ("error", "critical", "?")] == []
    assert "Traceback" not in output
    assert MARK not in output and "ts-9c1e" not in output
    refusals = [line for line in lines if line.get("logger") == "jit.bot.signing"]
    logged = [case for case in sent if case[3] is not None]
    assert len(refusals) == len(logged), refusals
    for (what, _, _, reason), line in zip(logged, refusals, strict=True):
        assert line["level"] == "warning", (what, line)
        message = line["message"]
        assert reason in message and "127.0.0.1" in message and "/slack/events" in message, (
            what, message)
