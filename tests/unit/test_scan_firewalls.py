"""The scan's judgement of Azure Firewalls: DNAT rules that expose a VM's management port, jit's
own rules that do not, and targets with a `firewall` section that cover a VM without an NSG."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from jitcore.policy import AzureLocation, Target
from jitcore.policy_file import parse_policy
from jitcore.scan import Exposure, Status
from jitcore.scan_azure import (
    AzureNic,
    AzureVm,
    DnatRule,
    Nsg,
    NsgRule,
    classify_vm,
    firewall_exposures,
)
from jitcore.scan_report import render_table, suggest_policy, to_json

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-spoke"
VM_IP, OTHER_IP = "10.1.0.4", "10.1.0.5"
PUBLIC_IP = "20.30.40.50"


def dnat(name: str = "ssh-in", *, collection: str = "dnat", group: str | None = None,
         source: str | tuple[str, ...] = "*", to: str | None = VM_IP, port: str = "22",
         protocols: tuple[str, ...] = ("TCP",), public_port: str = "2222",
         firewall: str = "fw-hub") -> DnatRule:
    return DnatRule(firewall=firewall, group=group, collection=collection, name=name,
                    protocols=protocols,
                    sources=(source,) if isinstance(source, str) else source,
                    destinations=(PUBLIC_IP,), ports=(public_port,), translated_address=to,
                    translated_port=port)


def nsg(name: str = "nsg-spoke", *rules: NsgRule) -> Nsg:
    return Nsg(f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/"
               f"networkSecurityGroups/{name}", name, rules)


def nic(on_nic: Nsg | None = None, *ips: str, name: str = "nic-hub-vm") -> AzureNic:
    return AzureNic(f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/"
                    f"networkInterfaces/{name}", name, ips or (VM_IP,), on_nic, None)


def vm(*nics: AzureNic) -> AzureVm:
    return AzureVm(f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
                   f"virtualMachines/hub-vm", "hub-vm", SUB, RG, nics or (nic(),))


def targets(**azure: dict[str, Any]) -> list[Target]:
    """Targets through the real policy validation: name -> its `azure` section's changes."""
    def section(changes: dict[str, Any]) -> dict[str, Any]:
        base = {"subscription_id": SUB, "resource_group": RG, "destination": VM_IP,
                "firewall": {"name": "fw-hub", "resource_group": "rg-hub",
                             "public_ip": PUBLIC_IP, "mapped_ports": [50000, 50999]}}
        return {key: value for key, value in {**base, **changes}.items() if value is not None}

    data = {"defaults": {"approvers": ["U0BOB"]},
            "targets": {name: {"azure": section(changes), "ports": {"ssh": 22, "rdp": 3389}}
                        for name, changes in azure.items()}}
    return list(parse_policy(data, "test").targets.values())


# ---- exposures ------------------------------------------------------------------------------


def test_a_dnat_from_anywhere_to_ssh_exposes_a_vm_without_an_nsg() -> None:
    machine = classify_vm(vm(), [], [dnat(source="0.0.0.0/0")])

    assert machine.status is Status.NOT_CONFIGURED
    assert machine.exposures == (Exposure(22, "tcp", "0.0.0.0/0", "fw-hub", "dnat/ssh-in",
                                          f"{PUBLIC_IP}:2222"),)
    assert str(machine.exposures[0]) == (f"ssh (22) via firewall fw-hub {PUBLIC_IP}:2222 "
                                         "from 0.0.0.0/0, DNAT rule dnat/ssh-in")
    assert machine.reason == "ssh 22 open to the internet"
    assert machine.exposed and machine.firewalls == ()


@pytest.mark.parametrize(("rule", "exposed"), [
    (dnat(), [(22, "*")]),
    (dnat(source="Internet"), [(22, "Internet")]),
    (dnat(source="::/0"), [(22, "::/0")]),
    (dnat(source="0.0.0.0-255.255.255.255"), [(22, "0.0.0.0-255.255.255.255")]),
    (dnat(source=("203.0.113.0/24", "*")), [(22, "*")]),  # the source that admits anyone
    (dnat(port="3389"), [(3389, "*")]),
    (dnat(port="5986"), [(5986, "*")]),
    (dnat(protocols=("UDP", "TCP")), [(22, "*")]),
    (dnat(protocols=("Any",)), [(22, "*")]),
    (dnat(protocols=()), [(22, "*")]),  # none given: never hidden by a guess
    (dnat(source="203.0.113.0/24"), []),
    (dnat(source="0.0.0.0/1"), []),
    (dnat(port="8080"), []),  # not a management port
    (dnat(port="22-23"), []),  # not a port ARM takes for a translation
    (dnat(protocols=("UDP",)), []),
    (dnat(to=OTHER_IP), []),
    (dnat(to=None), []),  # forwards to an FQDN, which the scan does not resolve
])
def test_dnat_rules_that_expose_a_management_port(rule: DnatRule,
                                                  exposed: list[tuple[int, str]]) -> None:
    assert [(e.port, e.source) for e in firewall_exposures(vm(), [rule])] == exposed


def test_a_dnat_to_a_secondary_address_exposes_the_vm() -> None:
    machine = classify_vm(vm(nic(None, "10.1.0.9", VM_IP)), [], [dnat()])

    assert [e.rule for e in machine.exposures] == ["dnat/ssh-in"]
    assert machine.private_ip == "10.1.0.9"


@pytest.mark.parametrize(("rule", "exposed"), [
    (dnat("jit-42", collection="jit"), False),
    (dnat("JIT-42", collection="Jit"), False),  # ARM names are case-blind
    (dnat("jit-7", group="jit", collection="nat"), False),  # policy: jit's group, any collection
    (dnat("jit-42", collection="inbound"), True),  # jit's name outside jit's collection
    (dnat("ssh-in", collection="jit"), True),  # someone else's rule in jit's collection
    (dnat("jit-7", group="platform", collection="jit"), True),  # policy: not jit's group
])
def test_jits_own_rules_in_its_collection_are_grants_not_exposures(rule: DnatRule,
                                                                   exposed: bool) -> None:
    assert bool(firewall_exposures(vm(), [rule])) is exposed


def test_a_policy_rule_is_named_by_group_collection_and_rule() -> None:
    machine = classify_vm(vm(), [], [dnat("rdp-in", group="platform", collection="nat",
                                          port="3389", public_port="3390")])

    assert machine.exposures == (Exposure(3389, "tcp", "*", "fw-hub", "platform/nat/rdp-in",
                                          f"{PUBLIC_IP}:3390"),)


def test_dnat_and_nsg_exposures_are_listed_together() -> None:
    open_ssh = NsgRule("allow-ssh", 100, "Inbound", "Allow", "Tcp", ("*",), ("*",), ("22",))

    machine = classify_vm(vm(nic(nsg("nsg-spoke", open_ssh))), [], [dnat(port="3389")])

    assert [(e.port, e.firewall, e.via) for e in machine.exposures] == [
        (22, "nsg-spoke", ""), (3389, "fw-hub", f"{PUBLIC_IP}:2222")]
    assert machine.reason == "ssh 22, rdp 3389 open to the internet"


def test_a_vm_with_no_nsg_and_no_dnat_to_it_stays_unsupported() -> None:
    machine = classify_vm(vm(), [], [dnat(to=OTHER_IP), dnat("jit-1", collection="jit")])

    assert machine.status is Status.UNSUPPORTED
    assert machine.reason == "no network security group on its network interface or subnet"
    assert machine.exposures == ()


# ---- targets --------------------------------------------------------------------------------


def test_a_firewall_target_for_the_vms_address_configures_it_without_an_nsg() -> None:
    machine = classify_vm(vm(), targets(**{"hub-vm": {}}), [dnat("jit-3", collection="jit")])

    assert (machine.status, machine.target) == (Status.CONFIGURED, "hub-vm")
    assert machine.reason == "jit target hub-vm"
    assert machine.exposures == ()


def test_a_policy_mode_firewall_target_configures_it_too() -> None:
    enabled = targets(**{"hub-vm": {"firewall": {
        "name": "fw-hub", "resource_group": "rg-hub", "public_ip": PUBLIC_IP,
        "mapped_ports": [50000, 50999], "policy": "fwpol-hub"}}})

    machine = classify_vm(vm(), enabled, [dnat("jit-3", group="jit", collection="grants")])

    assert (machine.status, machine.target) == (Status.CONFIGURED, "hub-vm")


def test_a_configured_vm_still_shows_a_standing_dnat_outside_jit() -> None:
    machine = classify_vm(vm(), targets(**{"hub-vm": {}}), [dnat()])

    assert machine.status is Status.CONFIGURED
    assert machine.reason == "jit target hub-vm; rules outside jit still open ssh 22"
    assert [e.via for e in machine.exposures] == [f"{PUBLIC_IP}:2222"]


def test_a_firewall_target_for_another_address_does_not_cover_the_vm() -> None:
    machine = classify_vm(vm(), targets(other={"destination": OTHER_IP}), [dnat()])

    assert (machine.status, machine.target) == (Status.NOT_CONFIGURED, None)


def test_an_nsg_target_is_judged_as_before_beside_a_firewall() -> None:
    enabled = targets(nsg_only={"network_security_group": "nsg-spoke", "firewall": None})

    covered = classify_vm(vm(nic(nsg())), enabled, [dnat()])
    bare = classify_vm(vm(), enabled, [])

    assert (covered.status, covered.target) == (Status.CONFIGURED, "nsg_only")
    assert [e.firewall for e in covered.exposures] == ["fw-hub"]
    assert bare.status is Status.UNSUPPORTED  # an NSG target does not reach a VM without one


# ---- what the scan prints ---------------------------------------------------------------------


def test_the_table_json_and_suggestion_show_the_firewall() -> None:
    exposed = classify_vm(vm(), [], [dnat()])
    both = classify_vm(AzureVm("vm-2-id", "vm-2", SUB, RG, (nic(nsg("nsg-two", NsgRule(
        "allow-rdp", 100, "Inbound", "Allow", "*", ("*",), ("*",), ("3389",))), OTHER_IP),)),
        [], [dnat(to=OTHER_IP)])

    table = render_table([exposed, both])
    exposures = to_json([exposed])[0]["exposures"]
    snippet = suggest_policy([exposed, both])

    assert f"ssh (22) via firewall fw-hub {PUBLIC_IP}:2222 from *, DNAT rule dnat/ssh-in" in table
    assert exposures == [{"port": 22, "service": "ssh", "protocol": "tcp", "source": "*",
                          "firewall": "fw-hub", "rule": "dnat/ssh-in",
                          "via": f"{PUBLIC_IP}:2222"}]
    assert (f"# hub-vm ({exposed.id}) is exposed through firewall fw-hub only: add a target "
            "with a `firewall` section for it by hand.") in snippet
    suggested = parse_policy({"defaults": {"approvers": ["U0BOB"]}, **yaml.safe_load(snippet)},
                             "suggested").targets
    assert list(suggested) == ["vm-2"]  # the NSG target, for the port its NSG opens
    location = suggested["vm-2"].location
    assert isinstance(location, AzureLocation) and location.network_security_group == "nsg-two"
    assert [port.port for port in suggested["vm-2"].ports.values()] == [3389]
    assert f"# ssh (22) via firewall fw-hub {PUBLIC_IP}:2222 from *" in snippet
