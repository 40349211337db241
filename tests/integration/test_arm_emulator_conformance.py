"""The ARM emulator answers like Azure did: recorded traffic replayed, vendor examples compared.

The recording (tests/fakes/reference/azure/, real ARM, api-version 2019-07-01) is replayed
request by request against the emulator, under the recorded names; for every interaction the
status, the set of header names and the JSON body must match. Bodies are compared whole, not
only their keys: the values must be equal too, except what is random per run (etags, the
resourceGuid, operation ids) and the subscription id (scrubbed to "" in the recording).
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

REFERENCE = Path(__file__).parents[1] / "fakes" / "reference" / "azure"
RECORDING = REFERENCE / "azure-sdk-python_test_network_security_groups.yaml"
EXAMPLES = REFERENCE / "spec-examples"
ARM = "https://management.azure.com"
SUBSCRIPTION = "00000000-0000-0000-0000-00000000c0de"
RECORDED_GROUP = "test_mgmt_network_test_network_security_groupsc575136b"

# Removed by the recorder before the cassette was saved (ReplayableTest.FILTER_HEADERS in
# Azure/azure-python-devtools: src/azure_devtools/scenario_tests/base.py). Real ARM sends them,
# so the emulator does: request/correlation/routing ids, Retry-After on asynchronous answers,
# the read quota on GETs. They may appear beyond the recorded names, and nothing else may.
SCRUBBED_BY_RECORDER = frozenset({
    "authorization", "client-request-id", "retry-after", "x-ms-client-request-id",
    "x-ms-correlation-request-id", "x-ms-ratelimit-remaining-subscription-reads",
    "x-ms-request-id", "x-ms-routing-request-id", "x-ms-gateway-service-instanceid",
    "x-ms-ratelimit-remaining-tenant-reads", "x-ms-served-by",
})
# The one recorded header not emulated: ARM sent its GET answers gzip-compressed and chunked;
# the emulator sends them uncompressed with Content-Length (the recorder also saved a
# content-length for them), and one answer cannot carry both. It keeps `vary: Accept-Encoding`.
IGNORED = frozenset({"transfer-encoding"})
# Interaction 5 is the subscription-wide NSG list: ~190 KB of other tests' NSGs, answered by
# ARM's regional fan-out (x-ms-original-request-ids, no server or x-ms-arm-service-request-id).
# Neither that body nor those headers can be replayed; the emulator's subscription-wide lists
# are checked through the SDK in test_arm_emulator.py.
NOT_EMULATED = {5}
VOLATILE_KEYS = frozenset({"etag", "resourceGuid"})


@dataclass(frozen=True)
class Exchange:
    index: int
    method: str
    uri: str
    recorded_status: int
    recorded_headers: frozenset[str]
    recorded_body: str
    status: int
    headers: dict[str, str]
    body: str

    @property
    def kind(self) -> str:
        path = self.uri.split("?")[0]
        if "/operations/" in path:
            return "poll"
        resource = "rule" if "/securityRules/" in path else (
            "rules" if path.endswith("/securityRules") else (
                "nsgs" if path.endswith("/networkSecurityGroups") else "nsg"))
        return f"{self.method} {resource}"


def _interactions() -> list[dict[str, Any]]:
    return yaml.safe_load(RECORDING.read_text())["interactions"]


def _emulated_url(uri: str, emulator: ArmEmulator, seen: dict[str, str]) -> str:
    if uri in seen:  # an operation URL ARM handed out: ask for the emulator's counterpart
        return seen[uri]
    return uri.replace(ARM, emulator.url).replace(
        "/subscriptions//", f"/subscriptions/{SUBSCRIPTION}/")


def _replay(emulator: ArmEmulator) -> Iterator[Exchange]:
    seen: dict[str, str] = {}
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE would override `verify`
    session.verify = emulator.ca_bundle
    for index, interaction in enumerate(_interactions()):
        request, response = interaction["request"], interaction["response"]
        if index in NOT_EMULATED:
            continue
        headers = {k: v[0] for k, v in request["headers"].items()
                   if k.lower() in ("accept", "content-type", "user-agent", "accept-language")}
        headers["Authorization"] = "Bearer recorded-traffic"
        body = request["body"].encode() if request["body"] else None
        answer = session.request(request["method"], _emulated_url(request["uri"], emulator, seen),
                                 data=body, headers=headers, timeout=10)
        for name in ("azure-asyncoperation", "location"):
            if name in response["headers"]:
                seen[response["headers"][name][0]] = answer.headers[name]
        yield Exchange(
            index=index, method=request["method"], uri=request["uri"],
            recorded_status=response["status"]["code"],
            recorded_headers=frozenset(k.lower() for k in response["headers"]),
            recorded_body=response["body"]["string"] or "",
            status=answer.status_code, headers=dict(answer.headers), body=answer.text)
    session.close()


@pytest.fixture(scope="module")
def exchanges() -> list[Exchange]:
    with ArmEmulator() as emulator:
        emulator.add_resource_group(SUBSCRIPTION, RECORDED_GROUP, "westus")
        return list(_replay(emulator))


def _normalised(value: Any) -> Any:
    """Random parts out: etags and GUIDs become placeholders; the subscription is made empty."""
    if isinstance(value, dict):
        return {key: (f"<{key}>" if key in VOLATILE_KEYS else _normalised(item))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    if isinstance(value, str):
        return value.replace(f"/subscriptions/{SUBSCRIPTION}/", "/subscriptions//")
    return value


def _keys(value: Any) -> Any:
    """The key structure: objects recursively, lists by their first element."""
    if isinstance(value, dict):
        return {key: _keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_keys(value[0])] if value else []
    return None


# -- the recorded traffic -----------------------------------------------------------------------


def test_every_recorded_interaction_is_replayed(exchanges: list[Exchange]) -> None:
    assert [(e.index, e.kind) for e in exchanges] == [
        (0, "PUT nsg"), (1, "poll"), (2, "GET nsg"), (3, "GET nsg"), (4, "GET nsgs"),
        (6, "PUT rule"), (7, "poll"), (8, "GET rule"), (9, "GET rule"), (10, "GET rules"),
        (11, "DELETE rule"), (12, "poll"), (13, "DELETE nsg"), (14, "poll")]


def _replayed_indexes() -> list[Any]:
    return [pytest.param(index, id=f"{index:02d}-{interaction['request']['method']}")
            for index, interaction in enumerate(_interactions()) if index not in NOT_EMULATED]


def _exchange(exchanges: list[Exchange], index: int) -> Exchange:
    return next(e for e in exchanges if e.index == index)


@pytest.mark.parametrize("index", _replayed_indexes())
def test_status_codes_match(exchanges: list[Exchange], index: int) -> None:
    exchange = _exchange(exchanges, index)
    assert exchange.status == exchange.recorded_status


@pytest.mark.parametrize("index", _replayed_indexes())
def test_header_names_match(exchanges: list[Exchange], index: int) -> None:
    exchange = _exchange(exchanges, index)
    emulated = {name.lower() for name in exchange.headers} - IGNORED
    recorded = exchange.recorded_headers - IGNORED

    assert recorded - emulated == set(), "recorded headers the emulator does not send"
    assert emulated - recorded <= SCRUBBED_BY_RECORDER, "headers ARM did not send"
    # ... and the scrubbed ones ARM sends on every answer are really there.
    assert {"x-ms-request-id", "x-ms-correlation-request-id", "x-ms-routing-request-id"} <= emulated
    if "azure-asyncoperation" in exchange.recorded_headers:
        assert "retry-after" in emulated


@pytest.mark.parametrize("index", _replayed_indexes())
def test_bodies_match(exchanges: list[Exchange], index: int) -> None:
    exchange = _exchange(exchanges, index)
    if not exchange.recorded_body:
        assert exchange.body == ""
        return
    recorded = json.loads(exchange.recorded_body)
    emulated = json.loads(exchange.body)

    assert _keys(emulated) == _keys(recorded)
    assert _normalised(emulated) == _normalised(recorded)


def test_header_values_that_are_fixed_match(exchanges: list[Exchange]) -> None:
    fixed = ("cache-control", "pragma", "expires", "content-type", "server",
             "strict-transport-security", "x-content-type-options", "vary")
    recording = _interactions()
    for exchange in exchanges:
        recorded = {k.lower(): v[0] for k, v in recording[exchange.index]["response"]["headers"]
                    .items()}
        emulated = {k.lower(): v for k, v in exchange.headers.items()}
        for name in fixed:
            if name in recorded:
                assert emulated[name] == recorded[name], (exchange.index, name)


def test_etags_follow_the_recorded_pattern(exchanges: list[Exchange]) -> None:
    """A new etag when a write is accepted and another when it finishes, as recorded."""
    bodies = {e.index: json.loads(e.body) for e in exchanges if e.body}
    put, after = bodies[0]["etag"], bodies[2]["etag"]
    assert put != after
    assert bodies[2]["properties"]["securityRules"][0]["etag"] == after
    assert _exchange(exchanges, 2).headers["ETag"] == after
    rule_put, rule_get = bodies[6]["etag"], bodies[8]["etag"]
    assert len({put, after, rule_put, rule_get}) == 4


# -- the vendor examples (abridged bodies: theirs must be contained in the emulator's) ----------


def _example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def _url(emulator: ArmEmulator, parameters: dict[str, Any], rule: str | None = None,
         list_rules: bool = False) -> str:
    url = (f"{emulator.url}/subscriptions/{parameters['subscriptionId']}/resourceGroups/"
           f"{parameters['resourceGroupName']}/providers/Microsoft.Network/networkSecurityGroups/"
           f"{parameters['networkSecurityGroupName']}")
    if rule is not None:
        url += f"/securityRules/{rule}"
    elif list_rules:
        url += "/securityRules"
    return f"{url}?api-version={parameters['api-version']}"


@pytest.fixture
def session(arm_emulator: ArmEmulator) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # else REQUESTS_CA_BUNDLE would override `verify`
        session.verify = arm_emulator.ca_bundle
        session.headers["Authorization"] = "Bearer spec-examples"
        yield session


def _without_state(body: Any) -> Any:
    return {key: value for key, value in body.items() if key != "provisioningState"}


def _plant_example_rule(emulator: ArmEmulator, example: dict[str, Any]) -> dict[str, Any]:
    parameters = example["parameters"]
    rule = example["responses"]["200"]["body"]
    if "value" in rule:
        rule = rule["value"][0]
    emulator.add_nsg(parameters["subscriptionId"], parameters["resourceGroupName"],
                     parameters["networkSecurityGroupName"], location="westus")
    emulator.add_rule(parameters["subscriptionId"], parameters["resourceGroupName"],
                      parameters["networkSecurityGroupName"], rule["name"],
                      _without_state(rule["properties"]))
    return parameters


def test_rule_create_example(arm_emulator: ArmEmulator, session: requests.Session) -> None:
    example = _example("NetworkSecurityGroupRuleCreate")
    parameters = example["parameters"]
    arm_emulator.add_nsg(parameters["subscriptionId"], parameters["resourceGroupName"],
                         parameters["networkSecurityGroupName"])
    url = _url(arm_emulator, parameters, parameters["securityRuleName"])

    created = session.put(url, json=parameters["securityRuleParameters"])
    updated = session.put(url, json=parameters["securityRuleParameters"])
    fetched = session.get(url)

    assert (created.status_code, updated.status_code) == (201, 200)
    # The example claims "Succeeded" in the 201 body; the recording shows real ARM says
    # "Updating" until the operation ends, and the emulator follows the recording.
    expected = example["responses"]["201"]["body"]
    assert_contains({**expected, "properties": _without_state(expected["properties"])},
                     created.json())
    assert created.json()["properties"]["provisioningState"] == "Updating"
    assert_contains(example["responses"]["200"]["body"], fetched.json())


def test_rule_get_example(arm_emulator: ArmEmulator, session: requests.Session) -> None:
    example = _example("NetworkSecurityGroupRuleGet")
    parameters = _plant_example_rule(arm_emulator, example)

    fetched = session.get(_url(arm_emulator, parameters, parameters["securityRuleName"]))

    assert fetched.status_code == 200
    assert_contains(example["responses"]["200"]["body"], fetched.json())


def test_rule_list_example(arm_emulator: ArmEmulator, session: requests.Session) -> None:
    example = _example("NetworkSecurityGroupRuleList")
    parameters = _plant_example_rule(arm_emulator, example)

    listed = session.get(_url(arm_emulator, parameters, list_rules=True))

    assert listed.status_code == 200
    assert_contains(example["responses"]["200"]["body"], listed.json())
    assert set(listed.json()) == {"value"}  # no nextLink without paging


def test_rule_delete_example(arm_emulator: ArmEmulator, session: requests.Session) -> None:
    example = _example("NetworkSecurityGroupRuleDelete")
    parameters = example["parameters"]
    arm_emulator.add_nsg(parameters["subscriptionId"], parameters["resourceGroupName"],
                         parameters["networkSecurityGroupName"])
    arm_emulator.add_rule(parameters["subscriptionId"], parameters["resourceGroupName"],
                          parameters["networkSecurityGroupName"], parameters["securityRuleName"],
                          {"protocol": "*", "sourcePortRange": "*", "destinationPortRange": "80",
                           "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
                           "access": "Allow", "priority": 130, "direction": "Inbound"})
    url = _url(arm_emulator, parameters, parameters["securityRuleName"])

    accepted = session.delete(url)
    again = session.delete(url)

    assert accepted.status_code == 202
    assert set(example["responses"]["202"]["headers"]) <= set(accepted.headers)
    assert again.status_code == 204
    assert again.content == b""


def test_nsg_get_example(arm_emulator: ArmEmulator, session: requests.Session) -> None:
    example = _example("NetworkSecurityGroupGet")
    parameters = example["parameters"]
    body = example["responses"]["200"]["body"]
    rule = body["properties"]["securityRules"][0]
    arm_emulator.add_nsg(parameters["subscriptionId"], parameters["resourceGroupName"],
                         parameters["networkSecurityGroupName"], location=body["location"],
                         rules=[{"name": rule["name"],
                                 "properties": _without_state(rule["properties"])}])

    fetched = session.get(_url(arm_emulator, parameters))

    assert fetched.status_code == 200
    assert_contains(body, fetched.json())


def test_nsg_create_with_rule_example(arm_emulator: ArmEmulator,
                                      session: requests.Session) -> None:
    example = _example("NetworkSecurityGroupCreateWithRule")
    parameters = example["parameters"]
    arm_emulator.add_resource_group(parameters["subscriptionId"], parameters["resourceGroupName"])
    url = _url(arm_emulator, parameters)

    created = session.put(url, json=parameters["parameters"])
    arm_emulator.wait_idle()
    fetched = session.get(url)

    assert created.status_code == 201
    assert created.json()["properties"]["provisioningState"] == "Updating"  # as recorded
    assert_contains(example["responses"]["200"]["body"], fetched.json())
