"""`jit scan`: which machines expose a management port, and which ones jit already guards.

Machines are sorted the way Defender for Cloud's just-in-time recommendation sorts them:

- *configured*: an enabled jit target covers the machine;
- *not configured*: the machine sits behind a firewall jit can manage (an AWS security group,
  an Azure NSG on its network interface or subnet). Each managed port the firewall lets in
  from the internet or any source is listed with the rule that opens it; a machine with none
  listed is healthy for now, but nothing keeps a port from being opened;
- *unsupported*: jit cannot manage the machine (Azure: no NSG on its network interface or
  subnet; AWS: no VPC, network interface or security group) and the reason says why.

The readers in `jitcore.providers.aws_scan` and `jitcore.providers.azure_scan` turn what the
clouds return into the plain facts below (`AwsInstance`, `AzureVm`); the rules that classify
them are pure and live here, so that both clouds are judged alike and the rules can be tested
without a cloud. The table, the JSON and the policy suggestion are in `jitcore.scan_report`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jitcore.domain import WELL_KNOWN_SERVICES, Protocol
from jitcore.policy import AwsLocation, AzureLocation, Target

# The management ports Defender's JIT watches, all TCP: port -> jit's service name.
MANAGED_PORTS: dict[int, str] = {service.port: service.name
                                 for service in WELL_KNOWN_SERVICES.values()
                                 if service.protocol is Protocol.TCP}
TCP = "tcp"
# NSG sources that mean "anyone on the internet" (service tags and prefixes, compared lowercase).
AZURE_ANYWHERE = frozenset({"*", "internet", "any", "0.0.0.0/0", "::/0"})
# NSG destinations that always include the VM's own address.
_AZURE_EVERY_DESTINATION = frozenset({"*", "any", "virtualnetwork"})
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
    Azure the NSG's name and the rule's name.
    """

    port: int
    protocol: str
    source: str
    firewall: str
    rule: str

    @property
    def service(self) -> str:
        return MANAGED_PORTS.get(self.port, str(self.port))

    def __str__(self) -> str:
        return (f"{self.service} {self.port}/{self.protocol} open to {self.source} "
                f"by {self.firewall} rule {self.rule}")


@dataclass(frozen=True, slots=True)
class Machine:
    """One VM or instance as the scan sees it.

    `place`: the AWS region, or the Azure subscription/resource group. `firewalls`: the
    security group ids, or the NSG resource ids (the network interface's before its subnet's).
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


@dataclass(frozen=True, slots=True)
class NsgRule:
    """One security rule of an NSG (custom or default), the singular and plural forms merged."""

    name: str
    priority: int
    direction: str
    access: str
    protocol: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: tuple[str, ...]  # destination port ranges: "*", "22", "20-25"


@dataclass(frozen=True, slots=True)
class Nsg:
    id: str
    name: str
    rules: tuple[NsgRule, ...]


@dataclass(frozen=True, slots=True)
class AzureNic:
    """A network interface: its addresses (the primary first) and the NSGs in front of it."""

    id: str
    name: str
    private_ips: tuple[str, ...]
    nsg: Nsg | None
    subnet_nsg: Nsg | None


@dataclass(frozen=True, slots=True)
class AzureVm:
    """A virtual machine as its network interfaces show it (the primary NIC first)."""

    id: str
    name: str
    subscription_id: str
    resource_group: str
    nics: tuple[AzureNic, ...]

    @property
    def nsg_ids(self) -> tuple[str, ...]:
        """The NSGs in front of it, each network interface's before its subnet's."""
        return tuple(dict.fromkeys(nsg.id for nic in self.nics
                                   for nsg in (nic.nsg, nic.subnet_nsg) if nsg is not None))

    @property
    def private_ip(self) -> str | None:
        """The primary address of the primary network interface."""
        return self.nics[0].private_ips[0] if self.nics and self.nics[0].private_ips else None


# ---- classification ------------------------------------------------------------------------


def classify(facts: AwsInstance | AzureVm, enabled: Sequence[Target]) -> Machine:
    """Configured, not configured (with its exposures) or unsupported, and why."""
    if isinstance(facts, AwsInstance):
        return _classify_aws(facts, enabled)
    return _classify_azure(facts, enabled)


def _classify_aws(instance: AwsInstance, enabled: Sequence[Target]) -> Machine:
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
        return machine(Status.CONFIGURED, exposures, _configured(target, exposures), target.name)
    return machine(Status.NOT_CONFIGURED, exposures, _not_configured(exposures))


def aws_exposures(rules: Iterable[SecurityGroupRule]) -> list[Exposure]:
    """Every (managed port, rule) where an inbound rule lets the port in from anywhere."""
    return [Exposure(port, TCP, str(rule.source), rule.group_id, rule.rule_id)
            for rule in rules if rule.source is not None and _is_anywhere(rule.source)
            for port in MANAGED_PORTS if _aws_rule_covers(rule, port)]


def _aws_rule_covers(rule: SecurityGroupRule, port: int) -> bool:
    protocol = rule.protocol.lower()
    if protocol == "-1":
        return True
    if protocol not in (TCP, "6"):
        return False
    return rule.from_port == -1 or rule.from_port <= port <= rule.to_port


def _is_anywhere(cidr: str) -> bool:
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


def _classify_azure(vm: AzureVm, enabled: Sequence[Target]) -> Machine:
    def machine(status: Status, exposures: tuple[Exposure, ...], reason: str,
                target: str | None = None) -> Machine:
        return Machine("azure", vm.id, vm.name, f"{vm.subscription_id}/{vm.resource_group}",
                       vm.private_ip, vm.nsg_ids, status, exposures, reason, target)

    bare = [nic.name for nic in vm.nics if nic.nsg is None and nic.subnet_nsg is None]
    if bare or not vm.nics:
        which = f" ({', '.join(bare)})" if len(vm.nics) > 1 else ""
        return machine(Status.UNSUPPORTED, (), "no network security group on its network "
                                               f"interface or subnet{which}")
    exposures = tuple(sorted({e for nic in vm.nics for e in azure_exposures(nic)}))
    target = _azure_target(vm, enabled)
    if target is not None:
        return machine(Status.CONFIGURED, exposures, _configured(target, exposures), target.name)
    return machine(Status.NOT_CONFIGURED, exposures, _not_configured(exposures))


def azure_exposures(nic: AzureNic) -> list[Exposure]:
    """The managed ports the NIC's NSGs let in from the internet, with the allowing rules.

    Traffic passes the subnet's NSG and then the NIC's; a port is open only if every NSG
    present allows it, so each of them names its allowing rule.
    """
    nsgs = [nsg for nsg in (nic.nsg, nic.subnet_nsg) if nsg is not None]
    return [exposure for port in MANAGED_PORTS for address in nic.private_ips or ("",)
            for exposure in _allowing_rules(nsgs, port, address)]


def _allowing_rules(nsgs: Sequence[Nsg], port: int, address: str) -> list[Exposure]:
    """If every one of these NSGs lets internet traffic to `address`:`port` in, the rule of
    each that does; otherwise none."""
    verdicts = [(nsg, first_match(nsg, port, address)) for nsg in nsgs]
    if not nsgs or not all(match is not None and match[0].access.lower() == "allow"
                           for _, match in verdicts):
        return []
    return [Exposure(port, TCP, match[1], nsg.name, match[0].name)
            for nsg, match in verdicts if match is not None]


def first_match(nsg: Nsg, port: int, address: str) -> tuple[NsgRule, str] | None:
    """The inbound rule that decides internet traffic to `address`:`port`/tcp, lowest priority
    number first, and the source through which it matched; None if no rule matches."""
    for rule in sorted(nsg.rules, key=lambda r: r.priority):
        source = _matching_source(rule, port, address)
        if source is not None:
            return rule, source
    return None


def _matching_source(rule: NsgRule, port: int, address: str) -> str | None:
    if rule.direction.lower() != "inbound" or rule.protocol.lower() not in (TCP, "*"):
        return None
    if not any(port_in_range(port, ports) for ports in rule.ports):
        return None
    if not _destination_covers(rule, address):
        return None
    return next((source for source in rule.sources if source.lower() in AZURE_ANYWHERE), None)


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


def _destination_covers(rule: NsgRule, address: str) -> bool:
    """Does the rule apply to traffic for `address`? A destination that cannot be resolved here
    (an application security group, a service tag) is assumed to include it for an Allow rule
    and to exclude it for a Deny rule: an exposure is never hidden by a guess."""
    unknown = rule.access.lower() == "allow"
    if not rule.destinations:
        return unknown
    for destination in rule.destinations:
        if destination.lower() in _AZURE_EVERY_DESTINATION:
            return True
        try:
            if ipaddress.ip_address(address) in ipaddress.ip_network(destination, strict=False):
                return True
        except ValueError:
            if not _looks_like_address(destination) and unknown:
                return True
    return False


def _looks_like_address(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F.:]+(/\d+)?", text))


def _azure_target(vm: AzureVm, enabled: Sequence[Target]) -> Target | None:
    for target in enabled:
        location = target.location
        if not isinstance(location, AzureLocation):
            continue
        for nic in vm.nics:
            nsg_ids = {nsg.id.lower() for nsg in (nic.nsg, nic.subnet_nsg) if nsg is not None}
            if location.nsg_id.lower() in nsg_ids and _canonical_ip(location.destination) in {
                    _canonical_ip(address) for address in nic.private_ips}:
                return target
    return None


def _canonical_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.split("/")[0]))
    except ValueError:
        return text


def _ports_text(exposures: Iterable[Exposure]) -> str:
    ports = sorted({e.port for e in exposures})
    return ", ".join(f"{MANAGED_PORTS.get(port, port)} {port}" for port in ports)


def _configured(target: Target, exposures: Sequence[Exposure]) -> str:
    reason = f"jit target {target.name}"
    if exposures:
        reason += f"; rules outside jit still open {_ports_text(exposures)}"
    return reason


def _not_configured(exposures: Sequence[Exposure]) -> str:
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
