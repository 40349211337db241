"""Azure Resource Manager at the boundary: clients, the error translation, and an NSG's rules.

`AzureProvider` (azure.py), its enable/disable support (azure_lockdown.py) and the scan
(azure_scan.py) reach ARM only through what is here. Credentials: `DefaultAzureCredential`
against the target's cloud (`public`, `usgov`, `china`), or the ARM endpoint a target names.
azure-core retries throttling (429) and 5xx answers itself, honouring `Retry-After`; what
outlasts the retries becomes a `TransientProviderError` in `translated`. Rules are written
one at a time per NSG (ARM refuses a second write while one is in progress:
`AnotherOperationInProgress`); `NsgRules` serialises this process's writes per NSG and
retries that refusal with jittered backoff, honouring `Retry-After`.
"""

from __future__ import annotations

import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import (
    NetworkSecurityGroup,
    SecurityRule,
    SecurityRulePropertiesFormat,
)

from jitcore.errors import (
    AccessDenied,
    ProviderError,
    RuleLimitExceeded,
    SlotTaken,
    TargetNotFound,
    TransientProviderError,
)
from jitcore.policy import AzureLocation, Target
from jitcore.ports import RuleSpec
from jitcore.providers.coalesce import Coalescer

S = TypeVar("S")
C = TypeVar("C")

RULE_PREFIX = "jit-"
# A grant's rule (NSG or DNAT): jit-<grant id>.
GRANT_RULE = re.compile(r"^jit-(\d+)$")


def rule_name(grant_id: int) -> str:
    return f"{RULE_PREFIX}{grant_id}"

# ARM's protocol names for jit's.
PROTOCOLS = {"tcp": "Tcp", "udp": "Udp"}

# ARM endpoints and login authorities of the clouds a policy may name.
CLOUDS: dict[str, tuple[str, str]] = {
    "public": ("https://management.azure.com", "login.microsoftonline.com"),
    "usgov": ("https://management.usgovcloudapi.net", "login.microsoftonline.us"),
    "china": ("https://management.chinacloudapi.cn", "login.chinacloudapi.cn"),
}
BUSY = "AnotherOperationInProgress"
NOT_FOUND = frozenset({"ResourceNotFound", "ResourceGroupNotFound", "SubscriptionNotFound",
                       "ParentResourceNotFound", "InvalidSubscriptionId"})
DENIED = frozenset({"AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
                    "InvalidAuthenticationTokenTenant", "LinkedAuthorizationFailed"})
_FULL = frozenset({"SecurityRuleCountLimitReached"})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retries of `AnotherOperationInProgress`: attempts in all, first delay, longest delay."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        jittered = random.uniform(0.5, 1.0) * min(self.cap, self.base * 2.0 ** attempt)
        return max(jittered, retry_after or 0.0)


class ArmClients:
    """Network clients, one per subscription and ARM endpoint, built on first use.

    `credential` defaults to `DefaultAzureCredential` for the location's cloud;
    `client_options` go to every `NetworkManagementClient` (e.g. `connection_verify`,
    `retry_total`).
    """

    def __init__(self, credential: TokenCredential | None = None,
                 client_options: dict[str, Any] | None = None) -> None:
        self._credential = credential
        self._credentials: dict[str, TokenCredential] = {}
        self._client_options = dict(client_options or {})
        self._clients: dict[tuple[str, str], NetworkManagementClient] = {}
        self._lock = threading.Lock()

    def client(self, location: AzureLocation) -> NetworkManagementClient:
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


class WholeWrites(ABC, Generic[S, C]):
    """Changes to one ARM resource written by PUT of the whole resource, coalesced.

    Every change waiting on one resource (coalesce.py) is applied to a fresh read (`_read`,
    `_apply`) and the result goes out in one write (`_send`) with `If-Match`: a 412 (someone
    else wrote in between) reads again and applies the batch again, so nothing of theirs is
    lost; `AnotherOperationInProgress` is retried with jittered backoff, honouring
    `Retry-After`. A batch ARM refuses outright (400) is written again a change at a time,
    so that one bad change fails alone. Each change's outcome goes to its own caller.
    """

    kind = "resource"  # in the write totals (metrics)

    def __init__(self, clients: ArmClients, polling_interval: float, backoff: Backoff) -> None:
        self._clients = clients
        self._polling_interval = polling_interval
        self._backoff = backoff
        self.writes: Coalescer[tuple[AzureLocation, C], object] = Coalescer(
            self._write_batch, kind=self.kind)

    @abstractmethod
    def _read(self, location: AzureLocation) -> S:
        """The resource as it is now (its etag included)."""

    @abstractmethod
    def _apply(self, state: S, change: C, location: AzureLocation) -> tuple[object, bool]:
        """Apply one change to the state read: its outcome and whether it changed anything."""

    @abstractmethod
    def _send(self, location: AzureLocation, state: S) -> None:
        """Write the state back, with If-Match on the etag it was read with."""

    def _write_batch(self, key: str,
                     changes: Sequence[tuple[AzureLocation, C]]) -> list[object]:
        location = changes[0][0]
        for attempt in range(self._backoff.attempts):
            state = self._read(location)
            applied = [self._apply(state, change, location) for _, change in changes]
            outcomes = [outcome for outcome, _ in applied]
            if not any(dirty for _, dirty in applied):
                return outcomes  # nothing to write: deletes of what is gone, refusals
            try:
                self._send(location, state)
            except HttpResponseError as exc:
                if self._again(exc, attempt):
                    continue
                if len(changes) > 1 and not async_failure(exc) and exc.status_code == 400:
                    return [self._alone(key, change) for change in changes]
                raise
            return outcomes
        raise AssertionError("unreachable")  # pragma: no cover

    def _again(self, exc: HttpResponseError, attempt: int) -> bool:
        """Whether a refused write is worth another read and write: 412 at once, a busy
        resource after a backoff."""
        if attempt == self._backoff.attempts - 1:
            return False
        if exc.status_code == 412:
            return True
        if error_code(exc) == BUSY:
            time.sleep(self._backoff.delay(attempt, retry_after(exc)))
            return True
        return False

    def _alone(self, key: str, change: tuple[AzureLocation, C]) -> object:
        try:
            return self._write_batch(key, [change])[0]
        except HttpResponseError as exc:
            return exc


@dataclass(frozen=True, slots=True)
class RulePut:
    name: str
    rule: SecurityRule
    band: tuple[int, int] | None = None  # choose the priority here: lowest free in the band


@dataclass(frozen=True, slots=True)
class RuleDelete:
    names: tuple[str, ...]


class NsgRules(WholeWrites[NetworkSecurityGroup, RulePut | RuleDelete]):
    """The security rules of the NSG a location names: listed, put and deleted.

    Writes coalesce (`WholeWrites`): every put and delete waiting on one NSG goes out as one
    PUT of the whole NSG, read just before, so that every other rule is carried over
    exactly. A priority already held by another rule of the same direction is `SlotTaken`
    for that rule alone.

    `polling_interval` is how long to wait between polls of an async operation when ARM does
    not say (it normally sends `Retry-After`). Reads are translated here; writes are not:
    the caller wraps them in `translated`, naming what it was doing.
    """

    kind = "azure_nsg"

    def rules(self, location: AzureLocation) -> list[SecurityRule]:
        client = self._clients.client(location)
        with translated(location):
            return list(client.security_rules.list(location.resource_group,
                                                   nsg_name(location)))

    def put(self, location: AzureLocation, name: str, rule: SecurityRule,
            band: tuple[int, int] | None = None) -> None:
        """Create or replace the rule `name` (at the lowest free priority of `band`, if
        given: the rule's own if it is there already)."""
        self.writes.submit(location.nsg_id.lower(), (location, RulePut(name, rule, band)))

    def delete(self, location: AzureLocation, name: str) -> bool:
        """Remove one rule; True if it was there, False if not."""
        return self.delete_many(location, [name])[name]

    def delete_many(self, location: AzureLocation, names: Sequence[str]) -> dict[str, bool]:
        """Remove these rules (one write with whatever else is waiting); per rule, True if it
        was there. When the NSG itself is gone, every rule is reported already gone."""
        try:
            found = self.writes.submit(location.nsg_id.lower(),
                                       (location, RuleDelete(tuple(names))))
        except HttpResponseError as exc:
            if error_code(exc) in NOT_FOUND or exc.status_code == 404:
                return dict.fromkeys(names, False)
            raise
        assert isinstance(found, dict)
        return found

    def _read(self, location: AzureLocation) -> NetworkSecurityGroup:
        client = self._clients.client(location)
        return client.network_security_groups.get(location.resource_group, nsg_name(location))

    def _apply(self, state: NetworkSecurityGroup, change: RulePut | RuleDelete,
               location: AzureLocation) -> tuple[object, bool]:
        rules = {str(r.name).lower(): r for r in state.security_rules or []}
        outcome = _apply(rules, change, location)
        state.security_rules = list(rules.values())
        return outcome

    def _send(self, location: AzureLocation, state: NetworkSecurityGroup) -> None:
        client = self._clients.client(location)
        client.network_security_groups.begin_create_or_update(
            location.resource_group, nsg_name(location), state,
            headers={"If-Match": str(state.etag)},
            polling_interval=self._polling_interval).result()


def _apply(rules: dict[str, SecurityRule], change: RulePut | RuleDelete,
           location: AzureLocation) -> tuple[object, bool]:
    """Apply one change to the NSG's rules (by lowercased name): its outcome (for a put,
    None or SlotTaken; for a delete, which names were there) and whether it changed them."""
    if isinstance(change, RuleDelete):
        found = {name: rules.pop(name.lower(), None) is not None for name in change.names}
        return found, any(found.values())
    wanted = change.rule.properties
    if change.band is not None and wanted is not None:
        free = _free_in_band(rules, change, wanted)
        if free is None:
            low, high = change.band
            return RuleLimitExceeded(
                f"no free priority in band {low}-{high} of network security group "
                f"{location.network_security_group} (resource group {location.resource_group})"
                ": widen priority_band in the policy or wait for grants to end"), False
        wanted.priority = free
    for key, rule in rules.items():
        p = rule.properties
        if (key != change.name.lower() and p is not None and wanted is not None
                and p.priority == wanted.priority and _direction(p) == _direction(wanted)):
            return SlotTaken(int(wanted.priority or 0),
                             f"network security group {location.network_security_group} "
                             f"(resource group {location.resource_group}): rule {rule.name} "
                             f"already has priority {wanted.priority}"), False
    rules[change.name.lower()] = change.rule
    return None, True


def _free_in_band(rules: dict[str, SecurityRule], change: RulePut, wanted: Any) -> int | None:
    """The rule's own priority if it is there already, else the lowest free one in the band
    (same direction); None if none is free."""
    assert change.band is not None
    own = rules.get(change.name.lower())
    if own is not None and own.properties is not None and own.properties.priority:
        return int(own.properties.priority)
    direction = _direction(wanted)
    used = {r.properties.priority for r in rules.values()
            if r.properties is not None and _direction(r.properties) == direction}
    low, high = change.band
    return next((p for p in range(low, high + 1) if p not in used), None)


def _direction(properties: Any) -> str:
    return str(getattr(properties.direction, "value", properties.direction)).lower()


def nsg_name(location: AzureLocation) -> str:
    if location.network_security_group is None:
        raise ProviderError(f"{location.resource} has no network security group")
    return location.network_security_group


# ---- errors ---------------------------------------------------------------------------------


@contextmanager
def translated(location: AzureLocation, priority: int | None = None,
               where: str | None = None) -> Iterator[None]:
    """Azure's exceptions -> jit's ProviderError tree, with the NSG (or `where`) named."""
    nsg = where or f"network security group {location.network_security_group} " \
                   f"(resource group {location.resource_group})"
    try:
        yield
    except ClientAuthenticationError as exc:
        raise AccessDenied(f"Azure refused jit's credentials for {nsg}: "
                           f"{error_message(exc)}") from exc
    except HttpResponseError as exc:
        raise _refusal(exc, nsg, priority) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientProviderError(f"cannot reach Azure for {nsg}: {exc}") from exc


def _refusal(exc: HttpResponseError, nsg: str, priority: int | None) -> ProviderError:
    """What an ARM error answer means for jit; `priority` is the one a write asked for."""
    code, message, status = error_code(exc), error_message(exc), exc.status_code or 0
    if code == "SecurityRuleConflict" and priority is not None:
        return SlotTaken(priority, f"{nsg}: {message}")
    if code in _FULL:
        return RuleLimitExceeded(f"{nsg} is full (1,000 rules): {message}")
    if code in NOT_FOUND or status == 404:
        return TargetNotFound(f"{nsg} not found: {message}")
    if code in DENIED or status in (401, 403):
        return AccessDenied(f"Azure denied jit on {nsg}: {message}")
    if code == BUSY or _overloaded(status):
        return TransientProviderError(f"Azure is busy with {nsg}: {message}")
    if async_failure(exc):
        return TransientProviderError(f"Azure could not complete the change on {nsg}: {message}")
    return ProviderError(f"Azure refused the change on {nsg}: {message}")


def _overloaded(status: int) -> bool:
    """A timeout, throttling or a server error that azure-core's retries did not outlast."""
    return status in (408, 429) or status >= 500


def error_code(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", None) or "")


def error_message(exc: HttpResponseError | ClientAuthenticationError) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    return str(text).splitlines()[0]


def async_failure(exc: HttpResponseError) -> bool:
    """An async operation that ARM accepted and then reported as Failed (status poll 200)."""
    return exc.status_code in (200, 201, 202) or exc.status_code is None


def retry_after(exc: HttpResponseError) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


# ---- targets --------------------------------------------------------------------------------


def azure_location(target: Target) -> AzureLocation:
    if not isinstance(target.location, AzureLocation):
        raise ProviderError(f"{target.name} is not an Azure target")
    return target.location


def _endpoint(location: AzureLocation) -> tuple[str, str]:
    endpoint, authority = CLOUDS.get(location.cloud, CLOUDS["public"])
    return (location.arm_endpoint or endpoint).rstrip("/"), authority


def nsg_rule(name: str, spec: RuleSpec, destination: str, source: str,
             priority: int) -> SecurityRule:
    """An inbound Allow rule for the grant."""
    return SecurityRule(name=name, properties=SecurityRulePropertiesFormat(
        protocol=PROTOCOLS.get(spec.port.protocol.value, "Tcp"),
        source_address_prefix=source,
        source_port_range="*",
        destination_address_prefix=destination,
        destination_port_range=str(spec.port.port),
        access="Allow",
        direction="Inbound",
        priority=priority,
        description=spec.description[:140],
    ))
