"""The policy's `azure.firewall` section: what it accepts and the exact messages it refuses with."""

from __future__ import annotations

from typing import Any

import pytest

from jitcore.errors import PolicyError
from jitcore.policy import AzureFirewall, AzureLocation
from jitcore.policy_file import parse_policy

SUB = "11111111-2222-3333-4444-555555555555"


def policy(**azure: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"subscription_id": SUB, "resource_group": "rg-spoke",
                            "destination": "10.1.0.4"}
    return {"defaults": {"approvers": ["U0LEAD1"]},
            "targets": {"hub-vm": {"azure": {**base, **azure}, "ports": {"ssh": 22}}}}


FIREWALL = {"name": "fw-hub", "resource_group": "rg-hub", "public_ip": "20.30.40.50",
            "mapped_ports": [50000, 50999]}


def location(data: dict[str, Any]) -> AzureLocation:
    found = parse_policy(data, "jit.yaml").targets["hub-vm"].location
    assert isinstance(found, AzureLocation)
    return found


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data, "jit.yaml")
    return str(caught.value)


def test_a_firewall_alone_is_a_target_without_an_nsg() -> None:
    found = location(policy(firewall=FIREWALL))
    assert found.network_security_group is None and found.nsg_id == ""
    assert found.firewall == AzureFirewall(SUB, "fw-hub", "rg-hub", "20.30.40.50",
                                           (50000, 50999))
    assert found.firewall.mode == "classic"
    assert found.firewall.scope == (f"/subscriptions/{SUB}/resourceGroups/rg-hub/providers/"
                                    "Microsoft.Network/azureFirewalls/fw-hub")


def test_policy_mode_scopes_rules_to_the_firewall_policy() -> None:
    found = location(policy(firewall={**FIREWALL, "policy": "fwpol-hub"}))
    assert found.firewall is not None and found.firewall.mode == "policy"
    assert found.firewall.scope == (f"/subscriptions/{SUB}/resourceGroups/rg-hub/providers/"
                                    "Microsoft.Network/firewallPolicies/fwpol-hub")


def test_a_firewall_and_an_nsg_need_the_firewalls_subnet() -> None:
    message = refusal(policy(network_security_group="nsg-spoke", firewall=FIREWALL))
    assert "give the firewall's source_range (its AzureFirewallSubnet prefix" in message
    found = location(policy(network_security_group="nsg-spoke",
                            firewall={**FIREWALL, "source_range": "10.0.1.0/26"}))
    assert found.firewall is not None and found.firewall.source_range == "10.0.1.0/26"
    assert found.network_security_group == "nsg-spoke"


def test_neither_an_nsg_nor_a_firewall_is_refused() -> None:
    assert "needs a network_security_group, a firewall, or both" in refusal(policy())


@pytest.mark.parametrize(("ports", "expected"), [
    ([50999, 50000], "[50999, 50000] has its low end above its high end"),
    ([0, 10], "[0, 10] is outside 1..65535"),
    ([50000], "must be two port numbers [low, high], e.g. [50000, 50999]"),
    ("50000-50999", "must be two port numbers [low, high], e.g. [50000, 50999]"),
])
def test_mapped_ports_are_checked(ports: object, expected: str) -> None:
    assert expected in refusal(policy(firewall={**FIREWALL, "mapped_ports": ports}))


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("public_ip", "fw.example.com", "'fw.example.com' is not an IP address"),
    ("name", "-bad", "is not an Azure firewall or firewall policy name"),
    ("source_range", "10.0.1.4/26", "has host bits set; did you mean 10.0.1.0/26?"),
    ("rules", [], "targets.hub-vm.azure.firewall.rules: unknown field"),
])
def test_firewall_fields_are_checked(field: str, value: object, expected: str) -> None:
    message = refusal(policy(firewall={**FIREWALL, field: value}))
    assert expected in message, message
