"""`jit scan` against a hub-and-spoke network in the ARM emulator: VMs without a public address
or an NSG, reached through the hub's Azure Firewall, classic rules and Firewall Policy alike.
azure-mgmt-network reads the firewalls, the policies' rule collection groups and the network."""

from __future__ import annotations

from typing import Any

import pytest
from azure.mgmt.network.models import AzureFirewall, SubResource

from jitcore.policy import Target
from jitcore.policy_file import parse_policy
from jitcore.providers.azure_scan import scan_azure
from jitcore.scan import Exposure, Machine, Status
from tests.fakes.arm import (
    FIREWALL_READ,
    GROUP_READ,
    NIC_READ,
    NSG_READ,
    VNET_READ,
    ArmEmulator,
)
from tests.support.azure import SUBSCRIPTION, StaticTokenCredential, network_client

HUB_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000b2"
SPOKE, HUB = "rg-spoke", "rg-hub"
CLASSIC_IP, POLICY_IP = "20.30.40.50", "20.30.40.60"
POLICY = "fwpol-hub"
ANYWHERE = "0.0.0.0/0"


def vm_id(name: str) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{SPOKE}/providers/Microsoft.Compute/"
            f"virtualMachines/{name}")


def classic_rule(name: str, to: str, port: int, public_port: int,
                 source: str = ANYWHERE) -> dict[str, Any]:
    return {"name": name, "sourceAddresses": [source], "destinationAddresses": [CLASSIC_IP],
            "destinationPorts": [str(public_port)], "protocols": ["TCP"],
            "translatedAddress": to, "translatedPort": str(port)}


def classic_collection(name: str, priority: int, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "properties": {"priority": priority, "action": {"type": "Dnat"},
                                         "rules": list(rules)}}


def policy_collection(name: str, to: str, port: int, public_port: int,
                      rule: str = "inbound") -> dict[str, Any]:
    return {"ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": name,
            "priority": 100, "action": {"type": "DNAT"},
            "rules": [{"ruleType": "NatRule", "name": rule, "ipProtocols": ["TCP"],
                       "sourceAddresses": ["*"], "sourceIpGroups": [],
                       "destinationAddresses": [POLICY_IP],
                       "destinationPorts": [str(public_port)], "translatedAddress": to,
                       "translatedPort": str(port)}]}


def firewall_target(name: str, destination: str, policy: str | None = None) -> dict[str, Any]:
    firewall: dict[str, Any] = {"name": "fw-policy" if policy else "fw-classic",
                                "resource_group": HUB,
                                "public_ip": POLICY_IP if policy else CLASSIC_IP,
                                "mapped_ports": [50000, 50999]}
    if policy:
        firewall["policy"] = policy
    return {name: {"azure": {"subscription_id": SUBSCRIPTION, "resource_group": SPOKE,
                             "destination": destination, "firewall": firewall},
                   "ports": {"ssh": 22, "rdp": 3389}}}


def targets(*specs: dict[str, Any]) -> list[Target]:
    data = {"defaults": {"approvers": ["U0BOB"]},
            "targets": {name: spec for one in specs for name, spec in one.items()}}
    return list(parse_policy(data, "enabled").targets.values())


@pytest.fixture
def arm(arm_emulator: ArmEmulator) -> ArmEmulator:
    """A spoke with four VMs and no NSG (vm-classic 10.1.0.4, vm-policy 10.1.0.5, vm-jit
    10.1.0.6, vm-plain 10.1.0.7) and a hub with two firewalls: fw-classic (classic rules) and
    fw-policy (using the policy fwpol-hub). Lists come back two items a page."""
    arm_emulator.page_size = 2
    arm_emulator.add_vnet(SUBSCRIPTION, SPOKE, "vnet-spoke", "10.1.0.0/16")
    subnet = arm_emulator.add_subnet(SUBSCRIPTION, SPOKE, "vnet-spoke", "workload",
                                     "10.1.0.0/24")
    for index, name in enumerate(("classic", "policy", "jit", "plain")):
        arm_emulator.add_nic(SUBSCRIPTION, SPOKE, f"nic-{name}", subnet, f"10.1.0.{4 + index}",
                             vm_id=vm_id(f"vm-{name}"))
    seed_classic(arm_emulator)
    arm_emulator.add_firewall(SUBSCRIPTION, HUB, "fw-policy", public_ip=POLICY_IP)
    policy_id = arm_emulator.add_firewall_policy(SUBSCRIPTION, HUB, POLICY)
    # A firewall names its policy in the body of its PUT; the seeding takes no policy.
    network_client(arm_emulator).azure_firewalls.begin_create_or_update(
        HUB, "fw-policy", AzureFirewall(location="westeurope",
                                        firewall_policy=SubResource(id=policy_id))).result()
    arm_emulator.clear_calls()
    return arm_emulator


def seed_classic(arm: ArmEmulator, *, standing: bool = True) -> None:
    """fw-classic: jit's collection with a grant from anywhere to vm-jit's ssh, and unless
    `standing` is False, a collection forwarding :2222 from anywhere to vm-classic's ssh."""
    jit = classic_collection("jit", 200, classic_rule("jit-7", "10.1.0.6", 22, 50000))
    inbound = classic_collection("inbound", 300, classic_rule("ssh-any", "10.1.0.4", 22, 2222),
                                 classic_rule("web", "10.1.0.4", 443, 443),
                                 classic_rule("rdp-office", "10.1.0.4", 3389, 3389,
                                              "203.0.113.0/24"))
    arm.add_firewall(SUBSCRIPTION, HUB, "fw-classic", public_ip=CLASSIC_IP,
                     nat_collections=[jit, inbound] if standing else [jit])


def scan(arm: ArmEmulator, enabled: list[Target],
         subscriptions: tuple[str, ...] = (SUBSCRIPTION,)) -> dict[str, Machine]:
    machines = scan_azure(list(subscriptions), enabled, credential=StaticTokenCredential(),
                          arm_endpoint=arm.url,
                          client_options={"connection_verify": arm.ca_bundle})
    return {machine.name: machine for machine in machines}


def test_a_standing_classic_dnat_to_ssh_exposes_the_vm_and_jits_own_rule_does_not(
        arm: ArmEmulator) -> None:
    machines = scan(arm, [])

    exposed, by_jit, plain = machines["vm-classic"], machines["vm-jit"], machines["vm-plain"]
    assert exposed.status is Status.NOT_CONFIGURED
    assert exposed.exposures == (Exposure(22, "tcp", ANYWHERE, "fw-classic", "inbound/ssh-any",
                                          f"{CLASSIC_IP}:2222"),)
    assert str(exposed.exposures[0]) == (f"ssh (22) via firewall fw-classic {CLASSIC_IP}:2222 "
                                         f"from {ANYWHERE}, DNAT rule inbound/ssh-any")
    assert (by_jit.status, by_jit.exposures) == (Status.UNSUPPORTED, ())
    assert plain.status is Status.UNSUPPORTED


def test_the_same_vm_with_a_jit_target_and_no_standing_dnat_is_configured(
        arm: ArmEmulator) -> None:
    seed_classic(arm, standing=False)
    enabled = targets(firewall_target("vm-classic", "10.1.0.4"),
                      firewall_target("vm-jit", "10.1.0.6"))

    machines = scan(arm, enabled)

    for name in ("vm-classic", "vm-jit"):
        assert (machines[name].status, machines[name].target) == (Status.CONFIGURED, name)
        assert machines[name].exposures == ()
        assert machines[name].reason == f"jit target {name}"


def test_policy_mode_a_standing_dnat_exposes_and_jits_group_does_not(arm: ArmEmulator) -> None:
    arm.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "platform", 300, [
        policy_collection("nat", "10.1.0.5", 3389, 3390)])
    arm.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "jit", 200, [
        policy_collection("grants", "10.1.0.6", 22, 50001, rule="jit-9")])

    machines = scan(arm, [])

    exposed = machines["vm-policy"]
    assert exposed.exposures == (Exposure(3389, "tcp", "*", "fw-policy", "platform/nat/inbound",
                                          f"{POLICY_IP}:3390"),)
    assert exposed.reason == "rdp 3389 open to the internet"
    assert machines["vm-jit"].status is Status.UNSUPPORTED  # a grant, and nothing else

    arm.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "platform", 300)  # emptied
    enabled = targets(firewall_target("vm-policy", "10.1.0.5", POLICY))
    configured = scan(arm, enabled)["vm-policy"]
    assert (configured.status, configured.target, configured.exposures) == (
        Status.CONFIGURED, "vm-policy", ())


def test_the_scan_reads_firewalls_and_policy_groups_only(arm: ArmEmulator) -> None:
    arm.add_firewall(SUBSCRIPTION, HUB, "fw-spare")  # a third firewall: two list pages

    scan(arm, [])

    assert arm.operations() == {NIC_READ, VNET_READ, NSG_READ, FIREWALL_READ, GROUP_READ}
    assert all(call.method == "GET" and call.ok for call in arm.calls)
    assert len(arm.calls_to(FIREWALL_READ)) == 2
    # one policy, read once
    assert [call.path.rsplit("/", 2)[-2:] for call in arm.calls_to(GROUP_READ)] == [
        [POLICY, "ruleCollectionGroups"]]


def test_a_hub_firewall_in_another_subscription_counts_when_both_are_scanned(
        arm: ArmEmulator) -> None:
    hub_rule = classic_rule("ssh-any", "10.1.0.7", 22, 2200)
    arm.add_firewall(HUB_SUBSCRIPTION, HUB, "fw-central", public_ip=CLASSIC_IP,
                     nat_collections=[classic_collection("inbound", 300, hub_rule)])

    spoke_only = scan(arm, [])["vm-plain"]
    both = scan(arm, [], (SUBSCRIPTION, HUB_SUBSCRIPTION))["vm-plain"]

    assert spoke_only.status is Status.UNSUPPORTED
    assert both.status is Status.NOT_CONFIGURED
    assert [(e.firewall, e.via) for e in both.exposures] == [("fw-central",
                                                              f"{CLASSIC_IP}:2200")]
