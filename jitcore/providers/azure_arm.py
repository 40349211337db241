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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from azure.mgmt.network.models import SecurityRule

from jitcore.errors import (
    AccessDenied,
    ProviderError,
    RuleLimitExceeded,
    SlotTaken,
    TargetNotFound,
    TransientProviderError,
)
from jitcore.policy import AzureLocation, Target

RULE_PREFIX = "jit-"
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


class NsgRules:
    """The security rules of the NSG a location names: listed, put and deleted, with one
    write per NSG at a time from this process, retried while ARM is busy.

    `polling_interval` is how long to wait between polls of an async operation when ARM does
    not say (it normally sends `Retry-After`). Writes are not translated here: the caller
    wraps them in `translated`, naming what it was doing.
    """

    def __init__(self, clients: ArmClients, polling_interval: float, backoff: Backoff) -> None:
        self._clients = clients
        self._polling_interval = polling_interval
        self._backoff = backoff
        self._lock = threading.Lock()
        self._writers: dict[str, threading.Lock] = {}

    def rules(self, location: AzureLocation) -> list[SecurityRule]:
        client = self._clients.client(location)
        with translated(location):
            return list(client.security_rules.list(location.resource_group,
                                                   location.network_security_group))

    def put(self, location: AzureLocation, name: str, rule: SecurityRule) -> None:
        """Create or replace the rule `name`."""
        client = self._clients.client(location)
        self._write(location, lambda: client.security_rules.begin_create_or_update(
            location.resource_group, location.network_security_group, name, rule,
            polling_interval=self._polling_interval).result())

    def delete(self, location: AzureLocation, name: str) -> bool:
        """Remove one rule; True if it was there (ARM answered 200/202), False if not (204)."""
        client = self._clients.client(location)
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
            if exc.status_code == 404 and error_code(exc) not in NOT_FOUND:
                return False  # the rule itself is gone
            raise
        return bool(statuses) and statuses[0] != 204

    def _write(self, location: AzureLocation, call: Callable[[], T]) -> T:
        """One write to an NSG at a time from this process, retried while ARM is busy."""
        with self._writer(location.nsg_id):
            for attempt in range(self._backoff.attempts):
                try:
                    return call()
                except HttpResponseError as exc:
                    if error_code(exc) != BUSY or attempt == self._backoff.attempts - 1:
                        raise
                    time.sleep(self._backoff.delay(attempt, _retry_after(exc)))
        raise AssertionError("unreachable")  # pragma: no cover

    def _writer(self, nsg_id: str) -> threading.Lock:
        with self._lock:
            return self._writers.setdefault(nsg_id.lower(), threading.Lock())


# ---- errors ---------------------------------------------------------------------------------


@contextmanager
def translated(location: AzureLocation, priority: int | None = None) -> Iterator[None]:
    """Azure's exceptions -> jit's ProviderError tree, with the NSG named."""
    nsg = f"network security group {location.network_security_group} " \
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


def _retry_after(exc: HttpResponseError) -> float | None:
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
