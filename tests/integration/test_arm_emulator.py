"""The ARM emulator through the real azure-mgmt-network SDK, over HTTPS: rules, validation,
authentication and routing (writes and faults: test_arm_emulator_writes.py; the network
around the NSGs: test_arm_emulator_network.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient

from tests.fakes.arm import (
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
    VM_IP,
    create,
    error_of,
    jit_rule,
    nsg_url,
    rule_url,
    send,
    state,
)
from tests.support.azure import SUBSCRIPTION, StaticTokenCredential, network_client

# -- create, read, update, list, delete -------------------------------------------------------


def test_create_polls_the_operation_then_reads_the_rule_back(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    rule = create(client, "jit-1", priority=105, port=3389)

    assert rule.provisioning_state == "Succeeded"
    assert (rule.name, rule.priority, rule.destination_port_range) == ("jit-1", 105, "3389")
    assert (rule.access, rule.direction, rule.protocol) == ("Allow", "Inbound", "Tcp")
    assert (rule.source_address_prefix, rule.destination_address_prefix) == (CLIENT_IP, VM_IP)
    assert rule.id == f"{nsg_url(arm)}/securityRules/jit-1".removeprefix(arm.url)
    assert [(c.method, c.status, c.operation) for c in arm.calls] == [
        ("PUT", 201, RULE_WRITE), ("GET", 200, OPERATION_READ), ("GET", 200, RULE_READ)]
    fetched = client.security_rules.get(RG, NSG, "jit-1")
    assert fetched.provisioning_state == "Succeeded"
    assert fetched.source_address_prefix == CLIENT_IP
    assert state(arm, "jit-1") == "Succeeded"


def test_the_put_answer_echoes_the_rule_as_updating(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    response = send(client, "PUT", rule_url(arm, "jit-1"), jit_rule())

    assert response.status_code == 201
    body = response.json()
    assert body["properties"]["provisioningState"] == "Updating"
    assert body["type"] == "Microsoft.Network/networkSecurityGroups/securityRules"
    assert body["etag"].startswith('W/"')
    operation = response.headers["Azure-AsyncOperation"]
    assert operation.startswith(
        f"{arm.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/locations/"
        "westeurope/operations/")
    assert operation.endswith(f"?api-version={API}")
    assert response.headers["Retry-After"] == "0"
    assert "Location" not in response.headers


def test_an_update_answers_200(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1", port=22)
    updated = create(client, "jit-1", port=2222)

    assert updated.destination_port_range == "2222"
    assert [c.status for c in arm.calls_to(RULE_WRITE)] == [201, 200]
    assert len(arm.rules(SUBSCRIPTION, RG, NSG)) == 1


def test_list_without_paging_is_one_request(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    for index in range(3):
        arm.add_rule(SUBSCRIPTION, RG, NSG, f"jit-{index}", rule_properties(100 + index, 22))

    names = [rule.name for rule in client.security_rules.list(RG, NSG)]

    assert names == ["jit-0", "jit-1", "jit-2"]
    assert len(arm.calls_to(RULE_READ)) == 1


def test_list_follows_next_link_when_paged(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.page_size = 2
    for index in range(5):
        arm.add_rule(SUBSCRIPTION, RG, NSG, f"jit-{index}", rule_properties(100 + index, 22))

    names = [rule.name for rule in client.security_rules.list(RG, NSG)]

    assert names == [f"jit-{index}" for index in range(5)]
    pages = arm.calls_to(RULE_READ)
    assert [call.query.get("$skiptoken") for call in pages] == [None, "2", "4"]
    assert all(call.query["api-version"] for call in pages)  # nextLink keeps the api-version


def test_delete_then_the_rule_is_gone(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")

    client.security_rules.begin_delete(RG, NSG, "jit-1").result()

    with pytest.raises(ResourceNotFoundError) as excinfo:
        client.security_rules.get(RG, NSG, "jit-1")
    status, code, message = error_of(excinfo)
    assert (status, code) == (404, "NotFound")
    rule_id = f"{nsg_url(arm).removeprefix(arm.url)}/securityRules/jit-1"
    assert message == f"Resource {rule_id} not found."
    assert arm.rules(SUBSCRIPTION, RG, NSG) == []
    assert [c.status for c in arm.calls_to(RULE_DELETE)] == [202]


def test_deleting_a_missing_rule_is_no_error(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    client.security_rules.begin_delete(RG, NSG, "never-there").result()

    assert [c.status for c in arm.calls_to(RULE_DELETE)] == [204]
    assert OPERATION_READ not in arm.operations()


def test_delete_answers_202_with_location_and_operation(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")
    arm.op_delay = 0.3

    response = send(client, "DELETE", rule_url(arm, "jit-1"))

    assert response.status_code == 202
    assert response.content == b""
    location = response.headers["Location"]
    assert "/operationResults/" in location
    assert "/operations/" in response.headers["Azure-AsyncOperation"]
    assert state(arm, "jit-1") == "Deleting"
    assert send(client, "GET", location).status_code == 202
    assert send(client, "GET", response.headers["Azure-AsyncOperation"]).json() == {
        "status": "InProgress"}
    arm.wait_idle()
    assert send(client, "GET", location).status_code == 204
    assert send(client, "GET", response.headers["Azure-AsyncOperation"]).json() == {
        "status": "Succeeded"}
    assert state(arm, "jit-1") is None


# -- validation ---------------------------------------------------------------------------------


def test_same_priority_and_direction_is_a_conflict(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    arm.add_rule(SUBSCRIPTION, RG, NSG, "allow-ssh", rule_properties(100, 22))

    with pytest.raises(HttpResponseError) as excinfo:
        create(client, "jit-1", priority=100)

    assert error_of(excinfo) == (
        400, "SecurityRuleConflict",
        "Security rule allow-ssh conflicts with rule jit-1. Rules cannot have the same Priority "
        "and Direction. To learn more, see aka.ms/nsgrules.")
    assert [r["name"] for r in arm.rules(SUBSCRIPTION, RG, NSG)] == ["allow-ssh"]
    outbound = {"properties": rule_properties(100, 22, direction="Outbound")}
    client.security_rules.begin_create_or_update(RG, NSG, "jit-out", outbound).result()
    assert state(arm, "jit-out") == "Succeeded"


@pytest.mark.parametrize("priority", [99, 4097, 0])
def test_priority_outside_100_to_4096_is_refused(
        arm: ArmEmulator, client: NetworkManagementClient, priority: int) -> None:
    with pytest.raises(HttpResponseError) as excinfo:
        create(client, "jit-1", priority=priority)

    assert error_of(excinfo) == (
        400, "SecurityRuleInvalidPriority",
        f"Security rule has invalid Priority. Value provided: {priority} Allowed range 100-4096.")
    assert arm.rules(SUBSCRIPTION, RG, NSG) == []


@pytest.mark.parametrize("priority", [100, 4096])
def test_priority_bounds_are_accepted(client: NetworkManagementClient, arm: ArmEmulator,
                                      priority: int) -> None:
    assert create(client, "jit-1", priority=priority).priority == priority


@pytest.mark.parametrize("name", ["jit 1", "-jit", "jit-", "jit.", "x" * 81, "jit/1?"])
def test_invalid_names_are_refused(arm: ArmEmulator, client: NetworkManagementClient,
                                   name: str) -> None:
    with pytest.raises(HttpResponseError) as excinfo:
        create(client, name)

    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "InvalidResourceName")
    assert message.startswith(f"Resource name {name} is invalid. The name can be up to 80 ")
    assert arm.rules(SUBSCRIPTION, RG, NSG) == []


@pytest.mark.parametrize("name", ["jit-1", "x" * 80, "jit_", "J.i-t_9", "9jit"])
def test_valid_names_are_accepted(client: NetworkManagementClient, arm: ArmEmulator,
                                  name: str) -> None:
    assert create(client, name).name == name


def test_a_flat_body_without_properties_is_refused(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    flat = rule_properties(100, 22, CLIENT_IP, VM_IP)

    response = send(client, "PUT", rule_url(arm, "jit-1"), flat)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidRequestFormat"
    assert "'properties' is missing" in error["message"]
    assert error["details"][0]["code"] == "MissingJsonProperty"
    assert arm.rules(SUBSCRIPTION, RG, NSG) == []


BASE = rule_properties(100, 22, CLIENT_IP, VM_IP)


@pytest.mark.parametrize(("change", "code", "message"), [
    ({"protocol": "Foo"}, "SecurityRuleInvalidProtocol",
     "Security rule has invalid Protocol. Value provided: Foo Allowed values: "
     "Icmp,Tcp,Udp,Esp,Ah,*."),
    ({"protocol": None}, "SecurityRuleParameterMissing",
     "Required security rule parameter Protocol is missing for security rule with Id: "),
    ({"access": "Permit"}, "InvalidRequestFormat", "Cannot parse the request."),
    ({"direction": None}, "SecurityRuleParameterMissing",
     "Required security rule parameter Direction is missing"),
    ({"priority": "high"}, "InvalidRequestFormat", "Cannot parse the request."),
    ({"priority": None}, "SecurityRuleInvalidPriority",
     "Security rule has invalid Priority. Value provided: 0 Allowed range 100-4096."),
    ({"destinationPortRange": "70000"}, "SecurityRuleInvalidPortRange",
     "Security rule has invalid Port range. Value provided: 70000."),
    ({"destinationPortRange": "30-20"}, "SecurityRuleInvalidPortRange",
     "Security rule has invalid Port range. Value provided: 30-20."),
    ({"sourcePortRange": None}, "SecurityRuleParameterMissing",
     "Required security rule parameter SourcePortRange is missing"),
    ({"sourceAddressPrefix": "any"}, "SecurityRuleInvalidAddressPrefix",
     "Security rule /subscriptions/"),
    ({"sourceAddressPrefix": None}, "SecurityRuleParametersMissing",
     "Required security rule parameters are missing for security rule with Id: "),
    ({"sourceAddressPrefixes": ["198.51.100.0/24"]}, "InvalidRequestFormat",
     "Security rule /subscriptions/"),
])
def test_rule_fields_are_validated(arm: ArmEmulator, client: NetworkManagementClient,
                                   change: dict[str, Any], code: str, message: str) -> None:
    properties = {k: v for k, v in {**BASE, **change}.items() if v is not None}

    with pytest.raises(HttpResponseError) as excinfo:
        client.security_rules.begin_create_or_update(
            RG, NSG, "jit-1", {"properties": properties}).result()

    status, got_code, got_message = error_of(excinfo)
    assert (status, got_code) == (400, code)
    assert got_message.startswith(message)
    assert arm.rules(SUBSCRIPTION, RG, NSG) == []


def test_accepted_spellings_come_back_canonical(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    properties = {**BASE, "protocol": "tcp", "access": "allow", "direction": "inbound",
                  "sourceAddressPrefix": None,
                  "sourceAddressPrefixes": ["Internet", "2001:db8::/32"],
                  "destinationPortRange": "8000-8080", "priority": "150"}
    properties = {k: v for k, v in properties.items() if v is not None}

    rule = client.security_rules.begin_create_or_update(
        RG, NSG, "jit-1", {"properties": properties}).result()

    assert (rule.protocol, rule.access, rule.direction) == ("Tcp", "Allow", "Inbound")
    assert rule.source_address_prefix is None
    assert rule.source_address_prefixes == ["Internet", "2001:db8::/32"]
    assert rule.priority == 150


def test_the_thousand_rule_limit(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    for index in range(1000):
        arm.add_rule(SUBSCRIPTION, RG, NSG, f"seed-{index}", rule_properties(100 + index, 22))

    with pytest.raises(HttpResponseError) as excinfo:
        create(client, "jit-1001", priority=2000)

    assert error_of(excinfo) == (400, "SecurityRuleCountLimitReached",
                                 "A security group cannot have more than 1000 security rules.")
    assert len(arm.rules(SUBSCRIPTION, RG, NSG)) == 1000
    assert create(client, "seed-0", priority=100, port=2222).destination_port_range == "2222"


# -- authentication, api-version, routing ------------------------------------------------------


def test_requests_without_a_bearer_token_get_401(arm: ArmEmulator) -> None:
    url = f"{nsg_url(arm)}?api-version={API}"

    missing = requests.get(url, verify=arm.ca_bundle, timeout=5)
    malformed = requests.get(url, verify=arm.ca_bundle, timeout=5,
                             headers={"Authorization": "Basic dXNlcjpwYXNz"})
    accepted = requests.get(url, verify=arm.ca_bundle, timeout=5,
                            headers={"Authorization": "Bearer anything"})

    assert missing.status_code == 401
    assert missing.json()["error"] == {
        "code": "AuthenticationFailed",
        "message": "Authentication failed. The 'Authorization' header is missing.",
        "details": []}
    assert missing.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    assert malformed.status_code == 401
    assert "invalid format" in malformed.json()["error"]["message"]
    assert accepted.status_code == 200
    assert [c.status for c in arm.calls] == [401, 401, 200]


def test_the_sdk_sends_its_token_for_the_arm_scope(arm: ArmEmulator) -> None:
    credential = StaticTokenCredential()
    client = network_client(arm, credential=credential)

    assert client.network_security_groups.get(RG, NSG).name == NSG
    assert credential.scopes == [("https://management.azure.com/.default",)]


def test_the_api_version_is_required_but_any_is_accepted(arm: ArmEmulator) -> None:
    bearer = {"Authorization": "Bearer x"}

    without = requests.get(nsg_url(arm), headers=bearer, verify=arm.ca_bundle, timeout=5)
    odd = requests.get(f"{nsg_url(arm)}?api-version=1999-01-01-preview", headers=bearer,
                       verify=arm.ca_bundle, timeout=5)

    assert without.status_code == 400
    assert without.json()["error"]["code"] == "MissingApiVersionParameter"
    assert without.json()["error"]["message"] == (
        "The api-version query parameter (?api-version=) is required for all requests.")
    assert odd.status_code == 200


def test_provider_and_type_segments_and_names_are_case_insensitive(
        arm: ArmEmulator, client: NetworkManagementClient) -> None:
    create(client, "jit-1")
    url = (f"{arm.url}/SUBSCRIPTIONS/{SUBSCRIPTION}/resourcegroups/RG-APP/providers/"
           f"microsoft.network/NETWORKSECURITYGROUPS/Nsg-App/SecurityRules/JIT-1?api-version={API}")

    response = send(client, "GET", url)

    assert response.status_code == 200
    assert response.json()["name"] == "jit-1"


def test_only_tls_with_the_emulator_ca(arm: ArmEmulator) -> None:
    assert arm.url.startswith("https://127.0.0.1:")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{nsg_url(arm)}?api-version={API}", timeout=5)
    localhost = arm.url.replace("127.0.0.1", "localhost")
    response = requests.get(f"{localhost}/subscriptions?api-version={API}", timeout=5,
                            verify=arm.ca_bundle, headers={"Authorization": "Bearer x"})
    assert response.status_code == 404  # reached it over verified TLS: no such route


def test_the_ca_bundle_goes_away_with_the_emulator() -> None:
    with ArmEmulator() as arm:
        bundle = Path(arm.ca_bundle)
        assert bundle.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not bundle.exists()


def test_missing_resource_group_and_nsg(arm: ArmEmulator, client: NetworkManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as no_group:
        client.network_security_groups.get("rg-nowhere", NSG)
    with pytest.raises(ResourceNotFoundError) as no_nsg:
        client.network_security_groups.get(RG, "nsg-nowhere")
    with pytest.raises(ResourceNotFoundError) as no_parent:
        create_in(client, "nsg-nowhere")

    assert error_of(no_group) == (404, "ResourceGroupNotFound",
                                  "Resource group 'rg-nowhere' could not be found.")
    assert error_of(no_nsg)[1] == "ResourceNotFound"
    assert error_of(no_nsg)[2].startswith(
        "The Resource 'Microsoft.Network/networkSecurityGroups/nsg-nowhere' under resource "
        f"group '{RG}' was not found.")
    assert error_of(no_parent)[1] == "ResourceNotFound"


def create_in(client: NetworkManagementClient, nsg: str) -> Any:
    return client.security_rules.begin_create_or_update(RG, nsg, "jit-1", jit_rule()).result()
