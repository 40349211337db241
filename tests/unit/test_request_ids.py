"""bot.grammar.request_id: the one reader of request numbers, from a command word, a button's
value or a modal's private_metadata. Anything but a number jit could have given is refused
in words, never with an exception."""

from __future__ import annotations

import pytest

from bot import blocks
from bot.grammar import MAX_REQUEST_ID, NotARequestNumber, Revoke, parse, request_id


@pytest.mark.parametrize(("value", "expected"), [
    ("7", 7),
    ("#7", 7),
    ("42", 42),
    ("007", 7),
    ("1", 1),
    (str(2**31 - 1), 2**31 - 1),
])
def test_request_numbers(value: str, expected: int) -> None:
    assert request_id(value) == expected


@pytest.mark.parametrize(("value", "shown"), [
    ("abc", "`abc`"),
    ("", "an empty value"),
    ("null", "`null`"),
    ("2;1", "`2;1`"),
    ("-1", "`-1`"),
    ("+1", "`+1`"),
    ("0", "`0`"),
    ("#0", "`#0`"),
    (str(2**31), f"`{2**31}`"),  # past the grants table's 32-bit id
    (str(2**63), f"`{2**63}`"),  # past SQLite's integer: OverflowError, once
    (" 7 ", "` 7 `"),
    ("7 ", "`7 `"),
    ("#", "`#`"),
    ("##7", "`##7`"),
    ("7.0", "`7.0`"),
    ("1e3", "`1e3`"),
    ("\u0663", "`\u0663`"),  # Arabic-Indic three: isdigit() and int() say yes
    ("\uff17", "`\uff17`"),  # fullwidth seven
    ("\u00b2", "`\u00b2`"),  # superscript two: isdigit() yes, int() no
    ("1_000", "`1_000`"),
    ("9" * 5000, f"`{'9' * 40}…`"),  # int() would refuse it with a ValueError
    ("a`b", "`a'b`"),  # a backtick would end the code span
    ("7\x00", "`7\ufffd`"),
])
def test_anything_else_is_refused_in_words(value: str, shown: str) -> None:
    assert request_id(value) == NotARequestNumber(f"{shown} is not a request number")


@pytest.mark.parametrize(("value", "shown"), [
    (None, "`null`"), (7, "`7`"), (7.0, "`7.0`"), (["7"], '`["7"]`'), ({"id": 7}, '`{"id": 7}`'),
    (True, "`true`"),
])
def test_a_value_that_is_not_text_is_refused(value: object, shown: str) -> None:
    """A tampered JSON payload can put anything where Slack puts a string."""
    assert request_id(value) == NotARequestNumber(f"{shown} is not a request number")


def test_the_refusal_is_inert_once_escaped() -> None:
    refused = request_id("<!channel> <@U123> &")
    assert isinstance(refused, NotARequestNumber)
    text = blocks.error_message(refused.message)["text"]
    assert text == "`&lt;!channel&gt; &lt;@U123&gt; &amp;` is not a request number"


def test_commands_read_ids_the_same_way() -> None:
    assert parse("revoke #42") == Revoke(42)
    assert parse(f"revoke {MAX_REQUEST_ID}") == Revoke(MAX_REQUEST_ID)
    for word in ("abc", "0", str(2**31), str(2**63), "\u0663", "#"):
        refused = parse(f"cancel {word}")
        assert not isinstance(refused, Revoke)
        assert "is not a grant id" in getattr(refused, "message", ""), word
