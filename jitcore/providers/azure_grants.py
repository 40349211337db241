"""Grants through an Azure Firewall: a DNAT rule per grant (azure_firewall.py) and, when the
target names an NSG too, the NSG rule that lets the forwarded traffic reach the VM.

Azure Firewall DNAT translates the source as well as the destination: the VM sees the
connection coming from one of the firewall's own addresses in AzureFirewallSubnet, not from
the requester. So the NSG rule allows the firewall's `source_range`, to the VM's address and
the requested port, at a priority chosen in the NSG write itself (the lowest free in the
band; the NSG's ETag keeps replicas apart). Both rules are named `jit-<grant id>`; the grant's
handle is the DNAT rule, and closing it removes both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import suppress

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from jitcore.domain import Entry
from jitcore.errors import ProviderError
from jitcore.policy import AzureFirewall, AzureLocation
from jitcore.ports import OpenedRule, OwnedRule, RuleSpec, SlotPool
from jitcore.providers.azure_arm import (
    BUSY,
    GRANT_RULE,
    NsgRules,
    async_failure,
    error_code,
    nsg_rule,
    rule_name,
    translated,
)
from jitcore.providers.azure_firewall import DnatRule, FirewallNat


class FirewallGrants:
    """What `AzureProvider` does for a target that names a firewall."""

    def __init__(self, nat: FirewallNat) -> None:
        self.nat = nat

    def placement(self, location: AzureLocation) -> SlotPool:
        firewall = _firewall(location)
        low, high = firewall.mapped_ports
        return SlotPool(
            scope=firewall.scope, low=low, high=high,
            full=f"no free port in mapped_ports {low}-{high} of firewall {firewall.name} "
                 f"({firewall.public_ip}): every one is held by an active grant or another "
                 "DNAT rule; widen mapped_ports in the policy or wait for grants to end")

    def used(self, location: AzureLocation) -> set[int]:
        with translated(location, where=_words(location)):
            return self.nat.used_ports(location)

    def open(self, spec: RuleSpec, location: AzureLocation, nsg: NsgRules) -> OpenedRule:
        firewall = _firewall(location)
        assert spec.slot is not None
        name = rule_name(spec.grant_id)
        rule = DnatRule(name=name, source=spec.source, public_ip=firewall.public_ip,
                        mapped_port=spec.slot, protocol=spec.port.protocol.value.upper(),
                        to_address=location.destination, to_port=spec.port.port,
                        description=spec.description[:140])
        with translated(location, where=_words(location)):
            try:
                self.nat.put(location, rule)
            except HttpResponseError as exc:
                if error_code(exc) == BUSY or not async_failure(exc):
                    raise
                self._remove_half_made(location, name)
                raise
        if location.network_security_group is not None:
            # A failure here fails the grant; its DNAT rule is then removed as left behind.
            inner = nsg_rule(name, spec, location.destination, str(firewall.source_range),
                             priority=location.priority_band[0])  # chosen in the write
            with translated(location):
                nsg.put(location, name, inner, band=location.priority_band)
        return OpenedRule(firewall.scope, name, created=True, owned=True,
                          entry=Entry(firewall.public_ip, spec.slot, location.destination,
                                      spec.port.port))

    def close(self, location: AzureLocation, refs: Sequence[str],
              nsg: NsgRules) -> dict[str, bool]:
        with translated(location, where=_words(location)):
            removed = self.nat.delete_many(location, refs)
        if location.network_security_group is not None:
            with translated(location):
                inner = nsg.delete_many(location, refs)
            removed = {ref: removed.get(ref, False) or inner.get(ref, False) for ref in refs}
        return removed

    def present(self, location: AzureLocation, wanted: Collection[str]) -> set[str]:
        with translated(location, where=_words(location)):
            return {rule.name for rule in self.nat.rules(location) if rule.name in wanted}

    def owned(self, location: AzureLocation) -> list[OwnedRule]:
        firewall = _firewall(location)
        with translated(location, where=_words(location)):
            rules = self.nat.rules(location)
        owned = []
        for rule in rules:
            match = GRANT_RULE.match(rule.name)
            owned.append(OwnedRule(
                scope=firewall.scope, ref=rule.name,
                grant_id=int(match.group(1)) if match else None, port=rule.to_port,
                protocol=rule.protocol.lower(), source=rule.source))
        return owned

    def _remove_half_made(self, location: AzureLocation, name: str) -> None:
        """An open whose operation ended Failed may leave the rule behind: take it away."""
        # If this fails too, reconcile removes it later: it has jit's name and no live grant.
        with suppress(HttpResponseError, ServiceRequestError, ServiceResponseError,
                      ProviderError):
            self.nat.delete_many(location, [name])


def _firewall(location: AzureLocation) -> AzureFirewall:
    if location.firewall is None:
        raise ProviderError(f"{location.resource} has no firewall")
    return location.firewall


def _words(location: AzureLocation) -> str:
    firewall = _firewall(location)
    if firewall.policy is not None:
        return (f"firewall policy {firewall.policy} of firewall {firewall.name} "
                f"(resource group {firewall.resource_group})")
    return f"firewall {firewall.name} (resource group {firewall.resource_group})"
