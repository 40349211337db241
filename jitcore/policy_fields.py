"""The single values of the policy file: each checked on its own, with a message that says
what was expected (`jitcore.policy_schema` puts them together into the file's shape)."""

from __future__ import annotations

import ipaddress
import re
from datetime import date, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import PlainValidator

from jitcore.domain import MAX_DURATION, IPNetwork
from jitcore.domain import parse_duration as _parse_duration
from jitcore.policy import ANYONE

# What a YAML value is, in words, for a message; bool before int (True is an int), and
# YAML 1.1 reads yes/no/on/off as booleans.
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "true/false (put the text in quotes)"), (int, "a number"),
    (float, "a decimal number"), (str, "text"), (list, "a list"), (dict, "a mapping"),
    (date, "a date"),
)


def kind_of(value: object) -> str:
    if value is None:
        return "empty"
    return next((label for kind, label in _KINDS if isinstance(value, kind)),
                type(value).__name__)


def must_be(expected: str, value: object) -> str:
    if value is None:
        return f"is empty; it must be {expected}"
    return f"must be {expected}, not {kind_of(value)}"


def _text(value: object, expected: str) -> str:
    if not isinstance(value, str):
        raise ValueError(must_be(expected, value))
    return value


# --- single values ---------------------------------------------------------------------


def _matching(pattern: str, expected: str) -> PlainValidator:
    compiled = re.compile(pattern)

    def check(value: object) -> str:
        text = _text(value, expected)
        if not compiled.fullmatch(text):
            raise ValueError(f"{text!r} is not {expected}")
        return text

    return PlainValidator(check)


def whole_number(low: int, high: int) -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(must_be(f"a whole number from {low} to {high}", value))
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range: it must be from {low} to {high}")
        return value

    return PlainValidator(check)


def _duration(value: object) -> timedelta:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"must be a duration with a unit, e.g. {value}m or {value}h, "
                         "not a bare number")
    text = _text(value, "a duration such as 30m, 2h or 1h30m").strip()
    parsed = _parse_duration(text)
    if parsed > MAX_DURATION:
        raise ValueError(f"{text} is longer than the 24h limit")
    return parsed


def _principal(anyone_refused: str | None) -> PlainValidator:
    expected = "a Slack user id (U0123ABCD) or @usergroup handle"
    if anyone_refused is None:
        expected += ' or "*"'

    def check(value: object) -> str:
        text = _text(value, expected)
        if text == ANYONE:
            if anyone_refused is not None:
                raise ValueError(f'"*" is not allowed here: {anyone_refused}')
            return text
        if not re.fullmatch(r"[UW][A-Z0-9]{2,}|@[a-z0-9][a-z0-9._-]*", text):
            raise ValueError(f"{text!r} is not {expected}")
        return text

    return PlainValidator(check)


def _cidr(value: object) -> IPNetwork:
    text = _text(value, "an IP address or CIDR range")
    try:
        if "%" in text:  # ipaddress takes an IPv6 zone (fe80::1%eth0); a firewall cannot
            raise ValueError(text)
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            network = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {network}?") from None
        raise ValueError(f"{text!r} is not an IP address or CIDR range such as "
                         "203.0.113.0/24") from None


def _ip_address(value: object) -> str:
    text = _text(value, "an IP address")
    try:
        if "%" in text:  # an IPv6 zone, as in _cidr
            raise ValueError(text)
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address such as 10.0.1.4") from None


def _uuid(value: object) -> str:
    text = _text(value, "a subscription id (a UUID)")
    if not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", text):
        raise ValueError(f"{text!r} is not a subscription id "
                         "(a UUID such as 00000000-0000-0000-0000-000000000000)")
    return text.lower()


def _https_url(value: object) -> str:
    text = _text(value, "an https URL")
    try:
        parts = urlsplit(text)
        valid = parts.scheme == "https" and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed [IPv6 literal
        valid = False
    if not valid:
        raise ValueError(f"{text!r} is not an https URL such as "
                         "https://management.usgovcloudapi.net")
    return text


def _range(lowest: int, highest: int, example: str, what: str,
           allowed: str = "") -> PlainValidator:
    """Two whole numbers [low, high] within lowest..highest, low <= high."""
    def check(value: object) -> tuple[int, int]:
        if not (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"must be two {what} [low, high], e.g. {example}")
        low, high = value
        if not (lowest <= low <= highest and lowest <= high <= highest):
            raise ValueError(f"[{low}, {high}] is outside {lowest}..{highest}{allowed}")
        if low > high:
            raise ValueError(f"[{low}, {high}] has its low end above its high end")
        return low, high

    return PlainValidator(check)


Duration = Annotated[timedelta, PlainValidator(_duration)]
ChannelId = Annotated[str, _matching(r"[CG][A-Z0-9]{2,}", "a Slack channel id such as C0123ABCD")]
Requester = Annotated[str, _principal(None)]
Approver = Annotated[str, _principal("anyone could approve")]
AutoApproved = Annotated[str, _principal("everyone's requests would be approved automatically")]
TargetName = Annotated[str, _matching(
    r"[a-z0-9][a-z0-9._-]{0,62}",
    "a valid target name (at most 63 lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or digit)",
)]
PortName = Annotated[str, _matching(
    r"[a-z][a-z0-9_-]{0,31}",
    "a valid service name such as ssh (lowercase letters, digits, '-' or '_', "
    "starting with a letter)",
)]
Region = Annotated[str, _matching(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", "an AWS region such as us-east-1")]
SecurityGroupId = Annotated[str, _matching(
    r"sg-([0-9a-f]{8}|[0-9a-f]{17})", "a security group id (sg- and 8 or 17 hex digits)")]
InstanceId = Annotated[str, _matching(
    r"i-([0-9a-f]{8}|[0-9a-f]{17})", "an instance id (i- and 8 or 17 hex digits)")]
RoleArn = Annotated[str, _matching(
    r"arn:aws(-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}",
    "an IAM role ARN such as arn:aws:iam::123456789012:role/jit")]
ResourceGroup = Annotated[str, _matching(
    r"[-\w.()]{0,89}[-\w()]", "an Azure resource group name")]
NsgName = Annotated[str, _matching(
    r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?", "an Azure network security group name")]
FirewallName = Annotated[str, _matching(
    r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?",
    "an Azure firewall or firewall policy name")]
IpAddress = Annotated[str, PlainValidator(_ip_address)]
Cidr = Annotated[IPNetwork, PlainValidator(_cidr)]
SubscriptionId = Annotated[str, PlainValidator(_uuid)]
HttpsUrl = Annotated[str, PlainValidator(_https_url)]
PriorityBand = Annotated[tuple[int, int], _range(
    100, 4096, "[100, 199]", "whole numbers", ", the priorities Azure allows")]
MappedPorts = Annotated[tuple[int, int], _range(1, 65535, "[50000, 50999]", "port numbers")]
