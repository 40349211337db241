"""Closed by default behind an Azure Firewall: the firewall half of `jit enable` / `jit disable`.

A target behind a firewall is reached through DNAT rules, and a DNAT rule forwards only what
it names, so enabling puts no deny rule there. It removes the standing DNAT rules that forward
to the target's address and one of its managed ports (ports and protocols in the policy),
each recorded whole with where it lived: its NAT collection (name, priority, action and the
rest) and its place in it, and in policy mode its rule collection group (name, priority).
A collection (or group) that loses its last rule is removed; disabling recreates it, puts
every rule back in its place and reads the firewall back.

jit's own collection `jit` (in policy mode the collection `jit` of the group `jit`) holds
the grants of every target behind the firewall: it is never removed or changed here. The
posture watch reports a DNAT rule outside it that forwards to a managed port, and edits to it:
a rule not named `jit-<grant id>`, a jit rule forwarding to the target's address on a port
that is not managed or from wider than the port's policy, and (policy mode) other collections
in jit's group. jit rules forwarding to other addresses belong to other targets behind the
same firewall; the reconciler removes those that no grant is behind.

Writes go out as jit's grants do (azure_firewall.py): classic rules by a PUT of the whole
firewall, policy rules by a PUT (or DELETE) of each rule collection group changed, each read
just before and sent with `If-Match` (a 412 reads again and applies again). Rules are handled
here as ARM's JSON, which is also what a snapshot keeps.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.mgmt.network.models import AzureFirewall as ArmFirewall
from azure.mgmt.network.models import FirewallPolicyRuleCollectionGroup

from jitcore.errors import ProviderError
from jitcore.policy import AzureFirewall, AzureLocation, PortPolicy, Target
from jitcore.ports import FirewallRule
from jitcore.providers.azure_arm import GRANT_RULE, WholeWrites, translated

JIT = "jit"  # jit's NAT collection, and in policy mode its rule collection group
_NAT_COLLECTION = "firewallpolicynatrulecollection"


@dataclass(slots=True)
class _Read:
    """A firewall's rule collections as read, as ARM's JSON: the whole firewall (classic) or
    each rule collection group of its policy, and which groups a write must send."""

    firewall: dict[str, Any] | None  # classic
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # policy, lowercased names
    changed: set[str] = field(default_factory=set)  # groups to write
    created: set[str] = field(default_factory=set)  # of those, groups that are not there


@dataclass(frozen=True, slots=True)
class _Found:
    """One DNAT rule where it lives."""

    group: dict[str, Any] | None  # its rule collection group (policy mode)
    collection: dict[str, Any]
    collection_index: int
    rule: dict[str, Any]
    rule_index: int

    @property
    def classic(self) -> bool:
        return self.group is None

    @property
    def ref(self) -> str:
        names = [self.collection.get("name"), self.rule.get("name")]
        return "/".join(str(n) for n in ([self.group.get("name")] if self.group else []) + names)

    def jits(self) -> bool:
        """In jit's own collection (and group)?"""
        return _lower(self.collection.get("name")) == JIT and (
            self.group is None or _lower(self.group.get("name")) == JIT)


@dataclass(frozen=True, slots=True)
class _Remove:
    rules: tuple[FirewallRule, ...]


@dataclass(frozen=True, slots=True)
class _Restore:
    rules: tuple[FirewallRule, ...]


class DnatLockdown(WholeWrites[_Read, _Remove | _Restore]):
    """Standing DNAT rules to a target's managed ports: found, removed and put back, and the
    posture of the firewall while jit is enabled."""

    @classmethod
    def like(cls, writes: WholeWrites[Any, Any]) -> DnatLockdown:
        """Writes with the same clients, polling and backoff as `writes`."""
        return cls(writes._clients, writes._polling_interval, writes._backoff)

    def plan(self, target: Target, location: AzureLocation) -> tuple[FirewallRule, ...]:
        """The standing DNAT rules that forward to one of the target's managed ports."""
        firewall = _firewall(location)
        with translated(location, where=_where(firewall)):
            state = self._read(location)
        return tuple(_snapshot(firewall, found) for found in _dnat_rules(state)
                     if not found.jits() and _managed(found, target, location) is not None)

    def remove(self, location: AzureLocation,
               rules: Sequence[FirewallRule]) -> tuple[FirewallRule, ...]:
        """Remove these rules (one write); each as it was just before, for the record."""
        firewall = _firewall(location)
        with translated(location, where=_where(firewall)):
            removed = self.writes.submit(firewall.scope.lower(), (location, _Remove(tuple(rules))))
        assert isinstance(removed, tuple)
        return removed

    def restore(self, target: Target, location: AzureLocation,
                rules: Sequence[FirewallRule]) -> list[str]:
        """Put every rule back in its place (one write), read the firewall back: how it
        differs from the record (empty when every rule is back as it was)."""
        firewall = location.firewall
        scope = firewall.scope.lower() if firewall is not None else None
        here = [r for r in rules if r.scope.lower() == scope]
        differences = [f"{r.ref} ({r.summary}) was recorded in {r.scope}, which the policy "
                       f"of {target.name} no longer names: put it back by hand: "
                       f"{json.dumps(dict(r.body), sort_keys=True)}"
                       for r in rules if r not in here]
        if firewall is None or not here:
            return differences
        with translated(location, where=_where(firewall)):
            self.writes.submit(firewall.scope.lower(), (location, _Restore(tuple(here))))
            state = self._read(location)
        return differences + _not_as_before(state, here)

    def posture(self, target: Target, location: AzureLocation) -> list[str]:
        """DNAT rules outside jit's collection to a managed port, and edits to jit's."""
        firewall = _firewall(location)
        with translated(location, where=_where(firewall)):
            state = self._read(location)
        problems = []
        for found in _dnat_rules(state):
            port = _managed(found, target, location)
            if found.jits():
                problems += _tampered(found, port, target, location)
            elif port is not None:
                problems.append(f"DNAT rule {found.ref} of {_where(firewall)} forwards "
                                f"{port.name} ({port.port}) outside jit: {_summary(found)}")
        mine = state.groups.get(JIT)
        others = sorted(str(c.get("name")) for c in _collections(mine)
                        if _lower(c.get("name")) != JIT) if mine is not None else []
        if others:
            problems.append(f"jit's rule collection group {JIT} in {_where(firewall)} holds "
                            f"collections jit did not make: {', '.join(others)}")
        return problems

    # -- WholeWrites ----------------------------------------------------------------------

    def _read(self, location: AzureLocation) -> _Read:
        firewall = _firewall(location)
        client = self._clients.client(location)
        if firewall.policy is None:
            read = client.azure_firewalls.get(firewall.resource_group, firewall.name)
            return _Read(_plain(read.as_dict()))
        groups = client.firewall_policy_rule_collection_groups.list(firewall.resource_group,
                                                                     firewall.policy)
        return _Read(None, {_lower(g.name): _plain(g.as_dict()) for g in groups})

    def _apply(self, state: _Read, change: _Remove | _Restore,
               location: AzureLocation) -> tuple[object, bool]:
        firewall = _firewall(location)
        if isinstance(change, _Remove):
            return _take(state, change.rules, firewall)
        return None, _put_back(state, change.rules)

    def _send(self, location: AzureLocation, state: _Read) -> None:
        firewall = _firewall(location)
        client = self._clients.client(location)
        if state.firewall is not None:
            client.azure_firewalls.begin_create_or_update(
                firewall.resource_group, firewall.name, ArmFirewall(state.firewall),
                headers={"If-Match": str(state.firewall.get("etag"))},
                polling_interval=self._polling_interval).result()
            return
        groups = client.firewall_policy_rule_collection_groups
        for key in sorted(state.changed):
            group = state.groups[key]
            name, collections = str(group["name"]), _collections(group)
            created = key in state.created
            precondition = {"If-None-Match": "*"} if created else \
                {"If-Match": f'"{group.get("etag")}"'}
            if not collections:
                if not created:  # its last collection went: the group goes too
                    groups.begin_delete(firewall.resource_group, str(firewall.policy), name,
                                        headers=precondition,
                                        polling_interval=self._polling_interval).result()
                continue
            body = FirewallPolicyRuleCollectionGroup({"properties": {
                "priority": group["properties"].get("priority"),
                "ruleCollections": collections}})
            groups.begin_create_or_update(firewall.resource_group, str(firewall.policy), name,
                                          body, headers=precondition,
                                          polling_interval=self._polling_interval).result()


# ---- finding ------------------------------------------------------------------------------


def _containers(state: _Read) -> Iterator[tuple[dict[str, Any] | None, list[dict[str, Any]]]]:
    """Where collections live: the firewall's NAT collections, or each group's collections."""
    if state.firewall is not None:
        properties = state.firewall.setdefault("properties", {})
        yield None, properties.setdefault("natRuleCollections", [])
        return
    for group in state.groups.values():
        yield group, _collections(group)


def _collections(group: dict[str, Any] | None) -> list[dict[str, Any]]:
    if group is None:
        return []
    properties = group.setdefault("properties", {})
    collections: list[dict[str, Any]] = properties.setdefault("ruleCollections", [])
    return collections


def _fields(collection: dict[str, Any], classic: bool) -> dict[str, Any]:
    """A collection's priority, action and rules: under `properties` in classic rules."""
    if classic:
        fields: dict[str, Any] = collection.setdefault("properties", {})
        return fields
    return collection


def _rules(collection: dict[str, Any], classic: bool) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = _fields(collection, classic).setdefault("rules", [])
    return rules


def _is_dnat(collection: dict[str, Any], classic: bool) -> bool:
    fields = _fields(collection, classic)
    action = _lower((fields.get("action") or {}).get("type"))
    return action == "dnat" and (classic or
                                 _lower(collection.get("ruleCollectionType")) == _NAT_COLLECTION)


def _dnat_rules(state: _Read) -> Iterator[_Found]:
    for group, collections in _containers(state):
        classic = group is None
        for c_index, collection in enumerate(collections):
            if _is_dnat(collection, classic):
                for r_index, rule in enumerate(_rules(collection, classic)):
                    yield _Found(group, collection, c_index, rule, r_index)


def _managed(found: _Found, target: Target, location: AzureLocation) -> PortPolicy | None:
    """The managed port this rule forwards to on the target's address, if any."""
    rule = found.rule
    if not _same_address(rule.get("translatedAddress"), location.destination):
        return None
    try:
        port = int(str(rule.get("translatedPort")))
    except ValueError:
        return None
    protocols = {_lower(p) for p in _protocols(found)}
    return next((p for p in target.ports.values() if p.port == port and (
        not protocols or "any" in protocols or p.protocol.value in protocols)), None)


def _tampered(found: _Found, port: PortPolicy | None, target: Target,
              location: AzureLocation) -> list[str]:
    """What is wrong with a rule in jit's collection, as far as this target can tell."""
    name = str(found.rule.get("name"))
    if not GRANT_RULE.match(name):
        return [f"{found.ref} in jit's collection is not one of jit's rules (jit names its "
                f"rules jit-<grant id>): {_summary(found)}"]
    if not _same_address(found.rule.get("translatedAddress"), location.destination):
        return []  # another target's grant, behind the same firewall
    if port is None:
        return [f"{found.ref} in jit's collection forwards to {location.destination} on a "
                f"port that is not a managed port of {target.name}: {_summary(found)}"]
    sources = [str(s) for s in found.rule.get("sourceAddresses") or []]
    if wider_than(sources, port):
        return [f"{found.ref} in jit's collection lets {port.name} in from wider than its "
                f"policy allows: {_summary(found)}"]
    return []


def wider_than(prefixes: list[str], port: PortPolicy) -> bool:
    """Does any of these sources let in more than one grant of this port could: a service tag
    or `*`, a prefix wider than the port's widest grant, or one outside its allowed sources?"""
    for prefix in prefixes or ["*"]:
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return True  # *, Internet, AzureCloud, a range...: wider than a grant names
        widest = port.widest_prefix_v4 if network.version == 4 else port.widest_prefix_v6
        if network.prefixlen < widest or not any(
                network.version == n.version and network.subnet_of(n)  # type: ignore[arg-type]
                for n in port.allowed_sources):
            return True
    return False


# ---- removing and putting back ------------------------------------------------------------


def _snapshot(firewall: AzureFirewall, found: _Found) -> FirewallRule:
    """The rule whole, with where it lives, so that disabling can put it back exactly."""
    collection = copy.deepcopy(found.collection)
    collection.pop("etag", None)
    fields = _fields(collection, found.classic)
    fields.pop("rules", None)
    fields.pop("provisioningState", None)
    group = None if found.group is None else {
        "name": found.group.get("name"),
        "priority": (found.group.get("properties") or {}).get("priority")}
    priority = fields.get("priority")
    where = f"collection {collection.get('name')} at priority {priority}"
    if group is not None:
        where += f", group {group['name']} at priority {group['priority']}"
    return FirewallRule(firewall.scope, found.ref, f"{_summary(found)} ({where})", {
        "group": group, "collection": collection, "collection_index": found.collection_index,
        "rule": copy.deepcopy(found.rule), "rule_index": found.rule_index})


def _key(body: Mapping[str, Any]) -> tuple[str, str, str]:
    group = body.get("group") or {}
    return (_lower(group.get("name")), _lower(body["collection"].get("name")),
            _lower(body["rule"].get("name")))


def _found_key(found: _Found) -> tuple[str, str, str]:
    return (_lower(found.group.get("name")) if found.group else "",
            _lower(found.collection.get("name")), _lower(found.rule.get("name")))


def _take(state: _Read, rules: Sequence[FirewallRule],
          firewall: AzureFirewall) -> tuple[object, bool]:
    """Remove these rules as read now (a collection, or group, left empty goes too): the
    rules as they were, and whether anything changed."""
    wanted = {_key(rule.body) for rule in rules}
    found = [f for f in _dnat_rules(state) if not f.jits() and _found_key(f) in wanted]
    taken = tuple(_snapshot(firewall, f) for f in found)
    for each in found:
        _rules(each.collection, each.classic).remove(each.rule)
        if each.group is not None:
            state.changed.add(_lower(each.group.get("name")))
    for group, collections in _containers(state):
        collections[:] = [c for c in collections
                          if not any(f.collection is c for f in found) or _rules(c, group is None)]
    return taken, bool(found)


def _put_back(state: _Read, rules: Sequence[FirewallRule]) -> bool:
    """Put each rule back in its place, recreating its collection (and group) if they are
    gone; a rule of the same name already there stays as it is. Whether anything changed."""
    changed = False
    for rule in sorted(rules, key=_order):
        body = rule.body
        collections = _container(state, body)
        classic = state.firewall is not None
        name = _lower(body["collection"].get("name"))
        collection = next((c for c in collections if _lower(c.get("name")) == name), None)
        if collection is None:
            collection = copy.deepcopy(dict(body["collection"]))
            _fields(collection, classic)["rules"] = []
            collections.insert(min(int(body["collection_index"]), len(collections)), collection)
        held = _rules(collection, classic)
        if any(_lower(r.get("name")) == _key(body)[2] for r in held):
            continue
        held.insert(min(int(body["rule_index"]), len(held)), copy.deepcopy(dict(body["rule"])))
        changed = True
        if body.get("group"):
            state.changed.add(_lower(body["group"].get("name")))
    return changed


def _order(rule: FirewallRule) -> tuple[str, int, int]:
    """Collections, then rules, back in the order they stood, so each lands in its place."""
    return (_key(rule.body)[0], int(rule.body["collection_index"]), int(rule.body["rule_index"]))


def _container(state: _Read, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The collections a recorded rule's collection belongs in (its group made if gone)."""
    if state.firewall is not None:
        return next(_containers(state))[1]
    recorded = body.get("group") or {}
    key = _lower(recorded.get("name"))
    if key not in state.groups:
        state.groups[key] = {"name": recorded.get("name"), "properties": {
            "priority": recorded.get("priority"), "ruleCollections": []}}
        state.created.add(key)
    return _collections(state.groups[key])


def _not_as_before(state: _Read, rules: Sequence[FirewallRule]) -> list[str]:
    """How the firewall read back after disabling differs from the record."""
    now = {_found_key(f): f for f in _dnat_rules(state)}
    differences = []
    for rule in rules:
        found = now.get(_key(rule.body))
        if found is None:
            differences.append(f"{rule.ref} ({rule.summary}) is not back")
        elif _essence(found.rule) != _essence(rule.body["rule"]):
            differences.append(f"{rule.ref} is back but differs: now {_summary(found)}, "
                               f"was {rule.summary}")
        else:
            recorded = _fields(dict(rule.body["collection"]), found.classic).get("priority")
            priority = _fields(found.collection, found.classic).get("priority")
            if priority != recorded:
                differences.append(f"{rule.ref} is back, but its collection is at priority "
                                   f"{priority}, was {recorded}")
    return differences


# ---- small helpers ------------------------------------------------------------------------


def _essence(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule without its empty fields (ARM echoes a list it was not given as [])."""
    return {k: v for k, v in rule.items() if v not in (None, [], "")}


def _protocols(found: _Found) -> list[str]:
    key = "protocols" if found.classic else "ipProtocols"
    return [str(p) for p in found.rule.get(key) or []]


def _summary(found: _Found) -> str:
    rule = found.rule

    def joined(key: str) -> str:
        return ",".join(str(v) for v in rule.get(key) or []) or "?"

    to = rule.get("translatedAddress") or rule.get("translatedFqdn") or "?"
    return (f"DNAT {','.join(_protocols(found)) or '?'} {joined('destinationAddresses')}:"
            f"{joined('destinationPorts')} from {joined('sourceAddresses')} -> {to}:"
            f"{rule.get('translatedPort') or '?'}")


def _same_address(value: object, address: str) -> bool:
    try:
        return ipaddress.ip_address(str(value)) == ipaddress.ip_address(address)
    except ValueError:
        return False


def _lower(value: object) -> str:
    return str(getattr(value, "value", value) or "").lower()


def _plain(resource: Mapping[str, Any]) -> dict[str, Any]:
    """ARM's JSON as plain values (the SDK may hold enum members in what it was given)."""
    plain: dict[str, Any] = json.loads(json.dumps(resource))
    return plain


def _firewall(location: AzureLocation) -> AzureFirewall:
    if location.firewall is None:
        raise ProviderError(f"{location.resource} has no firewall")
    return location.firewall


def _where(firewall: AzureFirewall) -> str:
    if firewall.policy is not None:
        return (f"firewall policy {firewall.policy} of firewall {firewall.name} "
                f"(resource group {firewall.resource_group})")
    return f"firewall {firewall.name} (resource group {firewall.resource_group})"
