"""The ARM emulator through the real azure-mgmt-network SDK, over HTTPS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.network import NetworkManagementClient

from tests.fakes.arm_emulator import (
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
