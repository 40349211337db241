"""The shape of the policy file (DESIGN.md §5) as pydantic models, and the conversion of a
checked file into the stdlib dataclasses of `jitcore.policy`, which never sees pydantic.

`jitcore.policy_file` reads the YAML and turns validation errors into messages.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Hashable
from datetime import date, timedelta
from types import MappingProxyType
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from jitcore.domain import MAX_DURATION, WELL_KNOWN_SERVICES, IPNetwork, Protocol, format_duration
from jitcore.domain import parse_duration as _parse_duration
from jitcore.errors import PolicyProblems
from jitcore.policy import (
    ANY_V4,
    ANY_V6,
    ANYONE,
    AutoApprove,
    AwsLocation,
    AzureFirewall,
    AzureLocation,
    Location,
    Policy,
    PortPolicy,
    SlackChannels,
    Target,
)

Loc = tuple[Hashable, ...]
# Aliases can make a small file expand into a huge tree; no real policy comes near this.
MAX_VALUES = 100_000
_KNOWN_SERVICES = ", ".join(str(s) for s in WELL_KNOWN_SERVICES.values())


def kind_of(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):  # YAML 1.1 reads yes/no/on/off as booleans
        return "true/false (put the text in quotes)"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return "a date"
    return type(value).__name__


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


def _whole_number(low: int, high: int) -> PlainValidator:
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


def _mapped_ports(value: object) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError("must be two port numbers [low, high], e.g. [50000, 50999]")
    low, high = value
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ValueError(f"[{low}, {high}] is outside 1..65535")
    if low > high:
        raise ValueError(f"[{low}, {high}] has its low end above its high end")
    return low, high


def _priority_band(value: object) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError("must be two whole numbers [low, high], e.g. [100, 199]")
    low, high = value
    if not (100 <= low <= 4096 and 100 <= high <= 4096):
        raise ValueError(f"[{low}, {high}] is outside 100..4096, the priorities Azure allows")
    if low > high:
        raise ValueError(f"[{low}, {high}] has its low end above its high end")
    return low, high


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


# --- the file's shape ------------------------------------------------------------------


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SlackSpec(Spec):
    approvals_channel: ChannelId
    audit_channel: ChannelId


class DefaultsSpec(Spec):
    max_duration: Duration = timedelta(hours=3)
    approval_timeout: Duration = timedelta(hours=1)
    requesters: list[Requester] = Field(default_factory=lambda: [ANYONE])
    approvers: list[Approver] = Field(default_factory=list)


class AwsSpec(Spec):
    region: Region
    security_group_id: SecurityGroupId | None = None
    instance_id: InstanceId | None = None
    role_arn: RoleArn | None = None

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if self.security_group_id is not None and self.instance_id is not None:
            raise ValueError("give security_group_id or instance_id, not both")
        if self.security_group_id is None and self.instance_id is None:
            raise ValueError("needs a security_group_id or an instance_id")
        return self


class FirewallSpec(Spec):
    name: FirewallName
    resource_group: ResourceGroup
    public_ip: Annotated[str, PlainValidator(_ip_address)]
    mapped_ports: Annotated[tuple[int, int], PlainValidator(_mapped_ports)]
    policy: FirewallName | None = None
    source_range: Annotated[IPNetwork, PlainValidator(_cidr)] | None = None


class AzureSpec(Spec):
    subscription_id: Annotated[str, PlainValidator(_uuid)]
    resource_group: ResourceGroup
    network_security_group: NsgName | None = None
    destination: Annotated[str, PlainValidator(_ip_address)]
    priority_band: Annotated[tuple[int, int], PlainValidator(_priority_band)] = (100, 199)
    cloud: Literal["public", "usgov", "china"] = "public"
    arm_endpoint: Annotated[str, PlainValidator(_https_url)] | None = None
    firewall: FirewallSpec | None = None

    @model_validator(mode="after")
    def _some_way_in(self) -> Self:
        if self.network_security_group is None and self.firewall is None:
            raise ValueError("needs a network_security_group, a firewall, or both")
        if (self.network_security_group is not None and self.firewall is not None
                and self.firewall.source_range is None):
            raise ValueError(
                "names both a firewall and a network_security_group: give the firewall's "
                "source_range (its AzureFirewallSubnet prefix, e.g. 10.0.1.0/26), the source "
                "the NSG must allow, since the firewall's DNAT also translates the source")
        return self


class PortSpec(Spec):
    port: Annotated[int, _whole_number(1, 65535)] | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    max_duration: Duration | None = None
    allowed_sources: list[Annotated[IPNetwork, PlainValidator(_cidr)]] | None = None
    widest_prefix_v4: Annotated[int, _whole_number(8, 32)] = 32
    widest_prefix_v6: Annotated[int, _whole_number(16, 128)] = 128

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if value is None:  # `ssh:` with nothing after it: the well-known port
            return {}
        if isinstance(value, int) and not isinstance(value, bool):
            return {"port": value}
        if not isinstance(value, dict):
            raise ValueError(must_be("a port number or a mapping with port, protocol, "
                                      "max_duration, allowed_sources", value))
        return value

    @field_validator("allowed_sources")
    @classmethod
    def _some_sources(cls, sources: list[IPNetwork] | None) -> list[IPNetwork] | None:
        if sources is not None and not sources:
            raise ValueError("lists nothing; leave it out to allow any address")
        return sources


class AutoApproveSpec(Spec):
    users: list[AutoApproved]
    max_duration: Duration | None = None

    @field_validator("users")
    @classmethod
    def _some_users(cls, users: list[str]) -> list[str]:
        if not users:
            raise ValueError("lists nobody; name users or @usergroups, or drop auto_approve")
        return users


class TargetSpec(Spec):
    aws: AwsSpec | None = None
    azure: AzureSpec | None = None
    ports: dict[PortName, PortSpec]
    requesters: list[Requester] | None = None
    approvers: list[Approver] | None = None
    max_duration: Duration | None = None
    approval_timeout: Duration | None = None
    auto_approve: AutoApproveSpec | None = None

    @field_validator("ports")
    @classmethod
    def _port_numbers(cls, ports: dict[str, PortSpec]) -> dict[str, PortSpec]:
        if not ports:
            raise ValueError("lists no ports; add one, e.g. ssh: 22")
        problems: list[tuple[Loc, str]] = []
        seen: dict[tuple[int, str], str] = {}
        for name, spec in ports.items():
            number = spec.port
            if number is None:
                known = WELL_KNOWN_SERVICES.get(name)
                if known is None:
                    problems.append(((name, "port"), f"is required: {name} is not a "
                                     f"well-known service ({_KNOWN_SERVICES})"))
                    continue
                number = known.port
            first = seen.setdefault((number, spec.protocol), name)
            if first != name:
                problems.append(((name,), f"{number}/{spec.protocol} is already listed as {first}"))
        if problems:
            raise PolicyProblems(problems)
        return ports

    @model_validator(mode="after")
    def _one_cloud(self) -> Self:
        if self.aws is not None and self.azure is not None:
            raise ValueError("has both aws and azure; a target is in exactly one cloud")
        if self.aws is None and self.azure is None:
            raise ValueError("needs an aws or an azure section")
        return self


class PolicySpec(Spec):
    slack: SlackSpec | None = None
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    targets: dict[TargetName, TargetSpec]

    @field_validator("targets")
    @classmethod
    def _some_targets(cls, targets: dict[str, TargetSpec]) -> dict[str, TargetSpec]:
        if not targets:
            raise ValueError("lists no targets; a policy needs at least one")
        return targets

    @model_validator(mode="after")
    def _resolved(self) -> Self:
        """Checks that need a target and the defaults together."""
        problems: list[tuple[Loc, str]] = []
        for name, target in self.targets.items():
            here: Loc = ("targets", name)
            problems += _people_problems(here, target, self.defaults)
            problems += _auto_limit_problems(here, target, self.defaults)
        if problems:
            raise PolicyProblems(problems)
        return self


def _people_problems(here: Loc, target: TargetSpec,
                     defaults: DefaultsSpec) -> list[tuple[Loc, str]]:
    """Someone must be able to ask for access, and someone (or auto_approve) to grant it."""
    problems: list[tuple[Loc, str]] = []
    if target.requesters == []:
        problems.append(((*here, "requesters"),
                         'is empty: nobody could ask for access; use "*" for anyone'))
    elif target.requesters is None and not defaults.requesters:
        problems.append((here, "has no requesters: set requesters here or in defaults"))
    if target.auto_approve is None:
        if target.approvers == []:
            problems.append(((*here, "approvers"), "is empty: nobody could approve "
                             "requests; name approvers or add auto_approve"))
        elif target.approvers is None and not defaults.approvers:
            problems.append((here, "has no approvers: set approvers here or in "
                             "defaults, or add auto_approve"))
    return problems


def _auto_limit_problems(here: Loc, target: TargetSpec,
                         defaults: DefaultsSpec) -> list[tuple[Loc, str]]:
    """auto_approve's max_duration may not exceed the target's (or the default) limit."""
    auto_limit = target.auto_approve.max_duration if target.auto_approve else None
    if auto_limit is None:
        return []
    if target.max_duration is not None:
        limit, named = target.max_duration, "the target's max_duration"
    else:
        limit, named = defaults.max_duration, "defaults.max_duration"
    if auto_limit <= limit:
        return []
    return [((*here, "auto_approve", "max_duration"),
             f"{format_duration(auto_limit)} is longer than {named} "
             f"({format_duration(limit)})")]


# --- from the checked file to policy.py's dataclasses ----------------------------------


def _to_port(name: str, spec: PortSpec) -> PortPolicy:
    number = spec.port if spec.port is not None else WELL_KNOWN_SERVICES[name].port
    return PortPolicy(
        name=name,
        port=number,
        protocol=Protocol(spec.protocol),
        max_duration=spec.max_duration,
        allowed_sources=(tuple(spec.allowed_sources) if spec.allowed_sources is not None
                         else (ANY_V4, ANY_V6)),
        widest_prefix_v4=spec.widest_prefix_v4,
        widest_prefix_v6=spec.widest_prefix_v6,
    )


def _to_location(spec: TargetSpec) -> Location:
    if spec.aws is not None:
        aws = spec.aws
        return AwsLocation(region=aws.region, security_group_id=aws.security_group_id,
                           instance_id=aws.instance_id, role_arn=aws.role_arn)
    assert spec.azure is not None  # TargetSpec._one_cloud guarantees one of the two
    azure = spec.azure
    return AzureLocation(
        subscription_id=azure.subscription_id,
        resource_group=azure.resource_group,
        network_security_group=azure.network_security_group,
        destination=azure.destination,
        priority_band=azure.priority_band,
        cloud=azure.cloud,
        arm_endpoint=azure.arm_endpoint,
        firewall=None if azure.firewall is None else AzureFirewall(
            subscription_id=azure.subscription_id,
            name=azure.firewall.name,
            resource_group=azure.firewall.resource_group,
            public_ip=azure.firewall.public_ip,
            mapped_ports=azure.firewall.mapped_ports,
            policy=azure.firewall.policy,
            source_range=(str(azure.firewall.source_range)
                          if azure.firewall.source_range is not None else None),
        ),
    )


def to_policy(spec: PolicySpec, source: str) -> Policy:
    defaults = spec.defaults
    targets: dict[str, Target] = {}
    for name, target in spec.targets.items():
        auto = target.auto_approve
        targets[name] = Target(
            name=name,
            location=_to_location(target),
            ports=MappingProxyType({n: _to_port(n, p) for n, p in target.ports.items()}),
            requesters=tuple(target.requesters if target.requesters is not None
                             else defaults.requesters),
            approvers=tuple(target.approvers if target.approvers is not None
                            else defaults.approvers),
            max_duration=(target.max_duration if target.max_duration is not None
                          else defaults.max_duration),
            approval_timeout=(target.approval_timeout if target.approval_timeout is not None
                              else defaults.approval_timeout),
            auto_approve=AutoApprove(tuple(auto.users), auto.max_duration) if auto else None,
        )
    slack = spec.slack
    return Policy(
        targets=MappingProxyType(targets),
        slack=SlackChannels(slack.approvals_channel, slack.audit_channel) if slack else None,
        default_max_duration=defaults.max_duration,
        default_approval_timeout=defaults.approval_timeout,
        source_file=source,
    )
