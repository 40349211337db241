"""The ARM emulator through the real azure-mgmt-network SDK, over HTTPS."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.network import NetworkManagementClient

from tests.fakes.arm import (
    DEFAULT_RULES,
    NIC_READ,
    NSG_READ,
    NSG_WRITE,
    OPERATION_READ,
    RULE_DELETE,
    RULE_READ,
    RULE_WRITE,
    SUBNET_READ,
    VNET_READ,
    ArmEmulator,
    rule_properties,
)
from tests.support.azure import SUBSCRIPTION, StaticTokenCredential, network_client

RG, NSG = "rg-app", "nsg-app"
API = "2024-07-01"
CLIENT_IP, VM_IP = "203.0.113.7", "10.0.0.4"


@pytest.fixture
def arm(arm_emulator: ArmEmulator) -> ArmEmulator:
    """The emulator with one empty NSG, RG/NSG, in SUBSCRIPTION."""
    arm_emulator.add_nsg(SUBSCRIPTION, RG, NSG)
    return arm_emulator


@pytest.fixture
def client(arm_emulator: ArmEmulator) -> NetworkManagementClient:
    return network_client(arm_emulator, retry_backoff_factor=0.01)


def jit_rule(priority: int = 100, port: int = 22, source: str = CLIENT_IP) -> dict[str, Any]:
    return {"properties": rule_properties(priority, port, source, VM_IP)}


def create(client: NetworkManagementClient, name: str, priority: int = 100, port: int = 22,
           **kwargs: Any) -> Any:
    return client.security_rules.begin_create_or_update(
        RG, NSG, name, jit_rule(priority, port), **kwargs).result()


def nsg_url(arm: ArmEmulator, nsg: str = NSG, rg: str = RG) -> str:
    return (f"{arm.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/"
            f"Microsoft.Network/networkSecurityGroups/{nsg}")


def rule_url(arm: ArmEmulator, name: str, nsg: str = NSG) -> str:
    return f"{nsg_url(arm, nsg)}/securityRules/{name}?api-version={API}"


def send(client: NetworkManagementClient, method: str, url: str, json: Any = None,
         headers: dict[str, str] | None = None) -> HttpResponse:
    """A raw request through the client's pipeline (token, TLS, retries), no polling."""
    return client.send_request(HttpRequest(method, url, json=json, headers=headers))


def error_of(excinfo: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int | None, str, str]:
    error = excinfo.value.error
    assert error is not None
    return excinfo.value.status_code, error.code, error.message


def state(arm: ArmEmulator, name: str) -> str | None:
    rule = arm.rule(SUBSCRIPTION, RG, NSG, name)
    return rule["properties"]["provisioningState"] if rule else None


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


# -- the network around the NSGs: virtual networks, subnets, NICs (read-only) -------------------

VNET, SUBNET_APP, SUBNET_DB = "vnet-app", "app", "db"


def vm_id(name: str, rg: str = RG) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/Microsoft.Compute/"
            f"virtualMachines/{name}")


@dataclass(frozen=True)
class Network:
    """What `network` seeded: NSG ids, subnet ids and NIC ids."""

    nsg_app: str
    nsg_db: str
    subnet_app: str
    subnet_db: str
    nic_web: str
    nic_db: str
    nic_spare: str


@pytest.fixture
def network(arm_emulator: ArmEmulator) -> Network:
    """RG: vnet-app 10.0.0.0/16 with subnets app (behind nsg-app) and db (no NSG); NICs web-nic
    (VM web, no NSG of its own) in app, db-nic (VM db, behind nsg-db) in db; in rg-other a
    spare NIC attached to no VM."""
    arm = arm_emulator
    nsg_app = arm.add_nsg(SUBSCRIPTION, RG, NSG)
    nsg_db = arm.add_nsg(SUBSCRIPTION, RG, "nsg-db")
    arm.add_vnet(SUBSCRIPTION, RG, VNET, "10.0.0.0/16")
    subnet_app = arm.add_subnet(SUBSCRIPTION, RG, VNET, SUBNET_APP, "10.0.1.0/24", nsg_id=nsg_app)
    subnet_db = arm.add_subnet(SUBSCRIPTION, RG, VNET, SUBNET_DB, "10.0.2.0/24")
    nic_web = arm.add_nic(SUBSCRIPTION, RG, "web-nic", subnet_app, "10.0.1.4", vm_id=vm_id("web"))
    nic_db = arm.add_nic(SUBSCRIPTION, RG, "db-nic", subnet_db, "10.0.2.4", nsg_id=nsg_db,
                         vm_id=vm_id("db"))
    nic_spare = arm.add_nic(SUBSCRIPTION, "rg-other", "spare-nic", subnet_db, "10.0.2.9")
    return Network(nsg_app, nsg_db, subnet_app, subnet_db, nic_web, nic_db, nic_spare)


def test_nics_are_listed_per_subscription_and_group(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    everywhere = list(client.network_interfaces.list_all())
    in_rg = list(client.network_interfaces.list(RG))
    in_other = list(client.network_interfaces.list("rg-other"))

    assert [nic.id for nic in everywhere] == [network.nic_web, network.nic_db, network.nic_spare]
    assert [nic.name for nic in in_rg] == ["web-nic", "db-nic"]
    assert [nic.name for nic in in_other] == ["spare-nic"]
    assert [c.status for c in arm_emulator.calls_to(NIC_READ)] == [200, 200, 200]
    assert arm_emulator.calls[0].path == (f"/subscriptions/{SUBSCRIPTION}/providers/"
                                          "Microsoft.Network/networkInterfaces")


def test_a_nic_names_its_vm_nsg_subnet_and_address(
        network: Network, client: NetworkManagementClient) -> None:
    db = client.network_interfaces.get(RG, "db-nic")
    web = client.network_interfaces.get(RG, "web-nic")
    spare = client.network_interfaces.get("rg-other", "spare-nic")

    assert db.id == network.nic_db
    assert db.type == "Microsoft.Network/networkInterfaces"
    assert db.provisioning_state == "Succeeded"
    assert db.virtual_machine.id == vm_id("db")
    assert db.network_security_group.id == network.nsg_db
    assert db.primary is True
    (configuration,) = db.ip_configurations
    assert configuration.id == f"{network.nic_db}/ipConfigurations/ipconfig1"
    assert configuration.private_ip_address == "10.0.2.4"
    assert configuration.subnet.id == network.subnet_db
    assert configuration.primary is True
    assert web.network_security_group is None  # its subnet's NSG is on the subnet, not here
    assert web.virtual_machine.id == vm_id("web")
    assert spare.virtual_machine is None and spare.primary is None


def test_a_vms_first_nic_is_its_primary(network: Network, arm_emulator: ArmEmulator,
                                        client: NetworkManagementClient) -> None:
    arm_emulator.add_nic(SUBSCRIPTION, RG, "db-nic-2", network.subnet_db, "10.0.2.5",
                         vm_id=vm_id("db"))
    arm_emulator.add_nic(SUBSCRIPTION, RG, "db-nic", network.subnet_db, "10.0.2.4",
                         vm_id=vm_id("db"))  # replaced: still the first

    assert client.network_interfaces.get(RG, "db-nic").primary is True
    assert client.network_interfaces.get(RG, "db-nic-2").primary is False


def test_virtual_networks_carry_their_subnets_inline(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.add_vnet(SUBSCRIPTION, "rg-other", "vnet-other", "192.168.0.0/24",
                          location="North Europe")

    everywhere = list(client.virtual_networks.list_all())
    in_rg = list(client.virtual_networks.list(RG))
    vnet = client.virtual_networks.get(RG, VNET)

    assert [v.name for v in everywhere] == [VNET, "vnet-other"]
    assert [v.name for v in in_rg] == [VNET]
    assert everywhere[1].location == "northeurope"
    assert everywhere[1].subnets == []
    assert vnet.type == "Microsoft.Network/virtualNetworks"
    assert vnet.address_space.address_prefixes == ["10.0.0.0/16"]
    app, db = vnet.subnets
    assert (app.id, app.address_prefix) == (network.subnet_app, "10.0.1.0/24")
    assert app.network_security_group.id == network.nsg_app
    assert [c.id for c in app.ip_configurations] == [
        f"{network.nic_web}/ipConfigurations/ipconfig1"]
    assert db.network_security_group is None
    assert [c.id for c in db.ip_configurations] == [
        f"{network.nic_db}/ipConfigurations/ipconfig1",
        f"{network.nic_spare}/ipConfigurations/ipconfig1"]
    assert {c.operation for c in arm_emulator.calls} == {VNET_READ}


def test_subnets_are_listed_and_fetched(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    listed = list(client.subnets.list(RG, VNET))
    app = client.subnets.get(RG, VNET, SUBNET_APP)

    assert [(s.name, s.address_prefix) for s in listed] == [
        (SUBNET_APP, "10.0.1.0/24"), (SUBNET_DB, "10.0.2.0/24")]
    assert app.id == network.subnet_app
    assert app.type == "Microsoft.Network/virtualNetworks/subnets"
    assert app.network_security_group.id == network.nsg_app
    assert app.provisioning_state == "Succeeded"
    assert [c.operation for c in arm_emulator.calls] == [SUBNET_READ, SUBNET_READ]


def test_nsgs_are_listed_per_subscription_with_what_they_protect(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.add_nsg(SUBSCRIPTION, "rg-other", "nsg-other",
                         rules=[{"name": "ssh", "properties": rule_properties(100, 22)}])
    arm_emulator.add_nsg("11111111-1111-1111-1111-111111111111", RG, "elsewhere")

    groups = list(client.network_security_groups.list_all())

    assert [g.id for g in groups] == [
        network.nsg_app, network.nsg_db,
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-other/providers/Microsoft.Network/"
        "networkSecurityGroups/nsg-other"]
    app, db, other = groups
    assert [s.id for s in app.subnets] == [network.subnet_app]
    assert app.network_interfaces is None
    assert [n.id for n in db.network_interfaces] == [network.nic_db]
    assert [r.name for r in other.security_rules] == ["ssh"]
    assert len(other.default_security_rules) == len(DEFAULT_RULES)
    assert arm_emulator.calls_to(NSG_READ)[0].path == (
        f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/networkSecurityGroups")


def test_network_lists_follow_next_link_when_paged(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.page_size = 2
    for index in range(3):
        arm_emulator.add_nic(SUBSCRIPTION, RG, f"extra-{index}", network.subnet_db,
                             f"10.0.2.{20 + index}")
        arm_emulator.add_subnet(SUBSCRIPTION, RG, VNET, f"extra-{index}", f"10.0.{10 + index}.0/24")
        arm_emulator.add_vnet(SUBSCRIPTION, RG, f"vnet-{index}")
        arm_emulator.add_nsg(SUBSCRIPTION, RG, f"nsg-{index}")

    nics = [nic.name for nic in client.network_interfaces.list_all()]
    nics_in_rg = [nic.name for nic in client.network_interfaces.list(RG)]
    subnets = [subnet.name for subnet in client.subnets.list(RG, VNET)]
    vnets = [vnet.name for vnet in client.virtual_networks.list_all()]
    nsgs = [nsg.name for nsg in client.network_security_groups.list_all()]

    assert nics == ["web-nic", "db-nic", "extra-0", "extra-1", "extra-2", "spare-nic"]
    assert nics_in_rg == nics[:-1]
    assert subnets == [SUBNET_APP, SUBNET_DB, "extra-0", "extra-1", "extra-2"]
    assert vnets == [VNET, "vnet-0", "vnet-1", "vnet-2"]
    assert nsgs == [NSG, "nsg-db", "nsg-0", "nsg-1", "nsg-2"]
    tokens = [c.query.get("$skiptoken") for c in arm_emulator.calls]
    assert tokens == [None, "2", "4", None, "2", "4", None, "2", "4", None, "2", None, "2", "4"]
    assert all(c.query["api-version"] for c in arm_emulator.calls)


def test_missing_network_resources_answer_404(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as no_nic:
        client.network_interfaces.get(RG, "nic-nowhere")
    with pytest.raises(ResourceNotFoundError) as no_vnet:
        client.virtual_networks.get(RG, "vnet-nowhere")
    with pytest.raises(ResourceNotFoundError) as no_parent:
        client.subnets.get(RG, "vnet-nowhere", SUBNET_APP)
    with pytest.raises(ResourceNotFoundError) as no_subnet:
        client.subnets.get(RG, VNET, "subnet-nowhere")
    with pytest.raises(ResourceNotFoundError) as no_group:
        list(client.network_interfaces.list("rg-nowhere"))
    with pytest.raises(ResourceNotFoundError) as no_subscription:
        list(network_client(arm_emulator, "22222222-2222-2222-2222-222222222222")
             .network_interfaces.list_all())

    assert error_of(no_nic)[:2] == (404, "ResourceNotFound")
    assert error_of(no_nic)[2].startswith(
        f"The Resource 'Microsoft.Network/networkInterfaces/nic-nowhere' under resource group "
        f"'{RG}' was not found.")
    assert error_of(no_vnet)[2].startswith(
        "The Resource 'Microsoft.Network/virtualNetworks/vnet-nowhere' under")
    assert error_of(no_parent)[1] == "ResourceNotFound"
    assert error_of(no_subnet) == (
        404, "NotFound", f"Resource {network.subnet_app.rsplit('/', 1)[0]}/subnet-nowhere "
                         "not found.")
    assert error_of(no_group)[1] == "ResourceGroupNotFound"
    assert error_of(no_subscription) == (
        404, "SubscriptionNotFound",
        "The subscription '22222222-2222-2222-2222-222222222222' could not be found.")


def test_network_resources_need_a_token_and_an_api_version_and_are_read_only(
        network: Network, arm_emulator: ArmEmulator) -> None:
    base = f"{arm_emulator.url}/subscriptions/{SUBSCRIPTION}"
    urls = [f"{base}/providers/Microsoft.Network/networkInterfaces",
            f"{base}/providers/Microsoft.Network/virtualNetworks",
            f"{base}/providers/Microsoft.Network/networkSecurityGroups",
            f"{base}/resourceGroups/{RG}/providers/Microsoft.Network/networkInterfaces/db-nic",
            f"{base}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/{VNET}"
            f"/subnets/{SUBNET_APP}"]
    token = {"Authorization": "Bearer x"}

    def get(url: str, **kwargs: Any) -> int:
        return requests.get(url, verify=arm_emulator.ca_bundle, timeout=5, **kwargs).status_code

    assert [get(f"{url}?api-version={API}") for url in urls] == [401] * 5
    assert [get(url, headers=token) for url in urls] == [400] * 5
    assert [get(f"{url}?api-version={API}", headers=token) for url in urls] == [200] * 5
    put = requests.put(f"{urls[3]}?api-version={API}", json={"location": "westeurope"},
                       verify=arm_emulator.ca_bundle, timeout=5, headers=token)
    assert put.status_code == 405
    assert put.json()["error"]["code"] == "MethodNotAllowed"


def test_seeding_the_network_refuses_what_arm_would(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm = arm_emulator
    with pytest.raises(ValueError, match="outside virtual network"):
        arm.add_subnet(SUBSCRIPTION, RG, VNET, "wide", "10.1.0.0/24")
    with pytest.raises(ValueError, match="no network security group"):
        arm.add_subnet(SUBSCRIPTION, RG, VNET, "typo", "10.0.9.0/24",
                       nsg_id=network.nsg_app + "-typo")
    with pytest.raises(KeyError):
        arm.add_subnet(SUBSCRIPTION, RG, "vnet-nowhere", "s", "10.0.9.0/24")
    with pytest.raises(ValueError, match="outside subnet"):
        arm.add_nic(SUBSCRIPTION, RG, "nic", network.subnet_app, "10.0.2.4")
    with pytest.raises(ValueError, match="no subnet"):
        arm.add_nic(SUBSCRIPTION, RG, "nic", network.subnet_app + "-typo", "10.0.1.5")
    with pytest.raises(ValueError, match="no network security group"):
        arm.add_nic(SUBSCRIPTION, RG, "nic", network.subnet_app, "10.0.1.5", nsg_id=network.nic_db)

    assert [s.name for s in client.subnets.list(RG, VNET)] == [SUBNET_APP, SUBNET_DB]
    assert [n.name for n in client.network_interfaces.list(RG)] == ["web-nic", "db-nic"]
