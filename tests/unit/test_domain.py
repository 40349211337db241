"""Durations, source addresses and the request state machine (jitcore.domain)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest

from jitcore.domain import (
    HOLDS_RULE,
    TERMINAL,
    TRANSITIONS,
    Service,
    Status,
    can_transition,
    format_duration,
    parse_duration,
    parse_source,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (" 1H 30M ", timedelta(hours=1, minutes=30)),
        ("0h45m", timedelta(minutes=45)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a duration is required, e.g. 30m, 2h or 1h30m"),
        ("   ", "a duration is required, e.g. 30m, 2h or 1h30m"),
        ("30", "'30' is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"),
        ("1x", "'1x' is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"),
        ("h", "'h' is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"),
        ("-5m", "'-5m' is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"),
        ("1.5h", "'1.5h' is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"),
        ("1h30", "'1h30' is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"),
        ("1h1h", "'1h1h' repeats the unit 'h'"),
        ("0m", "'0m' must be longer than zero"),
        ("0h0m", "'0h0m' must be longer than zero"),
        ("9999999999999d", "'9999999999999d' is far too long"),
        ("99999999d", "'99999999d' is far too long"),
        ("9" * 5000 + "s", f"'{'9' * 5000}s' is far too long"),
    ],
)
def test_parse_duration_refuses_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(hours=24), "1d"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-5), "0s"),
    ],
)
def test_format_duration_is_the_shortest_form(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 5400, 86399, 86400, 90061])
def test_format_then_parse_round_trips(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        (" 203.0.113.7 ", "203.0.113.7/32"),
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("2001:DB8::0001", "2001:db8::1/128"),
        ("2001:db8:0:0::/64", "2001:db8::/64"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_parse_source_gives_the_canonical_network(text: str, expected: str) -> None:
    assert parse_source(text) == ipaddress.ip_network(expected)
    assert str(parse_source(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a source address is required, e.g. 203.0.113.7"),
        ("my laptop", "'my laptop' is not an IPv4 or IPv6 address"),
        ("203.0.113.300", "'203.0.113.300' is not an IPv4 or IPv6 address"),
        ("203.0.113.7/33", "'203.0.113.7/33' is not an IPv4 or IPv6 address"),
        ("fe80::1%eth0", "'fe80::1%eth0' is not an IPv4 or IPv6 address"),
        ("2001:db8::1%1", "'2001:db8::1%1' is not an IPv4 or IPv6 address"),
        ("203.0.113.7/24", "'203.0.113.7/24' has host bits set; did you mean 203.0.113.0/24?"),
        ("2001:db8::1/64", "'2001:db8::1/64' has host bits set; did you mean 2001:db8::/64?"),
    ],
)
def test_parse_source_refuses_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_source(text)
    assert str(caught.value) == message


LEGAL = {
    (Status.PENDING, Status.APPROVED),
    (Status.PENDING, Status.DENIED),
    (Status.PENDING, Status.CANCELLED),
    (Status.PENDING, Status.LAPSED),
    (Status.APPROVED, Status.OPENING),
    (Status.OPENING, Status.ACTIVE),
    (Status.OPENING, Status.FAILED),
    (Status.ACTIVE, Status.CLOSING),
    (Status.CLOSING, Status.CLOSED),
    (Status.CLOSING, Status.CLOSE_FAILED),
    (Status.CLOSE_FAILED, Status.CLOSED),
}


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("new", list(Status))
def test_can_transition_matches_the_lifecycle_diagram(current: Status, new: Status) -> None:
    assert can_transition(current, new) is ((current, new) in LEGAL)


def test_every_status_has_an_entry_in_the_table() -> None:
    assert set(TRANSITIONS) == set(Status)


def test_terminal_states_have_no_exits() -> None:
    ends = {Status.DENIED, Status.CANCELLED, Status.LAPSED, Status.FAILED, Status.CLOSED}
    assert ends == TERMINAL
    for state in TERMINAL:
        assert not any(can_transition(state, new) for new in Status)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Status.PENDING, Status.ACTIVE),
        (Status.PENDING, Status.OPENING),
        (Status.APPROVED, Status.ACTIVE),
        (Status.ACTIVE, Status.CLOSED),
        (Status.CLOSED, Status.ACTIVE),
        (Status.DENIED, Status.APPROVED),
        (Status.ACTIVE, Status.ACTIVE),
    ],
)
def test_shortcuts_are_illegal(current: Status, new: Status) -> None:
    assert not can_transition(current, new)


def test_states_that_may_hold_a_rule() -> None:
    # The reconciler trusts this set: a marked rule outside these states is an orphan.
    assert {Status.OPENING, Status.ACTIVE, Status.CLOSING, Status.CLOSE_FAILED} == HOLDS_RULE
    assert not HOLDS_RULE & TERMINAL


def test_service_reads_as_name_port_protocol() -> None:
    assert str(Service("ssh", 22)) == "ssh 22/tcp"
