"""Azure network security groups as a jit `Provider`. With its sibling modules azure_arm.py
(clients, error translation, an NSG's rule calls), azure_lockdown.py (enable/disable) and
azure_scan.py, the only Azure SDK user.

A grant is one inbound Allow rule named `jit-<grant id>` in the target's NSG: the declared
source, the target's destination address, one port and protocol, at a priority the service
reserved in the target's band (`placement`). Request bodies are built with
`azure.mgmt.network.models` (a plain dict would be sent as-is, without `properties`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from jitcore.errors import ProviderError, TargetNotFound
from jitcore.policy import AzureLocation, Target
from jitcore.ports import OpenedRule, OwnedRule, RuleSpec, SlotPool
from jitcore.providers.azure_arm import (
    BUSY,
    GRANT_RULE,
    ArmClients,
    Backoff,
    NsgRules,
    async_failure,
    azure_location,
    error_code,
    nsg_rule,
    rule_name,
    translated,
)
from jitcore.providers.azure_firewall import FirewallNat
from jitcore.providers.azure_grants import FirewallGrants
from jitcore.providers.azure_lockdown import AzureLockdownSupport

__all__ = ["AzureProvider", "Backoff", "rule_name"]

_NSG_GONE = frozenset({"ResourceNotFound", "ResourceGroupNotFound"})


class AzureProvider(AzureLockdownSupport):
    """Opens and closes jit's inbound rules in Azure network security groups (and, through
    `AzureLockdownSupport`, keeps a target closed by default).

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
        self._clients = ArmClients(credential, client_options)
        self._nsg = NsgRules(self._clients, polling_interval, backoff or Backoff())
        self._firewalls = FirewallGrants(FirewallNat(self._clients, polling_interval,
                                                     backoff or Backoff()))

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        location = azure_location(spec.target)
        if spec.slot is None:
            raise ProviderError(f"#{spec.grant_id}: no priority or mapped port reserved for "
                                f"{spec.target.name}")
        if location.firewall is not None:
            return self._firewalls.open(spec, location, self._nsg)
        name = rule_name(spec.grant_id)
        rule = nsg_rule(name, spec, location.destination, spec.source, spec.slot)
        with translated(location, priority=spec.slot):
            try:
                self._nsg.put(location, name, rule)
            except HttpResponseError as exc:
                if error_code(exc) in (BUSY, "SecurityRuleConflict") or not async_failure(exc):
                    raise
                self._remove_half_made(location, name)
                raise
        return OpenedRule(location.nsg_id, name, created=True, owned=True)

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        location = azure_location(target)
        if location.firewall is not None and scope.lower() != location.nsg_id.lower():
            return self._firewalls.close(location, refs, self._nsg)
        with translated(location):
            return self._nsg.delete_many(location, refs)

    def present_rules(self, target: Target, scope: str, refs: Sequence[str]) -> set[str]:
        location = azure_location(target)
        wanted = set(refs)
        present: set[str] = set()
        if location.firewall is not None and scope.lower() != location.nsg_id.lower():
            present |= self._firewalls.present(location, wanted)
        if location.network_security_group is not None:
            with suppress(TargetNotFound):  # no NSG, no rules
                present |= {str(r.name) for r in self._nsg.rules(location) if r.name in wanted}
        return present

    def list_owned_rules(self, target: Target) -> list[OwnedRule]:
        location = azure_location(target)
        owned = self._firewalls.owned(location) if location.firewall is not None else []
        if location.network_security_group is None:
            return owned
        # Behind a firewall, a grant's NSG rule belongs to its DNAT rule (one handle).
        scope = location.firewall.scope if location.firewall is not None else location.nsg_id
        listed = {rule.ref for rule in owned}
        for rule in self._nsg.rules(location):
            match = GRANT_RULE.match(str(rule.name))
            if match is None or rule.properties is None or rule.name in listed:
                continue  # not a grant's rule (a deny rule jit keeps, or anyone else's)
            p = rule.properties
            owned.append(OwnedRule(
                scope=scope, ref=str(rule.name), grant_id=int(match.group(1)),
                port=_port(p.destination_port_range), protocol=_text(p.protocol).lower(),
                source=str(p.source_address_prefix
                           or ",".join(p.source_address_prefixes or []))))
        return owned

    def placement(self, target: Target) -> SlotPool:
        """A grant through a firewall takes a mapped port of its public address, unique in
        the firewall (or its policy); a grant in an NSG alone, a priority of the band."""
        location = azure_location(target)
        if location.firewall is not None:
            return self._firewalls.placement(location)
        low, high = location.priority_band
        return SlotPool(
            scope=location.nsg_id, low=low, high=high,
            full=f"no free priority in band {low}-{high} of network security group "
                 f"{location.network_security_group} (resource group "
                 f"{location.resource_group}): every one is held by an active grant or "
                 "another rule; widen priority_band in the policy or wait for grants to end")

    def used_slots(self, target: Target) -> set[int]:
        """The slots of `placement(target)` taken now, by anyone (for the service's choice)."""
        location = azure_location(target)
        if location.firewall is not None:
            return self._firewalls.used(location)
        return {int(rule.properties.priority) for rule in self._nsg.rules(location)
                if rule.properties is not None and rule.properties.priority is not None
                and _text(rule.properties.direction).lower() == "inbound"}

    def warm(self, target: Target) -> None:
        """Build the target's ARM client now (no call to Azure), before requests arrive."""
        self._clients.client(azure_location(target))

    def lockdowns(self) -> AzureProvider:
        """plan_lockdown, lock_down, lift_lockdown and posture: see AzureLockdownSupport."""
        return self

    def _remove_half_made(self, location: AzureLocation, name: str) -> None:
        """An open whose operation ended Failed may leave the rule behind: take it away."""
        # If this fails too, reconcile removes it later: it has jit's name and no live grant.
        with suppress(HttpResponseError, ServiceRequestError, ServiceResponseError):
            self._nsg.delete(location, name)


def _port(ports: str | None) -> int:
    try:
        return int(str(ports).split("-")[0])
    except ValueError:
        return 0


def _text(value: object) -> str:
    """An SDK enum member's wire value ("Inbound"), or the string the SDK left as it was:
    str() of a str-mixin enum is its qualified name ("SecurityRuleDirection.INBOUND")."""
    return str(getattr(value, "value", value))
