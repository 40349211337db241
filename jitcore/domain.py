"""Value types and the request state machine. Stdlib only; no I/O."""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_DURATION = timedelta(hours=24)


class Status(enum.StrEnum):
    """Where a request stands; see DESIGN.md §3."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    CANCELLED = "CANCELLED"
    LAPSED = "LAPSED"
    OPENING = "OPENING"
    FAILED = "FAILED"
    ACTIVE = "ACTIVE"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    CLOSE_FAILED = "CLOSE_FAILED"


# Every legal move. A transition not listed here is refused before any write.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.APPROVED, Status.DENIED, Status.CANCELLED, Status.LAPSED}),
    Status.APPROVED: frozenset({Status.OPENING}),
    Status.OPENING: frozenset({Status.ACTIVE, Status.FAILED}),
    Status.ACTIVE: frozenset({Status.CLOSING}),
    Status.CLOSING: frozenset({Status.CLOSED, Status.CLOSE_FAILED}),
    Status.CLOSE_FAILED: frozenset({Status.CLOSED}),
    Status.DENIED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.LAPSED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CLOSED: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
# States in which a cloud rule may exist on behalf of the grant.
HOLDS_RULE = frozenset({Status.OPENING, Status.ACTIVE, Status.CLOSING, Status.CLOSE_FAILED})


def can_transition(current: Status, new: Status) -> bool:
    return new in TRANSITIONS[current]


class CloseReason(enum.StrEnum):
    EXPIRED = "expired"
    REVOKED = "revoked"


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class Service:
    """A named management port, e.g. ssh = 22/tcp."""

    name: str
    port: int
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        return f"{self.name} {self.port}/{self.protocol}"


WELL_KNOWN_SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("ssh", 22),
        Service("rdp", 3389),
        Service("winrm", 5985),
        Service("winrm-https", 5986),
    )
}

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Bounds that keep int() and timedelta() from raising anything but our ValueError.
_MAX_DURATION_DIGITS = 12
_MAX_DURATION_SECONDS = 3650 * 86400


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1h30m`, `1d` -> timedelta. Raises ValueError with a reason."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned:
        raise ValueError("a duration is required, e.g. 30m, 2h or 1h30m")
    pos = 0
    total = 0
    seen: set[str] = set()
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != pos:
            break
        unit = match.group(2)
        if unit in seen:
            raise ValueError(f"{text!r} repeats the unit {unit!r}")
        seen.add(unit)
        if len(match.group(1)) > _MAX_DURATION_DIGITS:
            raise ValueError(f"{text!r} is far too long")
        total += int(match.group(1)) * _UNIT_SECONDS[unit]
        pos = match.end()
    if pos != len(cleaned):
        raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d")
    if total <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    if total > _MAX_DURATION_SECONDS:
        # timedelta itself overflows past 999999999 days; nothing jit does needs that.
        raise ValueError(f"{text!r} is far too long")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration, shortest form: 5400s -> `1h30m`."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_source(text: str) -> IPNetwork:
    """An address or prefix in canonical network form: `203.0.113.7` -> 203.0.113.7/32.

    Raises ValueError when the text is not an address, or a prefix has host bits set.
    """
    cleaned = text.strip()
    if not cleaned:
        raise ValueError("a source address is required, e.g. 203.0.113.7")
    if "%" in cleaned:
        # ipaddress accepts an IPv6 zone (fe80::1%eth0), which means nothing to a cloud firewall.
        raise ValueError(f"{cleaned!r} is not an IPv4 or IPv6 address")
    try:
        return ipaddress.ip_network(cleaned, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ValueError(
                f"{cleaned!r} has host bits set; did you mean "
                f"{ipaddress.ip_network(cleaned, strict=False)}?"
            ) from None
        raise ValueError(f"{cleaned!r} is not an IPv4 or IPv6 address") from None


# A DNS name as a host may be written: labels of letters, digits and hyphens.
_HOSTNAME = re.compile(r"(?=.{1,80}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_ENTRY_TEXT = re.compile(r"(\[[^\]]*\]|[^\s:\[\]]+):([1-9]\d{0,4}) -> "
                         r"(\[[^\]]*\]|[^\s:\[\]]+):([1-9]\d{0,4})")


def _check_host(host: str) -> None:
    if _HOSTNAME.fullmatch(host):
        return
    try:
        if "%" in host:  # an IPv6 zone (`%eth0`) means nothing across a firewall
            raise ValueError(host)
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address or a DNS name") from None


def _check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{port!r} is not a TCP/UDP port (1-65535)")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unbracket(host: str) -> str | None:
    """`[2001:db8::1]` -> `2001:db8::1`; a bare host as it is. None for a bracketed host
    without a colon: `_hostport` brackets IPv6 hosts only."""
    if host.startswith("["):
        inner = host[1:-1]
        return inner if ":" in inner else None
    return host


@dataclass(frozen=True, slots=True)
class Entry:
    """Where the requester connects when the grant goes through a DNAT: `host:port` (a
    firewall's public address and the port mapped for the grant), forwarded to
    `to_host:to_port` (the VM's address and the requested port)."""

    host: str
    port: int
    to_host: str
    to_port: int

    def __post_init__(self) -> None:
        _check_host(self.host)
        _check_host(self.to_host)
        _check_port(self.port)
        _check_port(self.to_port)

    def __str__(self) -> str:
        """`20.30.40.50:50007 -> 10.1.0.4:22`; an IPv6 host in brackets."""
        return f"{_hostport(self.host, self.port)} -> {_hostport(self.to_host, self.to_port)}"

    def to_text(self) -> str:
        """For one string column (at most 200 characters): the `str` form."""
        return str(self)

    @classmethod
    def from_text(cls, text: str) -> Entry | None:
        """The inverse of `to_text`; None for text it did not write."""
        match = _ENTRY_TEXT.fullmatch(text)
        if match is None:
            return None
        host, to_host = _unbracket(match.group(1)), _unbracket(match.group(3))
        if host is None or to_host is None:
            return None
        try:
            return cls(host, int(match.group(2)), to_host, int(match.group(4)))
        except ValueError:
            return None

    def ssh_command(self, user: str = "<user>") -> str:
        """`ssh -p 50007 <user>@20.30.40.50`: ssh takes an IPv6 host without brackets."""
        return f"ssh -p {self.port} {user}@{self.host}"


@dataclass(frozen=True, slots=True)
class GrantView:
    """A read-only snapshot of a request/grant, handed to notifiers and the CLI."""

    id: int
    status: Status
    requester: str
    target: str
    cloud: str
    service: str
    port: int
    protocol: str
    source: str
    duration: timedelta
    reason: str
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    opened_at: datetime | None = None
    expires_at: datetime | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None
    rule_ref: str | None = None
    error: str | None = None
    entry: Entry | None = None  # where to connect, for a grant through a DNAT

    @property
    def label(self) -> str:
        return f"#{self.id}"


class EventKind(enum.StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    AUTO_APPROVED = "auto_approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    LAPSED = "lapsed"
    OPENING = "opening"
    OPENED = "opened"
    OPEN_FAILED = "open_failed"
    EXTENDED = "extended"
    EXPIRING = "expiring"
    CLOSING = "closing"
    CLOSED = "closed"
    CLOSE_RETRY = "close_retry"
    CLOSE_FAILED = "close_failed"
    ORPHAN_REMOVED = "orphan_removed"


@dataclass(frozen=True, slots=True)
class GrantEvent:
    """Something that happened to a grant, after its transaction committed."""

    kind: EventKind
    grant: GrantView
    actor: str
    at: datetime
    detail: str = ""
    alert: bool = False
