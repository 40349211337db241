"""The ARM emulator's Azure Firewalls and firewall policies, driven through the real SDK.

Classic NAT rule collections live inside the `azureFirewalls` resource (GET it, PUT it whole);
policy NAT collections inside a rule collection group of a firewall policy. Both writes are
long-running, take `If-Match`, and one at a time.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import (
    AzureFirewall,
    AzureFirewallNatRCAction,
    AzureFirewallNatRule,
    AzureFirewallNatRuleCollection,
    FirewallPolicyNatRuleCollection,
    FirewallPolicyNatRuleCollectionAction,
    FirewallPolicyRuleCollectionGroup,
    NatRule,
)

from tests.fakes.arm import ArmEmulator
from tests.fakes.arm.firewall_policies import GROUP_WRITE
from tests.fakes.arm.firewalls import FIREWALL_WRITE
from tests.fakes.arm.operations import NFV_OPERATION_READ, OPERATION_READ
from tests.support.arm_requests import error_of, send
from tests.support.azure import SUBSCRIPTION, network_client

RG, FIREWALL, POLICY, GROUP = "rg-edge", "fw-edge", "policy-edge", "jit-nat"
PUBLIC_IP, CLIENT_IP, VM_IP = "198.51.100.10", "203.0.113.7", "10.0.0.4"
API = "2024-07-01"


def classic_rule(name: str = "ssh-1", port: str = "50022", **changes: Any) -> AzureFirewallNatRule:
    fields: dict[str, Any] = {
        "name": name, "source_addresses": [CLIENT_IP], "destination_addresses": [PUBLIC_IP],
        "destination_ports": [port], "protocols": ["TCP"], "translated_address": VM_IP,
        "translated_port": "22", **changes}
    return AzureFirewallNatRule(**fields)


def classic_collection(name: str = "jit", priority: int = 200,
                       rules: list[AzureFirewallNatRule] | None = None,
                       action: str = "Dnat") -> AzureFirewallNatRuleCollection:
    return AzureFirewallNatRuleCollection(
        name=name, priority=priority, action=AzureFirewallNatRCAction(type=action),
        rules=rules if rules is not None else [classic_rule()])


def seeded_collection(name: str, priority: int, port: str = "50100") -> dict[str, Any]:
    return {"name": name, "properties": {
        "priority": priority, "action": {"type": "Dnat"},
        "rules": [{"name": f"{name}-rule", "sourceAddresses": ["192.0.2.1"],
                   "destinationAddresses": [PUBLIC_IP], "destinationPorts": [port],
                   "protocols": ["TCP"], "translatedAddress": "10.0.0.9",
                   "translatedPort": "3389"}]}}


def policy_group(*collections: FirewallPolicyNatRuleCollection,
                 priority: int = 200) -> FirewallPolicyRuleCollectionGroup:
    return FirewallPolicyRuleCollectionGroup(priority=priority, rule_collections=list(collections))


def policy_collection(name: str = "nat", priority: int = 300,
                      port: str = "50022") -> FirewallPolicyNatRuleCollection:
    return FirewallPolicyNatRuleCollection(
        name=name, priority=priority, action=FirewallPolicyNatRuleCollectionAction(type="DNAT"),
        rules=[NatRule(name=f"{name}-ssh", ip_protocols=["TCP"], source_addresses=[CLIENT_IP],
                       destination_addresses=[PUBLIC_IP], destination_ports=[port],
                       translated_address=VM_IP, translated_port="22")])


@pytest.fixture
def client(arm_emulator: ArmEmulator) -> NetworkManagementClient:
    return network_client(arm_emulator, retry_backoff_factor=0.01)


@pytest.fixture
def arm(arm_emulator: ArmEmulator) -> ArmEmulator:
    arm_emulator.add_firewall(SUBSCRIPTION, RG, FIREWALL, public_ip=PUBLIC_IP)
    arm_emulator.add_firewall_policy(SUBSCRIPTION, RG, POLICY)
    return arm_emulator


def firewall_url(arm: ArmEmulator, name: str = FIREWALL) -> str:
    return (f"{arm.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
            f"Microsoft.Network/azureFirewalls/{name}?api-version={API}")


def group_url(arm: ArmEmulator, name: str = GROUP) -> str:
    return (f"{arm.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
            f"Microsoft.Network/firewallPolicies/{POLICY}/ruleCollectionGroups/{name}"
            f"?api-version={API}")


def put_nat(client: NetworkManagementClient, *collections: AzureFirewallNatRuleCollection,
            name: str = FIREWALL, **kwargs: Any) -> Any:
    firewall = AzureFirewall(location="westeurope", nat_rule_collections=list(collections))
    return client.azure_firewalls.begin_create_or_update(RG, name, firewall, **kwargs).result()


# -- classic firewalls ---------------------------------------------------------------------


def test_a_firewall_created_through_the_sdk_reads_back_exactly(
        arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.add_resource_group(SUBSCRIPTION, RG)

    created = put_nat(client, classic_collection())

    stored = arm_emulator.firewall(SUBSCRIPTION, RG, FIREWALL)
    collection = stored["properties"]["natRuleCollections"][0]
    assert created.provisioning_state == "Succeeded"
    assert stored["type"] == "Microsoft.Network/azureFirewalls"
    assert collection == {
        "name": "jit", "id": f"{stored['id']}/natRuleCollections/jit", "etag": stored["etag"],
        "type": "Microsoft.Network/azureFirewalls/natRuleCollections",
        "properties": {"provisioningState": "Succeeded", "priority": 200,
                       "action": {"type": "Dnat"},
                       "rules": [{"name": "ssh-1", "sourceAddresses": [CLIENT_IP],
                                  "sourceIpGroups": [], "destinationAddresses": [PUBLIC_IP],
                                  "destinationPorts": ["50022"], "protocols": ["TCP"],
                                  "translatedAddress": VM_IP, "translatedPort": "22"}]}}
    fetched = client.azure_firewalls.get(RG, FIREWALL)
    assert fetched.etag == stored["etag"] == fetched.nat_rule_collections[0].etag
    assert fetched.nat_rule_collections[0].rules[0].translated_address == VM_IP


def test_get_carries_the_etag_header_and_it_changes_with_each_put(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    before = send(client, "GET", firewall_url(arm))
    put_nat(client, classic_collection())
    after = send(client, "GET", firewall_url(arm))

    assert before.headers["ETag"] == before.json()["etag"]
    assert before.headers["ETag"].startswith('W/"')
    assert after.headers["ETag"] == after.json()["etag"] != before.headers["ETag"]
    assert all(item["etag"] == after.headers["ETag"]
               for item in after.json()["properties"]["natRuleCollections"])


def test_a_put_answers_201_then_200_updating_and_is_polled_to_succeeded(
        arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.add_resource_group(SUBSCRIPTION, RG)
    arm_emulator.op_delay = 0.2
    body = {"location": "westeurope", "properties": {"natRuleCollections": []}}

    created = send(client, "PUT", firewall_url(arm_emulator), json=body)
    arm_emulator.wait_idle()
    updated = send(client, "PUT", firewall_url(arm_emulator), json=body)
    arm_emulator.wait_idle()
    result = client.azure_firewalls.begin_create_or_update(
        RG, FIREWALL, AzureFirewall(location="westeurope")).result()

    assert (created.status_code, updated.status_code) == (201, 200)
    assert updated.json()["properties"]["provisioningState"] == "Updating"
    assert created.json()["properties"]["provisioningState"] == "Updating"
    assert created.headers["Azure-AsyncNotification"] == "Enabled"
    assert "/operations/" in created.headers["Azure-AsyncOperation"]
    assert result.provisioning_state == "Succeeded"
    assert arm_emulator.calls_to(OPERATION_READ)


def test_dnat_in_capitals_is_accepted_and_echoed_as_dnat(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    put_nat(client, classic_collection(action="DNAT"), classic_collection(
        "outbound", 300, action="Snat"))

    actions = [item["properties"]["action"]["type"] for item in
               arm.firewall(SUBSCRIPTION, RG, FIREWALL)["properties"]["natRuleCollections"]]
    assert actions == ["Dnat", "Snat"]


def test_a_stale_if_match_is_refused_with_412(arm: ArmEmulator,
                                              client: NetworkManagementClient) -> None:
    stale = client.azure_firewalls.get(RG, FIREWALL).etag
    put_nat(client, classic_collection())

    with pytest.raises(HttpResponseError) as excinfo:
        put_nat(client, classic_collection("mine", 400), headers={"If-Match": stale})

    status, code, _ = error_of(excinfo)
    assert (status, code) == (412, "PreconditionFailed")
    names = [item["name"] for item in
             arm.firewall(SUBSCRIPTION, RG, FIREWALL)["properties"]["natRuleCollections"]]
    assert names == ["jit"]


def test_a_foreign_collection_added_between_get_and_put_is_kept_with_the_fresh_etag(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    ours = client.azure_firewalls.get(RG, FIREWALL)
    foreign = network_client(arm, retry_backoff_factor=0.01)
    theirs = foreign.azure_firewalls.get(RG, FIREWALL)
    theirs.nat_rule_collections.append(classic_collection("foreign", 500, [classic_rule(
        "rdp", "53389", translated_port="3389")]))
    foreign.azure_firewalls.begin_create_or_update(RG, FIREWALL, theirs).result()

    ours.nat_rule_collections.append(classic_collection())
    with pytest.raises(HttpResponseError) as excinfo:
        client.azure_firewalls.begin_create_or_update(
            RG, FIREWALL, ours, headers={"If-Match": ours.etag}).result()
    fresh = client.azure_firewalls.get(RG, FIREWALL)
    fresh.nat_rule_collections.append(classic_collection())
    client.azure_firewalls.begin_create_or_update(
        RG, FIREWALL, fresh, headers={"If-Match": fresh.etag}).result()

    assert excinfo.value.status_code == 412
    names = [item["name"] for item in
             arm.firewall(SUBSCRIPTION, RG, FIREWALL)["properties"]["natRuleCollections"]]
    assert names == ["foreign", "jit"]


def test_a_second_write_while_one_runs_is_another_operation_in_progress(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.op_delay = 0.5
    first = client.azure_firewalls.begin_create_or_update(
        RG, FIREWALL, AzureFirewall(location="westeurope",
                                    nat_rule_collections=[classic_collection()]))

    with pytest.raises(HttpResponseError) as excinfo:
        put_nat(client, classic_collection("other", 300))

    status, code, message = error_of(excinfo)
    assert (status, code) == (409, "AnotherOperationInProgress")
    assert "/operations/" in message
    assert first.result().provisioning_state == "Succeeded"
    assert [call.status for call in arm.calls_to(FIREWALL_WRITE)] == [200, 409]


def test_faults_apply_to_firewall_writes(arm: ArmEmulator,
                                         client: NetworkManagementClient) -> None:
    arm.faults.conflict_next()
    with pytest.raises(HttpResponseError) as conflict:
        put_nat(client, classic_collection())
    arm.faults.fail_next_operations(code="InternalServerError")
    with pytest.raises(HttpResponseError):
        put_nat(client, classic_collection())

    assert error_of(conflict)[:2] == (409, "AnotherOperationInProgress")
    assert arm.firewall(SUBSCRIPTION, RG, FIREWALL)["properties"]["provisioningState"] == \
        "Failed"


def test_delete_is_accepted_then_the_firewall_is_gone(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    client.azure_firewalls.begin_delete(RG, FIREWALL).result()

    with pytest.raises(ResourceNotFoundError):
        client.azure_firewalls.get(RG, FIREWALL)
    assert [call.status for call in arm.calls if call.method == "DELETE"] == [202]


@pytest.mark.parametrize(("collection", "code"), [
    (classic_collection(priority=99), "AzureFirewallRuleCollectionInvalidPriority"),
    (classic_collection(priority=65001), "AzureFirewallRuleCollectionInvalidPriority"),
    (classic_collection(action="Allow"), "InvalidRequestFormat"),
    (classic_collection(rules=[classic_rule(protocols=["HTTP"])]), "InvalidRequestFormat"),
    (classic_collection(rules=[classic_rule(translated_fqdn="vm.internal")]),
     "AzureFirewallNatRuleInvalidTranslation"),
    (classic_collection(rules=[classic_rule(translated_address=None)]),
     "AzureFirewallNatRuleInvalidTranslation"),
    (classic_collection(rules=[classic_rule(port="70000")]), "AzureFirewallRuleInvalidPort"),
    (classic_collection(rules=[classic_rule(source_addresses=[])]),
     "AzureFirewallRuleMissingSource"),
    (classic_collection(rules=[classic_rule(), classic_rule()]),
     "AzureFirewallRuleNameNotUnique"),
])
def test_invalid_nat_collections_are_refused_with_400(
        arm: ArmEmulator, client: NetworkManagementClient,
        collection: AzureFirewallNatRuleCollection, code: str) -> None:
    with pytest.raises(HttpResponseError) as excinfo:
        put_nat(client, collection)

    assert error_of(excinfo)[:2] == (400, code)
    assert arm.firewall(SUBSCRIPTION, RG, FIREWALL)["properties"]["natRuleCollections"] == []


def test_collection_names_and_priorities_must_be_unique(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    with pytest.raises(HttpResponseError) as same_priority:
        put_nat(client, classic_collection("a", 200), classic_collection("b", 200))
    with pytest.raises(HttpResponseError) as same_name:
        put_nat(client, classic_collection("a", 200), classic_collection("A", 300))

    assert error_of(same_priority)[1] == "AzureFirewallRuleCollectionPriorityNotUnique"
    assert error_of(same_name)[1] == "AzureFirewallRuleCollectionNameNotUnique"


def test_ports_must_be_strings_as_the_swagger_says(arm: ArmEmulator,
                                                   client: NetworkManagementClient) -> None:
    rule = {"name": "r", "sourceAddresses": ["*"], "destinationAddresses": [PUBLIC_IP],
            "destinationPorts": [50022], "protocols": ["TCP"], "translatedAddress": VM_IP,
            "translatedPort": "22"}
    body = {"location": "westeurope", "properties": {"natRuleCollections": [
        {"name": "c", "properties": {"priority": 100, "action": {"type": "Dnat"},
                                     "rules": [rule]}}]}}

    answer = send(client, "PUT", firewall_url(arm), json=body)

    assert answer.status_code == 400


def test_seeding_helpers_plant_and_read_back(arm_emulator: ArmEmulator) -> None:
    arm_emulator.add_firewall(SUBSCRIPTION, RG, "fw-seeded", public_ip=PUBLIC_IP,
                              nat_collections=[seeded_collection("rdp", 150)])

    collection = arm_emulator.nat_collection(SUBSCRIPTION, RG, "fw-seeded", "RDP")
    body = arm_emulator.firewall(SUBSCRIPTION, RG, "fw-seeded")
    assert collection is not None and collection["properties"]["priority"] == 150
    assert arm_emulator.firewall_public_ip(SUBSCRIPTION, RG, "fw-seeded") == PUBLIC_IP
    assert body["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"] \
        .endswith("/publicIPAddresses/fw-seeded-pip")
    with pytest.raises(ValueError):
        arm_emulator.add_firewall(SUBSCRIPTION, RG, "fw-bad",
                                  nat_collections=[seeded_collection("x", 50)])


# -- firewall policies ---------------------------------------------------------------------


def test_a_rule_collection_group_created_through_the_sdk_reads_back_exactly(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    created = client.firewall_policy_rule_collection_groups.begin_create_or_update(
        RG, POLICY, GROUP, policy_group(policy_collection())).result()

    stored = arm.rule_collection_group(SUBSCRIPTION, RG, POLICY, GROUP)
    assert created.provisioning_state == "Succeeded"
    assert stored is not None
    assert stored["type"] == "Microsoft.Network/FirewallPolicies/RuleCollectionGroups"
    assert stored["properties"]["ruleCollections"] == [{
        "ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": "nat",
        "priority": 300, "action": {"type": "Dnat"},
        "rules": [{"ruleType": "NatRule", "name": "nat-ssh", "ipProtocols": ["TCP"],
                   "sourceAddresses": [CLIENT_IP], "sourceIpGroups": [],
                   "destinationAddresses": [PUBLIC_IP], "destinationPorts": ["50022"],
                   "translatedAddress": VM_IP, "translatedPort": "22"}]}]
    fetched = client.firewall_policy_rule_collection_groups.get(RG, POLICY, GROUP)
    assert fetched.etag == stored["etag"]
    assert fetched.rule_collections[0].rules[0].translated_port == "22"
    policy = arm.firewall_policy(SUBSCRIPTION, RG, POLICY)
    assert policy["properties"]["ruleCollectionGroups"] == [{"id": stored["id"]}]


def test_group_puts_answer_201_then_200_with_a_new_bare_guid_etag_each(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    body = {"properties": {"priority": 200, "ruleCollections": []}}

    first = send(client, "PUT", group_url(arm), json=body)
    second = send(client, "PUT", group_url(arm), json=body)
    fetched = send(client, "GET", group_url(arm))

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["properties"]["provisioningState"] == "Updating"
    assert "/nfvOperations/" in first.headers["Azure-AsyncOperation"]
    etags = [first.json()["etag"], second.json()["etag"]]
    assert etags[0] != etags[1] and not etags[0].startswith("W/")
    assert fetched.json()["etag"] == etags[1]
    assert fetched.headers["ETag"] == f'"{etags[1]}"'
    assert arm.calls_to(GROUP_WRITE)


def test_a_stale_if_match_on_a_group_is_refused_and_a_fresh_one_keeps_others_work(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    groups = client.firewall_policy_rule_collection_groups
    groups.begin_create_or_update(RG, POLICY, GROUP, policy_group(policy_collection())).result()
    ours = groups.get(RG, POLICY, GROUP)
    theirs = copy.deepcopy(ours)
    theirs.rule_collections.append(policy_collection("foreign", 400, "53389"))
    groups.begin_create_or_update(RG, POLICY, GROUP, theirs).result()

    ours.rule_collections.append(policy_collection("mine", 500, "50023"))
    with pytest.raises(HttpResponseError) as excinfo:
        groups.begin_create_or_update(RG, POLICY, GROUP, ours,
                                      headers={"If-Match": ours.etag}).result()
    fresh = groups.get(RG, POLICY, GROUP)
    fresh.rule_collections.append(policy_collection("mine", 500, "50023"))
    groups.begin_create_or_update(RG, POLICY, GROUP, fresh,
                                  headers={"If-Match": f'"{fresh.etag}"'}).result()

    assert error_of(excinfo)[:2] == (412, "PreconditionFailed")
    stored = arm.rule_collection_group(SUBSCRIPTION, RG, POLICY, GROUP)
    assert stored is not None
    assert [item["name"] for item in stored["properties"]["ruleCollections"]] == \
        ["nat", "foreign", "mine"]


def test_one_group_write_at_a_time_per_policy(arm: ArmEmulator,
                                              client: NetworkManagementClient) -> None:
    arm.op_delay = 0.5
    groups = client.firewall_policy_rule_collection_groups
    first = groups.begin_create_or_update(RG, POLICY, GROUP, policy_group(policy_collection()))

    with pytest.raises(HttpResponseError) as excinfo:
        groups.begin_create_or_update(RG, POLICY, "other", policy_group(priority=300)).result()

    assert error_of(excinfo)[:2] == (409, "AnotherOperationInProgress")
    assert first.result().provisioning_state == "Succeeded"
    assert arm.calls_to(NFV_OPERATION_READ)


def test_a_group_is_deleted_and_listed(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    groups = client.firewall_policy_rule_collection_groups
    for name, priority in ((GROUP, 200), ("other", 300)):
        groups.begin_create_or_update(RG, POLICY, name, policy_group(priority=priority)).result()

    groups.begin_delete(RG, POLICY, "other").result()

    assert [item.name for item in groups.list(RG, POLICY)] == [GROUP]
    assert arm.rule_collection_group(SUBSCRIPTION, RG, POLICY, "other") is None
    assert send(client, "DELETE", group_url(arm, "other")).status_code == 204


@pytest.mark.parametrize("change", [
    {"ipProtocols": None, "protocols": ["TCP"]},
    {"translatedPort": None},
    {"destinationPorts": ["0"]},
    {"ruleType": "NetworkRule"},
])
def test_invalid_policy_nat_rules_are_refused_with_400(
        arm: ArmEmulator, client: NetworkManagementClient, change: dict[str, Any]) -> None:
    rule = {"ruleType": "NatRule", "name": "r", "ipProtocols": ["TCP"],
            "sourceAddresses": ["*"], "destinationAddresses": [PUBLIC_IP],
            "destinationPorts": ["50022"], "translatedAddress": VM_IP, "translatedPort": "22"}
    rule = {key: value for key, value in {**rule, **change}.items() if value is not None}
    body = {"properties": {"priority": 200, "ruleCollections": [{
        "ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": "c",
        "priority": 300, "action": {"type": "DNAT"}, "rules": [rule]}]}}

    answer = send(client, "PUT", group_url(arm), json=body)

    assert answer.status_code == 400
    assert arm.rule_collection_group(SUBSCRIPTION, RG, POLICY, GROUP) is None
