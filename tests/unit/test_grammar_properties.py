"""Properties of what people type, for any text: `/jit` text parses to a typed command or
a ParseError that says what was wrong, and nothing else; a request number is read or
refused in words; a reason is kept or refused with a reason. Never an exception."""

from __future__ import annotations

import re
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.grammar import (
    MAX_REQUEST_ID,
    Cancel,
    Extend,
    Help,
    ListGrants,
    ListTargets,
    NotARequestNumber,
    ParseError,
    Request,
    Revoke,
    parse,
    request_id,
)
from jitcore.policy import MAX_REASON_CHARS, Reason, check_reason, check_request
from tests.support.policies import aws_policy

BUDGET = settings(max_examples=300, deadline=None)
COMMANDS = (Help, ListGrants, ListTargets, Revoke, Extend, Cancel, Request)

# Words that steer the parser into each of its branches, and the characters that trip it.
WORDS = st.sampled_from([
    "help", "list", "targets", "revoke", "extend", "cancel", "ssh", "rdp", "22", "prod-db",
    "from", "for", "reason", "reason:", "because", "30m", "1h", "1h30m", "2", "h", "0m",
    "#42", "42", "#", "-1", str(2**31), str(2**63), "\u0663", "203.0.113.7", "::1",
    "http://203.0.113.7/", "<http://203.0.113.7|203.0.113.7>", "<@U123|bob>", "<!here>",
    "&lt;", "&amp;", "\u2018x\u2019", "\u200b", "\x00", "\t", "\n", "`",
])
TEXTS = st.one_of(
    st.text(),
    st.lists(st.one_of(WORDS, st.text(max_size=8)), max_size=12).map(" ".join),
    st.lists(WORDS, max_size=8).map(" ".join),
)
# Whatever a JSON payload can put where Slack puts a button's value.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6,
)
NOT_PLAIN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@BUDGET
@given(TEXTS)
def test_any_text_parses_to_a_command_or_says_what_is_wrong(text: str) -> None:
    result = parse(text)
    assert isinstance(result, (*COMMANDS, ParseError))
    if isinstance(result, ParseError):
        assert result.message.strip()
        assert result.example.startswith("/jit ")
        assert not isinstance(parse(result.example.removeprefix("/jit ")), ParseError)
    if isinstance(result, Revoke | Extend | Cancel):
        assert 1 <= result.grant_id <= MAX_REQUEST_ID
    if isinstance(result, Extend):
        assert result.duration > timedelta(0)
    if isinstance(result, Request):
        named = {"service": result.service, "target": result.target,
                 "duration": result.duration, "source": result.source}
        assert result.missing == tuple(k for k, v in named.items() if v is None)
        assert result.reason == result.reason.strip()
        assert isinstance(check_reason(result.reason).allowed, bool)


@BUDGET
@given(TEXTS)
def test_parsing_is_pure(text: str) -> None:
    assert parse(text) == parse(text)


@BUDGET
@given(st.integers(min_value=1, max_value=MAX_REQUEST_ID), st.sampled_from(["", "#"]))
def test_every_request_number_reads_back(number: int, prefix: str) -> None:
    assert request_id(f"{prefix}{number}") == number
    assert parse(f"revoke {prefix}{number}") == Revoke(number)


@BUDGET
@given(st.one_of(JSON_VALUES, TEXTS))
def test_any_value_is_a_request_number_or_refused_in_words(value: object) -> None:
    found = request_id(value)
    if isinstance(found, int):
        assert isinstance(value, str) and 1 <= found <= MAX_REQUEST_ID
        assert value.removeprefix("#") == str(found).zfill(len(value.removeprefix("#")))
    else:
        assert isinstance(found, NotARequestNumber)
        assert found.message.endswith(" is not a request number")
        assert not NOT_PLAIN.search(found.message)  # what it quotes is shown, not sent raw
        assert len(found.message) < 100


@BUDGET
@given(st.text(max_size=MAX_REASON_CHARS + 40))
def test_a_reason_is_kept_or_refused_with_a_reason(text: str) -> None:
    decision = check_reason(text)
    kept = text.strip()
    plain = not NOT_PLAIN.search(kept)
    assert decision.allowed == (len(kept) <= MAX_REASON_CHARS and plain)
    if not decision:
        assert decision.reason in (Reason.REASON_TOO_LONG, Reason.REASON_UNPRINTABLE)
        assert decision.detail.startswith("the reason ")


def test_a_ten_megabyte_reason_is_refused_by_the_policy_check() -> None:
    """The check every request goes through (the CLI's and the bot's), not the bot alone."""
    policy = aws_policy("sg-0123456789abcdef0")
    huge = "x" * (10 * 1024 * 1024)
    check = check_request(policy, "U0ALICE", frozenset(), "prod-db", "ssh",
                          timedelta(minutes=30), "203.0.113.7", huge)
    assert check.target is None and not check.decision
    assert check.decision.reason is Reason.REASON_TOO_LONG
    assert check.decision.detail == (f"the reason is {len(huge)} characters; keep it to "
                                     f"{MAX_REASON_CHARS}")
    nul = check_request(policy, "U0ALICE", frozenset(), "prod-db", "ssh",
                        timedelta(minutes=30), "203.0.113.7", "fix\x00it")
    assert nul.decision.reason is Reason.REASON_UNPRINTABLE
    assert "U+0000" in nul.decision.detail and "line breaks and tabs are fine" in (
        nul.decision.detail)
    fine = check_request(policy, "U0ALICE", frozenset(), "prod-db", "ssh",
                         timedelta(minutes=30), "203.0.113.7", "line one\n\tline two")
    assert fine.decision
