"""Azure Firewall rule collections as the network provider validates and stores them.

Two families share one NAT rule shape (tests/fakes/reference/azure-firewall/):
- classic collections, `properties.natRuleCollections[]` (and network/application ones) of an
  `azureFirewalls` resource: `{"name", "properties": {"priority", "action": {"type"}, "rules"}}`,
  NAT rules with `protocols`;
- policy collections, `properties.ruleCollections[]` of a rule collection group:
  `{"ruleCollectionType", "name", "priority", "action", "rules"}`, rules with `ruleType` and
  `ipProtocols`.

As recorded, a NAT action is echoed "Dnat" whatever its casing on the way in ("DNAT" sent,
"Dnat" returned), absent list fields come back as [] and absent scalars stay absent.

Every error below is the emulator's own (code and wording): not verified against Azure, whose
answers to these bodies are not on record. Only the limits come from the swagger (priority
100-65000, the action and protocol enums).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from tests.fakes.arm.errors import ArmError, Json

MIN_PRIORITY, MAX_PRIORITY = 100, 65000
NAT_ACTIONS = ("Dnat", "Snat")
FILTER_ACTIONS = ("Allow", "Deny")
PROTOCOLS = ("TCP", "UDP", "Any", "ICMP")
NAT_COLLECTION = "FirewallPolicyNatRuleCollection"
FILTER_COLLECTION = "FirewallPolicyFilterRuleCollection"
RULE_TYPES = ("ApplicationRule", "NetworkRule", "NatRule")

_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
# List fields the service echoes as [] when absent, per rule kind (as recorded).
_CLASSIC_NAT_LISTS = ("sourceAddresses", "sourceIpGroups", "destinationAddresses",
                      "destinationPorts", "protocols")
_CLASSIC_NETWORK_LISTS = ("sourceAddresses", "destinationAddresses", "sourceIpGroups",
                          "destinationIpGroups", "destinationFqdns", "destinationPorts")
_POLICY_LISTS = {
    "NatRule": ("ipProtocols", "sourceAddresses", "sourceIpGroups", "destinationAddresses",
                "destinationPorts"),
    "NetworkRule": ("ipProtocols", "sourceAddresses", "sourceIpGroups", "destinationAddresses",
                    "destinationIpGroups", "destinationFqdns", "destinationPorts"),
    "ApplicationRule": ("sourceAddresses", "sourceIpGroups", "protocols", "targetFqdns",
                        "fqdnTags"),
}


def invalid(code: str, message: str) -> ArmError:
    """A 400 of the emulator's own for a firewall body (not verified against Azure)."""
    return ArmError(400, code, message)


def _enum(value: object, allowed: tuple[str, ...], what: str) -> str:
    if isinstance(value, str):
        for choice in allowed:
            if choice.lower() == value.lower():
                return choice
    raise invalid("InvalidRequestFormat",
                  f"{what} {value!r} is invalid; expected one of {', '.join(allowed)}.")


def priority(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("InvalidRequestFormat", f"{where}: priority must be an integer.")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise invalid("AzureFirewallRuleCollectionInvalidPriority",
                      f"{where}: priority {value} is outside {MIN_PRIORITY}-{MAX_PRIORITY}.")
    return value


def _strings(rule: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = rule.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid("InvalidRequestFormat", f"{where}: {key} must be a list of strings.")
    return value


def _port(value: str, where: str, *, single: bool = False) -> None:
    match = _PORT.fullmatch(value)
    ok = value == "*" and not single
    if match:
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        ok = 1 <= low <= high <= 65535 and not (single and match.group(2))
    if not ok:
        raise invalid("AzureFirewallRuleInvalidPort", f"{where}: invalid port '{value}'.")


def _nat_rule(rule: Mapping[str, Any], protocols_key: str, where: str) -> None:
    """A DNAT rule's checks: who may come in, to which public address and port, sent where."""
    protocols = _strings(rule, protocols_key, where)
    if not protocols:
        raise invalid("AzureFirewallRuleMissingProtocols", f"{where}: {protocols_key} is empty.")
    for protocol in protocols:
        _enum(protocol, PROTOCOLS, f"{where}: protocol")
    if not (_strings(rule, "sourceAddresses", where) or _strings(rule, "sourceIpGroups", where)):
        raise invalid("AzureFirewallRuleMissingSource",
                      f"{where}: sourceAddresses or sourceIpGroups is required.")
    if not _strings(rule, "destinationAddresses", where):
        raise invalid("AzureFirewallRuleMissingDestination",
                      f"{where}: destinationAddresses is required.")
    ports = _strings(rule, "destinationPorts", where)
    if not ports:
        raise invalid("AzureFirewallRuleMissingDestinationPorts",
                      f"{where}: destinationPorts is required.")
    for port in ports:
        _port(port, where)
    address, fqdn = rule.get("translatedAddress"), rule.get("translatedFqdn")
    if bool(address) == bool(fqdn):
        raise invalid("AzureFirewallNatRuleInvalidTranslation",
                      f"{where}: exactly one of translatedAddress and translatedFqdn is required.")
    if address:
        try:
            ipaddress.ip_address(str(address))
        except ValueError:
            raise invalid("AzureFirewallNatRuleInvalidTranslatedAddress",
                          f"{where}: translatedAddress '{address}' is not an IP address.") \
                from None
    translated_port = rule.get("translatedPort")
    if not isinstance(translated_port, str):
        raise invalid("AzureFirewallNatRuleInvalidTranslatedPort",
                      f"{where}: translatedPort must be a port number, as a string.")
    _port(translated_port, where, single=True)


def _stored_rule(rule: Mapping[str, Any], lists: tuple[str, ...], protocols_key: str) -> Json:
    stored = {key: value for key, value in rule.items() if value is not None}
    for key in lists:
        stored.setdefault(key, [])
    if protocols_key in stored:
        stored[protocols_key] = [_enum(p, PROTOCOLS, "protocol") for p in stored[protocols_key]]
    return stored


def _rules(value: object, where: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(rule, dict) for rule in value):
        raise invalid("InvalidRequestFormat", f"{where}: rules must be a list of objects.")
    names = [str(rule.get("name") or "").lower() for rule in value]
    if "" in names:
        raise invalid("InvalidRequestFormat", f"{where}: every rule needs a name.")
    if len(set(names)) != len(names):
        raise invalid("AzureFirewallRuleNameNotUnique", f"{where}: rule names must be unique.")
    return value


def _action(value: object, allowed: tuple[str, ...], where: str) -> str:
    kind = value.get("type") if isinstance(value, dict) else None
    return _enum(kind, allowed, f"{where}: action type")


# -- classic collections (azureFirewalls) ---------------------------------------------------


def classic_collection(kind: str, item: object) -> Json:
    """One collection of `natRuleCollections` / `networkRuleCollections` /
    `applicationRuleCollections`: checked, and its stored `{"name", "properties"}`."""
    if not isinstance(item, dict) or not isinstance(item.get("properties"), dict):
        raise invalid("InvalidRequestFormat", f"{kind}: each collection needs 'properties'.")
    name = str(item.get("name") or "")
    where = f"{kind} '{name}'"
    properties = item["properties"]
    stored: Json = {"priority": priority(properties.get("priority"), where)}
    rules = _rules(properties.get("rules"), where)
    if kind == "natRuleCollections":
        stored["action"] = {"type": _action(properties.get("action"), NAT_ACTIONS, where)}
        for rule in rules:
            _nat_rule(rule, "protocols", f"{where} rule '{rule['name']}'")
        stored["rules"] = [_stored_rule(rule, _CLASSIC_NAT_LISTS, "protocols") for rule in rules]
    else:
        stored["action"] = {"type": _action(properties.get("action"), FILTER_ACTIONS, where)}
        lists = _CLASSIC_NETWORK_LISTS if kind == "networkRuleCollections" else ()
        stored["rules"] = [_stored_rule(rule, lists, "") for rule in rules]
    return {"name": name, "properties": stored}


def check_unique(collections: Mapping[str, list[Json]]) -> None:
    """Collection names unique within the firewall, priorities within each kind.

    Not verified against Azure: which of these Azure refuses, and how, is not on record.
    """
    names: set[str] = set()
    for kind, items in collections.items():
        priorities: set[int] = set()
        for item in items:
            name, number = item["name"].lower(), item["properties"]["priority"]
            if name in names:
                raise invalid("AzureFirewallRuleCollectionNameNotUnique",
                              f"Rule collection name '{item['name']}' is used twice.")
            if number in priorities:
                raise invalid("AzureFirewallRuleCollectionPriorityNotUnique",
                              f"{kind}: priority {number} is used twice.")
            names.add(name)
            priorities.add(number)


# -- policy collections (ruleCollectionGroups) ----------------------------------------------


def policy_collection(item: object) -> Json:
    """One entry of a rule collection group's `ruleCollections`: checked and stored."""
    if not isinstance(item, dict):
        raise invalid("InvalidRequestFormat", "ruleCollections: each entry must be an object.")
    kind = _enum(item.get("ruleCollectionType"), (NAT_COLLECTION, FILTER_COLLECTION),
                 "ruleCollectionType")
    name = str(item.get("name") or "")
    if not name:
        raise invalid("InvalidRequestFormat", "ruleCollections: every collection needs a name.")
    where = f"rule collection '{name}'"
    stored: Json = {key: value for key, value in item.items() if value is not None}
    stored["ruleCollectionType"] = kind
    stored["priority"] = priority(item.get("priority"), where)
    allowed = NAT_ACTIONS if kind == NAT_COLLECTION else FILTER_ACTIONS
    stored["action"] = {"type": _action(item.get("action"), allowed, where)}
    rules = []
    for rule in _rules(item.get("rules"), where):
        rule_where = f"{where} rule '{rule['name']}'"
        rule_type = _enum(rule.get("ruleType"), RULE_TYPES, f"{rule_where}: ruleType")
        if (rule_type == "NatRule") != (kind == NAT_COLLECTION):
            raise invalid("InvalidRequestFormat",
                          f"{rule_where}: a {rule_type} does not belong in a {kind}.")
        if rule_type == "NatRule":
            _nat_rule(rule, "ipProtocols", rule_where)
        protocols_key = "ipProtocols" if rule_type != "ApplicationRule" else ""
        rules.append({**_stored_rule(rule, _POLICY_LISTS[rule_type], protocols_key),
                      "ruleType": rule_type})
    stored["rules"] = rules
    return stored


def check_unique_in_group(collections: list[Json]) -> None:
    """Collection names and priorities unique within the group (not verified against Azure)."""
    check_unique({"ruleCollections": [{"name": item["name"], "properties": item}
                                      for item in collections]})
