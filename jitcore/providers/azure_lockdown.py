"""Closed by default on Azure (`jit enable` / `jit disable`): the `LockdownProvider` half of
`AzureProvider`.

Enabling puts a Deny rule per managed port (`jit-deny-<port>-<protocol>`) at the lowest free
priorities behind the target's grant band, so that only jit's grants, ahead of them, let the
port in. Allow rules that would let a managed port in ahead of the deny rules from wider than
the port's policy block enabling; `--take-over` snapshots and removes them. Disabling deletes
the deny rules, puts every removed rule back as it was and reads the NSG back. Rules are
handled here as ARM's JSON (`name` and `properties`), which is also what a snapshot keeps.

A target behind an Azure Firewall has its standing DNAT rules to a managed port removed and
put back (azure_firewall_lockdown.py); its NSG, when it names one, is handled as above.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.mgmt.network.models import SecurityRule

from jitcore.errors import ProviderError
from jitcore.policy import AzureLocation, PortPolicy, Target
from jitcore.ports import FirewallRule, Lockdown, LockdownPlan
from jitcore.providers.azure_arm import (
    PROTOCOLS,
    RULE_PREFIX,
    NsgRules,
    azure_location,
    error_message,
    translated,
)
from jitcore.providers.azure_firewall_lockdown import DnatLockdown, wider_than
from jitcore.scan import AZURE_ANYWHERE, port_in_range

DENY_PREFIX = "jit-deny-"
_WRITABLE = ("protocol", "sourcePortRange", "sourcePortRanges", "destinationPortRange",
             "destinationPortRanges", "sourceAddressPrefix", "sourceAddressPrefixes",
             "destinationAddressPrefix", "destinationAddressPrefixes",
             "sourceApplicationSecurityGroups", "destinationApplicationSecurityGroups",
             "access", "priority", "direction", "description")


class AzureLockdownSupport:
    """`plan_lockdown`, `lock_down`, `lift_lockdown` and `posture` for Azure NSGs, through
    the NSG rule calls of the provider this is part of; for a target behind an Azure
    Firewall, its DNAT rules too (azure_firewall_lockdown.py), and its NSG only if it names
    one."""

    _nsg: NsgRules

    @cached_property
    def _dnat(self) -> DnatLockdown:
        return DnatLockdown.like(self._nsg)

    def plan_lockdown(self, target: Target) -> LockdownPlan:
        """In the NSG, a Deny rule per port behind the grant band, and the Allow rules that
        would let a managed port in ahead of it from wider than the port's policy
        (--take-over only); in the firewall, the standing DNAT rules to a managed port."""
        location = azure_location(target)
        plan = LockdownPlan(target.name, (), ())
        if location.network_security_group is not None:
            plan = self._plan_nsg(target, location)
        if location.firewall is None:
            return plan
        return replace(plan, remove=self._dnat.plan(target, location))

    def lock_down(self, target: Target, plan: LockdownPlan, take_over: bool) -> Lockdown:
        location = azure_location(target)
        if plan.blockers and not take_over:
            raise ProviderError(f"{location.network_security_group} holds rules that let a "
                                "managed port in ahead of jit; only --take-over removes them")
        denies = list(plan.details.get("deny", []))
        if location.network_security_group is not None:
            with translated(location):
                for deny in denies:  # closed first, then the wide rules go
                    self._put(location, deny)
                for rule in plan.blockers:
                    self._nsg.delete(location, rule.ref)
        removed: tuple[FirewallRule, ...] = ()
        if location.firewall is not None and plan.remove:
            try:
                removed = self._dnat.remove(location, plan.remove)
            except ProviderError as exc:
                self._undo_nsg(location, denies, plan.blockers, exc)
                raise
        return Lockdown(plan.blockers + removed, {"deny": denies})

    def lift_lockdown(self, target: Target, lockdown: Lockdown) -> list[str]:
        location = azure_location(target)
        nsg = location.nsg_id.lower()
        in_nsg = [r for r in lockdown.removed if nsg and r.scope.lower() == nsg]
        elsewhere = [r for r in lockdown.removed if r not in in_nsg]
        denies = list(lockdown.created.get("deny", []))
        differences: list[str] = []
        if location.network_security_group is not None:
            differences += self._lift_nsg(location, denies, in_nsg)
        elif denies:
            differences.append(f"jit's deny rules ({', '.join(d['name'] for d in denies)}) "
                               f"are in a network security group {target.name} no longer "
                               "names: remove them by hand")
        if elsewhere:  # DNAT rules, or rules of an NSG the policy no longer names
            differences += self._dnat.restore(target, location, elsewhere)
        return differences

    def posture(self, target: Target, lockdown: Lockdown) -> list[str]:
        location = azure_location(target)
        problems = []
        if location.network_security_group is not None:
            problems += self._nsg_posture(target, location, lockdown)
        if location.firewall is not None:
            problems += self._dnat.posture(target, location)
        return problems

    # -- the NSG ----------------------------------------------------------------------------

    def _plan_nsg(self, target: Target, location: AzureLocation) -> LockdownPlan:
        rules = [rule.as_dict() for rule in self._nsg.rules(location)]
        denies = _deny_rules(target, location, rules)
        last = max((d["properties"]["priority"] for d in denies), default=0)
        blockers = tuple(
            FirewallRule(location.nsg_id, rule["name"], _summary(rule), _writable(rule))
            for rule in rules if _lets_in_ahead(rule, target, location, last))
        add = tuple(f"{d['name']}: Deny {d['properties']['protocol']}/"
                    f"{d['properties']['destinationPortRange']} from * to "
                    f"{location.destination} at priority {d['properties']['priority']}"
                    for d in denies)
        return LockdownPlan(target.name, (), add, blockers, {"deny": denies})

    def _lift_nsg(self, location: AzureLocation, denies: list[dict[str, Any]],
                  removed: Sequence[FirewallRule]) -> list[str]:
        differences: list[str] = []
        with translated(location):
            for deny in denies:
                self._nsg.delete(location, deny["name"])
            for rule in removed:
                try:
                    self._put(location, dict(rule.body))
                except HttpResponseError as exc:
                    differences.append(f"{rule.ref} ({rule.summary}) could not be put back: "
                                       f"{error_message(exc)}")
        now = {rule.as_dict()["name"]: rule.as_dict() for rule in self._nsg.rules(location)}
        return differences + _not_as_before(now, removed, denies)

    def _undo_nsg(self, location: AzureLocation, denies: list[dict[str, Any]],
                  removed: Sequence[FirewallRule], cause: ProviderError) -> None:
        """The firewall refused after the NSG was closed: put the NSG back as it was, so that
        nothing is left half enabled and unrecorded."""
        if location.network_security_group is None or not (denies or removed):
            return
        try:
            left = self._lift_nsg(location, denies, removed)
        except ProviderError as exc:
            left = [str(exc)]
        if left:
            bodies = "; ".join(f"{r.ref}: {json.dumps(r.body, sort_keys=True)}" for r in removed)
            raise ProviderError(
                f"{cause}; and {location.network_security_group} could not be put back as it "
                f"was ({'; '.join(left)}). Rules jit removed from it: {bodies or 'none'}"
            ) from cause

    def _nsg_posture(self, target: Target, location: AzureLocation,
                     lockdown: Lockdown) -> list[str]:
        rules = {r["name"]: r for r in (rule.as_dict() for rule in self._nsg.rules(location))}
        problems = []
        denies = list(lockdown.created.get("deny", []))
        for deny in denies:
            found = rules.get(deny["name"])
            if found is None:
                problems.append(f"deny rule {deny['name']} is missing from "
                                f"{location.network_security_group}")
            elif _writable(found) != _writable(deny):
                problems.append(f"deny rule {deny['name']} was changed: {_summary(found)}")
        last = max((d["properties"]["priority"] for d in denies), default=0)
        problems += [f"{name} ({_summary(rule)}) lets a managed port in ahead of jit"
                     for name, rule in rules.items()
                     if _lets_in_ahead(rule, target, location, last)]
        return problems

    def _put(self, location: AzureLocation, rule: dict[str, Any]) -> None:
        """Create or replace a rule given as ARM's JSON (name and properties)."""
        self._nsg.put(location, rule["name"], SecurityRule(rule))


def _not_as_before(now: Mapping[str, Mapping[str, Any]], removed: Sequence[FirewallRule],
                   denies: list[dict[str, Any]]) -> list[str]:
    """How the NSG read back after disabling differs from before enabling."""
    differences = []
    for rule in removed:
        found = now.get(rule.ref)
        if found is not None and _writable(found) != _writable(dict(rule.body)):
            differences.append(f"{rule.ref} is back but differs: now {_summary(found)}, "
                               f"was {rule.summary}")
    names = {d["name"] for d in denies}
    return differences + [f"{name} is still there" for name in now if name in names]


def _writable(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as a PUT would send it back: its name and writable properties."""
    properties = rule.get("properties") or {}
    return {"name": rule.get("name"),
            "properties": {k: properties[k] for k in _WRITABLE if properties.get(k) not in
                           (None, [], "")}}


def _values(properties: Mapping[str, Any], key: str) -> list[str]:
    single = properties.get(key)
    return [str(single)] if single else [str(v) for v in properties.get(f"{key}es", [])
                                         or properties.get(f"{key}s", []) or []]


def _summary(rule: Mapping[str, Any]) -> str:
    p = rule.get("properties") or {}
    sources = ",".join(_values(p, "sourceAddressPrefix")) or "?"
    ports = ",".join(_values(p, "destinationPortRange")) or "?"
    return (f"{p.get('access')} {p.get('protocol')}/{ports} from {sources} at priority "
            f"{p.get('priority')}")


def _reaches(prefixes: list[str], address: str) -> bool:
    for prefix in prefixes:
        if prefix.lower() in AZURE_ANYWHERE or prefix.lower() == "virtualnetwork":
            return True
        try:
            if ipaddress.ip_address(address) in ipaddress.ip_network(prefix, strict=False):
                return True
        except ValueError:
            continue
    return False


def _lets_in_ahead(rule: Mapping[str, Any], target: Target, location: AzureLocation,
                   deny_priority: int) -> bool:
    """A rule jit did not make that lets one of the target's ports in before jit's deny
    rules, from wider than the port's policy."""
    p = rule.get("properties") or {}
    if not _allows_ahead(str(rule.get("name", "")), p, deny_priority):
        return False
    if not _reaches(_values(p, "destinationAddressPrefix") or ["*"], location.destination):
        return False
    return any(_lets_in_widely(p, port) for port in target.ports.values())


def _allows_ahead(name: str, p: Mapping[str, Any], deny_priority: int) -> bool:
    """An inbound Allow rule jit did not make, at a priority ahead of `deny_priority`."""
    return (not name.startswith(RULE_PREFIX) and p.get("access") == "Allow"
            and p.get("direction") == "Inbound" and int(p.get("priority") or 0) < deny_priority)


def _lets_in_widely(p: Mapping[str, Any], port: PortPolicy) -> bool:
    """Do these rule properties let `port` in, from wider than the port's policy?"""
    if str(p.get("protocol", "*")).lower() not in ("*", str(port.protocol).lower()):
        return False
    return any(port_in_range(port.port, r) for r in _values(p, "destinationPortRange")) \
        and wider_than(_values(p, "sourceAddressPrefix"), port)


def _deny_rules(target: Target, location: AzureLocation,
                rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """jit's Deny rule for each of the target's ports, at the lowest free priorities behind
    the grant band."""
    used = {int((r.get("properties") or {}).get("priority") or 0) for r in rules
            if (r.get("properties") or {}).get("direction") == "Inbound"}
    free = (p for p in range(location.priority_band[1] + 1, 4097) if p not in used)
    denies = []
    for port in sorted(target.ports.values(), key=lambda p: (p.port, str(p.protocol))):
        protocol = str(port.protocol)
        denies.append({"name": f"{DENY_PREFIX}{port.port}-{protocol}", "properties": {
            "protocol": PROTOCOLS.get(protocol, "Tcp"), "sourcePortRange": "*",
            "destinationPortRange": str(port.port), "sourceAddressPrefix": "*",
            "destinationAddressPrefix": location.destination, "access": "Deny",
            "priority": next(free), "direction": "Inbound",
            "description": f"jit: {port.name} closed by default on {target.name}"}})
    return denies
