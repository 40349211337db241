"""The ARM emulator's lists of Azure Firewalls (per subscription, as `list_all` asks, and per
resource group) and of a policy's rule collection groups, through the real SDK: every item, in
pages that follow `nextLink`, with the ARM action each request stands for."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient

from tests.fakes.arm import FIREWALL_READ, GROUP_READ, ArmEmulator
from tests.support.azure import SUBSCRIPTION, network_client

OTHER_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000b2"
UNKNOWN_SUBSCRIPTION = "99999999-9999-9999-9999-999999999999"
PUBLIC_IP = "198.51.100.10"


def dnat_collection(name: str, translated: str) -> dict[str, object]:
    return {"name": name, "properties": {
        "priority": 200, "action": {"type": "Dnat"},
        "rules": [{"name": "ssh", "sourceAddresses": ["*"], "destinationAddresses": [PUBLIC_IP],
                   "destinationPorts": ["2222"], "protocols": ["TCP"],
                   "translatedAddress": translated, "translatedPort": "22"}]}}


@pytest.fixture
def client(arm_emulator: ArmEmulator) -> NetworkManagementClient:
    return network_client(arm_emulator, retry_backoff_factor=0.01)


def test_list_all_answers_the_firewalls_of_every_resource_group_in_pages(
        arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm = arm_emulator
    arm.page_size = 2
    for group, name in (("rg-hub", "fw-hub"), ("rg-hub", "fw-hub-2"), ("rg-edge", "fw-edge")):
        arm.add_firewall(SUBSCRIPTION, group, name, public_ip=PUBLIC_IP,
                         nat_collections=[dnat_collection("inbound", "10.1.0.4")])
    arm.add_firewall(OTHER_SUBSCRIPTION, "rg-hub", "fw-elsewhere")
    arm.clear_calls()

    firewalls = list(client.azure_firewalls.list_all())
    in_hub = [firewall.name for firewall in client.azure_firewalls.list("rg-hub")]

    assert [firewall.name for firewall in firewalls] == ["fw-hub", "fw-hub-2", "fw-edge"]
    assert in_hub == ["fw-hub", "fw-hub-2"]
    assert firewalls[2].as_dict() == arm.firewall(SUBSCRIPTION, "rg-edge", "fw-edge")
    assert firewalls[0].nat_rule_collections[0].rules[0].translated_address == "10.1.0.4"
    calls = arm.calls_to(FIREWALL_READ)
    assert [(c.path, c.query.get("$skiptoken")) for c in calls[:2]] == [
        (f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/azureFirewalls", None),
        (f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/azureFirewalls", "2")]
    assert len(calls) == 3 and all(c.ok for c in calls)


def test_list_all_of_a_subscription_without_firewalls_is_empty_and_unknown_is_404(
        arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.add_resource_group(SUBSCRIPTION, "rg-empty")

    assert list(client.azure_firewalls.list_all()) == []
    with pytest.raises(ResourceNotFoundError) as unknown:
        list(network_client(arm_emulator, UNKNOWN_SUBSCRIPTION).azure_firewalls.list_all())
    assert unknown.value.error is not None
    assert unknown.value.error.code == "SubscriptionNotFound"


def test_a_policys_rule_collection_groups_are_listed_in_pages(
        arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm = arm_emulator
    arm.page_size = 2
    arm.add_firewall_policy(SUBSCRIPTION, "rg-hub", "fwpol-hub")
    for index, name in enumerate(("platform", "jit", "apps")):
        arm.add_rule_collection_group(SUBSCRIPTION, "rg-hub", "fwpol-hub", name, 200 + index)
    arm.clear_calls()

    groups = list(client.firewall_policy_rule_collection_groups.list("rg-hub", "fwpol-hub"))

    assert [(group.name, group.priority) for group in groups] == [
        ("platform", 200), ("jit", 201), ("apps", 202)]
    assert [c.query.get("$skiptoken") for c in arm.calls_to(GROUP_READ)] == [None, "2"]
    with pytest.raises(ResourceNotFoundError):
        list(client.firewall_policy_rule_collection_groups.list("rg-hub", "fwpol-gone"))
