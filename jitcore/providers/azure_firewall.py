"""Azure Firewall DNAT rules for jit's grants, in classic rules or in a Firewall Policy.

A grant through a firewall is one DNAT rule named `jit-<grant id>`: from the requester's
address, to the firewall's public address on a mapped port reserved for the grant, translated
to the VM's address and the requested port. jit keeps its rules apart from everyone else's:

    classic   a NAT rule collection `jit` (action Dnat) in the firewall's natRuleCollections;
              written by a PUT of the whole firewall
    policy    a rule collection group `jit` in the Firewall Policy, holding one
              FirewallPolicyNatRuleCollection `jit` (action DNAT); written by a PUT of the group

Both writes are long-running, and ARM takes one at a time per firewall (or policy). Writes
coalesce (coalesce.py): everything waiting on one firewall goes out in one write, read just
before and sent with `If-Match`; a 412 means someone else wrote in between, so the resource is
read again and the batch applied again, and nothing of theirs is lost. A mapped port already
taken on the public address by a rule jit does not own is `SlotTaken` for that grant alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import (
    AzureFirewallNatRCAction,
    AzureFirewallNatRule,
    AzureFirewallNatRuleCollection,
    AzureFirewallNatRuleCollectionProperties,
    FirewallPolicyNatRuleCollection,
    FirewallPolicyNatRuleCollectionAction,
    FirewallPolicyRuleCollectionGroup,
    FirewallPolicyRuleCollectionGroupProperties,
    NatRule,
)

from jitcore.errors import SlotTaken
from jitcore.policy import AzureFirewall, AzureLocation
from jitcore.providers.azure_arm import WholeWrites

COLLECTION = "jit"  # jit's NAT rule collection (classic) and rule collection group (policy)
_FIRST_PRIORITY, _LAST_PRIORITY = 100, 65000


@dataclass(frozen=True, slots=True)
class DnatRule:
    """One DNAT rule as jit means it, whichever mode holds it."""

    name: str
    source: str
    public_ip: str
    mapped_port: int
    protocol: str  # TCP or UDP
    to_address: str
    to_port: int
    description: str = ""

    def key(self) -> tuple[object, ...]:
        return (self.source, self.public_ip, self.mapped_port, self.protocol.upper(),
                self.to_address, self.to_port)


@dataclass(frozen=True, slots=True)
class _Open:
    rule: DnatRule


@dataclass(frozen=True, slots=True)
class _Close:
    names: tuple[str, ...]


_Change = tuple[AzureLocation, _Open | _Close]


@dataclass(slots=True)
class _Snapshot:
    """jit's rules in a firewall as read, the mapped ports others hold, and what to send back."""

    rules: dict[str, DnatRule]  # by lowercased name
    foreign: dict[int, str]  # a port on the public address -> the rule holding it, for people
    resource: Any  # the firewall (classic) or jit's rule collection group, or None (policy)
    others: list[Any]  # classic: the other NAT collections; policy: the other groups
    priority: int | None = None  # of jit's own collection (classic), kept as it is


class FirewallNat(WholeWrites[_Snapshot, "_Open | _Close"]):
    """jit's DNAT rules in the firewalls that targets name: listed, opened and closed, with
    the writes to one firewall (or policy) coalesced (`WholeWrites`)."""

    kind = "azure_firewall"

    def rules(self, location: AzureLocation) -> list[DnatRule]:
        """jit's DNAT rules in the target's firewall (one or two reads)."""
        return list(self._read(location).rules.values())

    def used_ports(self, location: AzureLocation) -> set[int]:
        """Ports of the public address that any DNAT rule holds, jit's included."""
        snapshot = self._read(location)
        return set(snapshot.foreign) | {r.mapped_port for r in snapshot.rules.values()}

    def put(self, location: AzureLocation, rule: DnatRule) -> None:
        self.writes.submit(_firewall(location).scope.lower(), (location, _Open(rule)))

    def delete_many(self, location: AzureLocation, names: Sequence[str]) -> dict[str, bool]:
        found = self.writes.submit(_firewall(location).scope.lower(),
                                   (location, _Close(tuple(names))))
        assert isinstance(found, dict)
        return found

    def _apply(self, state: _Snapshot, change: _Open | _Close,
               location: AzureLocation) -> tuple[object, bool]:
        return _apply(state, change, location)

    # -- the two modes --------------------------------------------------------------------

    def _read(self, location: AzureLocation) -> _Snapshot:
        firewall = _firewall(location)
        client = self._clients.client(location)
        if firewall.policy is None:
            return _read_classic(client, firewall)
        return _read_policy(client, firewall)

    def _send(self, location: AzureLocation, snapshot: _Snapshot) -> None:
        firewall = _firewall(location)
        client = self._clients.client(location)
        rules = sorted(snapshot.rules.values(), key=lambda r: r.name)
        if firewall.policy is None:
            resource = snapshot.resource
            mine = [AzureFirewallNatRuleCollection(
                name=COLLECTION, properties=AzureFirewallNatRuleCollectionProperties(
                    priority=(snapshot.priority
                              or _free_priority(c.priority for c in snapshot.others)),
                    action=AzureFirewallNatRCAction(type="Dnat"),
                    rules=[_classic_rule(r) for r in rules]))] if rules else []
            resource.nat_rule_collections = [*snapshot.others, *mine]
            client.azure_firewalls.begin_create_or_update(
                firewall.resource_group, firewall.name, resource,
                headers={"If-Match": str(resource.etag)},
                polling_interval=self._polling_interval).result()
            return
        self._write_group(client, firewall, snapshot, rules)

    def _write_group(self, client: NetworkManagementClient, firewall: AzureFirewall,
                     snapshot: _Snapshot, rules: list[DnatRule]) -> None:
        groups = client.firewall_policy_rule_collection_groups
        group = snapshot.resource
        precondition = ({"If-Match": f'"{group.etag}"'} if group is not None
                        else {"If-None-Match": "*"})
        kept = [c for c in (group.rule_collections or []) if str(c.name).lower() != COLLECTION] \
            if group is not None else []
        if not rules and group is not None and not kept:
            groups.begin_delete(firewall.resource_group, str(firewall.policy), COLLECTION,
                                headers=precondition,
                                polling_interval=self._polling_interval).result()
            return
        mine = [FirewallPolicyNatRuleCollection(
            name=COLLECTION, priority=_free_priority(c.priority for c in kept),
            action=FirewallPolicyNatRuleCollectionAction(type="DNAT"),
            rules=[_policy_rule(r) for r in rules])] if rules else []
        priority = (group.priority if group is not None
                    else _free_priority(g.priority for g in snapshot.others))
        body = FirewallPolicyRuleCollectionGroup(
            properties=FirewallPolicyRuleCollectionGroupProperties(
                priority=priority, rule_collections=[*kept, *mine]))
        groups.begin_create_or_update(firewall.resource_group, str(firewall.policy),
                                      COLLECTION, body, headers=precondition,
                                      polling_interval=self._polling_interval).result()


def _apply(snapshot: _Snapshot, change: _Open | _Close,
           location: AzureLocation) -> tuple[object, bool]:
    """Apply one change to jit's rules as read: its outcome and whether anything changed."""
    if isinstance(change, _Close):
        found = {name: snapshot.rules.pop(name.lower(), None) is not None
                 for name in change.names}
        return found, any(found.values())
    rule = change.rule
    holder = snapshot.foreign.get(rule.mapped_port) or next(
        (other.name for key, other in snapshot.rules.items()
         if key != rule.name.lower() and other.mapped_port == rule.mapped_port), None)
    if holder is not None:
        firewall = _firewall(location)
        return SlotTaken(rule.mapped_port,
                         f"firewall {firewall.name} (resource group {firewall.resource_group}):"
                         f" port {rule.mapped_port} of {rule.public_ip} is already forwarded "
                         f"by rule {holder}"), False
    existing = snapshot.rules.get(rule.name.lower())
    snapshot.rules[rule.name.lower()] = rule
    return None, existing is None or existing.key() != rule.key()


def _read_classic(client: NetworkManagementClient, firewall: AzureFirewall) -> _Snapshot:
    resource = client.azure_firewalls.get(firewall.resource_group, firewall.name)
    collections = list(resource.nat_rule_collections or [])
    mine = [c for c in collections if str(c.name).lower() == COLLECTION]
    others = [c for c in collections if str(c.name).lower() != COLLECTION]
    rules = {str(r.name).lower(): _from_classic(r) for c in mine for r in (c.rules or [])}
    foreign = {port: f"{c.name}/{r.name}" for c in others for r in (c.rules or [])
               for port in _ports_on(firewall.public_ip, r.destination_addresses,
                                     r.destination_ports)}
    return _Snapshot(rules, foreign, resource, others,
                     priority=mine[0].priority if mine else None)


def _read_policy(client: NetworkManagementClient, firewall: AzureFirewall) -> _Snapshot:
    groups = list(client.firewall_policy_rule_collection_groups.list(
        firewall.resource_group, str(firewall.policy)))
    group = next((g for g in groups if str(g.name).lower() == COLLECTION), None)
    others = [g for g in groups if g is not group]
    rules: dict[str, DnatRule] = {}
    foreign: dict[int, str] = {}
    for each in groups:
        for collection in each.rule_collections or []:
            ours = each is group and str(collection.name).lower() == COLLECTION
            for rule in getattr(collection, "rules", None) or []:
                if getattr(rule, "rule_type", None) != "NatRule":
                    continue
                if ours:
                    rules[str(rule.name).lower()] = _from_policy(rule)
                    continue
                for port in _ports_on(firewall.public_ip, rule.destination_addresses,
                                      rule.destination_ports):
                    foreign[port] = f"{each.name}/{collection.name}/{rule.name}"
    return _Snapshot(rules, foreign, group, others)


def _classic_rule(rule: DnatRule) -> AzureFirewallNatRule:
    return AzureFirewallNatRule(
        name=rule.name, description=rule.description or None,
        source_addresses=[rule.source], destination_addresses=[rule.public_ip],
        destination_ports=[str(rule.mapped_port)], protocols=[rule.protocol.upper()],
        translated_address=rule.to_address, translated_port=str(rule.to_port))


def _policy_rule(rule: DnatRule) -> NatRule:
    return NatRule(
        name=rule.name, description=rule.description or None,
        source_addresses=[rule.source], destination_addresses=[rule.public_ip],
        destination_ports=[str(rule.mapped_port)], ip_protocols=[rule.protocol.upper()],
        translated_address=rule.to_address, translated_port=str(rule.to_port))


def _from_classic(rule: Any) -> DnatRule:
    return _dnat(rule, rule.protocols)


def _from_policy(rule: Any) -> DnatRule:
    return _dnat(rule, rule.ip_protocols)


def _dnat(rule: Any, protocols: Sequence[object] | None) -> DnatRule:
    return DnatRule(
        name=str(rule.name), source=",".join(rule.source_addresses or []),
        public_ip=",".join(rule.destination_addresses or []),
        mapped_port=_first_port(rule.destination_ports),
        protocol=",".join(str(getattr(p, "value", p)) for p in protocols or []),
        to_address=str(rule.translated_address or ""),
        to_port=_first_port([rule.translated_port or ""]),
        description=str(rule.description or ""))


def _ports_on(public_ip: str, addresses: Sequence[str] | None,
              ports: Sequence[str] | None) -> list[int]:
    """The ports of `public_ip` a rule's destination covers (each port of a range)."""
    if not any(a in (public_ip, "*") for a in addresses or []):
        return []
    covered: list[int] = []
    for text in ports or []:
        low, _, high = str(text).partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            continue
        covered.extend(range(first, min(last, 65535) + 1))
    return covered


def _first_port(ports: Sequence[str] | None) -> int:
    try:
        return int(str((ports or ["0"])[0]).split("-")[0])
    except ValueError:
        return 0


def _free_priority(taken: Iterable[int | None]) -> int:
    used = {p for p in taken if p is not None}
    return next(p for p in range(_FIRST_PRIORITY, _LAST_PRIORITY + 1) if p not in used)


def _firewall(location: AzureLocation) -> AzureFirewall:
    assert location.firewall is not None, "a firewall target"
    return location.firewall
