"""Requests to the ARM emulator for its own tests: one NSG's names, rules, URLs, raw sends,
and the fixtures `arm` (the emulator with that NSG) and `client` (an SDK client of it)."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.network import NetworkManagementClient

from tests.fakes.arm import ArmEmulator, rule_properties
from tests.support.azure import SUBSCRIPTION, network_client

RG, NSG = "rg-app", "nsg-app"
API = "2024-07-01"
CLIENT_IP, VM_IP = "203.0.113.7", "10.0.0.4"


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



# Fixtures of the emulator's own tests (a plugin of tests/conftest.py).

@pytest.fixture
def arm(arm_emulator: ArmEmulator) -> ArmEmulator:
    """The emulator with one empty NSG, RG/NSG, in SUBSCRIPTION."""
    arm_emulator.add_nsg(SUBSCRIPTION, RG, NSG)
    return arm_emulator


@pytest.fixture
def client(arm_emulator: ArmEmulator) -> NetworkManagementClient:
    return network_client(arm_emulator, retry_backoff_factor=0.01)
