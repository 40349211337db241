"""The ARM emulator through the real azure-mgmt-network SDK: the NSG, etags, one writer per
NSG, faults, seeding and the record of calls."""

from __future__ import annotations

import time

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.mgmt.network import NetworkManagementClient

from tests.fakes.arm import (
    DEFAULT_RULES,
    NSG_READ,
    NSG_WRITE,
    OPERATION_READ,
    RULE_DELETE,
    RULE_READ,
    RULE_WRITE,
    ArmEmulator,
    rule_properties,
)
from tests.support.arm_requests import (
    API,
    CLIENT_IP,
    NSG,
    RG,
    create,
    error_of,
    jit_rule,
    nsg_url,
    rule_url,
    send,
    state,
)
from tests.support.azure import SUBSCRIPTION

# -- the NSG ------------------------------------------------------------------------------------


def test_the_nsg_holds_full_rules_and_the_six_defaults(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")

    group = client.network_security_groups.get(RG, NSG)

    assert group.provisioning_state == "Succeeded"
    assert group.location == "westeurope"
    assert [r.name for r in group.security_rules] == ["jit-1"]
    assert group.security_rules[0].source_address_prefix == CLIENT_IP
    assert [r.name for r in group.default_security_rules] == [n for n, _ in DEFAULT_RULES] == [
        "AllowVnetInBound", "AllowAzureLoadBalancerInBound", "DenyAllInBound",
        "AllowVnetOutBound", "AllowInternetOutBound", "DenyAllOutBound"]
    deny_in = group.default_security_rules[2]
    assert deny_in.id == f"{nsg_url(arm).removeprefix(arm.url)}/defaultSecurityRules/DenyAllInBound"
    assert (deny_in.priority, deny_in.access, deny_in.direction) == (65500, "Deny", "Inbound")
    assert group.resource_guid


def test_an_nsg_put_creates_then_replaces_its_inline_rules(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    body = {"location": "West Europe", "properties": {"securityRules": [
        {"name": "allow-ssh", "properties": rule_properties(200, 22)}]}}

    created = client.network_security_groups.begin_create_or_update(RG, "nsg-2", body).result()
    body["properties"]["securityRules"] = [
        {"name": "allow-rdp", "properties": rule_properties(201, 3389)}]
    replaced = client.network_security_groups.begin_create_or_update(RG, "nsg-2", body).result()

    assert created.provisioning_state == "Succeeded"
    assert [r.name for r in created.security_rules] == ["allow-ssh"]
    assert [r.name for r in replaced.security_rules] == ["allow-rdp"]
    assert [c.status for c in arm.calls_to(NSG_WRITE)] == [201, 200]
    assert arm.nsg(SUBSCRIPTION, RG, "nsg-2")["location"] == "westeurope"


def test_an_nsg_put_checks_its_rules(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    body = {"location": "westeurope", "properties": {"securityRules": [
        {"name": "a", "properties": rule_properties(200, 22)},
        {"name": "b", "properties": rule_properties(200, 80)}]}}

    with pytest.raises(HttpResponseError) as excinfo:
        client.network_security_groups.begin_create_or_update(RG, "nsg-2", body).result()

    assert error_of(excinfo)[:2] == (400, "SecurityRuleConflict")
    with pytest.raises(KeyError):
        arm.nsg(SUBSCRIPTION, RG, "nsg-2")


# -- etags ----------------------------------------------------------------------------------------


def test_the_etag_changes_on_every_write_and_rules_carry_it(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    before = arm.nsg(SUBSCRIPTION, RG, NSG)["etag"]

    accepted = send(client, "PUT", rule_url(arm, "jit-1"), jit_rule()).json()["etag"]
    arm.wait_idle()
    done = arm.nsg(SUBSCRIPTION, RG, NSG)
    response = send(client, "GET", rule_url(arm, "jit-1"))
    client.security_rules.begin_delete(RG, NSG, "jit-1").result()
    after_delete = arm.nsg(SUBSCRIPTION, RG, NSG)["etag"]
    arm.add_rule(SUBSCRIPTION, RG, NSG, "planted", rule_properties(300, 22))
    after_plant = arm.nsg(SUBSCRIPTION, RG, NSG)["etag"]

    etags = [before, accepted, done["etag"], after_delete, after_plant]
    assert len(set(etags)) == len(etags)
    assert all(etag.startswith('W/"') and etag.endswith('"') for etag in etags)
    assert response.headers["ETag"] == response.json()["etag"] == done["etag"]
    assert done["properties"]["securityRules"][0]["etag"] == done["etag"]
    assert {r["etag"] for r in done["properties"]["defaultSecurityRules"]} == {done["etag"]}


def test_if_match_must_name_the_current_etag(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")
    current = arm.nsg(SUBSCRIPTION, RG, NSG)["etag"]
    stale = 'W/"00000000-0000-0000-0000-000000000000"'

    with pytest.raises(HttpResponseError) as put_excinfo:
        create(client, "jit-1", port=2222, headers={"If-Match": stale})
    with pytest.raises(HttpResponseError) as delete_excinfo:
        client.security_rules.begin_delete(RG, NSG, "jit-1", headers={"If-Match": stale}).result()

    assert error_of(put_excinfo)[:2] == (412, "PreconditionFailed")
    assert error_of(delete_excinfo)[:2] == (412, "PreconditionFailed")
    assert arm.rule(SUBSCRIPTION, RG, NSG, "jit-1")["properties"]["destinationPortRange"] == "22"
    updated = create(client, "jit-1", port=2222, headers={"If-Match": current})
    assert updated.destination_port_range == "2222"


# -- one writer per NSG ------------------------------------------------------------------------


def test_a_second_write_while_one_is_in_progress_is_refused(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.op_delay = 0.5
    first = send(client, "PUT", rule_url(arm, "jit-1"), jit_rule(100))
    status_url = first.headers["Azure-AsyncOperation"]

    with pytest.raises(ResourceExistsError) as excinfo:
        client.security_rules.begin_create_or_update(
            RG, NSG, "jit-2", jit_rule(101), polling=False)
    delete = send(client, "DELETE", rule_url(arm, "jit-1"))
    in_progress = send(client, "GET", status_url)

    assert first.status_code == 201
    assert error_of(excinfo) == (
        409, "AnotherOperationInProgress",
        "Another operation on this or dependent resource is in progress. To retrieve status of "
        f"the operation use uri: {status_url}.")
    assert delete.status_code == 409
    assert in_progress.json() == {"status": "InProgress"}
    assert in_progress.headers["Retry-After"] == "0"
    assert state(arm, "jit-1") == "Updating"
    assert arm.nsg(SUBSCRIPTION, RG, NSG)["properties"]["provisioningState"] == "Updating"
    assert state(arm, "jit-2") is None

    arm.wait_idle()
    assert send(client, "GET", status_url).json() == {"status": "Succeeded"}
    assert state(arm, "jit-1") == "Succeeded"
    assert arm.nsg(SUBSCRIPTION, RG, NSG)["properties"]["provisioningState"] == "Succeeded"
    arm.op_delay = 0
    assert create(client, "jit-2", priority=101).provisioning_state == "Succeeded"


def test_the_sdk_waits_out_a_slow_operation(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.op_delay = 0.3
    started = time.monotonic()

    rule = create(client, "jit-1")

    assert rule.provisioning_state == "Succeeded"
    assert time.monotonic() - started >= 0.3
    polls = [c for c in arm.calls if c.operation == OPERATION_READ]
    assert len(polls) >= 2  # InProgress at least once, then Succeeded


# -- faults ---------------------------------------------------------------------------------------


def test_conflict_next_refuses_writes_and_changes_nothing(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    before = arm.nsg(SUBSCRIPTION, RG, NSG)["etag"]
    arm.faults.conflict_next(2)

    for _ in range(2):
        with pytest.raises(ResourceExistsError) as excinfo:
            create(client, "jit-1")
        assert error_of(excinfo)[:2] == (409, "AnotherOperationInProgress")
    status_url = error_of(excinfo)[2].split("use uri: ")[1].rstrip(".")

    assert arm.rules(SUBSCRIPTION, RG, NSG) == []
    assert arm.nsg(SUBSCRIPTION, RG, NSG)["etag"] == before
    assert send(client, "GET", status_url).json() == {"status": "Succeeded"}
    assert create(client, "jit-1").provisioning_state == "Succeeded"
    assert [c.status for c in arm.calls_to(RULE_WRITE)] == [409, 409, 201]


def test_conflict_rate_refuses_a_seeded_share_of_writes(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.faults.conflict_rate = 0.5

    statuses = [send(client, "PUT", rule_url(arm, f"jit-{i}"), jit_rule(100 + i)).status_code
                for i in range(30)]
    reads = [send(client, "GET", rule_url(arm, "jit-0")).status_code for _ in range(5)]

    assert set(statuses) == {201, 409}
    assert 5 <= statuses.count(409) <= 25
    assert 409 not in reads  # reads are never refused
    with pytest.raises(ValueError, match="conflict_rate"):
        arm.faults.conflict_rate = 1.5


def test_throttling_is_retried_by_azure_core_after_retry_after(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.faults.throttle_next(2, retry_after=0.3)
    started = time.monotonic()

    group = client.network_security_groups.get(RG, NSG)

    elapsed = time.monotonic() - started
    assert group.name == NSG
    assert 0.55 <= elapsed < 5
    assert [c.status for c in arm.calls_to(NSG_READ)] == [429, 429, 200]
    assert arm.calls_to(NSG_READ)[0].error_code == "SubscriptionRequestsThrottled"


def test_a_throttle_answer_carries_retry_after(arm: ArmEmulator) -> None:
    arm.faults.throttle_next(1, retry_after=7)

    response = requests.get(f"{nsg_url(arm)}?api-version={API}", verify=arm.ca_bundle,
                            timeout=5, headers={"Authorization": "Bearer x"})

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"]["code"] == "SubscriptionRequestsThrottled"


def test_four_throttles_outlast_azure_cores_three_retries(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.faults.throttle_next(4, retry_after=0.01)

    with pytest.raises(HttpResponseError) as excinfo:
        client.network_security_groups.get(RG, NSG)

    assert excinfo.value.status_code == 429
    assert [c.status for c in arm.calls_to(NSG_READ)] == [429] * 4
    assert client.network_security_groups.get(RG, NSG).name == NSG


def test_a_failed_operation_raises_and_leaves_the_rule_failed(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.faults.fail_next_operations(1, code="InternalServerError", message="Boom in the NRP")

    with pytest.raises(HttpResponseError) as excinfo:
        create(client, "jit-1")

    assert excinfo.value.error is not None
    assert (excinfo.value.error.code, excinfo.value.error.message) == (
        "InternalServerError", "Boom in the NRP")
    assert "Boom in the NRP" in str(excinfo.value)
    assert state(arm, "jit-1") == "Failed"
    assert arm.nsg(SUBSCRIPTION, RG, NSG)["properties"]["provisioningState"] == "Failed"
    assert create(client, "jit-1").provisioning_state == "Succeeded"  # a retry repairs it
    assert arm.nsg(SUBSCRIPTION, RG, NSG)["properties"]["provisioningState"] == "Succeeded"


def test_a_failed_delete_leaves_the_rule(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")
    arm.faults.fail_next_operations(1)

    with pytest.raises(HttpResponseError, match=r"An error occurred\."):
        client.security_rules.begin_delete(RG, NSG, "jit-1").result()

    assert state(arm, "jit-1") == "Failed"
    client.security_rules.begin_delete(RG, NSG, "jit-1").result()
    assert state(arm, "jit-1") is None


def test_500s_are_retried_by_azure_core_up_to_three_times(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.faults.fail_writes_next(3)
    assert create(client, "jit-1").provisioning_state == "Succeeded"
    assert [c.status for c in arm.calls_to(RULE_WRITE)] == [500, 500, 500, 201]

    arm.clear_calls()
    arm.faults.fail_writes_next(4)
    with pytest.raises(HttpResponseError) as excinfo:
        create(client, "jit-2", priority=101)
    assert error_of(excinfo)[:2] == (500, "InternalServerError")
    assert [c.status for c in arm.calls_to(RULE_WRITE)] == [500] * 4
    assert state(arm, "jit-2") is None


def test_broken_deletes_fail_every_time_until_healed(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")
    arm.faults.break_deletes()

    for _ in range(5):
        with pytest.raises(ResourceExistsError) as excinfo:
            client.security_rules.begin_delete(RG, NSG, "jit-1").result()
        assert error_of(excinfo)[:2] == (409, "AnotherOperationInProgress")
    assert [c.status for c in arm.calls_to(RULE_DELETE)] == [409] * 5  # no retries by the SDK
    assert state(arm, "jit-1") == "Succeeded"
    assert create(client, "jit-2", priority=101).provisioning_state == "Succeeded"  # PUTs work

    arm.faults.heal()
    client.security_rules.begin_delete(RG, NSG, "jit-1").result()
    assert state(arm, "jit-1") is None


def test_broken_deletes_can_answer_any_error(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")
    arm.faults.break_deletes(423, "ScopeLocked", "The scope is locked.")

    with pytest.raises(HttpResponseError) as excinfo:
        client.security_rules.begin_delete(RG, NSG, "jit-1").result()

    assert error_of(excinfo) == (423, "ScopeLocked", "The scope is locked.")
    assert len(arm.calls_to(RULE_DELETE)) == 1


# -- seeding ------------------------------------------------------------------------------------


def test_planted_rules_are_checked_unless_told_not_to(arm: ArmEmulator) -> None:
    arm.add_rule(SUBSCRIPTION, RG, NSG, "allow-ssh", rule_properties(100, 22))

    with pytest.raises(ValueError, match="SecurityRuleConflict"):
        arm.add_rule(SUBSCRIPTION, RG, NSG, "jit-1", rule_properties(100, 3389))
    planted = arm.add_rule(SUBSCRIPTION, RG, NSG, "jit-1", rule_properties(100, 3389),
                           provisioning_state="Failed", validate=False)

    assert planted["properties"]["provisioningState"] == "Failed"
    assert planted["etag"] == arm.nsg(SUBSCRIPTION, RG, NSG)["etag"]
    assert [r["name"] for r in arm.rules(SUBSCRIPTION, RG, NSG)] == ["allow-ssh", "jit-1"]
    with pytest.raises(KeyError):
        arm.rules(SUBSCRIPTION, RG, "nsg-nowhere")


def test_add_nsg_returns_its_id_and_seeds_rules(arm_emulator: ArmEmulator) -> None:
    nsg_id = arm_emulator.add_nsg(SUBSCRIPTION, "rg-2", "nsg-2", location="North Europe",
                                  rules=[{"name": "allow-ssh",
                                          "properties": rule_properties(100, 22)}])

    assert nsg_id == (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-2/providers/"
                      "Microsoft.Network/networkSecurityGroups/nsg-2")
    group = arm_emulator.nsg(SUBSCRIPTION, "rg-2", "nsg-2")
    assert group["location"] == "northeurope"
    assert group["properties"]["securityRules"][0]["properties"]["provisioningState"] == (
        "Succeeded")


# -- recording ------------------------------------------------------------------------------------


def test_calls_record_the_arm_actions(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")
    list(client.security_rules.list(RG, NSG))
    client.network_security_groups.get(RG, NSG)
    client.security_rules.begin_delete(RG, NSG, "jit-1").result()

    assert arm.operations() == {RULE_WRITE, OPERATION_READ, RULE_READ, NSG_READ, RULE_DELETE}
    first = arm.calls[0]
    assert (first.method, first.status, first.operation) == ("PUT", 201, RULE_WRITE)
    assert first.path.endswith("/securityRules/jit-1")
    assert first.query["api-version"]
