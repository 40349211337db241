"""A local Azure Resource Manager for network security groups, as moto's server is for AWS.

The real azure-mgmt-network SDK talks to it over HTTPS (the SDK only sends bearer tokens over
TLS), trusting a CA made for the emulator alone:

    with ArmEmulator() as arm:
        arm.add_nsg(SUB, "rg-app", "nsg-app")
        client = network_client(arm, SUB)                  # tests/support/azure.py
        client.security_rules.begin_create_or_update(
            "rg-app", "nsg-app", "jit-1",
            {"properties": rule_properties(100, 22, source="203.0.113.7")}).result()
        assert arm.rule(SUB, "rg-app", "nsg-app", "jit-1")["properties"]["priority"] == 100

It answers like ARM as recorded (tests/fakes/reference/azure/, checked by
tests/integration/test_arm_emulator_conformance.py): `Authorization: Bearer ...` and an
`api-version` are required (any version is accepted); NSG and rule PUT/DELETE are asynchronous
(201/200 with `Azure-AsyncOperation`; DELETE 202 with `Location` too) and finish `op_delay`
seconds later, checked lazily against the clock on every request; one write per NSG at a time
(409 AnotherOperationInProgress); the NSG's etag changes when a write starts and when it ends,
and every rule carries the NSG's etag; rules are validated the way the network provider does it.

Checks run in this order: authentication (401), api-version (400), injected throttling (429),
routing (404/405), resource group and NSG existence (404), for PUTs the resource name (400),
for writes the injected faults (`faults`), the NSG's write lock (409),
`If-Match`/`If-None-Match` (412), then the body (400).

Choices where Azure's exact answer is not on record (each marked in the code):
- A rule request (GET, PUT, DELETE, list) under an NSG that does not exist answers 404
  ResourceNotFound naming the NSG, DELETE included: a caller cannot mistake a vanished NSG for a
  deleted rule. A rule DELETE of a missing rule in an existing NSG answers 204, like ARM.
- A flat rule body (no `properties`) answers 400 InvalidRequestFormat saying 'properties' is
  missing; both singular and plural forms of a field (e.g. sourceAddressPrefix and
  sourceAddressPrefixes) answer 400 InvalidRequestFormat.
- 412 PreconditionFailed messages, the 404 for an unknown operation id, and `Retry-After`
  whole seconds only (the SDK parses it with int(); ARM sends 10, the emulator 0 by default).
- A failed operation leaves the rule and the NSG in provisioningState "Failed".

Around the NSGs, the network they protect can be seeded and read (GET only; other methods
answer 405): virtual networks with their subnets inline (a subnet's `networkSecurityGroup`),
network interfaces (their `networkSecurityGroup`, subnet and `virtualMachine`), listed per
resource group or per subscription, or fetched one by one; NSGs are listed per subscription
too. The JSON is built in tests/fakes/arm_network.py. A subscription-wide list in a
subscription the emulator holds no resource group of answers 404 SubscriptionNotFound.

Every request is recorded (`calls`, `calls_to`, `operations`) with the ARM action it stands for,
e.g. "Microsoft.Network/networkSecurityGroups/securityRules/write". State can be seeded and read
back without HTTP (`add_resource_group`, `add_nsg`, `add_rule`, `add_vnet`, `add_subnet`,
`add_nic`, `nsg`, `rules`, `rule`). All state lives under one lock; the server is a
ThreadingHTTPServer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import re
import shutil
import ssl
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import trustme

from tests.fakes.arm_network import (
    Nic,
    Subnet,
    Vnet,
    parse_id,
    render_nic,
    render_subnet,
    render_vnet,
)
from tests.fakes.local_server import LocalServer

Json = dict[str, Any]

NSG_TYPE = "Microsoft.Network/networkSecurityGroups"
RULE_TYPE = "Microsoft.Network/networkSecurityGroups/securityRules"
DEFAULT_RULE_TYPE = "Microsoft.Network/networkSecurityGroups/defaultSecurityRules"
NSG_READ, NSG_WRITE, NSG_DELETE = (f"{NSG_TYPE}/{verb}" for verb in ("read", "write", "delete"))
RULE_READ, RULE_WRITE, RULE_DELETE = (f"{RULE_TYPE}/{verb}" for verb in ("read", "write", "delete"))
NIC_READ = "Microsoft.Network/networkInterfaces/read"
VNET_READ = "Microsoft.Network/virtualNetworks/read"
SUBNET_READ = "Microsoft.Network/virtualNetworks/subnets/read"
OPERATION_READ = "Microsoft.Network/locations/operations/read"
OPERATION_RESULT_READ = "Microsoft.Network/locations/operationResults/read"

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

_REFERENCE = Path(__file__).parent / "reference" / "azure" / "spec-examples"
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?")
_PORT_RANGE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
_INITIAL_QUOTA = {"reads": 11999, "writes": 1199, "deletes": 14999}


# -- errors ------------------------------------------------------------------------------------


class ArmError(Exception):
    """An ARM error answer: `{"error": {"code", "message", "details"}}` with an HTTP status.

    `gateway` marks errors the ARM front door gives itself (authentication, api-version,
    throttling, missing resource group or resource); they carry `x-ms-failure-cause: gateway`
    and no `x-ms-arm-service-request-id`, which only the resource provider adds.
    """

    def __init__(self, status: int, code: str, message: str, *,
                 details: Iterable[Json] = (), gateway: bool = False,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = list(details)
        self.gateway = gateway
        self.headers = list(headers)

    def body(self) -> Json:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def _bad_format(message: str, path: str = "") -> ArmError:
    detail = {"code": "InvalidJson", "message": message + (f" Path '{path}'." if path else "")}
    return ArmError(400, "InvalidRequestFormat", "Cannot parse the request.", details=[detail])


def _missing_parameter(parameter: str, rule_id: str) -> ArmError:
    return ArmError(400, "SecurityRuleParameterMissing",
                    f"Required security rule parameter {parameter} is missing for security rule "
                    f"with Id: {rule_id}.")


# -- rule properties -----------------------------------------------------------------------------


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
        raise _bad_format(f"Error converting value {value} to type 'System.Int32'.",
                          "properties.priority")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise _bad_format(f"Could not convert {json.dumps(value)} to integer.", "properties.priority")


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


def _one_of(properties: Mapping[str, Any], single: str,
            plural: str) -> tuple[str | None, list[str]]:
    """The singular and plural forms of a field; an empty string or list counts as absent."""
    one = properties.get(single)
    many = properties.get(plural)
    one_text = None if one in (None, "") else str(one)
    if many in (None, ""):
        many = []
    if not isinstance(many, list):
        raise _bad_format(f"Cannot deserialize {json.dumps(many)} into a list.",
                          f"properties.{plural}")
    return one_text, [str(item) for item in many]


def _ports(properties: Mapping[str, Any], side: str, rule_id: str) -> tuple[str | None, list[str]]:
    single, plural = f"{side}PortRange", f"{side}PortRanges"
    one, many = _one_of(properties, single, plural)
    title = single[0].upper() + single[1:]
    if one is None and not many:
        raise _missing_parameter(title, rule_id)
    if one is not None and many:
        # Not verified against Azure: the emulator's own wording for "both forms given".
        raise ArmError(400, "InvalidRequestFormat",
                       f"Security rule {rule_id} specifies both {single} and {plural}; "
                       "specify only one of them.")
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
    one, many = _one_of(properties, single, plural)
    groups = properties.get(f"{side}ApplicationSecurityGroups") or []
    if not isinstance(groups, list):
        raise _bad_format("Cannot deserialize into a list.",
                          f"properties.{side}ApplicationSecurityGroups")
    title = side[0].upper() + side[1:]
    if one is None and not many and not groups:
        raise ArmError(400, "SecurityRuleParametersMissing",
                       f"Required security rule parameters are missing for security rule with "
                       f"Id: {rule_id}. Security rule must specify {title}AddressPrefixes, "
                       f"{title}AddressPrefix, or {title}ApplicationSecurityGroups.")
    if one is not None and many:
        # Not verified against Azure: the emulator's own wording for "both forms given".
        raise ArmError(400, "InvalidRequestFormat",
                       f"Security rule {rule_id} specifies both {single} and {plural}; "
                       "specify only one of them.")
    for value in [one] if one is not None else many:
        if not _valid_prefix(value):
            raise ArmError(400, "SecurityRuleInvalidAddressPrefix",
                           f"Security rule {rule_id} has invalid Address prefix. "
                           f"Value provided: {value}.")
    return one, many, groups


def _normalise_rule(properties: Mapping[str, Any], rule_id: str) -> Json:
    """Validate a rule's `properties` like the network provider; the canonical stored form.

    Raises ArmError. The keys come out in the order ARM returns them (see the recording).
    """
    protocol_in = properties.get("protocol")
    if protocol_in in (None, ""):
        raise _missing_parameter("Protocol", rule_id)
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
            raise _missing_parameter(name[0].upper() + name[1:], rule_id)
        choices[name] = _enum(value, allowed)
        if choices[name] is None:
            raise _bad_format(
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


# -- state ---------------------------------------------------------------------------------------


def _new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def _location(value: str) -> str:
    return value.replace(" ", "").lower()


@dataclass
class _Rule:
    name: str
    properties: Json
    state: str = "Succeeded"


@dataclass
class _Nsg:
    subscription: str
    resource_group: str
    name: str
    location: str
    etag: str = field(default_factory=_new_etag)
    resource_guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    tags: Json | None = None
    rules: dict[str, _Rule] = field(default_factory=dict)
    state: str = "Succeeded"
    operation: _Operation | None = None  # the write in progress, if any

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Network/networkSecurityGroups/{self.name}")

    def rule_id(self, name: str, kind: str = "securityRules") -> str:
        return f"{self.id}/{kind}/{name}"


@dataclass
class _Group:
    subscription: str
    name: str
    location: str
    nsgs: dict[str, _Nsg] = field(default_factory=dict)
    vnets: dict[str, Vnet] = field(default_factory=dict)
    nics: dict[str, Nic] = field(default_factory=dict)


@dataclass
class _Operation:
    id: str
    subscription: str
    location: str
    api_version: str
    kind: str  # "put" or "delete"
    nsg: _Nsg | None  # None: a stand-in for another client's operation (injected conflicts)
    rule: str | None  # the rule's key; None: the NSG itself
    ready_at: float
    error: Json | None = None
    done: bool = False

    @property
    def status(self) -> str:
        if not self.done:
            return "InProgress"
        return "Failed" if self.error else "Succeeded"


@dataclass(frozen=True)
class Call:
    """One request the emulator answered; `at` is `time.monotonic()` on arrival."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    operation: str | None  # the ARM action, e.g. "Microsoft.Network/.../securityRules/write"
    at: float
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400


# -- faults --------------------------------------------------------------------------------------


@dataclass
class _Failure:
    status: int
    code: str
    message: str | None = None  # None: ARM's wording for the code


@dataclass
class _Throttle:
    remaining: int
    retry_after: float
    writes_only: bool


class Faults:
    """Switches that make the emulator misbehave the way ARM does; thread-safe, live.

    Writes are PUT and DELETE of an NSG or one of its rules. Azure-core's RetryPolicy retries
    by itself any answer carrying `Retry-After`, and 408/429/500/502/503/504 (and >= 506) for
    PUT/DELETE/GET: by default three retries, so one SDK call makes up to 4 raw requests, with
    backoff sleeps of 0, 1.6 and 3.2 s (retry_backoff_factor=0.8) unless Retry-After is given.
    None of the 409/412/423 answers below carries Retry-After, so the SDK does not retry them.
    """

    def __init__(self, lock: threading.RLock, seed: int | None) -> None:
        self._lock = lock
        self._random = random.Random(seed)
        self._conflicts = 0
        self._conflict_rate = 0.0
        self._throttles: list[_Throttle] = []
        self._failed_operations: list[Json] = []
        self._failed_writes: list[_Failure] = []
        self._broken: dict[str, _Failure] = {}

    def conflict_next(self, n: int = 1) -> None:
        """The next `n` writes answer 409 AnotherOperationInProgress and change nothing."""
        with self._lock:
            self._conflicts += n

    @property
    def conflict_rate(self) -> float:
        with self._lock:
            return self._conflict_rate

    @conflict_rate.setter
    def conflict_rate(self, rate: float) -> None:
        """That fraction of writes (seeded random) answer 409 AnotherOperationInProgress."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"conflict_rate must be within [0, 1], not {rate}")
        with self._lock:
            self._conflict_rate = rate

    def throttle_next(self, n: int = 1, retry_after: float = 1.0, *,
                      writes_only: bool = False) -> None:
        """The next `n` requests (any method, polls included; or writes only) answer 429.

        The answer is ARM's SubscriptionRequestsThrottled with `Retry-After: <retry_after>`,
        which azure-core sleeps for and then retries (three times by default).
        """
        with self._lock:
            self._throttles.append(_Throttle(n, retry_after, writes_only))

    def fail_next_operations(self, n: int = 1, code: str = "InternalServerError",
                             message: str = "An error occurred.") -> None:
        """The next `n` accepted writes end `Failed` with this error on their status URL.

        A failed PUT leaves the rule (and the NSG) in provisioningState "Failed"; a failed
        DELETE leaves the rule in place, "Failed".
        """
        with self._lock:
            self._failed_operations.extend({"code": code, "message": message} for _ in range(n))

    def fail_writes_next(self, n: int = 1, status: int = 500, code: str = "InternalServerError",
                         message: str = "An error occurred.") -> None:
        """The next `n` writes (raw requests) answer `status` with this error, changing nothing.

        With status 500 azure-core retries by itself: n=4 makes one SDK call fail, fewer are
        absorbed by its retries (slowly, unless the client sets a small retry_backoff_factor).
        """
        with self._lock:
            self._failed_writes.extend(_Failure(status, code, message) for _ in range(n))

    def break_deletes(self, status: int = 409, code: str = "AnotherOperationInProgress",
                      message: str | None = None) -> None:
        """Every DELETE answers this error until `heal()`: azure-core does not retry it.

        The default is what a long operation by someone else on the NSG looks like.
        """
        with self._lock:
            self._broken["DELETE"] = _Failure(status, code, message)

    def break_puts(self, status: int = 409, code: str = "AnotherOperationInProgress",
                   message: str | None = None) -> None:
        """Every PUT answers this error until `heal()`."""
        with self._lock:
            self._broken["PUT"] = _Failure(status, code, message)

    def heal(self) -> None:
        """Every fault off: broken methods, pending one-shot faults, conflict_rate."""
        with self._lock:
            self._conflicts = 0
            self._conflict_rate = 0.0
            self._throttles.clear()
            self._failed_operations.clear()
            self._failed_writes.clear()
            self._broken.clear()

    # -- used by the emulator, under its lock ------------------------------------------------

    def _take_throttle(self, write: bool) -> float | None:
        for throttle in self._throttles:
            if throttle.writes_only and not write:
                continue
            throttle.remaining -= 1
            if throttle.remaining <= 0:
                self._throttles.remove(throttle)
            return throttle.retry_after
        return None

    def _take_write_failure(self, method: str) -> _Failure | None:
        if method in self._broken:
            return self._broken[method]
        if self._failed_writes:
            return self._failed_writes.pop(0)
        return None

    def _take_conflict(self) -> bool:
        if self._conflicts > 0:
            self._conflicts -= 1
            return True
        return self._conflict_rate > 0 and self._random.random() < self._conflict_rate

    def _take_operation_failure(self) -> Json | None:
        return self._failed_operations.pop(0) if self._failed_operations else None


# -- requests ------------------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    route: str | None = None
    params: tuple[str, ...] = ()
    operation: str | None = None

    @property
    def api_version(self) -> str:
        return self.query.get("api-version", "")

    @property
    def write(self) -> bool:
        return self.route in ("nsg", "rule") and self.method in ("PUT", "DELETE")


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


_NSGS = ("subscriptions", None, "resourcegroups", None, "providers", "microsoft.network",
         "networksecuritygroups")
_LOCATION = ("subscriptions", None, "providers", "microsoft.network", "locations", None)
_IN_SUBSCRIPTION = ("subscriptions", None, "providers", "microsoft.network")
_IN_GROUP = ("subscriptions", None, "resourcegroups", None, "providers", "microsoft.network")
_VNETS = (*_IN_GROUP, "virtualnetworks")
_ROUTES: tuple[tuple[tuple[str | None, ...], str], ...] = (
    ((*_IN_SUBSCRIPTION, "networksecuritygroups"), "all_nsgs"),
    ((*_IN_SUBSCRIPTION, "networkinterfaces"), "all_nics"),
    ((*_IN_SUBSCRIPTION, "virtualnetworks"), "all_vnets"),
    ((*_IN_GROUP, "networkinterfaces"), "nics"),
    ((*_IN_GROUP, "networkinterfaces", None), "nic"),
    (_VNETS, "vnets"),
    ((*_VNETS, None), "vnet"),
    ((*_VNETS, None, "subnets"), "subnets"),
    ((*_VNETS, None, "subnets", None), "subnet"),
    (_NSGS, "nsgs"),
    ((*_NSGS, None), "nsg"),
    ((*_NSGS, None, "securityrules"), "rules"),
    ((*_NSGS, None, "securityrules", None), "rule"),
    ((*_LOCATION, "operations", None), "operation"),
    ((*_LOCATION, "operationresults", None), "operation_result"),
)
_ACTIONS = {
    ("nsgs", "GET"): NSG_READ, ("nsg", "GET"): NSG_READ, ("nsg", "PUT"): NSG_WRITE,
    ("nsg", "DELETE"): NSG_DELETE, ("rules", "GET"): RULE_READ, ("rule", "GET"): RULE_READ,
    ("rule", "PUT"): RULE_WRITE, ("rule", "DELETE"): RULE_DELETE,
    ("operation", "GET"): OPERATION_READ, ("operation_result", "GET"): OPERATION_RESULT_READ,
    ("all_nsgs", "GET"): NSG_READ, ("all_nics", "GET"): NIC_READ, ("nics", "GET"): NIC_READ,
    ("nic", "GET"): NIC_READ, ("all_vnets", "GET"): VNET_READ, ("vnets", "GET"): VNET_READ,
    ("vnet", "GET"): VNET_READ, ("subnets", "GET"): SUBNET_READ, ("subnet", "GET"): SUBNET_READ,
}


def _route(path: str) -> tuple[str | None, tuple[str, ...]]:
    segments = [unquote(segment) for segment in path.strip("/").split("/")]
    for pattern, name in _ROUTES:
        if len(pattern) != len(segments):
            continue
        params = []
        for expected, segment in zip(pattern, segments, strict=True):
            if expected is None:
                if not segment:
                    break
                params.append(segment)
            elif expected != segment.lower():
                break
        else:
            return name, tuple(params)
    return None, ()


def _whole_seconds(seconds: float) -> int:
    if seconds < 0 or int(seconds) != seconds:
        raise ValueError(f"Retry-After must be whole seconds (the SDK parses it with int()), "
                         f"not {seconds!r}")
    return int(seconds)


# -- the emulator --------------------------------------------------------------------------------


class ArmEmulator(LocalServer):
    """Azure Resource Manager for NSGs on https://127.0.0.1:<port>; a context manager.

    `op_delay`: seconds before an accepted write's operation finishes (0: by the next request).
    `retry_after`: the `Retry-After` on asynchronous answers, whole seconds (ARM says 10). The
    SDK reads it with int() on 201/202 answers, so "0.05" would crash it; with 0 azure-core
    polls at the client's `polling_interval` instead (SDK default 30 s, network_client 0.05 s).
    `page_size`: list answers hold at most this many items and a `nextLink` (None: no paging).
    `seed`: for `faults.conflict_rate`.
    """

    # Session-wide listeners (tests/support/cloud_calls.py): every emulator calls each one with
    # every call it records and that request's headers, holding its lock (so: be quick).
    observers: ClassVar[list[Callable[[Call, Message], None]]] = []

    def __init__(self, *, op_delay: float = 0.0, retry_after: int = 0,
                 page_size: int | None = None, seed: int | None = 0) -> None:
        self._lock = threading.RLock()
        self.faults = Faults(self._lock, seed)
        self._op_delay = op_delay
        self._retry_after = _whole_seconds(retry_after)
        self._page_size = page_size
        self._groups: dict[tuple[str, str], _Group] = {}
        self._operations: dict[str, _Operation] = {}
        self._pending: list[_Operation] = []
        self._calls: list[Call] = []
        self._quota: dict[tuple[str, str], int] = {}

        self._ca = trustme.CA()
        certificate = self._ca.issue_cert("127.0.0.1", "localhost")
        self._directory = tempfile.mkdtemp(prefix="arm-emulator-")
        self._remove_directory = weakref.finalize(
            self, shutil.rmtree, self._directory, ignore_errors=True)
        self._ca_bundle = str(Path(self._directory) / "ca.pem")
        self._ca.cert_pem.write_to_path(self._ca_bundle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        super().__init__(self._handler(), ssl_context=context)

    # -- lifecycle and knobs ---------------------------------------------------------------

    @property
    def ca_bundle(self) -> str:
        """A PEM file with the CA that signed the server certificate (`connection_verify=`)."""
        return self._ca_bundle

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            super().__exit__(kind, exc, tb)
        finally:
            self._remove_directory()

    @property
    def op_delay(self) -> float:
        with self._lock:
            return self._op_delay

    @op_delay.setter
    def op_delay(self, seconds: float) -> None:
        with self._lock:
            self._op_delay = seconds

    @property
    def retry_after(self) -> int:
        with self._lock:
            return self._retry_after

    @retry_after.setter
    def retry_after(self, seconds: int) -> None:
        with self._lock:
            self._retry_after = _whole_seconds(seconds)

    @property
    def page_size(self) -> int | None:
        with self._lock:
            return self._page_size

    @page_size.setter
    def page_size(self, size: int | None) -> None:
        with self._lock:
            self._page_size = size

    # -- seeding (no HTTP) -------------------------------------------------------------------

    def add_resource_group(self, subscription_id: str, name: str,
                           location: str = "westeurope") -> str:
        """Create the resource group if it is missing; returns its id."""
        with self._lock:
            key = (subscription_id.lower(), name.lower())
            group = self._groups.setdefault(
                key, _Group(subscription_id, name, _location(location)))
            return f"/subscriptions/{group.subscription}/resourceGroups/{group.name}"

    def add_nsg(self, subscription_id: str, resource_group: str, name: str,
                location: str = "westeurope", rules: Iterable[Mapping[str, Any]] = (),
                tags: Mapping[str, str] | None = None) -> str:
        """Create (or replace) an NSG, its resource group implicitly; returns the NSG's id.

        `rules` are ARM rule objects: `{"name": ..., "properties": {...}}`.
        """
        with self._lock:
            self.add_resource_group(subscription_id, resource_group, location)
            group = self._groups[(subscription_id.lower(), resource_group.lower())]
            nsg = _Nsg(group.subscription, group.name, name, _location(location),
                       tags=dict(tags) if tags is not None else None)
            group.nsgs[name.lower()] = nsg
            for rule in rules:
                self._plant(nsg, rule["name"], rule.get("properties", {}), "Succeeded", True)
            return nsg.id

    def add_rule(self, subscription_id: str, resource_group: str, nsg: str, name: str,
                 properties: Mapping[str, Any], *, provisioning_state: str = "Succeeded",
                 validate: bool = True) -> Json:
        """Plant a rule directly, as someone else (the portal, another tool) would; its ARM JSON.

        With validate=True the rule must pass the checks a PUT makes (ValueError otherwise);
        with validate=False `properties` are stored as given. The NSG's etag changes.
        """
        with self._lock:
            target = self._find_nsg(subscription_id, resource_group, nsg)
            rule = self._plant(target, name, properties, provisioning_state, validate)
            target.etag = _new_etag()
            return self._render_rule(target, rule)

    def _plant(self, nsg: _Nsg, name: str, properties: Mapping[str, Any], state: str,
               validate: bool) -> _Rule:
        if not validate:
            stored = {k: v for k, v in properties.items() if k != "provisioningState"}
        else:
            try:
                self._check_name(name)
                stored = _normalise_rule(properties, nsg.rule_id(name))
                self._check_fits(nsg, name, stored)
            except ArmError as exc:
                raise ValueError(str(exc)) from exc
        rule = _Rule(name, stored, state)
        nsg.rules[name.lower()] = rule
        return rule

    def add_vnet(self, subscription_id: str, resource_group: str, name: str,
                 address_prefix: str = "10.0.0.0/16", location: str = "westeurope") -> str:
        """Create (or replace, without its subnets) a virtual network; returns its id."""
        with self._lock:
            self.add_resource_group(subscription_id, resource_group, location)
            group = self._find_group(subscription_id, resource_group)
            vnet = Vnet(group.subscription, group.name, name, _location(location),
                        ipaddress.ip_network(address_prefix))
            group.vnets[name.lower()] = vnet
            return vnet.id

    def add_subnet(self, subscription_id: str, resource_group: str, vnet: str, name: str,
                   address_prefix: str, nsg_id: str | None = None) -> str:
        """Create (or replace) a subnet of a seeded virtual network, behind an NSG if given.

        Returns the subnet's id. KeyError if the virtual network is not seeded; ValueError if
        the prefix lies outside the network's, or `nsg_id` names no seeded NSG (ARM refuses both).
        """
        with self._lock:
            network = self._find_group(subscription_id, resource_group).vnets[vnet.lower()]
            prefix = ipaddress.ip_network(address_prefix)
            if prefix.version != network.address_prefix.version or not prefix.subnet_of(
                    network.address_prefix):
                raise ValueError(f"subnet {name} ({prefix}) is outside virtual network "
                                 f"{network.name} ({network.address_prefix})")
            if nsg_id is not None:
                self._nsg_by_id(nsg_id)
            network.subnets[name.lower()] = Subnet(name, prefix, nsg_id)
            return network.subnet_id(name)

    def add_nic(self, subscription_id: str, resource_group: str, name: str, subnet_id: str,
                private_ip: str, *, nsg_id: str | None = None, vm_id: str | None = None,
                location: str = "westeurope") -> str:
        """Create (or replace) a network interface with one IP configuration; returns its id.

        `vm_id` attaches it to a virtual machine (no Compute endpoints exist: the NIC names the
        VM); a VM's first NIC is its primary one. ValueError if the subnet or the NSG is not
        seeded, or `private_ip` is outside the subnet.
        """
        with self._lock:
            subnet = self._subnet_by_id(subnet_id)
            if ipaddress.ip_address(private_ip) not in subnet.address_prefix:
                raise ValueError(f"{private_ip} is outside subnet {subnet.name} "
                                 f"({subnet.address_prefix})")
            if nsg_id is not None:
                self._nsg_by_id(nsg_id)
            self.add_resource_group(subscription_id, resource_group, location)
            group = self._find_group(subscription_id, resource_group)
            previous = group.nics.get(name.lower())
            if previous is not None and vm_id is not None and previous.vm_id == vm_id:
                primary = previous.primary
            else:
                primary = vm_id is not None and not any(
                    (nic.vm_id or "").lower() == vm_id.lower() for nic in self._all_nics()
                    if nic is not previous)
            nic = Nic(group.subscription, group.name, name, _location(location), subnet_id,
                      private_ip, nsg_id, vm_id, primary)
            group.nics[name.lower()] = nic
            return nic.id

    def _nsg_by_id(self, nsg_id: str) -> _Nsg:
        parts = parse_id(nsg_id)
        try:
            if parts.kind != "networksecuritygroups" or parts.child is not None:
                raise KeyError(nsg_id)
            return self._find_nsg(parts.subscription, parts.resource_group, parts.name)
        except KeyError:
            raise ValueError(f"no network security group {nsg_id} is seeded") from None

    def _subnet_by_id(self, subnet_id: str) -> Subnet:
        parts = parse_id(subnet_id)
        try:
            if parts.kind != "virtualnetworks" or parts.child_kind != "subnets" or not parts.child:
                raise KeyError(subnet_id)
            vnet = self._find_group(parts.subscription, parts.resource_group).vnets[
                parts.name.lower()]
            return vnet.subnets[parts.child.lower()]
        except KeyError:
            raise ValueError(f"no subnet {subnet_id} is seeded") from None

    def _all_nics(self) -> list[Nic]:
        return [nic for group in self._groups.values() for nic in group.nics.values()]

    def _all_vnets(self) -> list[Vnet]:
        return [vnet for group in self._groups.values() for vnet in group.vnets.values()]

    # -- reading back (no HTTP) --------------------------------------------------------------

    def nsg(self, subscription_id: str, resource_group: str, name: str) -> Json:
        """The NSG's ARM JSON as a GET returns it; KeyError if there is none."""
        with self._lock:
            self._settle()
            return self._render_nsg(self._find_nsg(subscription_id, resource_group, name))

    def rules(self, subscription_id: str, resource_group: str, nsg: str) -> list[Json]:
        """The ARM JSON of each custom rule of the NSG, in creation order."""
        with self._lock:
            self._settle()
            target = self._find_nsg(subscription_id, resource_group, nsg)
            return [self._render_rule(target, rule) for rule in target.rules.values()]

    def rule(self, subscription_id: str, resource_group: str, nsg: str, name: str) -> Json | None:
        """One rule's ARM JSON, or None."""
        with self._lock:
            self._settle()
            target = self._find_nsg(subscription_id, resource_group, nsg)
            rule = target.rules.get(name.lower())
            return self._render_rule(target, rule) if rule else None

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Sleep until no operation is in progress (TimeoutError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._settle()
                if not self._pending:
                    return
                wait = min(op.ready_at for op in self._pending) - time.monotonic()
            if time.monotonic() >= deadline:
                raise TimeoutError("ARM emulator: operations still in progress")
            time.sleep(min(max(wait, 0.001), 0.05))

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, operation: str) -> list[Call]:
        """The recorded calls for one ARM action, e.g. RULE_WRITE."""
        return [call for call in self.calls if call.operation == operation]

    def operations(self) -> set[str]:
        """Every ARM action requested so far."""
        return {call.operation for call in self.calls if call.operation}

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _find_group(self, subscription_id: str, resource_group: str) -> _Group:
        return self._groups[(subscription_id.lower(), resource_group.lower())]

    def _find_nsg(self, subscription_id: str, resource_group: str, name: str) -> _Nsg:
        return self._find_group(subscription_id, resource_group).nsgs[name.lower()]

    # -- HTTP ----------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like ARM; every answer has a length
            server_version = "Microsoft-HTTPAPI/2.0"
            timeout = 30
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def version_string(self) -> str:
                return self.server_version

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = emulator._dispatch(self.command, self.path, self.headers, body)
                self.send_response(reply.status)
                for key, value in reply.headers:
                    self.send_header(key, value)
                if reply.status != 204:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.body and self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = do_HEAD = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: tests read `calls` instead

        return Handler

    def _dispatch(self, method: str, target: str, headers: Message, body: bytes) -> _Reply:
        parts = urlsplit(target)
        query = {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
        request = _Request(method, parts.path, query, headers, body)
        request.route, request.params = _route(parts.path)
        request.operation = _ACTIONS.get((request.route or "", method))
        at = time.monotonic()
        with self._lock:
            self._settle()
            error_code = None
            try:
                status, reply_body, extra = self._serve(request)
            except ArmError as exc:
                status, reply_body, extra = exc.status, exc.body(), exc.headers
                error_code = exc.code
                extra = [*extra, *self._error_headers(exc)]
            reply = self._reply(request, status, reply_body, extra)
            call = Call(method, parts.path, dict(query), status, request.operation, at,
                        error_code)
            self._calls.append(call)
            for observer in ArmEmulator.observers:
                observer(call, headers)
            return reply

    def _serve(self, request: _Request) -> tuple[int, Json | None, list[tuple[str, str]]]:
        self._authenticate(request)
        if not request.api_version:
            raise ArmError(400, "MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) is required for all "
                           "requests.", gateway=True)
        self._throttle(request)
        if request.route is None:
            raise ArmError(404, "NotFound",
                           "The ARM emulator serves network security groups, their security rules, "
                           "virtual networks, subnets and network interfaces only; nothing at "
                           f"'{request.path}'.")
        if request.operation is None:
            raise ArmError(405, "MethodNotAllowed",
                           f"The requested resource does not support http method "
                           f"'{request.method}'.")
        if request.route in ("operation", "operation_result"):
            return self._operation_status(request)
        if request.route in ("all_nsgs", "all_nics", "all_vnets"):
            return 200, self._page(request, self._list_subscription(request)), []
        group = self._group_of(request)
        if request.route in ("nics", "nic", "vnets", "vnet", "subnets", "subnet"):
            return self._serve_network(request, group)
        if request.route == "nsgs":
            items = [self._render_nsg(nsg) for nsg in group.nsgs.values()]
            return 200, self._page(request, items), []
        name = request.params[2]
        nsg = group.nsgs.get(name.lower())
        if request.route == "nsg":
            return self._serve_nsg(request, group, name, nsg)
        if nsg is None:
            raise self._resource_not_found(group, name)
        if request.route == "rules":
            items = [self._render_rule(nsg, rule) for rule in nsg.rules.values()]
            return 200, self._page(request, items), []
        return self._serve_rule(request, nsg, request.params[3])

    def _authenticate(self, request: _Request) -> None:
        authorization = request.headers.get("Authorization")
        if authorization is None:
            problem = "is missing"
        elif re.fullmatch(r"Bearer\s+\S+", authorization.strip()):
            return
        else:
            problem = "is provided in an invalid format"
        challenge = ('Bearer authorization_uri="https://login.windows.net/", '
                     'error="invalid_token", error_description="The authentication failed '
                     f"because of {'missing' if authorization is None else 'malformed'} "
                     "'Authorization' header.\"")
        raise ArmError(401, "AuthenticationFailed",
                       f"Authentication failed. The 'Authorization' header {problem}.",
                       gateway=True, headers=[("WWW-Authenticate", challenge)])

    def _throttle(self, request: _Request) -> None:
        retry_after = self.faults._take_throttle(request.write)
        if retry_after is None:
            return
        kind = {"PUT": "write", "DELETE": "delete"}.get(request.method, "read")
        subscription = request.params[0] if request.params else ""
        raise ArmError(429, "SubscriptionRequestsThrottled",
                       f"Number of '{kind}' requests for subscription '{subscription}' actioned "
                       f"by 'arm-emulator' exceeded. Please try again after '{retry_after:g}' "
                       "seconds after the additional tokens are available. Refer to "
                       "https://aka.ms/arm-throttling", gateway=True,
                       headers=[("Retry-After", f"{retry_after:g}")])

    def _group_of(self, request: _Request) -> _Group:
        subscription, name = request.params[0], request.params[1]
        group = self._groups.get((subscription.lower(), name.lower()))
        if group is None:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{name}' could not be found.", gateway=True)
        return group

    @staticmethod
    def _resource_not_found(group: _Group, name: str,
                            kind: str = "networkSecurityGroups") -> ArmError:
        return ArmError(404, "ResourceNotFound",
                        f"The Resource 'Microsoft.Network/{kind}/{name}' under "
                        f"resource group '{group.name}' was not found. For more details please "
                        "go to https://aka.ms/ARMResourceNotFoundFix", gateway=True)

    # -- the network around the NSGs (read-only) --------------------------------------------

    def _list_subscription(self, request: _Request) -> list[Json]:
        """A subscription-wide list: every resource group's NSGs, NICs or virtual networks."""
        subscription = request.params[0]
        groups = [group for (key, _), group in self._groups.items() if key == subscription.lower()]
        if not groups:
            raise ArmError(404, "SubscriptionNotFound",
                           f"The subscription '{subscription}' could not be found.", gateway=True)
        if request.route == "all_nsgs":
            return [self._render_nsg(nsg) for group in groups for nsg in group.nsgs.values()]
        if request.route == "all_nics":
            return [render_nic(nic) for group in groups for nic in group.nics.values()]
        nics = self._all_nics()
        return [render_vnet(vnet, nics) for group in groups for vnet in group.vnets.values()]

    def _serve_network(self, request: _Request,
                       group: _Group) -> tuple[int, Json | None, list[tuple[str, str]]]:
        """GET of a resource group's NICs or virtual networks, one of them, or its subnets."""
        nics = self._all_nics()
        if request.route == "nics":
            return 200, self._page(request, [render_nic(nic) for nic in group.nics.values()]), []
        if request.route == "vnets":
            return 200, self._page(request, [render_vnet(vnet, nics)
                                             for vnet in group.vnets.values()]), []
        name = request.params[2]
        if request.route == "nic":
            nic = group.nics.get(name.lower())
            if nic is None:
                raise self._resource_not_found(group, name, "networkInterfaces")
            return 200, render_nic(nic), [("ETag", nic.etag)]
        vnet = group.vnets.get(name.lower())
        if vnet is None:  # subnets under a missing network too, as for rules under an NSG
            raise self._resource_not_found(group, name, "virtualNetworks")
        if request.route == "vnet":
            return 200, render_vnet(vnet, nics), [("ETag", vnet.etag)]
        if request.route == "subnets":
            return 200, self._page(request, [render_subnet(vnet, subnet, nics)
                                             for subnet in vnet.subnets.values()]), []
        subnet = vnet.subnets.get(request.params[3].lower())
        if subnet is None:  # the network provider's own 404, as for a missing rule
            raise ArmError(404, "NotFound", f"Resource {vnet.subnet_id(request.params[3])} "
                                            "not found.")
        return 200, render_subnet(vnet, subnet, nics), [("ETag", subnet.etag)]

    # -- NSGs -------------------------------------------------------------------------------------

    def _serve_nsg(self, request: _Request, group: _Group, name: str,
                   nsg: _Nsg | None) -> tuple[int, Json | None, list[tuple[str, str]]]:
        if request.method == "GET":
            if nsg is None:
                raise self._resource_not_found(group, name)
            return 200, self._render_nsg(nsg), [("ETag", nsg.etag)]
        if request.method == "DELETE":
            self._admit_write(request, nsg, group)
            self._check_preconditions(request, nsg, exists=nsg is not None)
            if nsg is None:
                return 204, None, []
            nsg.state = "Deleting"
            for rule in nsg.rules.values():
                rule.state = "Deleting"
            operation = self._start(request, nsg, "delete", None)
            return 202, None, self._async_headers(operation, location=True)
        return self._put_nsg(request, group, name, nsg)

    def _put_nsg(self, request: _Request, group: _Group, name: str,
                 nsg: _Nsg | None) -> tuple[int, Json | None, list[tuple[str, str]]]:
        self._check_name(name)
        self._admit_write(request, nsg, group)
        self._check_preconditions(request, nsg, exists=nsg is not None)
        body = self._json_body(request)
        location = body.get("location")
        if nsg is None and not location:
            raise ArmError(400, "LocationRequired",
                           "The location property is required for this definition.")
        if nsg is not None and location and _location(str(location)) != nsg.location:
            raise ArmError(400, "InvalidResourceLocation",
                           f"The resource '{nsg.name}' already exists in location "
                           f"'{nsg.location}' in resource group '{group.name}'. A resource with "
                           f"the same name cannot be created in location '{location}'. Please "
                           "select a new resource name.")
        properties = body.get("properties") or {}
        wanted = properties.get("securityRules") if isinstance(properties, dict) else "?"
        wanted = [] if wanted is None else wanted
        if not isinstance(wanted, list):
            raise _bad_format("Cannot deserialize the current JSON object into a list.",
                              "properties.securityRules")
        creating = nsg is None
        if nsg is None:
            nsg = _Nsg(group.subscription, group.name, name, _location(str(location)))
        staged = _Nsg(nsg.subscription, nsg.resource_group, nsg.name, nsg.location)
        for item in wanted:
            if not isinstance(item, dict) or not isinstance(item.get("properties"), dict):
                raise self._missing_properties()
            rule_name = str(item.get("name") or "")
            self._check_name(rule_name)
            stored = _normalise_rule(item["properties"], nsg.rule_id(rule_name))
            self._check_fits(staged, rule_name, stored)
            staged.rules[rule_name.lower()] = _Rule(rule_name, stored, "Updating")
        nsg.rules = staged.rules
        nsg.tags = body["tags"] if isinstance(body.get("tags"), dict) else None
        nsg.state = "Updating"
        group.nsgs[name.lower()] = nsg
        operation = self._start(request, nsg, "put", None)
        return (201 if creating else 200), self._render_nsg(nsg), self._async_headers(operation)

    # -- rules ------------------------------------------------------------------------------------

    def _serve_rule(self, request: _Request, nsg: _Nsg,
                    name: str) -> tuple[int, Json | None, list[tuple[str, str]]]:
        rule = nsg.rules.get(name.lower())
        if request.method == "GET":
            if rule is None:
                raise ArmError(404, "NotFound", f"Resource {nsg.rule_id(name)} not found.")
            return 200, self._render_rule(nsg, rule), [("ETag", nsg.etag)]
        if request.method == "DELETE":
            self._admit_write(request, nsg, None)
            self._check_preconditions(request, nsg, exists=rule is not None)
            if rule is None:
                return 204, None, []  # ARM deletes are idempotent
            rule.state = "Deleting"
            operation = self._start(request, nsg, "delete", name.lower())
            return 202, None, self._async_headers(operation, location=True)
        return self._put_rule(request, nsg, name, rule)

    def _put_rule(self, request: _Request, nsg: _Nsg, name: str,
                  rule: _Rule | None) -> tuple[int, Json | None, list[tuple[str, str]]]:
        self._check_name(name)
        self._admit_write(request, nsg, None)
        self._check_preconditions(request, nsg, exists=rule is not None)
        body = self._json_body(request)
        if not isinstance(body.get("properties"), dict):
            raise self._missing_properties()
        display = rule.name if rule else name
        stored = _normalise_rule(body["properties"], nsg.rule_id(display))
        self._check_fits(nsg, display, stored)
        created = rule is None
        if rule is None:
            rule = nsg.rules[name.lower()] = _Rule(display, stored)
        rule.properties, rule.state = stored, "Updating"
        operation = self._start(request, nsg, "put", name.lower())
        return (201 if created else 200), self._render_rule(nsg, rule), \
            self._async_headers(operation)

    @staticmethod
    def _missing_properties() -> ArmError:
        # Not verified against Azure (the network provider's exact answer to a flat body is
        # unknown); InvalidRequestFormat is what it uses for request bodies it cannot read.
        return ArmError(400, "InvalidRequestFormat",
                        "Cannot parse the request. Required property 'properties' is missing: "
                        "a security rule's fields go inside 'properties'.",
                        details=[{"code": "MissingJsonProperty",
                                  "message": "Required property 'properties' not found in JSON. "
                                             "Path ''."}])

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.fullmatch(name):
            raise ArmError(400, "InvalidResourceName",
                           f"Resource name {name} is invalid. The name can be up to 80 characters "
                           "long. It must begin with a word character, and it must end with a "
                           "word character or with '_'. The name may contain word characters or "
                           "'.', '-', '_'.")

    @staticmethod
    def _check_fits(nsg: _Nsg, name: str, properties: Json) -> None:
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

    @staticmethod
    def _json_body(request: _Request) -> Json:
        try:
            body = json.loads(request.body or b"null")
        except ValueError as exc:
            raise _bad_format(f"Unexpected character encountered while parsing value: {exc}.")\
                from exc
        if not isinstance(body, dict):
            raise _bad_format("Cannot deserialize the request body into an object.")
        return body

    # -- writes: faults, the lock, preconditions, operations --------------------------------

    def _admit_write(self, request: _Request, nsg: _Nsg | None, group: _Group | None) -> None:
        failure = self.faults._take_write_failure(request.method)
        if failure is not None:
            if failure.code == "AnotherOperationInProgress" and failure.message is None:
                raise self._in_progress(request, None)
            raise ArmError(failure.status, failure.code,
                           failure.message or f"The request failed with code '{failure.code}'.")
        if self.faults._take_conflict():
            raise self._in_progress(request, None)
        if nsg is not None and nsg.operation is not None:
            raise self._in_progress(request, nsg.operation)

    def _in_progress(self, request: _Request, operation: _Operation | None) -> ArmError:
        if operation is None:  # someone else's write: an operation that has already finished
            operation = _Operation(str(uuid.uuid4()), request.params[0], self._location_of(
                request), request.api_version, "put", None, None, 0.0, done=True)
            self._operations[operation.id] = operation
        return ArmError(409, "AnotherOperationInProgress",
                        "Another operation on this or dependent resource is in progress. To "
                        "retrieve status of the operation use uri: "
                        f"{self._operation_url(operation)}.")

    def _location_of(self, request: _Request) -> str:
        group = self._groups.get((request.params[0].lower(), request.params[1].lower()))
        nsg = group.nsgs.get(request.params[2].lower()) if group else None
        return nsg.location if nsg else group.location if group else "westeurope"

    @staticmethod
    def _check_preconditions(request: _Request, nsg: _Nsg | None, *, exists: bool) -> None:
        if_match = request.headers.get("If-Match")
        if_none_match = request.headers.get("If-None-Match")
        current = nsg.etag if nsg is not None and exists else None
        if if_match is not None and not (
                exists and (if_match.strip() == "*" or if_match.strip() == current)):
            raise ArmError(412, "PreconditionFailed",
                           f"Precondition failed: If-Match {if_match} does not match the "
                           f"current etag {current or '(no such resource)'}.")
        if if_none_match is not None and if_none_match.strip() == "*" and exists:
            raise ArmError(412, "PreconditionFailed",
                           "Precondition failed: If-None-Match * but the resource exists.")

    def _start(self, request: _Request, nsg: _Nsg, kind: str, rule: str | None) -> _Operation:
        operation = _Operation(
            id=str(uuid.uuid4()), subscription=nsg.subscription, location=nsg.location,
            api_version=request.api_version, kind=kind, nsg=nsg, rule=rule,
            ready_at=time.monotonic() + self._op_delay,
            error=self.faults._take_operation_failure())
        nsg.operation = operation
        nsg.state = "Deleting" if rule is None and kind == "delete" else "Updating"
        nsg.etag = _new_etag()
        self._operations[operation.id] = operation
        self._pending.append(operation)
        return operation

    def _settle(self) -> None:
        """Finish every operation whose time has come (lazily: no timer threads)."""
        now = time.monotonic()
        for operation in [op for op in self._pending if op.ready_at <= now]:
            self._pending.remove(operation)
            self._finish(operation)

    def _finish(self, operation: _Operation) -> None:
        operation.done = True
        nsg = operation.nsg
        if nsg is None:
            return
        nsg.operation = None
        state = "Failed" if operation.error else "Succeeded"
        if operation.rule is None and operation.kind == "delete" and not operation.error:
            group = self._groups.get((nsg.subscription.lower(), nsg.resource_group.lower()))
            if group is not None and group.nsgs.get(nsg.name.lower()) is nsg:
                del group.nsgs[nsg.name.lower()]
            return
        if operation.rule is None:
            for rule in nsg.rules.values():
                rule.state = state
        elif operation.kind == "delete" and not operation.error:
            nsg.rules.pop(operation.rule, None)
        elif operation.rule in nsg.rules:
            nsg.rules[operation.rule].state = state
        nsg.state = state
        nsg.etag = _new_etag()

    def _operation_url(self, operation: _Operation, kind: str = "operations") -> str:
        return (f"{self.url}/subscriptions/{operation.subscription}/providers/Microsoft.Network"
                f"/locations/{operation.location}/{kind}/{operation.id}"
                f"?api-version={quote(operation.api_version, safe='')}")

    def _async_headers(self, operation: _Operation, *,
                       location: bool = False) -> list[tuple[str, str]]:
        headers = [("Azure-AsyncOperation", self._operation_url(operation))]
        if location:
            headers.append(("Location", self._operation_url(operation, "operationResults")))
        headers.append(("Retry-After", str(self._retry_after)))
        return headers

    def _operation_status(self, request: _Request) -> tuple[int, Json | None,
                                                            list[tuple[str, str]]]:
        operation = self._operations.get(request.params[2].lower())
        if operation is None or operation.subscription.lower() != request.params[0].lower():
            raise ArmError(404, "NotFound", f"Operation {request.params[2]} not found.")
        retry = [("Retry-After", str(self._retry_after))]
        if request.route == "operation":
            body: Json = {"status": operation.status}
            if operation.error:
                body["error"] = {**operation.error, "details": []}
            return 200, body, retry if not operation.done else []
        if not operation.done:
            return 202, None, [("Location", self._operation_url(operation, "operationResults")),
                               *retry]
        if operation.error:
            raise ArmError(500, operation.error["code"], operation.error["message"])
        return 204, None, []

    # -- answers ----------------------------------------------------------------------------------

    def _page(self, request: _Request, items: list[Json]) -> Json:
        if not self._page_size:
            return {"value": items}
        token = request.query.get("$skiptoken", "0")
        start = int(token) if token.isdigit() else 0
        end = start + self._page_size
        page: Json = {"value": items[start:end]}
        if end < len(items):
            page["nextLink"] = (f"{self.url}{request.path}?api-version="
                                f"{quote(request.api_version, safe='')}&$skiptoken={end}")
        return page

    def _render_rule(self, nsg: _Nsg, rule: _Rule, kind: str = "securityRules") -> Json:
        properties: Json = {"provisioningState": rule.state, **rule.properties}
        for plural in ("sourcePortRanges", "destinationPortRanges", "sourceAddressPrefixes",
                       "destinationAddressPrefixes"):
            properties.setdefault(plural, [])
        return {
            "name": rule.name, "id": nsg.rule_id(rule.name, kind), "etag": nsg.etag,
            "type": RULE_TYPE if kind == "securityRules" else DEFAULT_RULE_TYPE,
            "properties": properties,
        }

    def _render_nsg(self, nsg: _Nsg) -> Json:
        body: Json = {"name": nsg.name, "id": nsg.id, "etag": nsg.etag, "type": NSG_TYPE,
                      "location": nsg.location}
        if nsg.tags is not None:
            body["tags"] = nsg.tags
        defaults = [_Rule(name, properties, nsg.state) for name, properties in DEFAULT_RULES]
        body["properties"] = {
            "provisioningState": nsg.state,
            "resourceGuid": nsg.resource_guid,
            "securityRules": [self._render_rule(nsg, rule) for rule in nsg.rules.values()],
            "defaultSecurityRules": [self._render_rule(nsg, rule, "defaultSecurityRules")
                                     for rule in defaults],
        }
        body["properties"].update(self._associations(nsg))
        return body

    def _associations(self, nsg: _Nsg) -> Json:
        """The NICs and subnets behind the NSG, as ARM lists them (only when there are any)."""
        nsg_id = nsg.id.lower()
        nics = [{"id": nic.id} for nic in self._all_nics() if (nic.nsg_id or "").lower() == nsg_id]
        subnets = [{"id": vnet.subnet_id(subnet.name)} for vnet in self._all_vnets()
                   for subnet in vnet.subnets.values() if (subnet.nsg_id or "").lower() == nsg_id]
        return {key: value for key, value in (("networkInterfaces", nics), ("subnets", subnets))
                if value}

    def _error_headers(self, error: ArmError) -> list[tuple[str, str]]:
        return [("x-ms-failure-cause", "gateway")] if error.gateway else []

    def _reply(self, request: _Request, status: int, body: Json | None,
               extra: list[tuple[str, str]]) -> _Reply:
        """ARM's headers around an answer, as recorded (tests/fakes/reference/azure/)."""
        payload = json.dumps(body, indent=2).encode() if body is not None else b""
        headers = [("Cache-Control", "no-cache"), ("Pragma", "no-cache")]
        if body is not None:
            headers.append(("Content-Type", "application/json; charset=utf-8"))
        headers.append(("Expires", "-1"))
        if request.method == "GET" and status == 200:
            headers.append(("Vary", "Accept-Encoding"))
        headers.extend(extra)
        headers.extend(self._quota_header(request))
        correlation = request.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        headers += [
            ("x-ms-request-id", str(uuid.uuid4())),
            ("x-ms-correlation-request-id", correlation),
            ("x-ms-routing-request-id", f"WESTEUROPE:{stamp}:{correlation}"),
            ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if not any(key == "x-ms-failure-cause" for key, _ in extra):
            headers.append(("x-ms-arm-service-request-id", str(uuid.uuid4())))
        return _Reply(status, headers, payload)

    def _quota_header(self, request: _Request) -> list[tuple[str, str]]:
        if not request.params:
            return []
        kind = {"PUT": "writes", "DELETE": "deletes"}.get(request.method, "reads")
        key = (request.params[0].lower(), kind)
        remaining = self._quota.get(key, _INITIAL_QUOTA[kind] + 1) - 1
        self._quota[key] = remaining if remaining > 0 else _INITIAL_QUOTA[kind]
        return [(f"x-ms-ratelimit-remaining-subscription-{kind}", str(remaining))]
