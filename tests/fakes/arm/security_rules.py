"""Security rules as the network provider validates and stores them.

`normalise_rule` checks a rule's `properties` the way a PUT is checked and gives the stored,
canonical form (keys in the order ARM returns them); `check_fits` checks a rule's place in its
NSG (the rule count, unique priorities). `DEFAULT_RULES` are the six every NSG has.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fakes.arm.errors import ArmError, Json, bad_format, missing_parameter

if TYPE_CHECKING:
    from tests.fakes.arm.model import Nsg

MIN_PRIORITY, MAX_PRIORITY = 100, 4096
# "A security group cannot have more than 1000 security rules." with code
# SecurityRuleCountLimitReached: the answer quoted in Azure/azure-rest-api-specs issue #3003.
MAX_RULES = 1000
PROTOCOLS = ("Tcp", "Udp", "Icmp", "Esp", "Ah", "*")
ACCESSES = ("Allow", "Deny")
DIRECTIONS = ("Inbound", "Outbound")
# Service tags accepted as address prefixes (case-insensitive, optionally ".<Region>"); anything
# else that is not "*" or an IP address/CIDR is an invalid prefix, like "any" is on Azure.
SERVICE_TAGS = frozenset(tag.lower() for tag in (
    "Internet", "VirtualNetwork", "AzureLoadBalancer", "AzureCloud", "Storage", "Sql",
    "AzureMonitor", "AzureActiveDirectory", "AzureKeyVault", "EventHub", "ServiceBus",
    "AppService", "AzureTrafficManager", "GatewayManager", "AzureBackup", "AzureFrontDoor",
    "ApiManagement", "AzureContainerRegistry", "AzureCosmosDB", "GuestAndHybridManagement",
))

_REFERENCE = Path(__file__).parent.parent / "reference" / "azure" / "spec-examples"
_PORT_RANGE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


def rule_properties(priority: int, port: int | str, source: str = "*", destination: str = "*",
                    *, access: str = "Allow", direction: str = "Inbound", protocol: str = "Tcp",
                    description: str | None = None) -> Json:
    """The `properties` of a security rule with one source, destination and destination port."""
    properties: Json = {
        "protocol": protocol, "sourcePortRange": "*", "destinationPortRange": str(port),
        "sourceAddressPrefix": source, "destinationAddressPrefix": destination,
        "access": access, "priority": priority, "direction": direction,
    }
    if description is not None:
        properties["description"] = description
    return properties


def _enum(value: object, allowed: tuple[str, ...]) -> str | None:
    if isinstance(value, str):
        for choice in allowed:
            if choice.lower() == value.lower():
                return choice
    return None


def _priority(value: object) -> int:
    """JSON.NET's lenient integer reading: 100, 100.0 and "100" are all 100; absent is 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise bad_format(f"Error converting value {value} to type 'System.Int32'.",
                          "properties.priority")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise bad_format(f"Could not convert {json.dumps(value)} to integer.", "properties.priority")


def _valid_port(value: str) -> bool:
    if value == "*":
        return True
    match = _PORT_RANGE.fullmatch(value)
    if not match:
        return False
    low = int(match.group(1))
    high = int(match.group(2) or low)
    return 0 <= low <= high <= 65535


def _valid_prefix(value: str) -> bool:
    if value == "*":
        return True
    with contextlib.suppress(ValueError):
        ipaddress.ip_network(value, strict=False)
        return True
    return value.split(".", 1)[0].lower() in SERVICE_TAGS


def _one_of(properties: Mapping[str, Any], single: str, plural: str,
            rule_id: str) -> tuple[str | None, list[str]]:
    """The singular and plural forms of a field, of which at most one may be given; an empty
    string or list counts as absent."""
    one = properties.get(single)
    many = properties.get(plural)
    one_text = None if one in (None, "") else str(one)
    if many in (None, ""):
        many = []
    if not isinstance(many, list):
        raise bad_format(f"Cannot deserialize {json.dumps(many)} into a list.",
                          f"properties.{plural}")
    if one_text is not None and many:
        # Not verified against Azure: the emulator's own wording for "both forms given".
        raise ArmError(400, "InvalidRequestFormat",
                       f"Security rule {rule_id} specifies both {single} and {plural}; "
                       "specify only one of them.")
    return one_text, [str(item) for item in many]


def _ports(properties: Mapping[str, Any], side: str, rule_id: str) -> tuple[str | None, list[str]]:
    single, plural = f"{side}PortRange", f"{side}PortRanges"
    one, many = _one_of(properties, single, plural, rule_id)
    title = single[0].upper() + single[1:]
    if one is None and not many:
        raise missing_parameter(title, rule_id)
    for value in [one] if one is not None else many:
        if not _valid_port(value):
            raise ArmError(400, "SecurityRuleInvalidPortRange",
                           f"Security rule has invalid Port range. Value provided: {value}. Value "
                           "should be an integer OR integer range with '-' delimiter. Valid range "
                           "0-65535.")
    return one, many


def _prefixes(properties: Mapping[str, Any], side: str,
              rule_id: str) -> tuple[str | None, list[str], list[Any]]:
    single, plural = f"{side}AddressPrefix", f"{side}AddressPrefixes"
    one, many = _one_of(properties, single, plural, rule_id)
    groups = properties.get(f"{side}ApplicationSecurityGroups") or []
    if not isinstance(groups, list):
        raise bad_format("Cannot deserialize into a list.",
                          f"properties.{side}ApplicationSecurityGroups")
    title = side[0].upper() + side[1:]
    if one is None and not many and not groups:
        raise ArmError(400, "SecurityRuleParametersMissing",
                       f"Required security rule parameters are missing for security rule with "
                       f"Id: {rule_id}. Security rule must specify {title}AddressPrefixes, "
                       f"{title}AddressPrefix, or {title}ApplicationSecurityGroups.")
    for value in [one] if one is not None else many:
        if not _valid_prefix(value):
            raise ArmError(400, "SecurityRuleInvalidAddressPrefix",
                           f"Security rule {rule_id} has invalid Address prefix. "
                           f"Value provided: {value}.")
    return one, many, groups


def normalise_rule(properties: Mapping[str, Any], rule_id: str) -> Json:
    """Validate a rule's `properties` like the network provider; the canonical stored form.

    Raises ArmError. The keys come out in the order ARM returns them (see the recording).
    """
    protocol_in = properties.get("protocol")
    if protocol_in in (None, ""):
        raise missing_parameter("Protocol", rule_id)
    protocol = _enum(protocol_in, PROTOCOLS)
    if protocol is None:
        raise ArmError(400, "SecurityRuleInvalidProtocol",
                       f"Security rule has invalid Protocol. Value provided: {protocol_in} "
                       f"Allowed values: Icmp,Tcp,Udp,Esp,Ah,*.")
    choices: Json = {}
    for name, allowed, type_name in (("access", ACCESSES, "SecurityRuleAccess"),
                                     ("direction", DIRECTIONS, "SecurityRuleDirection")):
        value = properties.get(name)
        if value in (None, ""):
            raise missing_parameter(name[0].upper() + name[1:], rule_id)
        choices[name] = _enum(value, allowed)
        if choices[name] is None:
            raise bad_format(
                f"Error converting value {json.dumps(value)} to type 'Microsoft.WindowsAzure."
                f"Networking.Nrp.Frontend.Contract.Csm.Public.{type_name}'.",
                f"properties.{name}")
    priority = _priority(properties.get("priority"))
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ArmError(400, "SecurityRuleInvalidPriority",
                       f"Security rule has invalid Priority. Value provided: {priority} "
                       f"Allowed range {MIN_PRIORITY}-{MAX_PRIORITY}.")
    source_port, source_ports = _ports(properties, "source", rule_id)
    destination_port, destination_ports = _ports(properties, "destination", rule_id)
    source, sources, source_groups = _prefixes(properties, "source", rule_id)
    destination, destinations, destination_groups = _prefixes(properties, "destination", rule_id)

    rule: Json = {}
    if properties.get("description") is not None:
        rule["description"] = str(properties["description"])
    rule["protocol"] = protocol
    for key, value in (("sourcePortRange", source_port), ("destinationPortRange", destination_port),
                       ("sourceAddressPrefix", source),
                       ("destinationAddressPrefix", destination)):
        if value is not None:
            rule[key] = value
    rule.update(access=choices["access"], priority=priority, direction=choices["direction"],
                sourcePortRanges=source_ports, destinationPortRanges=destination_ports,
                sourceAddressPrefixes=sources, destinationAddressPrefixes=destinations)
    if source_groups:
        rule["sourceApplicationSecurityGroups"] = source_groups
    if destination_groups:
        rule["destinationApplicationSecurityGroups"] = destination_groups
    return rule


def _load_default_rules() -> list[tuple[str, Json]]:
    """The six default rules, as NetworkSecurityGroupGet.json (the vendor example) lists them."""
    example = json.loads((_REFERENCE / "NetworkSecurityGroupGet.json").read_text())
    rules = example["responses"]["200"]["body"]["properties"]["defaultSecurityRules"]
    defaults = []
    for rule in rules:
        properties = {k: v for k, v in rule["properties"].items() if k != "provisioningState"}
        for plural in ("sourcePortRanges", "destinationPortRanges", "sourceAddressPrefixes",
                       "destinationAddressPrefixes"):
            properties.setdefault(plural, [])
        defaults.append((rule["name"], properties))
    return defaults


DEFAULT_RULES = _load_default_rules()


def check_fits(nsg: Nsg, name: str, properties: Json) -> None:
    """The rule count limit, and no other rule with the same priority and direction."""
    key = name.lower()
    if key not in nsg.rules and len(nsg.rules) >= MAX_RULES:
        raise ArmError(400, "SecurityRuleCountLimitReached",
                       f"A security group cannot have more than {MAX_RULES} security rules.")
    for other_key, other in nsg.rules.items():
        if other_key == key:
            continue
        if (other.properties.get("priority") == properties["priority"]
                and other.properties.get("direction") == properties["direction"]):
            # Azure names the rule already there first (aks-engine#2106, terraform #11137).
            raise ArmError(400, "SecurityRuleConflict",
                           f"Security rule {other.name} conflicts with rule {name}. Rules "
                           "cannot have the same Priority and Direction. To learn more, see "
                           "aka.ms/nsgrules.")
