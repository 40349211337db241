"""The typed policy and the pure decisions taken from it. Stdlib only; no I/O.

`jitcore.policy_file` turns a YAML file into a `Policy`; everything here works on
the frozen objects it returns. Every decision is a `Decision` value with a reason
that the Slack layer and the CLI turn into words.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jitcore.domain import (
    MAX_DURATION,
    WELL_KNOWN_SERVICES,
    GrantView,
    IPNetwork,
    Protocol,
    format_duration,
    parse_source,
)

ANYONE = "*"

# Addresses that are never a sensible source for a management port.
_NEVER_SOURCES = ("is_loopback", "is_unspecified", "is_multicast", "is_link_local", "is_reserved")
# Private ranges: refused unless the allowed_sources entry that admits the source is private.
_PRIVATE_RANGES: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
ANY_V4 = ipaddress.ip_network("0.0.0.0/0")
ANY_V6 = ipaddress.ip_network("::/0")

# A reason is read in a card, an audit line and a log line: a few sentences, not a file.
MAX_REASON_CHARS = 300
# C0 and C1 controls and DEL, but tab, line feed and carriage return (a multi-line reason
# is laid out with them): PostgreSQL refuses NUL in text, the others garble what shows it.
# And half of a UTF-16 pair, alone: JSON can carry one, no database encoding can store it.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class PortPolicy:
    name: str
    port: int
    protocol: Protocol = Protocol.TCP
    max_duration: timedelta | None = None
    allowed_sources: tuple[IPNetwork, ...] = (ANY_V4, ANY_V6)
    widest_prefix_v4: int = 32
    widest_prefix_v6: int = 128

    def __str__(self) -> str:
        return f"{self.name} {self.port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class AwsLocation:
    region: str
    security_group_id: str | None = None
    instance_id: str | None = None
    role_arn: str | None = None

    @property
    def resource(self) -> str:
        where = self.security_group_id or f"instance {self.instance_id}"
        return f"aws {self.region} {where}"


@dataclass(frozen=True, slots=True)
class AzureFirewall:
    """An Azure Firewall in front of a target: a grant is a DNAT rule forwarding a mapped port
    of `public_ip` to the target's destination and port. Classic rules (a NAT rule collection
    in the firewall itself) unless `policy` names the Firewall Policy that manages it."""

    subscription_id: str
    name: str
    resource_group: str
    public_ip: str
    mapped_ports: tuple[int, int]
    policy: str | None = None  # a Firewall Policy in `resource_group`: policy mode
    # The firewall's own subnet (AzureFirewallSubnet): DNAT also translates the source to one
    # of the firewall's addresses there, so an NSG behind the firewall must allow it.
    source_range: str | None = None

    @property
    def firewall_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Network/azureFirewalls/{self.name}")

    @property
    def policy_id(self) -> str | None:
        if self.policy is None:
            return None
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Network/firewallPolicies/{self.policy}")

    @property
    def scope(self) -> str:
        """Where jit's DNAT rules live (and mapped ports are unique): the firewall, or the
        policy that manages it."""
        return self.policy_id or self.firewall_id

    @property
    def mode(self) -> str:
        return "policy" if self.policy else "classic"


@dataclass(frozen=True, slots=True)
class AzureLocation:
    subscription_id: str
    resource_group: str
    network_security_group: str | None
    destination: str
    priority_band: tuple[int, int] = (100, 199)
    cloud: str = "public"
    arm_endpoint: str | None = None
    firewall: AzureFirewall | None = None

    @property
    def resource(self) -> str:
        via = []
        if self.firewall is not None:
            via.append(f"firewall {self.firewall.name} {self.firewall.public_ip}")
        if self.network_security_group is not None:
            via.append(str(self.network_security_group))
        return f"azure {self.subscription_id}/{self.resource_group}/{' + '.join(via)} " \
               f"-> {self.destination}"

    @property
    def nsg_id(self) -> str:
        """The NSG's ARM resource id: the scope of jit's rules and priority reservations.
        A firewall-only target has none: "" (nothing is written to an NSG for it)."""
        if self.network_security_group is None:
            return ""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/networkSecurityGroups/{self.network_security_group}"
        )


Location = AwsLocation | AzureLocation


@dataclass(frozen=True, slots=True)
class AutoApprove:
    users: tuple[str, ...]
    max_duration: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    location: Location
    ports: Mapping[str, PortPolicy]
    requesters: tuple[str, ...]
    approvers: tuple[str, ...]
    max_duration: timedelta
    approval_timeout: timedelta
    auto_approve: AutoApprove | None = None

    @property
    def cloud(self) -> str:
        return "aws" if isinstance(self.location, AwsLocation) else "azure"

    def port_max_duration(self, port: PortPolicy) -> timedelta:
        """The longest grant this port allows: the port, the target, the defaults and 24 h."""
        limits = [self.max_duration, MAX_DURATION]
        if port.max_duration is not None:
            limits.append(port.max_duration)
        return min(limits)


@dataclass(frozen=True, slots=True)
class SlackChannels:
    approvals_channel: str
    audit_channel: str


@dataclass(frozen=True, slots=True)
class Policy:
    targets: Mapping[str, Target]
    slack: SlackChannels | None = None
    default_max_duration: timedelta = timedelta(hours=3)
    default_approval_timeout: timedelta = timedelta(hours=1)
    source_file: str = field(default="", compare=False)

    def group_handles(self) -> frozenset[str]:
        """Every @usergroup handle the policy names, for resolving memberships up front."""
        handles: set[str] = set()
        for target in self.targets.values():
            principals = [*target.requesters, *target.approvers]
            if target.auto_approve:
                principals.extend(target.auto_approve.users)
            handles.update(p for p in principals if p.startswith("@"))
        return frozenset(handles)


class Reason(enum.StrEnum):
    """Why a decision came out as it did."""

    ALLOWED = "allowed"
    UNKNOWN_TARGET = "unknown_target"
    UNKNOWN_PORT = "unknown_port"
    NOT_A_REQUESTER = "not_a_requester"
    DURATION_TOO_LONG = "duration_too_long"
    DURATION_INVALID = "duration_invalid"
    SOURCE_INVALID = "source_invalid"
    SOURCE_ANYWHERE = "source_anywhere"
    SOURCE_TOO_WIDE = "source_too_wide"
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    SOURCE_PRIVATE = "source_private"
    SOURCE_UNROUTABLE = "source_unroutable"
    SELF_APPROVAL = "self_approval"
    NOT_AN_APPROVER = "not_an_approver"
    AUTO_APPROVED = "auto_approved"
    NOT_AUTO_APPROVED = "not_auto_approved"
    REASON_TOO_LONG = "reason_too_long"
    REASON_UNPRINTABLE = "reason_unprintable"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    detail: str

    def __bool__(self) -> bool:
        return self.allowed


def _yes(reason: Reason = Reason.ALLOWED, detail: str = "") -> Decision:
    return Decision(True, reason, detail)


def _no(reason: Reason, detail: str) -> Decision:
    return Decision(False, reason, detail)


@dataclass(frozen=True, slots=True)
class RequestCheck:
    """The outcome of checking a request; on success the resolved, canonical values."""

    decision: Decision
    target: Target | None = None
    port: PortPolicy | None = None
    source: IPNetwork | None = None
    duration: timedelta | None = None


def names(user: str, principals: tuple[str, ...], user_groups: frozenset[str]) -> bool:
    """Does a principal list (`U123`, `@group`, `*`) include this user?"""
    return any(p in (ANYONE, user) or p in user_groups for p in principals)


def resolve_port(target: Target, text: str) -> PortPolicy | None:
    """`ssh`, `SSH`, `22` or `22/tcp` -> the target's port policy, if the target lists it."""
    wanted = text.strip().lower()
    if wanted in target.ports:
        return target.ports[wanted]
    number, _, proto = wanted.partition("/")
    if number.isascii() and number.isdigit():  # str.isdigit alone accepts "²", which int() refuses
        for port in target.ports.values():
            if port.port == int(number) and (not proto or proto == port.protocol):
                return port
    known = WELL_KNOWN_SERVICES.get(wanted)
    if known is not None:
        for port in target.ports.values():
            if port.port == known.port and port.protocol == known.protocol:
                return port
    return None


def _is_private(network: IPNetwork) -> bool:
    return any(network.subnet_of(p) for p in _PRIVATE_RANGES  # type: ignore[arg-type]
               if p.version == network.version)


def check_source(port: PortPolicy, text: str) -> tuple[Decision, IPNetwork | None]:
    """May `text` be the source of a rule for this port: one routable address (or a range
    no wider than the port allows) inside the port's allowed sources?"""
    try:
        source = parse_source(text)
    except ValueError as exc:
        return _no(Reason.SOURCE_INVALID, str(exc)), None
    decision = _source_shape(port, source)
    if decision:
        decision = _source_allowed(port, source)
    return decision, (source if decision else None)


def _source_shape(port: PortPolicy, source: IPNetwork) -> Decision:
    """Not anywhere, not wider than the port allows, routable."""
    if source.prefixlen == 0:
        return _no(Reason.SOURCE_ANYWHERE,
                   f"{source} would open {port} to the whole internet; give your own address")
    widest = port.widest_prefix_v4 if source.version == 4 else port.widest_prefix_v6
    if source.prefixlen < widest:
        single = 32 if source.version == 4 else 128
        wanted = "a single address" if widest == single else f"a /{widest} or narrower"
        return _no(Reason.SOURCE_TOO_WIDE, f"{source} is wider than {port} allows: give {wanted}")
    if any(getattr(source.network_address, flag) for flag in _NEVER_SOURCES):
        return _no(Reason.SOURCE_UNROUTABLE, f"{source} is not a routable source address")
    return _yes()


def _source_allowed(port: PortPolicy, source: IPNetwork) -> Decision:
    """Inside the port's allowed sources; private only where a private range is listed."""
    matching = [n for n in port.allowed_sources if n.version == source.version
                and source.subnet_of(n)]  # type: ignore[arg-type]
    if not matching:
        allowed = ", ".join(str(n) for n in port.allowed_sources) or "nothing"
        return _no(Reason.SOURCE_NOT_ALLOWED,
                   f"{source} is outside the sources allowed for {port} ({allowed})")
    if _is_private(source) and not any(_is_private(n) for n in matching):
        return _no(Reason.SOURCE_PRIVATE,
                   f"{source} is a private address; {port} allows private sources only where "
                   "allowed_sources lists a private range")
    return _yes()


def check_reason(text: str) -> Decision:
    """Is this reason (a request's or a denial's) fit to keep: at most MAX_REASON_CHARS
    characters once stripped, as it is stored, and plain text?"""
    kept = text.strip()
    if len(kept) > MAX_REASON_CHARS:  # first: a huge reason is refused without a scan
        return _no(Reason.REASON_TOO_LONG,
                   f"the reason is {len(kept)} characters; keep it to {MAX_REASON_CHARS}")
    found = _UNPRINTABLE.search(kept)
    if found is not None:
        code = ord(found.group())
        kind = "an invalid character" if 0xD800 <= code <= 0xDFFF else "a control character"
        return _no(Reason.REASON_UNPRINTABLE,
                   f"the reason contains {kind} (U+{code:04X}); write it as plain text "
                   "(line breaks and tabs are fine)")
    return _yes()


def check_request(
    policy: Policy,
    requester: str,
    user_groups: frozenset[str],
    target_name: str,
    port_text: str,
    duration: timedelta,
    source_text: str,
    reason: str = "",
) -> RequestCheck:
    """May this user request this port on this target, for this long, from this source,
    giving this reason?"""
    reason_decision = check_reason(reason)
    if not reason_decision:
        return RequestCheck(reason_decision)
    target = policy.targets.get(target_name.strip().lower())
    if target is None:
        known = ", ".join(sorted(policy.targets)) or "none"
        return RequestCheck(_no(Reason.UNKNOWN_TARGET,
                                f"unknown target {target_name!r}; known targets: {known}"))
    if not names(requester, target.requesters, user_groups):
        return RequestCheck(_no(Reason.NOT_A_REQUESTER,
                                f"you may not request access to {target.name}"))
    port = resolve_port(target, port_text)
    if port is None:
        offered = ", ".join(str(p) for p in target.ports.values())
        return RequestCheck(_no(Reason.UNKNOWN_PORT,
                                f"{target.name} has no port {port_text!r}; it offers {offered}"))
    if duration <= timedelta(0):
        return RequestCheck(_no(Reason.DURATION_INVALID, "the duration must be positive"))
    limit = target.port_max_duration(port)
    if duration > limit:
        return RequestCheck(_no(
            Reason.DURATION_TOO_LONG,
            f"{format_duration(duration)} is longer than the {format_duration(limit)} "
            f"allowed for {port.name} on {target.name}",
        ))
    source_decision, source = check_source(port, source_text)
    if not source_decision:
        return RequestCheck(source_decision)
    return RequestCheck(_yes(), target, port, source, duration)


def check_approver(
    target: Target, requester: str, approver: str, approver_groups: frozenset[str]
) -> Decision:
    """May this user approve (or deny) this requester's request on this target?"""
    if approver == requester:
        return _no(Reason.SELF_APPROVAL, "you cannot approve your own request")
    if not names(approver, target.approvers, approver_groups):
        return _no(Reason.NOT_AN_APPROVER,
                   f"you are not an approver for {target.name}")
    return _yes()


def check_auto_approve(
    target: Target, port: PortPolicy, requester: str, duration: timedelta,
    user_groups: frozenset[str],
) -> Decision:
    """Is this request approved by policy, with no person in the loop?"""
    rule = target.auto_approve
    if rule is None or not names(requester, rule.users, user_groups):
        return _no(Reason.NOT_AUTO_APPROVED, "needs an approver")
    limit = min(rule.max_duration or MAX_DURATION, target.port_max_duration(port))
    if duration > limit:
        return _no(
            Reason.NOT_AUTO_APPROVED,
            f"longer than the {format_duration(limit)} that is approved automatically",
        )
    return _yes(Reason.AUTO_APPROVED, "auto-approved by policy")


def check_cancel(requester: str, actor: str, *, admin: bool = False) -> Decision:
    """May this user cancel this requester's pending request? The requester, or an admin."""
    if admin or actor == requester:
        return _yes()
    return _no(Reason.NOT_A_REQUESTER, "only the requester can cancel a request")


def check_revoke(target: Target, requester: str, actor: str, actor_groups: frozenset[str],
                 *, admin: bool = False) -> Decision:
    """May this user close this requester's grant now? The requester, an approver of the
    target, or an admin."""
    if admin or actor == requester or names(actor, target.approvers, actor_groups):
        return _yes()
    return _no(Reason.NOT_AN_APPROVER, "only the requester or an approver can revoke a grant")


@dataclass(frozen=True, slots=True)
class ExtendCheck:
    """The outcome of asking to extend a grant: refused, granted now (`new_end`), or to be
    asked of an approver as a new request (`ask`)."""

    decision: Decision
    ask: bool = False
    new_end: datetime | None = None


def check_extend(target: Target, grant: GrantView, actor: str, actor_groups: frozenset[str],
                 duration: timedelta, now: datetime) -> ExtendCheck:
    """May this user extend this active grant until now + duration?

    An approver, or the requester within their auto-approval, extends at once, up to the
    port's longest duration. The requester otherwise asks an approver (a new request);
    anyone else is refused. A new end before the current one is refused."""
    if grant.expires_at is not None and grant.expires_at <= now:
        return ExtendCheck(_no(Reason.DURATION_INVALID, f"#{grant.id} has already expired and "
                                                        "is being closed; request it again"))
    requester = grant.requester
    port = target.ports.get(grant.service)
    if port is None:
        return ExtendCheck(_no(Reason.UNKNOWN_PORT,
                               f"{target.name} no longer offers {grant.service}"))
    approver = check_approver(target, requester, actor, actor_groups).allowed
    auto = actor == requester and check_auto_approve(
        target, port, actor, duration, actor_groups).allowed
    if not approver and not auto:
        if actor != requester:
            return ExtendCheck(_no(Reason.NOT_AN_APPROVER,
                                   "only the requester or an approver can extend a grant"))
        return ExtendCheck(_yes(), ask=True)
    limit = target.port_max_duration(port)
    if duration > limit:
        return ExtendCheck(_no(Reason.DURATION_TOO_LONG,
                               f"{format_duration(duration)} is longer than the "
                               f"{format_duration(limit)} allowed for {port.name} on "
                               f"{target.name}"))
    new_end = now + duration
    if grant.expires_at and new_end <= grant.expires_at:
        return ExtendCheck(_no(Reason.DURATION_INVALID, f"#{grant.id} is already open until "
                                                        f"{grant.expires_at:%H:%M} UTC"))
    return ExtendCheck(_yes(), new_end=new_end)
