"""The shape of the policy file (DESIGN.md §5) as pydantic models, and the conversion of a
checked file into the stdlib dataclasses of `jitcore.policy`, which never sees pydantic.

`jitcore.policy_file` reads the YAML and turns validation errors into messages.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import timedelta
from types import MappingProxyType
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from jitcore.domain import WELL_KNOWN_SERVICES, IPNetwork, Protocol, format_duration
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
from jitcore.policy_fields import (
    Approver,
    AutoApproved,
    ChannelId,
    Cidr,
    Duration,
    FirewallName,
    HttpsUrl,
    InstanceId,
    IpAddress,
    MappedPorts,
    NsgName,
    PortName,
    PriorityBand,
    Region,
    Requester,
    ResourceGroup,
    RoleArn,
    SecurityGroupId,
    SubscriptionId,
    TargetName,
    must_be,
    whole_number,
)

Loc = tuple[Hashable, ...]
# Aliases can make a small file expand into a huge tree; no real policy comes near this.
MAX_VALUES = 100_000
_KNOWN_SERVICES = ", ".join(str(s) for s in WELL_KNOWN_SERVICES.values())


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
    public_ip: IpAddress
    mapped_ports: MappedPorts
    policy: FirewallName | None = None
    source_range: Cidr | None = None


class AzureSpec(Spec):
    subscription_id: SubscriptionId
    resource_group: ResourceGroup
    network_security_group: NsgName | None = None
    destination: IpAddress
    priority_band: PriorityBand = (100, 199)
    cloud: Literal["public", "usgov", "china"] = "public"
    arm_endpoint: HttpsUrl | None = None
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
    port: Annotated[int, whole_number(1, 65535)] | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    max_duration: Duration | None = None
    allowed_sources: list[Cidr] | None = None
    widest_prefix_v4: Annotated[int, whole_number(8, 32)] = 32
    widest_prefix_v6: Annotated[int, whole_number(16, 128)] = 128

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
