"""Azure network security groups as a jit `Provider`. With azure_scan.py, the only Azure SDK user.

A grant is one inbound Allow rule named `jit-<grant id>` in the target's NSG: the declared
source, the target's destination address, one port and protocol, at a priority the service
reserved in the target's band. Rules are written one at a time per NSG (ARM refuses a second
write while one is in progress: `AnotherOperationInProgress`); this process serialises its own
writes per NSG and retries that refusal with jittered backoff, honouring `Retry-After`.
azure-core retries throttling (429) and 5xx answers itself, honouring `Retry-After`; what
outlasts the retries becomes a `TransientProviderError`. Request bodies are built with
`azure.mgmt.network.models` (a plain dict would be sent as-is, without `properties`).

Credentials: `DefaultAzureCredential` against the target's cloud (`public`, `usgov`, `china`),
or the ARM endpoint a target names.
"""

from __future__ import annotations

import ipaddress
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineResponse
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import SecurityRule, SecurityRulePropertiesFormat

from jitcore.errors import (
    AccessDenied,
    ProviderError,
    RuleLimitExceeded,
    SlotTaken,
    TargetNotFound,
    TransientProviderError,
)
from jitcore.policy import AzureLocation, PortPolicy, Target
from jitcore.ports import (
    FirewallRule,
    Lockdown,
    LockdownPlan,
    OpenedRule,
    OwnedRule,
    RuleSpec,
    SlotPool,
)
from jitcore.scan import AZURE_ANYWHERE, port_in_range

RULE_PREFIX = "jit-"
DENY_PREFIX = "jit-deny-"
_GRANT_RULE = re.compile(r"^jit-(\d+)$")

# ARM endpoints and login authorities of the clouds a policy may name.
CLOUDS: dict[str, tuple[str, str]] = {
    "public": ("https://management.azure.com", "login.microsoftonline.com"),
    "usgov": ("https://management.usgovcloudapi.net", "login.microsoftonline.us"),
    "china": ("https://management.chinacloudapi.cn", "login.chinacloudapi.cn"),
}
_BUSY = "AnotherOperationInProgress"
_NOT_FOUND = frozenset({"ResourceNotFound", "ResourceGroupNotFound", "SubscriptionNotFound",
                        "ParentResourceNotFound", "InvalidSubscriptionId"})
_NSG_GONE = frozenset({"ResourceNotFound", "ResourceGroupNotFound"})
_DENIED = frozenset({"AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
                     "InvalidAuthenticationTokenTenant", "LinkedAuthorizationFailed"})
_FULL = frozenset({"SecurityRuleCountLimitReached"})
_PROTOCOLS = {"tcp": "Tcp", "udp": "Udp"}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retries of `AnotherOperationInProgress`: attempts in all, first delay, longest delay."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        jittered = random.uniform(0.5, 1.0) * min(self.cap, self.base * 2.0 ** attempt)
        return max(jittered, retry_after or 0.0)


class AzureProvider:
    """Opens and closes jit's inbound rules in Azure network security groups.

    `credential` defaults to `DefaultAzureCredential` for the target's cloud. `polling_interval`
    is how long to wait between polls of an async operation when ARM does not say (it
    normally sends `Retry-After`). `client_options` go to every `NetworkManagementClient`
    (e.g. `connection_verify`, `retry_total`). Nothing talks to Azure until the first call.
    """

    cloud = "azure"

    def __init__(
        self,
        *,
        credential: TokenCredential | None = None,
        polling_interval: float = 2.0,
        backoff: Backoff | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self._credential = credential
        self._credentials: dict[str, TokenCredential] = {}
        self._polling_interval = polling_interval
        self._backoff = backoff or Backoff()
        self._client_options = dict(client_options or {})
        self._clients: dict[tuple[str, str], NetworkManagementClient] = {}
        self._lock = threading.Lock()
        self._writers: dict[str, threading.Lock] = {}

    # ---- the Provider port ------------------------------------------------------------

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        location = _azure(spec.target)
        if spec.slot is None:
            raise ProviderError(f"#{spec.grant_id}: no priority reserved for {location.nsg_id}")
        name = rule_name(spec.grant_id)
        rule = SecurityRule(name=name, properties=SecurityRulePropertiesFormat(
            protocol=_PROTOCOLS.get(spec.port.protocol.value, "Tcp"),
            source_address_prefix=spec.source,
            source_port_range="*",
            destination_address_prefix=location.destination,
            destination_port_range=str(spec.port.port),
            access="Allow",
            direction="Inbound",
            priority=spec.slot,
            description=spec.description[:140],
        ))
        client = self._client(location)
        with self._translated(location, priority=spec.slot):
            try:
                self._write(location, lambda: client.security_rules.begin_create_or_update(
                    location.resource_group, location.network_security_group, name, rule,
                    polling_interval=self._polling_interval).result())
            except HttpResponseError as exc:
                if _code(exc) in (_BUSY, "SecurityRuleConflict") or not _async_failure(exc):
                    raise
                self._remove_half_made(location, name)
                raise
        return OpenedRule(location.nsg_id, name, created=True, owned=True)

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        location = _azure(target)
        results: dict[str, bool] = {}
        with self._translated(location):
            for name in refs:
                try:
                    results[name] = self._delete(location, name)
                except HttpResponseError as exc:
                    if _code(exc) not in _NSG_GONE:
                        raise
                    return {**dict.fromkeys(refs, False), **results}  # the NSG is gone
        return results

    def present_rules(self, target: Target, scope: str, refs: Sequence[str]) -> set[str]:
        wanted = set(refs)
        try:
            rules = self._rules(_azure(target))
        except TargetNotFound:
            return set()  # no NSG, no rules
        return {str(rule.name) for rule in rules if rule.name in wanted}

    def list_owned_rules(self, target: Target) -> list[OwnedRule]:
        location = _azure(target)
        owned = []
        for rule in self._rules(location):
            match = _GRANT_RULE.match(str(rule.name))
            if match is None or rule.properties is None:
                continue  # not a grant's rule (a deny rule jit keeps, or anyone else's)
            p = rule.properties
            owned.append(OwnedRule(
                scope=location.nsg_id, ref=str(rule.name), grant_id=int(match.group(1)),
                port=_port(p.destination_port_range), protocol=_text(p.protocol).lower(),
                source=str(p.source_address_prefix
                           or ",".join(p.source_address_prefixes or []))))
        return owned

    def placement(self, target: Target) -> SlotPool:
        """A grant's rule takes a priority of the target's band, unique in the NSG."""
        location = _azure(target)
        low, high = location.priority_band
        return SlotPool(
            scope=location.nsg_id, low=low, high=high,
            full=f"no free priority in band {low}-{high} of network security group "
                 f"{location.network_security_group} (resource group "
                 f"{location.resource_group}): every one is held by an active grant or "
                 "another rule; widen priority_band in the policy or wait for grants to end")

    def used_slots(self, target: Target) -> set[int]:
        """Inbound priorities taken in the target's NSG, by anyone (for the service's choice)."""
        return {int(rule.properties.priority) for rule in self._rules(_azure(target))
                if rule.properties is not None and rule.properties.priority is not None
                and _text(rule.properties.direction).lower() == "inbound"}

    def warm(self, target: Target) -> None:
        """Build the target's ARM client now (no call to Azure), before requests arrive."""
        self._client(_azure(target))

    def lockdowns(self) -> AzureProvider:
        return self

    # ---- closed by default: jit enable / disable ------------------------------------------

    def plan_lockdown(self, target: Target) -> LockdownPlan:
        """A Deny rule per port behind the grant band, and the Allow rules that would let a
        managed port in ahead of it from wider than the port's policy (--take-over only)."""
        location = _azure(target)
        rules = [rule.as_dict() for rule in self._rules(location)]
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

    def lock_down(self, target: Target, plan: LockdownPlan, take_over: bool) -> Lockdown:
        location = _azure(target)
        if plan.blockers and not take_over:
            raise ProviderError(f"{location.network_security_group} holds rules that let a "
                                "managed port in ahead of jit; only --take-over removes them")
        denies = list(plan.details.get("deny", []))
        with self._translated(location):
            for deny in denies:  # closed first, then the wide rules go
                self._put(location, deny)
            for rule in plan.blockers:
                self._delete(location, rule.ref)
        return Lockdown(plan.blockers, {"deny": denies})

    def lift_lockdown(self, target: Target, lockdown: Lockdown) -> list[str]:
        location = _azure(target)
        differences: list[str] = []
        with self._translated(location):
            for deny in lockdown.created.get("deny", []):
                self._delete(location, deny["name"])
            for rule in lockdown.removed:
                try:
                    self._put(location, dict(rule.body))
                except HttpResponseError as exc:
                    differences.append(f"{rule.ref} ({rule.summary}) could not be put back: "
                                       f"{_message(exc)}")
        now = {rule.as_dict()["name"]: rule.as_dict() for rule in self._rules(location)}
        for rule in lockdown.removed:
            found = now.get(rule.ref)
            if found is not None and _writable(found) != _writable(dict(rule.body)):
                differences.append(f"{rule.ref} is back but differs: now {_summary(found)}, "
                                   f"was {rule.summary}")
        differences += [f"{name} is still there" for name in now
                        if name in {d["name"] for d in lockdown.created.get("deny", [])}]
        return differences

    def posture(self, target: Target, lockdown: Lockdown) -> list[str]:
        location = _azure(target)
        rules = {r["name"]: r for r in (rule.as_dict() for rule in self._rules(location))}
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

    # ---- calls ------------------------------------------------------------------------

    def _rules(self, location: AzureLocation) -> list[SecurityRule]:
        client = self._client(location)
        with self._translated(location):
            return list(client.security_rules.list(location.resource_group,
                                                   location.network_security_group))

    def _put(self, location: AzureLocation, rule: dict[str, Any]) -> None:
        """Create or replace a rule given as ARM's JSON (name and properties)."""
        client = self._client(location)
        self._write(location, lambda: client.security_rules.begin_create_or_update(
            location.resource_group, location.network_security_group, rule["name"],
            SecurityRule(rule), polling_interval=self._polling_interval).result())

    def _delete(self, location: AzureLocation, name: str) -> bool:
        """Remove one rule; True if it was there (ARM answered 200/202), False if not (204)."""
        client = self._client(location)
        statuses: list[int] = []

        def first_answer(response: PipelineResponse[Any, Any]) -> None:
            if not statuses:
                statuses.append(response.http_response.status_code)

        def delete() -> None:
            statuses.clear()
            client.security_rules.begin_delete(
                location.resource_group, location.network_security_group, name,
                polling_interval=self._polling_interval,
                raw_response_hook=first_answer).result()

        try:
            self._write(location, delete)
        except HttpResponseError as exc:
            if exc.status_code == 404 and _code(exc) not in _NOT_FOUND:
                return False  # the rule itself is gone
            raise
        return bool(statuses) and statuses[0] != 204

    def _remove_half_made(self, location: AzureLocation, name: str) -> None:
        """An open whose operation ended Failed may leave the rule behind: take it away."""
        # If this fails too, reconcile removes it later: it has jit's name and no live grant.
        with suppress(HttpResponseError, ServiceRequestError, ServiceResponseError):
            self._delete(location, name)

    def _write(self, location: AzureLocation, call: Callable[[], T]) -> T:
        """One write to an NSG at a time from this process, retried while ARM is busy."""
        with self._writer(location.nsg_id):
            for attempt in range(self._backoff.attempts):
                try:
                    return call()
                except HttpResponseError as exc:
                    if _code(exc) != _BUSY or attempt == self._backoff.attempts - 1:
                        raise
                    time.sleep(self._backoff.delay(attempt, _retry_after(exc)))
        raise AssertionError("unreachable")  # pragma: no cover

    def _writer(self, nsg_id: str) -> threading.Lock:
        with self._lock:
            return self._writers.setdefault(nsg_id.lower(), threading.Lock())

    def _client(self, location: AzureLocation) -> NetworkManagementClient:
        endpoint, authority = _endpoint(location)
        key = (location.subscription_id, endpoint)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                credential = self._credential or self._default_credential(authority)
                client = NetworkManagementClient(
                    credential, location.subscription_id, base_url=endpoint,
                    credential_scopes=[f"{endpoint}/.default"], **self._client_options)
                self._clients[key] = client
            return client

    def _default_credential(self, authority: str) -> TokenCredential:
        credential = self._credentials.get(authority)
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(authority=authority)
            self._credentials[authority] = credential
        return credential

    @contextmanager
    def _translated(self, location: AzureLocation, priority: int | None = None) -> Iterator[None]:
        """Azure's exceptions -> jit's ProviderError tree, with the NSG named."""
        nsg = f"network security group {location.network_security_group} " \
              f"(resource group {location.resource_group})"
        try:
            yield
        except ClientAuthenticationError as exc:
            raise AccessDenied(f"Azure refused jit's credentials for {nsg}: "
                               f"{_message(exc)}") from exc
        except HttpResponseError as exc:
            code, message = _code(exc), _message(exc)
            if code == "SecurityRuleConflict" and priority is not None:
                raise SlotTaken(priority, f"{nsg}: {message}") from exc
            if code in _FULL:
                raise RuleLimitExceeded(f"{nsg} is full (1,000 rules): {message}") from exc
            if code in _NOT_FOUND or exc.status_code == 404:
                raise TargetNotFound(f"{nsg} not found: {message}") from exc
            if code in _DENIED or exc.status_code in (401, 403):
                raise AccessDenied(f"Azure denied jit on {nsg}: {message}") from exc
            if code == _BUSY or exc.status_code in (408, 429) or (exc.status_code or 0) >= 500:
                raise TransientProviderError(f"Azure is busy with {nsg}: {message}") from exc
            if _async_failure(exc):
                raise TransientProviderError(f"Azure could not complete the change on {nsg}: "
                                             f"{message}") from exc
            raise ProviderError(f"Azure refused the change on {nsg}: {message}") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientProviderError(f"cannot reach Azure for {nsg}: {exc}") from exc


def rule_name(grant_id: int) -> str:
    return f"{RULE_PREFIX}{grant_id}"


def _azure(target: Target) -> AzureLocation:
    if not isinstance(target.location, AzureLocation):
        raise ProviderError(f"{target.name} is not an Azure target")
    return target.location


def _endpoint(location: AzureLocation) -> tuple[str, str]:
    endpoint, authority = CLOUDS.get(location.cloud, CLOUDS["public"])
    return (location.arm_endpoint or endpoint).rstrip("/"), authority


def _code(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", None) or "")


def _message(exc: HttpResponseError | ClientAuthenticationError) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    return str(text).splitlines()[0]


def _async_failure(exc: HttpResponseError) -> bool:
    """An async operation that ARM accepted and then reported as Failed (status poll 200)."""
    return exc.status_code in (200, 201, 202) or exc.status_code is None


def _retry_after(exc: HttpResponseError) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _port(ports: str | None) -> int:
    try:
        return int(str(ports).split("-")[0])
    except ValueError:
        return 0


# ---- rules as ARM's JSON, for enable / disable ----------------------------------------------

_WRITABLE = ("protocol", "sourcePortRange", "sourcePortRanges", "destinationPortRange",
             "destinationPortRanges", "sourceAddressPrefix", "sourceAddressPrefixes",
             "destinationAddressPrefix", "destinationAddressPrefixes",
             "sourceApplicationSecurityGroups", "destinationApplicationSecurityGroups",
             "access", "priority", "direction", "description")


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


def _wider_than(prefixes: list[str], port: PortPolicy) -> bool:
    """Does any of these sources let in more than one grant of this port could: a service tag
    or `*`, a prefix wider than the port's widest grant, or one outside its allowed sources?"""
    for prefix in prefixes or ["*"]:
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return True  # *, Internet, AzureCloud...: wider than any address a grant names
        widest = port.widest_prefix_v4 if network.version == 4 else port.widest_prefix_v6
        if network.prefixlen < widest or not any(
                network.version == n.version and network.subnet_of(n)  # type: ignore[arg-type]
                for n in port.allowed_sources):
            return True
    return False


def _lets_in_ahead(rule: Mapping[str, Any], target: Target, location: AzureLocation,
                   deny_priority: int) -> bool:
    """A rule jit did not make that lets one of the target's ports in before jit's deny
    rules, from wider than the port's policy."""
    name = str(rule.get("name", ""))
    p = rule.get("properties") or {}
    if name.startswith(RULE_PREFIX) or p.get("access") != "Allow" or p.get("direction") \
            != "Inbound" or int(p.get("priority") or 0) >= deny_priority:
        return False
    if not _reaches(_values(p, "destinationAddressPrefix") or ["*"], location.destination):
        return False
    for port in target.ports.values():
        if str(p.get("protocol", "*")).lower() not in ("*", str(port.protocol).lower()):
            continue
        ranges = _values(p, "destinationPortRange")
        if any(port_in_range(port.port, r) for r in ranges) and _wider_than(
                _values(p, "sourceAddressPrefix"), port):
            return True
    return False


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
            "protocol": _PROTOCOLS.get(protocol, "Tcp"), "sourcePortRange": "*",
            "destinationPortRange": str(port.port), "sourceAddressPrefix": "*",
            "destinationAddressPrefix": location.destination, "access": "Deny",
            "priority": next(free), "direction": "Inbound",
            "description": f"jit: {port.name} closed by default on {target.name}"}})
    return denies


def _text(value: object) -> str:
    """An SDK enum member's wire value ("Inbound"), or the string the SDK left as it was:
    str() of a str-mixin enum is its qualified name ("SecurityRuleDirection.INBOUND")."""
    return str(getattr(value, "value", value))
