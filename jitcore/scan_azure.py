"""`jit scan` on Azure: the facts `jitcore.providers.azure_scan` reads, and how they are judged.

A VM is reached through the NSGs on its network interfaces and subnets, and, in a
hub-and-spoke network, through an Azure Firewall whose DNAT rules forward a port of the
firewall's public address to the VM's private address. Both are judged here:

- an NSG exposes a managed port when every NSG in front of the NIC lets it in from the
  internet (rules in priority order, default rules included);
- a firewall exposes one when a DNAT rule from anywhere translates to the VM's address and a
  managed port. jit's own rules, `jit-<grant id>` in jit's collection (`jit`, the NAT rule
  collection of a classic firewall or the rule collection group of a Firewall Policy), are
  grants in progress and expose nothing.

A VM is configured when an enabled target covers it: its NSG and address, or, for a target
with a `firewall` section, its address alone (the firewall needs no NSG on the VM). Addresses
are compared across every subscription scanned, as a hub's firewall forwards into spokes
that may sit in other subscriptions. Pure: no SDK and no I/O here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jitcore.policy import AzureLocation, Target
from jitcore.scan import (
    AZURE_ANYWHERE,
    MANAGED_PORTS,
    TCP,
    Exposure,
    Machine,
    Status,
    canonical_ip,
    configured_reason,
    is_anywhere,
    not_configured_reason,
    port_in_range,
)

# Where jit keeps its DNAT rules, and how it names them (jitcore.providers.azure_arm's prefix).
JIT_COLLECTION = "jit"
JIT_RULE_PREFIX = "jit-"
# NSG destinations that always include the VM's own address.
_AZURE_EVERY_DESTINATION = frozenset({"*", "any", "virtualnetwork"})
# DNAT protocols that carry TCP (Azure Firewall's names, compared lowercase).
_DNAT_TCP = frozenset({"tcp", "any"})
_EVERY_IPV4 = "0.0.0.0-255.255.255.255"  # an Azure Firewall source may be a range


# ---- the facts the reader gathers ---------------------------------------------------------------


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

    @property
    def addresses(self) -> frozenset[str]:
        """Every private address of every network interface, canonical."""
        return frozenset(canonical_ip(address) for nic in self.nics
                         for address in nic.private_ips)


@dataclass(frozen=True, slots=True)
class DnatRule:
    """One DNAT rule of an Azure Firewall: classic (in a NAT rule collection of the firewall)
    or from the Firewall Policy the firewall uses (in a NAT rule collection of one of the
    policy's rule collection groups).

    `group`: the rule collection group; None for a classic rule. `sources`: the source
    addresses (IP Groups are not resolved: a rule admitting only IP Groups exposes nothing
    here). `destinations` and `ports`: the firewall's public addresses and the ports it
    forwards. `translated_address`: None when the rule forwards to an FQDN, which the scan
    does not resolve.
    """

    firewall: str
    group: str | None
    collection: str
    name: str
    protocols: tuple[str, ...]
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: tuple[str, ...]
    translated_address: str | None
    translated_port: str

    @property
    def label(self) -> str:
        """Where the rule sits: "collection/rule", or "group/collection/rule" in a policy."""
        return "/".join(part for part in (self.group, self.collection, self.name)
                        if part is not None)

    @property
    def jit_grant(self) -> bool:
        """One of jit's own rules: `jit-<grant id>` in jit's collection (classic) or rule
        collection group (policy); a grant in progress, not a standing exposure."""
        home = self.collection if self.group is None else self.group
        return (home.lower() == JIT_COLLECTION
                and self.name.lower().startswith(JIT_RULE_PREFIX))


# ---- classification -----------------------------------------------------------------------------


def classify_vm(vm: AzureVm, enabled: Sequence[Target],
                dnat: Iterable[DnatRule] = ()) -> Machine:
    """Configured, not configured (with its exposures) or unsupported, and why.

    `dnat`: the DNAT rules of the firewalls scanned (any of them; those forwarding elsewhere
    are ignored).
    """
    def machine(status: Status, exposures: tuple[Exposure, ...], reason: str,
                target: str | None = None) -> Machine:
        return Machine("azure", vm.id, vm.name, f"{vm.subscription_id}/{vm.resource_group}",
                       vm.private_ip, vm.nsg_ids, status, exposures, reason, target)

    through_firewall = firewall_exposures(vm, dnat)
    exposures = tuple(sorted({*(e for nic in vm.nics for e in azure_exposures(nic)),
                              *through_firewall}))
    firewall_target = _firewall_target(vm, enabled)
    bare = [nic.name for nic in vm.nics if nic.nsg is None and nic.subnet_nsg is None]
    if bare or not vm.nics:
        if firewall_target is None and not through_firewall:
            which = f" ({', '.join(bare)})" if len(vm.nics) > 1 else ""
            return machine(Status.UNSUPPORTED, (), "no network security group on its network "
                                                   f"interface or subnet{which}")
        target = firewall_target  # jit reaches it through the firewall, not an NSG
    else:
        target = _nsg_target(vm, enabled) or firewall_target
    if target is not None:
        return machine(Status.CONFIGURED, exposures, configured_reason(target, exposures),
                       target.name)
    return machine(Status.NOT_CONFIGURED, exposures, not_configured_reason(exposures))


# ---- NSGs ---------------------------------------------------------------------------------------


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


def _nsg_target(vm: AzureVm, enabled: Sequence[Target]) -> Target | None:
    """The enabled target naming an NSG in front of one of the VM's NICs and that NIC's
    address."""
    for target in enabled:
        location = target.location
        if not isinstance(location, AzureLocation) or location.network_security_group is None:
            continue
        for nic in vm.nics:
            nsg_ids = {nsg.id.lower() for nsg in (nic.nsg, nic.subnet_nsg) if nsg is not None}
            if location.nsg_id.lower() in nsg_ids and canonical_ip(location.destination) in {
                    canonical_ip(address) for address in nic.private_ips}:
                return target
    return None


# ---- Azure Firewalls ----------------------------------------------------------------------------


def firewall_exposures(vm: AzureVm, dnat: Iterable[DnatRule]) -> list[Exposure]:
    """The managed ports of the VM that a DNAT rule forwards to from anywhere, one exposure per
    rule (named by the rule's first source that admits anyone). jit's own rules are left out."""
    addresses = vm.addresses
    return [exposure for rule in dnat
            if not rule.jit_grant and rule.translated_address is not None
            and canonical_ip(rule.translated_address) in addresses
            for exposure in _dnat_exposure(rule)]


def _dnat_exposure(rule: DnatRule) -> list[Exposure]:
    port = _port(rule.translated_port)
    if port not in MANAGED_PORTS:
        return []
    # No protocol given: counted as TCP, so that an exposure is never hidden by a guess.
    if rule.protocols and not any(p.lower() in _DNAT_TCP for p in rule.protocols):
        return []
    source = next((s for s in rule.sources if _admits_anyone(s)), None)
    if source is None:
        return []
    via = f"{','.join(rule.destinations) or '*'}:{','.join(rule.ports) or '*'}"
    return [Exposure(port, TCP, source, rule.firewall, rule.label, via)]


def _port(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _admits_anyone(source: str) -> bool:
    text = source.strip().lower()
    return text in AZURE_ANYWHERE or text == _EVERY_IPV4 or is_anywhere(text)


def _firewall_target(vm: AzureVm, enabled: Sequence[Target]) -> Target | None:
    """The enabled target with a `firewall` section whose destination is one of the VM's
    addresses."""
    addresses = vm.addresses
    for target in enabled:
        location = target.location
        if (isinstance(location, AzureLocation) and location.firewall is not None
                and canonical_ip(location.destination) in addresses):
            return target
    return None
