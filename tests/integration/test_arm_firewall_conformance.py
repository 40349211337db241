"""The ARM emulator's firewalls answer like Azure did: recorded traffic replayed, vendor
examples compared (tests/fakes/reference/azure-firewall/).

Two recordings of the Azure CLI against real ARM are replayed request by request, under the
recorded names: classic rules (firewall create, network-rule add, NAT-rule add: GET then PUT of
the whole firewall, then delete) and a firewall policy's rule collection group (create, filter
collection, NAT collections). For every replayed interaction the status, the headers that
matter (where to poll, the etag) and the JSON body must match; bodies are compared whole with
etags made placeholders. What the emulator does not serve is seeded instead of replayed: the
resource groups (Microsoft.Resources), the IP group and the policy's own PUT.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.fakes.arm import ArmEmulator
from tests.support.conformance import assert_contains

REFERENCE = Path(__file__).parents[1] / "fakes" / "reference" / "azure-firewall"
CLASSIC = REFERENCE / "cli-recording-firewall-classic-rules.yaml"
POLICY = REFERENCE / "cli-recording-firewall-policy-rcg.yaml"
SPEC = REFERENCE / "spec"
ARM = "https://management.azure.com"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"  # as scrubbed in the recordings
CLASSIC_GROUP = "cli_test_azure_firewall_rules000001"
POLICY_GROUP, POLICY_NAME = "cli_test_azure_firewall_policy000001", "myclipolicy"
# Not replayed: 0 reads the resource group (Microsoft.Resources, not emulated).
CLASSIC_SKIPPED = {0}
# Not replayed: 0 the resource group, 1-3 an IP group (create, poll, read), 4-5 the policy's
# PUT and its poll; the policy is seeded with the recorded dnsSettings instead.
POLICY_SKIPPED = {0, 1, 2, 3, 4, 5}
# The headers whose presence is compared; others (request ids, quotas, edge headers) vary.
# Content-Type is checked on answers with a body only: ARM also sent one on the final empty
# 204 of the delete's operationResults, which the emulator does not imitate.
MATTERING = ("azure-asyncoperation", "azure-asyncnotification", "location", "etag")


@dataclass(frozen=True)
class Exchange:
    index: int
    method: str
    path: str
    recorded_status: int
    recorded_headers: dict[str, str]
    recorded_body: str
    status: int
    headers: dict[str, str]
    body: str


def _interactions(recording: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(recording.read_text())["interactions"]


def _replay(emulator: ArmEmulator, recording: Path, skipped: set[int]) -> Iterator[Exchange]:
    seen: dict[str, str] = {}  # an operation URL ARM handed out -> the emulator's
    with requests.Session() as session:
        session.trust_env = False  # else REQUESTS_CA_BUNDLE would override `verify`
        session.verify = emulator.ca_bundle
        for index, interaction in enumerate(_interactions(recording)):
            if index in skipped:
                continue
            request, response = interaction["request"], interaction["response"]
            uri = seen.get(request["uri"]) or request["uri"].replace(ARM, emulator.url)
            assert uri.startswith(emulator.url), f"interaction {index}: unknown operation URL"
            headers = {"Authorization": "Bearer recorded-traffic",
                       "Content-Type": "application/json"}
            answer = session.request(request["method"], uri, data=request["body"],
                                     headers=headers, timeout=10)
            recorded_headers = {k.lower(): v[0] for k, v in response["headers"].items()}
            for name in ("azure-asyncoperation", "location"):
                if name in recorded_headers and name in answer.headers:
                    seen[recorded_headers[name]] = answer.headers[name]
            yield Exchange(index, request["method"], request["uri"].split("?")[0],
                           response["status"]["code"], recorded_headers,
                           response["body"]["string"] or "", answer.status_code,
                           {k.lower(): v for k, v in answer.headers.items()}, answer.text)


@pytest.fixture(scope="module")
def classic() -> list[Exchange]:
    with ArmEmulator() as emulator:
        emulator.add_resource_group(SUBSCRIPTION, CLASSIC_GROUP, "westus")
        return list(_replay(emulator, CLASSIC, CLASSIC_SKIPPED))


@pytest.fixture(scope="module")
def policy() -> list[Exchange]:
    with ArmEmulator() as emulator:
        emulator.add_firewall_policy(SUBSCRIPTION, POLICY_GROUP, POLICY_NAME, "westus2", {
            "dnsSettings": {"servers": ["10.0.0.2", "10.0.0.3"], "enableProxy": True}})
        return list(_replay(emulator, POLICY, POLICY_SKIPPED))


def _normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: "<etag>" if key == "etag" else _normalised(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def _kind(exchange: Exchange) -> str:
    path = exchange.path
    if "perations/" in path or "/operationResults/" in path:
        return "poll"
    return f"{exchange.method} {path.rsplit('/', 2)[-2]}"


def _check(exchanges: list[Exchange]) -> None:
    for exchange in exchanges:
        where = f"interaction {exchange.index} ({_kind(exchange)})"
        assert exchange.status == exchange.recorded_status, where
        for name in MATTERING:
            assert (name in exchange.headers) == (name in exchange.recorded_headers), \
                f"{where}: header {name}"
        if not exchange.recorded_body:
            assert exchange.body == "", where
            continue
        assert exchange.headers["content-type"] == exchange.recorded_headers["content-type"]
        assert _normalised(json.loads(exchange.body)) == \
            _normalised(json.loads(exchange.recorded_body)), where


# -- classic rules --------------------------------------------------------------------------


def test_every_classic_interaction_is_replayed(classic: list[Exchange]) -> None:
    assert [(e.index, _kind(e)) for e in classic] == [
        (1, "PUT azureFirewalls"), (2, "poll"), (3, "GET azureFirewalls"),
        (4, "GET azureFirewalls"), (5, "PUT azureFirewalls"), (6, "poll"),
        (7, "GET azureFirewalls"), (8, "GET azureFirewalls"), (9, "PUT azureFirewalls"),
        (10, "poll"), (11, "GET azureFirewalls"), (12, "DELETE azureFirewalls"),
        (13, "poll"), (14, "poll")]


def test_classic_statuses_headers_and_bodies_match(classic: list[Exchange]) -> None:
    _check(classic)


def test_classic_etags_follow_the_recorded_pattern(classic: list[Exchange]) -> None:
    """A weak etag that changes when a write is accepted and when it ends; the header, the
    body and every collection carry the same one."""
    by_index = {e.index: e for e in classic}
    put, after = json.loads(by_index[9].body), json.loads(by_index[11].body)
    assert put["etag"] != after["etag"]
    assert after["etag"].startswith('W/"')
    assert by_index[11].headers["etag"] == after["etag"]
    collections = after["properties"]["natRuleCollections"] + \
        after["properties"]["networkRuleCollections"]
    assert {item["etag"] for item in collections} == {after["etag"]}
    assert len({json.loads(by_index[i].body)["etag"] for i in (1, 3, 5, 7, 9, 11)}) == 6


# -- firewall policy rule collection groups -------------------------------------------------


def test_every_policy_interaction_is_replayed(policy: list[Exchange]) -> None:
    kinds = [_kind(e) for e in policy]
    assert kinds[0] == "GET firewallPolicies"
    assert kinds.count("PUT ruleCollectionGroups") == 5
    assert kinds.count("poll") == 5
    assert [e.index for e in policy] == list(range(6, 26))


def test_policy_statuses_headers_and_bodies_match(policy: list[Exchange]) -> None:
    _check(policy)


def test_group_etags_are_bare_guids_that_change_per_put_only(policy: list[Exchange]) -> None:
    by_index = {e.index: e for e in policy}
    puts = [json.loads(by_index[i].body)["etag"] for i in (7, 11, 15, 19, 23)]
    assert len(set(puts)) == 5
    assert not any(etag.startswith("W/") for etag in puts)
    final = by_index[25]
    assert json.loads(final.body)["etag"] == puts[-1]
    assert final.headers["etag"] == f'"{puts[-1]}"'


def test_a_nat_action_sent_as_dnat_is_echoed_as_dnat(policy: list[Exchange]) -> None:
    recording = _interactions(POLICY)
    sent = json.loads(recording[19]["request"]["body"])["properties"]["ruleCollections"][-1]
    answered = json.loads({e.index: e for e in policy}[19].body)
    assert sent["action"]["type"] == "DNAT"
    assert answered["properties"]["ruleCollections"][-1]["action"]["type"] == "Dnat"


# -- the vendor examples (abridged: theirs must be contained in the emulator's answer) ------


def _example(name: str) -> dict[str, Any]:
    return json.loads((SPEC / f"{name}.json").read_text())


def _assert_contains(expected: Any, actual: Any, path: str = "$") -> None:
    # The examples say "DNAT"; recorded ARM answers "Dnat" (the emulator follows it).
    assert_contains(expected, actual, path, case_blind=(".action.type",))


@pytest.fixture
def session(arm_emulator: ArmEmulator) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        session.verify = arm_emulator.ca_bundle
        session.headers["Authorization"] = "Bearer spec-examples"
        yield session


def _firewall_url(emulator: ArmEmulator, parameters: dict[str, Any]) -> str:
    return (f"{emulator.url}/subscriptions/{parameters['subscriptionId']}/resourceGroups/"
            f"{parameters['resourceGroupName']}/providers/Microsoft.Network/azureFirewalls/"
            f"{parameters['azureFirewallName']}?api-version={parameters['api-version']}")


def _group_url(emulator: ArmEmulator, parameters: dict[str, Any]) -> str:
    return (f"{emulator.url}/subscriptions/{parameters['subscriptionId']}/resourceGroups/"
            f"{parameters['resourceGroupName']}/providers/Microsoft.Network/firewallPolicies/"
            f"{parameters['firewallPolicyName']}/ruleCollectionGroups/"
            f"{parameters['ruleCollectionGroupName']}?api-version={parameters['api-version']}")


def test_firewall_put_example(arm_emulator: ArmEmulator, session: requests.Session) -> None:
    """Its NAT and network collections share priority 112: priorities are unique per kind."""
    example = _example("AzureFirewallPut")
    parameters = example["parameters"]
    arm_emulator.add_resource_group(parameters["subscriptionId"], parameters["resourceGroupName"])

    created = session.put(_firewall_url(arm_emulator, parameters), json=parameters["parameters"])
    arm_emulator.wait_idle()
    fetched = session.get(_firewall_url(arm_emulator, parameters))

    assert created.status_code == 201
    assert created.json()["properties"]["provisioningState"] == "Updating"
    expected = example["responses"]["200"]["body"]["properties"]
    for kind in ("natRuleCollections", "networkRuleCollections", "applicationRuleCollections"):
        wanted = [{k: v for k, v in item.items() if k != "etag"} for item in expected[kind]]
        _assert_contains(wanted, fetched.json()["properties"][kind], kind)
    assert fetched.json()["location"] == "westus"


def test_firewall_get_example(arm_emulator: ArmEmulator, session: requests.Session) -> None:
    example = _example("AzureFirewallGet")
    parameters = example["parameters"]
    expected = example["responses"]["200"]["body"]["properties"]
    arm_emulator.add_firewall(parameters["subscriptionId"], parameters["resourceGroupName"],
                              parameters["azureFirewallName"],
                              nat_collections=expected["natRuleCollections"])

    fetched = session.get(_firewall_url(arm_emulator, parameters))

    assert fetched.status_code == 200
    _assert_contains(expected["natRuleCollections"],
                     fetched.json()["properties"]["natRuleCollections"])


def test_rule_collection_group_put_example(arm_emulator: ArmEmulator,
                                           session: requests.Session) -> None:
    example = _example("FirewallPolicyNatRuleCollectionGroupPut")
    parameters = example["parameters"]
    arm_emulator.add_firewall_policy(parameters["subscriptionId"],
                                     parameters["resourceGroupName"],
                                     parameters["firewallPolicyName"])

    created = session.put(_group_url(arm_emulator, parameters), json=parameters["parameters"])
    updated = session.put(_group_url(arm_emulator, parameters), json=parameters["parameters"])
    fetched = session.get(_group_url(arm_emulator, parameters))

    assert (created.status_code, updated.status_code) == (201, 200)
    # The example's 201 body names the policy, not the group, and says "Succeeded"; the
    # 200 body is compared instead, and "Updating" is what the recording shows.
    assert created.json()["properties"]["provisioningState"] == "Updating"
    expected = {k: v for k, v in example["responses"]["200"]["body"].items() if k != "etag"}
    _assert_contains(expected, fetched.json())


def test_rule_collection_group_get_example(arm_emulator: ArmEmulator,
                                           session: requests.Session) -> None:
    example = _example("FirewallPolicyNatRuleCollectionGroupGet")
    parameters = example["parameters"]
    body = example["responses"]["200"]["body"]
    arm_emulator.add_firewall_policy(parameters["subscriptionId"],
                                     parameters["resourceGroupName"],
                                     parameters["firewallPolicyName"])
    arm_emulator.add_rule_collection_group(
        parameters["subscriptionId"], parameters["resourceGroupName"],
        parameters["firewallPolicyName"], parameters["ruleCollectionGroupName"],
        body["properties"]["priority"], body["properties"]["ruleCollections"])

    fetched = session.get(_group_url(arm_emulator, parameters))

    assert fetched.status_code == 200
    _assert_contains({k: v for k, v in body.items() if k != "etag"}, fetched.json())
