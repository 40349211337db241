"""The Azure half of `jit scan`: VMs as their network interfaces show them, their NSGs, and
the DNAT rules of the Azure Firewalls that forward to them.

azure-mgmt-network alone, four lists per subscription (networkInterfaces, virtualNetworks
with their subnets inline, networkSecurityGroups with their rules, azureFirewalls with their
classic NAT rule collections), and the rule collection groups of each Firewall Policy a
firewall uses: no Compute calls, since a NIC names its VM. A VM is one machine however many
NICs it has; NICs attached to no VM are skipped. Every subscription is read before any VM is
judged, so that a hub's firewall counts for the spokes in the other subscriptions scanned.
A policy's parent (`basePolicy`) is not read: NAT rule collections are not inherited.

Clients are the ones `AzureProvider` uses (`azure_arm.ArmClients`: credential, cloud endpoint,
client options); azure-core retries throttling and 5xx itself, and what outlasts it becomes a
`ProviderError` here. What the answers mean is decided in `jitcore.scan_azure`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.network import NetworkManagementClient

from jitcore.errors import AccessDenied, ProviderError, TargetNotFound, TransientProviderError
from jitcore.policy import AzureLocation, Target
from jitcore.providers.azure_arm import DENIED, ArmClients, error_code, error_message
from jitcore.scan import Machine, canonical_ip, parse_arm_id
from jitcore.scan_azure import AzureNic, AzureVm, DnatRule, Nsg, NsgRule, classify_vm

Json = dict[str, Any]
_NO_SUBSCRIPTION = frozenset({"SubscriptionNotFound", "InvalidSubscriptionId"})


def scan_azure(
    subscriptions: Sequence[str],
    enabled: Sequence[Target],
    *,
    credential: TokenCredential | None = None,
    arm_endpoint: str | None = None,
    client_options: dict[str, Any] | None = None,
) -> list[Machine]:
    """Every VM in these subscriptions, classified against the enabled jit targets.

    `credential` defaults to `DefaultAzureCredential`; `arm_endpoint` to Azure's public cloud;
    `client_options` go to `NetworkManagementClient` (e.g. `connection_verify`).
    """
    clients = ArmClients(credential, client_options)

    def client_for(subscription: str) -> NetworkManagementClient:
        # The client depends on the subscription and the endpoint only; the rest is unused.
        return clients.client(AzureLocation(subscription, "", "", "", arm_endpoint=arm_endpoint))

    vms: list[AzureVm] = []
    firewalls = _Firewalls(client_for)
    dnat: dict[str, list[DnatRule]] = defaultdict(list)  # translated address -> its rules
    for subscription in dict.fromkeys(subscriptions):
        client = client_for(subscription)
        with _translated(subscription):
            vms += _Network(client).vms()
            for rule in firewalls.dnat_rules(client):
                if rule.translated_address is not None:
                    dnat[canonical_ip(rule.translated_address)].append(rule)
    return [classify_vm(vm, enabled, [rule for address in sorted(vm.addresses)
                                      for rule in dnat.get(address, ())])
            for vm in vms]


class _Network:
    """One subscription's NICs, subnets and NSGs, read once and looked up by id."""

    def __init__(self, client: NetworkManagementClient) -> None:
        self._client = client
        self._nics: list[Json] = [nic.as_dict() for nic in client.network_interfaces.list_all()]
        self._subnet_nsgs: dict[str, str | None] = {
            str(subnet["id"]).lower(): _reference(subnet, "networkSecurityGroup")
            for vnet in client.virtual_networks.list_all()
            for subnet in _properties(vnet.as_dict()).get("subnets") or []}
        self._nsgs: dict[str, Nsg | None] = {
            str(nsg["id"]).lower(): _nsg(nsg)
            for nsg in (n.as_dict() for n in client.network_security_groups.list_all())}

    def vms(self) -> list[AzureVm]:
        by_vm: dict[str, list[Json]] = defaultdict(list)
        for nic in self._nics:
            vm_id = _reference(nic, "virtualMachine")
            if vm_id is not None:
                by_vm[vm_id.lower()].append(nic)
        return [self._vm(nics) for nics in by_vm.values()]

    def _vm(self, nics: list[Json]) -> AzureVm:
        nics = sorted(nics, key=lambda nic: not _properties(nic).get("primary"))
        vm_id = str(_reference(nics[0], "virtualMachine"))
        subscription, resource_group, name = parse_arm_id(vm_id)
        return AzureVm(vm_id, name, subscription, resource_group,
                       tuple(self._nic(nic) for nic in nics))

    def _nic(self, nic: Json) -> AzureNic:
        configurations = sorted(_properties(nic).get("ipConfigurations") or [],
                                key=lambda c: not _properties(c).get("primary"))
        addresses = tuple(str(_properties(c)["privateIPAddress"]).split("/")[0]
                          for c in configurations if _properties(c).get("privateIPAddress"))
        subnet_id = next((s for c in configurations if (s := _reference(c, "subnet"))), None)
        nsg_id = _reference(nic, "networkSecurityGroup")
        return AzureNic(str(nic["id"]), str(nic.get("name", "")), addresses,
                        self._nsg(nsg_id), self._nsg(self._subnet_nsg(subnet_id)))

    def _subnet_nsg(self, subnet_id: str | None) -> str | None:
        if subnet_id is None:
            return None
        if subnet_id.lower() not in self._subnet_nsgs:  # made after the list: ask for it
            _, resource_group, vnet, subnet = _subnet_parts(subnet_id)
            try:
                found = self._client.subnets.get(resource_group, vnet, subnet).as_dict()
                self._subnet_nsgs[subnet_id.lower()] = _reference(found, "networkSecurityGroup")
            except ResourceNotFoundError:
                self._subnet_nsgs[subnet_id.lower()] = None
        return self._subnet_nsgs[subnet_id.lower()]

    def _nsg(self, nsg_id: str | None) -> Nsg | None:
        if nsg_id is None:
            return None
        if nsg_id.lower() not in self._nsgs:  # made after the list: ask for it
            _, resource_group, name = parse_arm_id(nsg_id)
            try:
                found = self._client.network_security_groups.get(resource_group, name)
                self._nsgs[nsg_id.lower()] = _nsg(found.as_dict())
            except ResourceNotFoundError:
                self._nsgs[nsg_id.lower()] = None  # gone since: nothing in front of the NIC
        return self._nsgs[nsg_id.lower()]


class _Firewalls:
    """The DNAT rules of a subscription's Azure Firewalls, classic and from their policies.

    A policy shared by several firewalls is read once; one that is gone since the firewall
    was listed holds no rule.
    """

    def __init__(self, client_for: Callable[[str], NetworkManagementClient]) -> None:
        self._client_for = client_for
        self._policies: dict[str, list[Json]] = {}  # policy id -> its rule collection groups

    def dnat_rules(self, client: NetworkManagementClient) -> list[DnatRule]:
        rules: list[DnatRule] = []
        for firewall in (item.as_dict() for item in client.azure_firewalls.list_all()):
            rules += _classic_rules(firewall)
            policy_id = _reference(firewall, "firewallPolicy")
            if policy_id is not None:
                rules += self._policy_rules(str(firewall.get("name", "")), policy_id)
        return rules

    def _policy_rules(self, firewall: str, policy_id: str) -> list[DnatRule]:
        return [_dnat_rule(firewall, str(group.get("name", "")),
                           str(collection.get("name", "")), rule)
                for group in self._groups(policy_id)
                for collection in _properties(group).get("ruleCollections") or []
                if _is_dnat_collection(collection)
                for rule in collection.get("rules") or []
                if str(rule.get("ruleType", "")).lower() == "natrule"]

    def _groups(self, policy_id: str) -> list[Json]:
        if policy_id.lower() not in self._policies:
            subscription, resource_group, policy = parse_arm_id(policy_id)
            groups = self._client_for(subscription).firewall_policy_rule_collection_groups
            try:
                found = [group.as_dict() for group in groups.list(resource_group, policy)]
            except ResourceNotFoundError:
                found = []  # the policy is gone since the firewall was listed
            self._policies[policy_id.lower()] = found
        return self._policies[policy_id.lower()]


def _classic_rules(firewall: Json) -> list[DnatRule]:
    """The rules of the firewall's own NAT rule collections whose action is DNAT."""
    name = str(firewall.get("name", ""))
    return [_dnat_rule(name, None, str(collection.get("name", "")), rule)
            for collection in _properties(firewall).get("natRuleCollections") or []
            if _action(_properties(collection)) == "dnat"
            for rule in _properties(collection).get("rules") or []]


def _is_dnat_collection(collection: Json) -> bool:
    return (str(collection.get("ruleCollectionType", "")).lower()
            == "firewallpolicynatrulecollection" and _action(collection) == "dnat")


def _action(collection: Mapping[str, Any]) -> str:
    """A NAT collection's action, lowercase: "dnat" (classic "Dnat", policy "DNAT") or "snat"."""
    return str((collection.get("action") or {}).get("type", "")).lower()


def _dnat_rule(firewall: str, group: str | None, collection: str, rule: Json) -> DnatRule:
    """A classic AzureFirewallNatRule (`protocols`) or a policy NatRule (`ipProtocols`)."""
    def strings(key: str) -> tuple[str, ...]:
        return tuple(str(value) for value in rule.get(key) or [])

    translated = rule.get("translatedAddress")
    return DnatRule(
        firewall=firewall, group=group, collection=collection, name=str(rule.get("name", "")),
        protocols=strings("protocols") or strings("ipProtocols"),
        sources=strings("sourceAddresses"), destinations=strings("destinationAddresses"),
        ports=strings("destinationPorts"),
        translated_address=str(translated) if translated else None,
        translated_port=str(rule.get("translatedPort") or ""))


def _properties(resource: Mapping[str, Any]) -> Json:
    return dict(resource.get("properties") or {})


def _reference(resource: Mapping[str, Any], key: str) -> str | None:
    """The id in `properties.<key>.id`, e.g. a NIC's virtualMachine or networkSecurityGroup."""
    value = (_properties(resource).get(key) or {}).get("id")
    return str(value) if value else None


def _subnet_parts(subnet_id: str) -> tuple[str, str, str, str]:
    parts = subnet_id.strip("/").split("/")
    if len(parts) != 10 or parts[8].lower() != "subnets":
        raise ProviderError(f"not a subnet id: {subnet_id}")
    return parts[1], parts[3], parts[7], parts[9]


def _nsg(nsg: Json) -> Nsg:
    properties = _properties(nsg)
    rules = [*(properties.get("securityRules") or []),
             *(properties.get("defaultSecurityRules") or [])]
    return Nsg(str(nsg["id"]), str(nsg.get("name", "")), tuple(_rule(rule) for rule in rules))


def _rule(rule: Json) -> NsgRule:
    p = _properties(rule)
    return NsgRule(
        name=str(rule.get("name", "")),
        priority=int(p.get("priority") or 0),
        direction=str(p.get("direction", "")),
        access=str(p.get("access", "")),
        protocol=str(p.get("protocol", "")),
        sources=_values(p, "sourceAddressPrefix", "sourceAddressPrefixes"),
        destinations=_values(p, "destinationAddressPrefix", "destinationAddressPrefixes"),
        ports=_values(p, "destinationPortRange", "destinationPortRanges"),
    )


def _values(properties: Json, single: str, plural: str) -> tuple[str, ...]:
    """A rule field that ARM gives in a singular or a plural form, as one tuple."""
    one = properties.get(single)
    return (str(one),) if one else tuple(str(v) for v in properties.get(plural) or [])


@contextmanager
def _translated(subscription: str) -> Iterator[None]:
    """Azure's exceptions -> jit's ProviderError tree, naming the subscription."""
    where = f"subscription {subscription}"
    try:
        yield
    except ClientAuthenticationError as exc:
        raise AccessDenied(f"Azure refused jit's credentials for {where}: "
                           f"{error_message(exc)}") from exc
    except HttpResponseError as exc:
        raise _refusal(exc, where) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientProviderError(f"cannot reach Azure for {where}: {exc}") from exc


def _refusal(exc: HttpResponseError, where: str) -> ProviderError:
    """What an ARM error answer to a list means for jit, naming the subscription."""
    code, message, status = error_code(exc), error_message(exc), exc.status_code or 0
    if code in _NO_SUBSCRIPTION or status == 404:
        return TargetNotFound(f"Azure does not know {where}: {message}")
    if code in DENIED or status in (401, 403):
        return AccessDenied(f"Azure denied jit reading the network of {where} "
                            f"(it needs Microsoft.Network/*/read): {message}")
    if status in (408, 429) or status >= 500:
        return TransientProviderError(f"Azure is busy or unavailable for {where}: {message}; "
                                      "try again later")
    return ProviderError(f"Azure refused to list the network of {where}: {message}")
