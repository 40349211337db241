"""`jit scan`: which machines expose a management port, and which ones jit already guards.

Machines are sorted the way Defender for Cloud's just-in-time recommendation sorts them:

- *configured*: an enabled jit target covers the machine;
- *not configured*: the machine sits behind a firewall jit can manage (an AWS security group,
  an Azure NSG on its network interface or subnet, an Azure Firewall whose DNAT rules forward
  to it). Each managed port the firewall lets in from the internet or any source is listed
  with the rule that opens it; a machine with none listed is healthy for now, but nothing
  keeps a port from being opened;
- *unsupported*: jit cannot manage the machine (Azure: no NSG on its network interface or
  subnet and no firewall DNAT rule to it; AWS: no VPC, network interface or security group)
  and the reason says why.

The readers in `jitcore.providers.aws_scan` and `jitcore.providers.azure_scan` turn what the
clouds return into plain facts (`AwsInstance` here; `AzureVm` and `DnatRule` in
`jitcore.scan_azure`); the rules that classify them are pure and live here (AWS, and what both
clouds share) and in `jitcore.scan_azure` (Azure), so that both clouds are judged alike and the
rules can be tested without a cloud. The table, the JSON and the policy suggestion are in
`jitcore.scan_report`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jitcore.domain import WELL_KNOWN_SERVICES, Protocol
from jitcore.policy import AwsLocation, Target

# The management ports Defender's JIT watches, all TCP: port -> jit's service name.
MANAGED_PORTS: dict[int, str] = {service.port: service.name
                                 for service in WELL_KNOWN_SERVICES.values()
                                 if service.protocol is Protocol.TCP}
TCP = "tcp"
# NSG sources that mean "anyone on the internet" (service tags and prefixes, compared lowercase).
AZURE_ANYWHERE = frozenset({"*", "internet", "any", "0.0.0.0/0", "::/0"})
_ARM_ID = re.compile(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/[^/]+/[^/]+/([^/]+)",
                     re.IGNORECASE)


class Status(enum.StrEnum):
    """Defender's three tabs: covered by jit, manageable but not covered, not manageable."""

    CONFIGURED = "configured"
    NOT_CONFIGURED = "not configured"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True, order=True)
class Exposure:
    """A managed port open to the internet, and the rule that opens it.

    `firewall` and `rule`: on AWS the security group id and the security group rule id; on
    Azure the NSG's name and the rule's name, or the Azure Firewall's name and its DNAT rule
    (`collection/rule`, or `group/collection/rule` in a Firewall Policy). `via`: for a DNAT
    rule, the firewall's public address and port that forward to the machine's `port`
    ("20.30.40.50:2222"); "" when the port is reached directly.
    """

    port: int
    protocol: str
    source: str
    firewall: str
    rule: str
    via: str = ""

    @property
    def service(self) -> str:
        return MANAGED_PORTS.get(self.port, str(self.port))

    def __str__(self) -> str:
        if self.via:
            return (f"{self.service} ({self.port}) via firewall {self.firewall} {self.via} "
                    f"from {self.source}, DNAT rule {self.rule}")
        return (f"{self.service} {self.port}/{self.protocol} open to {self.source} "
                f"by {self.firewall} rule {self.rule}")


@dataclass(frozen=True, slots=True)
class Machine:
    """One VM or instance as the scan sees it.

    `place`: the AWS region, or the Azure subscription/resource group. `firewalls`: the
    security group ids, or the NSG resource ids (the network interface's before its subnet's;
    an Azure Firewall in front of it shows in its exposures).
    `target`: the enabled jit target covering it, if any.
    """

    cloud: str
    id: str
    name: str
    place: str
    private_ip: str | None
    firewalls: tuple[str, ...]
    status: Status
    exposures: tuple[Exposure, ...]
    reason: str
    target: str | None = None

    @property
    def exposed(self) -> bool:
        return bool(self.exposures)


# ---- the facts the readers gather -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurityGroupRule:
    """One inbound rule of an AWS security group, as DescribeSecurityGroupRules lists it.

    `protocol`: "tcp", "udp", "icmp" or "-1" (all); ports -1 mean all; `source`: the rule's
    IPv4 or IPv6 CIDR, None when it admits a prefix list or another security group.
    """

    group_id: str
    rule_id: str
    protocol: str
    from_port: int
    to_port: int
    source: str | None


@dataclass(frozen=True, slots=True)
class AwsInstance:
    """An EC2 instance, its security groups and their inbound rules."""

    region: str
    instance_id: str
    name: str
    private_ip: str | None
    vpc_id: str | None
    group_ids: tuple[str, ...]
    rules: tuple[SecurityGroupRule, ...]



# ---- classification ------------------------------------------------------------------------


def classify(instance: AwsInstance, enabled: Sequence[Target]) -> Machine:
    """An EC2 instance: configured, not configured (with its exposures) or unsupported, and
    why. Azure VMs are classified by `jitcore.scan_azure.classify_vm`."""
    def machine(status: Status, exposures: tuple[Exposure, ...], reason: str,
                target: str | None = None) -> Machine:
        return Machine("aws", instance.instance_id, instance.name, instance.region,
                       instance.private_ip, instance.group_ids, status, exposures, reason, target)

    if not instance.vpc_id:
        return machine(Status.UNSUPPORTED, (), "not in a VPC (EC2-Classic): jit manages VPC "
                                               "security groups only")
    if not instance.group_ids:
        return machine(Status.UNSUPPORTED, (), "no network interface with a security group: "
                                               "nothing jit could add a rule to")
    exposures = tuple(sorted(aws_exposures(instance.rules)))
    target = _aws_target(instance, enabled)
    if target is not None:
        return machine(Status.CONFIGURED, exposures, configured_reason(target, exposures),
                       target.name)
    return machine(Status.NOT_CONFIGURED, exposures, not_configured_reason(exposures))


def aws_exposures(rules: Iterable[SecurityGroupRule]) -> list[Exposure]:
    """Every (managed port, rule) where an inbound rule lets the port in from anywhere."""
    return [Exposure(port, TCP, str(rule.source), rule.group_id, rule.rule_id)
            for rule in rules if rule.source is not None and is_anywhere(rule.source)
            for port in MANAGED_PORTS if _aws_rule_covers(rule, port)]


def _aws_rule_covers(rule: SecurityGroupRule, port: int) -> bool:
    protocol = rule.protocol.lower()
    if protocol == "-1":
        return True
    if protocol not in (TCP, "6"):
        return False
    return rule.from_port == -1 or rule.from_port <= port <= rule.to_port


def is_anywhere(cidr: str) -> bool:
    """Is this CIDR every address (0.0.0.0/0, ::/0)?"""
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _aws_target(instance: AwsInstance, enabled: Sequence[Target]) -> Target | None:
    for target in enabled:
        location = target.location
        if isinstance(location, AwsLocation) and location.region == instance.region and (
                location.instance_id == instance.instance_id
                or location.security_group_id in instance.group_ids):
            return target
    return None


# ---- shared with jitcore.scan_azure ------------------------------------------------------------


def port_in_range(port: int, ports: str) -> bool:
    """Is `port` inside an NSG port range: "*", "22" or "20-25"?"""
    text = ports.strip()
    if text == "*":
        return True
    low, _, high = text.partition("-")
    try:
        return int(low) <= port <= int(high or low)
    except ValueError:
        return False


def canonical_ip(text: str) -> str:
    """An address in one spelling (a prefix length dropped), to compare; else as given."""
    try:
        return str(ipaddress.ip_address(text.split("/")[0]))
    except ValueError:
        return text


def _ports_text(exposures: Iterable[Exposure]) -> str:
    ports = sorted({e.port for e in exposures})
    return ", ".join(f"{MANAGED_PORTS.get(port, port)} {port}" for port in ports)


def configured_reason(target: Target, exposures: Sequence[Exposure]) -> str:
    """Why a machine is configured, and what stays open outside jit."""
    reason = f"jit target {target.name}"
    if exposures:
        reason += f"; rules outside jit still open {_ports_text(exposures)}"
    return reason


def not_configured_reason(exposures: Sequence[Exposure]) -> str:
    """Healthy, or which managed ports are open."""
    if not exposures:
        return "healthy: no exposed management port"
    return f"{_ports_text(exposures)} open to the internet"


# ---- the scan -------------------------------------------------------------------------------


def run_scan(
    aws_regions: Sequence[str],
    azure_subscriptions: Sequence[str],
    enabled: Sequence[Target],
    *,
    azure_credential: Any = None,  # an azure.core TokenCredential; untyped: no SDK here
    azure_endpoint: str | None = None,
    azure_client_options: Mapping[str, Any] | None = None,
) -> list[Machine]:
    """Scan these AWS regions and Azure subscriptions; machines sorted by cloud, place, name.

    Each cloud's reader (and its SDK) is imported only when that cloud is asked for. Raises
    `jitcore.errors.ProviderError` when a cloud refuses or cannot be reached.
    """
    machines: list[Machine] = []
    if aws_regions:
        from jitcore.providers.aws_scan import scan_aws

        machines += scan_aws(aws_regions, enabled)
    if azure_subscriptions:
        from jitcore.providers.azure_scan import scan_azure

        machines += scan_azure(azure_subscriptions, enabled, credential=azure_credential,
                               arm_endpoint=azure_endpoint,
                               client_options=dict(azure_client_options or {}))
    return sorted(machines, key=lambda m: (m.cloud, m.place.lower(), m.name.lower(), m.id))


# ---- ARM resource ids -----------------------------------------------------------------------


def parse_arm_id(resource_id: str) -> tuple[str, str, str]:
    """An ARM resource id -> (subscription, resource group, name); ValueError if it is not one."""
    match = _ARM_ID.fullmatch(resource_id)
    if match is None:
        raise ValueError(f"not an Azure resource id: {resource_id!r}")
    return match.group(1), match.group(2), match.group(3)
