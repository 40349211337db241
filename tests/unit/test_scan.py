"""The pure part of `jit scan`: classification, exposure rules, rendering and the suggestion."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from jitcore.policy import AwsLocation, AzureLocation, Target
from jitcore.policy_file import parse_policy
from jitcore.scan import (
    MANAGED_PORTS,
    AwsInstance,
    Exposure,
    Machine,
    SecurityGroupRule,
    Status,
    aws_exposures,
    classify,
    parse_arm_id,
    run_scan,
)
from jitcore.scan_azure import AzureNic, AzureVm, Nsg, NsgRule, classify_vm
from jitcore.scan_report import render_table, suggest_policy, summary, to_json

REGION = "us-east-1"
SUB = "00000000-0000-0000-0000-0000000000aa"
RG = "rg-app"
GROUP, OTHER_GROUP = "sg-0123456789abcdef0", "sg-0fedcba9876543210"
INSTANCE = "i-0123456789abcdef0"
VM_IP = "10.0.1.4"


def nsg_id(name: str, rg: str = RG) -> str:
    return (f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/"
            f"networkSecurityGroups/{name}")


def targets(**specs: dict[str, Any]) -> list[Target]:
    """Targets through the real policy validation: name -> {"aws": ...} or {"azure": ...}."""
    data = {"defaults": {"approvers": ["U0BOB"]},
            "targets": {name: {"ports": {"ssh": 22}, **spec} for name, spec in specs.items()}}
    return list(parse_policy(data, "test").targets.values())


# ---- AWS --------------------------------------------------------------------------------------


def sg_rule(protocol: str = "tcp", low: int = 22, high: int | None = None,
            source: str | None = "0.0.0.0/0", rule_id: str = "sgr-1",
            group: str = GROUP) -> SecurityGroupRule:
    return SecurityGroupRule(group, rule_id, protocol, low, low if high is None else high, source)


def instance(*rules: SecurityGroupRule, vpc: str | None = "vpc-1",
             groups: tuple[str, ...] = (GROUP,)) -> AwsInstance:
    return AwsInstance(REGION, INSTANCE, "web", "10.0.1.10", vpc, groups, rules)


@pytest.mark.parametrize(("rule", "ports"), [
    (sg_rule(), [22]),
    (sg_rule(source="::/0"), [22]),
    (sg_rule(low=20, high=25), [22]),
    (sg_rule(low=23, high=3388), []),
    (sg_rule(low=3000, high=6000), [3389, 5985, 5986]),
    (sg_rule("-1", -1, -1), [22, 3389, 5985, 5986]),
    (sg_rule("tcp", -1, -1), [22, 3389, 5985, 5986]),
    (sg_rule("6"), [22]),
    (sg_rule("udp"), []),
    (sg_rule(source="203.0.113.0/24"), []),
    (sg_rule(source="0.0.0.0/1"), []),
    (sg_rule(source=None), []),  # a prefix list or another security group
])
def test_aws_rules_that_expose_a_managed_port(rule: SecurityGroupRule, ports: list[int]) -> None:
    assert [e.port for e in aws_exposures([rule])] == ports


def test_an_aws_exposure_names_the_group_and_the_rule() -> None:
    machine = classify(instance(sg_rule(rule_id="sgr-open"), sg_rule(source="::/0",
                                                                     rule_id="sgr-open6")), [])

    assert machine.status is Status.NOT_CONFIGURED
    assert machine.exposures == (Exposure(22, "tcp", "0.0.0.0/0", GROUP, "sgr-open"),
                                 Exposure(22, "tcp", "::/0", GROUP, "sgr-open6"))
    assert machine.reason == "ssh 22 open to the internet"
    assert (machine.cloud, machine.id, machine.place, machine.firewalls) == (
        "aws", INSTANCE, REGION, (GROUP,))


def test_an_aws_instance_without_open_ports_is_not_configured_but_healthy() -> None:
    machine = classify(instance(sg_rule(source="198.51.100.7/32")), [])

    assert machine.status is Status.NOT_CONFIGURED
    assert machine.exposures == ()
    assert not machine.exposed
    assert machine.reason == "healthy: no exposed management port"


@pytest.mark.parametrize("location", [{"instance_id": INSTANCE},
                                      {"security_group_id": OTHER_GROUP}])
def test_an_aws_instance_covered_by_an_enabled_target_is_configured(
        location: dict[str, str]) -> None:
    enabled = targets(web={"aws": {"region": REGION, **location}})

    machine = classify(instance(groups=(GROUP, OTHER_GROUP)), enabled)

    assert machine.status is Status.CONFIGURED
    assert machine.target == "web"
    assert machine.reason == "jit target web"


def test_a_target_elsewhere_does_not_cover_an_instance() -> None:
    enabled = targets(
        other_region={"aws": {"region": "eu-west-1", "instance_id": INSTANCE}},
        other_group={"aws": {"region": REGION, "security_group_id": OTHER_GROUP}},
        azure={"azure": {"subscription_id": SUB, "resource_group": RG,
                         "network_security_group": "nsg", "destination": "10.0.1.10"}})

    machine = classify(instance(sg_rule()), enabled)

    assert machine.status is Status.NOT_CONFIGURED
    assert machine.target is None


def test_a_configured_instance_still_shows_rules_outside_jit() -> None:
    enabled = targets(web={"aws": {"region": REGION, "instance_id": INSTANCE}})

    machine = classify(instance(sg_rule(low=3389)), enabled)

    assert machine.status is Status.CONFIGURED
    assert [e.port for e in machine.exposures] == [3389]
    assert machine.reason == "jit target web; rules outside jit still open rdp 3389"


def test_aws_instances_jit_cannot_manage_are_unsupported_and_say_why() -> None:
    classic = classify(instance(sg_rule(), vpc=None), [])
    no_groups = classify(instance(groups=()), [])

    assert (classic.status, no_groups.status) == (Status.UNSUPPORTED, Status.UNSUPPORTED)
    assert "not in a VPC" in classic.reason
    assert classic.exposures == ()
    assert "no network interface with a security group" in no_groups.reason


# ---- Azure --------------------------------------------------------------------------------------

DEFAULTS = (
    NsgRule("AllowVnetInBound", 65000, "Inbound", "Allow", "*", ("VirtualNetwork",),
            ("VirtualNetwork",), ("*",)),
    NsgRule("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow", "*",
            ("AzureLoadBalancer",), ("*",), ("*",)),
    NsgRule("DenyAllInBound", 65500, "Inbound", "Deny", "*", ("*",), ("*",), ("*",)),
)


def allow(name: str, priority: int, ports: str | tuple[str, ...] = "22", source: str = "*",
          *, access: str = "Allow", protocol: str = "Tcp", destination: str = "*",
          direction: str = "Inbound") -> NsgRule:
    return NsgRule(name, priority, direction, access, protocol, (source,), (destination,),
                   (ports,) if isinstance(ports, str) else ports)


def nsg(name: str, *rules: NsgRule) -> Nsg:
    return Nsg(nsg_id(name), name, (*rules, *DEFAULTS))


def vm(*nics: AzureNic, name: str = "vm-web") -> AzureVm:
    return AzureVm(f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
                   f"virtualMachines/{name}", name, SUB, RG, nics)


def nic(on_nic: Nsg | None = None, on_subnet: Nsg | None = None, ip: str = VM_IP,
        name: str = "nic-web") -> AzureNic:
    return AzureNic(f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/"
                    f"networkInterfaces/{name}", name, (ip,), on_nic, on_subnet)


def exposed_ports(*rules: NsgRule) -> list[tuple[int, str, str]]:
    machine = classify_vm(vm(nic(nsg("nsg-web", *rules))), [])
    return [(e.port, e.rule, e.source) for e in machine.exposures]


@pytest.mark.parametrize(("rules", "expected"), [
    ((allow("ssh", 100),), [(22, "ssh", "*")]),
    ((allow("ssh", 100, source="Internet"),), [(22, "ssh", "Internet")]),
    ((allow("ssh", 100, source="internet"),), [(22, "ssh", "internet")]),
    ((allow("ssh", 100, source="Any"),), [(22, "ssh", "Any")]),
    ((allow("ssh", 100, source="0.0.0.0/0"),), [(22, "ssh", "0.0.0.0/0")]),
    ((allow("ssh", 100, source="::/0"),), [(22, "ssh", "::/0")]),
    ((allow("ssh", 100, source="VirtualNetwork"),), []),
    ((allow("ssh", 100, source="203.0.113.0/24"),), []),
    ((allow("range", 100, "20-25"),), [(22, "range", "*")]),
    ((allow("range", 100, "23-3388"),), []),
    ((allow("list", 100, ("80", "3389", "5985-5986")),),
     [(3389, "list", "*"), (5985, "list", "*"), (5986, "list", "*")]),
    ((allow("all", 100, "*", protocol="*"),),
     [(22, "all", "*"), (3389, "all", "*"), (5985, "all", "*"), (5986, "all", "*")]),
    ((allow("udp", 100, protocol="Udp"),), []),
    ((allow("outbound", 100, direction="Outbound"),), []),
    ((allow("other-vm", 100, destination="10.0.9.9"),), []),
    ((allow("this-subnet", 100, destination="10.0.1.0/24"),), [(22, "this-subnet", "*")]),
    ((allow("asg", 100, destination="AzureCloud"),), [(22, "asg", "*")]),  # a guess: exposed
    # First match wins, lowest priority number first, whatever order they are listed in.
    ((allow("ssh", 200), allow("no-ssh", 100, access="Deny")), []),
    ((allow("ssh", 100), allow("no-ssh", 200, access="Deny")), [(22, "ssh", "*")]),
    # A deny that does not concern internet traffic does not stop it.
    ((allow("ssh", 200), allow("no-vnet", 100, source="VirtualNetwork", access="Deny")),
     [(22, "ssh", "*")]),
    ((allow("ssh", 200), allow("no-ssh-to-other", 100, destination="10.0.9.9", access="Deny")),
     [(22, "ssh", "*")]),
    ((allow("ssh", 200), allow("no-ssh-asg", 100, destination="AzureCloud", access="Deny")),
     [(22, "ssh", "*")]),
    ((), []),  # the defaults alone let nothing in from the internet
])
def test_nsg_rules_that_expose_a_managed_port(rules: tuple[NsgRule, ...],
                                              expected: list[tuple[int, str, str]]) -> None:
    assert exposed_ports(*rules) == expected


def test_an_nsg_on_the_subnet_alone_exposes_the_vm() -> None:
    machine = classify_vm(vm(nic(on_subnet=nsg("nsg-subnet", allow("rdp", 300, "3389")))), [])

    assert machine.status is Status.NOT_CONFIGURED
    assert machine.exposures == (Exposure(3389, "tcp", "*", "nsg-subnet", "rdp"),)
    assert machine.firewalls == (nsg_id("nsg-subnet"),)


def test_with_two_nsgs_a_port_is_open_only_if_both_let_it_in() -> None:
    both = classify_vm(vm(nic(nsg("nsg-nic", allow("ssh", 100), allow("rdp", 110, "3389")),
                           nsg("nsg-subnet", allow("ssh-too", 120)))), [])

    assert both.exposures == (Exposure(22, "tcp", "*", "nsg-nic", "ssh"),
                              Exposure(22, "tcp", "*", "nsg-subnet", "ssh-too"))
    assert both.firewalls == (nsg_id("nsg-nic"), nsg_id("nsg-subnet"))
    assert both.reason == "ssh 22 open to the internet"


def test_an_azure_vm_without_any_nsg_is_unsupported() -> None:
    machine = classify_vm(vm(nic()), [])

    assert machine.status is Status.UNSUPPORTED
    assert machine.reason == "no network security group on its network interface or subnet"
    assert machine.exposures == ()
    assert (machine.cloud, machine.name, machine.place, machine.private_ip) == (
        "azure", "vm-web", f"{SUB}/{RG}", VM_IP)


def test_a_vm_with_several_nics_is_one_machine_with_their_exposures() -> None:
    first = nic(nsg("nsg-a", allow("ssh", 100)), name="nic-a")
    second = nic(nsg("nsg-b", allow("rdp", 100, "3389")), ip="10.0.2.4", name="nic-b")

    machine = classify_vm(vm(first, second), [])

    assert [(e.port, e.firewall) for e in machine.exposures] == [(22, "nsg-a"), (3389, "nsg-b")]
    assert machine.private_ip == VM_IP  # the primary NIC's
    assert machine.firewalls == (nsg_id("nsg-a"), nsg_id("nsg-b"))


def test_one_bare_nic_makes_the_vm_unsupported_and_is_named() -> None:
    machine = classify_vm(vm(nic(nsg("nsg-a"), name="nic-a"), nic(name="nic-bare")), [])

    assert machine.status is Status.UNSUPPORTED
    assert machine.reason.endswith("interface or subnet (nic-bare)")


@pytest.mark.parametrize("guarded", ["nsg-nic", "nsg-subnet"])
def test_an_azure_vm_is_configured_by_a_target_on_either_nsg_for_its_address(
        guarded: str) -> None:
    enabled = targets(web={"azure": {"subscription_id": SUB, "resource_group": RG,
                                     "network_security_group": guarded,
                                     "destination": VM_IP}})

    machine = classify_vm(vm(nic(nsg("nsg-nic"), nsg("nsg-subnet"))), enabled)

    assert machine.status is Status.CONFIGURED
    assert machine.target == "web"


def test_a_target_for_another_address_or_nsg_does_not_cover_the_vm() -> None:
    enabled = targets(
        other_ip={"azure": {"subscription_id": SUB, "resource_group": RG,
                            "network_security_group": "nsg-nic", "destination": "10.0.1.5"}},
        other_nsg={"azure": {"subscription_id": SUB, "resource_group": "rg-other",
                             "network_security_group": "nsg-nic", "destination": VM_IP}})

    machine = classify_vm(vm(nic(nsg("nsg-nic", allow("ssh", 100)))), enabled)

    assert machine.status is Status.NOT_CONFIGURED
    assert machine.target is None


# ---- rendering ----------------------------------------------------------------------------------


def estate() -> list[Machine]:
    enabled = targets(guarded={"aws": {"region": REGION, "instance_id": "i-0000000000000000c"}})
    return [
        classify(instance(sg_rule(), sg_rule("-1", -1, -1, "::/0", "sgr-all")), enabled),
        classify(AwsInstance(REGION, "i-0000000000000000b", "db", "10.0.1.11", "vpc-1",
                             (GROUP,), ()), enabled),
        classify(AwsInstance(REGION, "i-0000000000000000c", "bastion", "10.0.1.12", "vpc-1",
                             (GROUP,), ()), enabled),
        classify_vm(vm(nic(nsg("nsg-web", allow("rdp", 100, "3389")))), enabled),
        classify_vm(vm(nic(), name="vm-bare"), enabled),
    ]


def test_the_table_tells_exposed_from_healthy() -> None:
    table = render_table(estate())
    lines = table.splitlines()

    assert lines[0].split() == ["STATUS", "CLOUD", "PLACE", "MACHINE", "PRIVATE", "IP", "DETAIL"]
    web = next(line for line in lines if " web " in line)
    assert web.startswith("not configured  aws")
    assert web.endswith(f"ssh 22/tcp open to 0.0.0.0/0 by {GROUP} rule sgr-1")
    assert lines[lines.index(web) + 1].strip() == f"ssh 22/tcp open to ::/0 by {GROUP} rule sgr-all"
    assert lines[lines.index(web) + 1].startswith(" ")  # continued under the same machine
    assert next(line for line in lines if " db " in line).endswith(
        "healthy: no exposed management port")
    assert next(line for line in lines if " bastion " in line).endswith("jit target guarded")
    assert "rdp 3389/tcp open to * by nsg-web rule rdp" in table
    assert next(line for line in lines if "vm-bare" in line).endswith(
        "no network security group on its network interface or subnet")
    assert lines[-1] == "5 machines: 1 configured, 3 not configured (2 exposed), 1 unsupported"
    detail = lines[0].index("DETAIL")  # every detail starts in the DETAIL column
    assert web.index("ssh 22/tcp") == lines[lines.index(web) + 1].index("ssh 22/tcp") == detail


def test_an_empty_scan_says_so() -> None:
    assert render_table([]) == "no machines found"
    assert summary([]) == "0 machines: 0 configured, 0 not configured (0 exposed), 0 unsupported"


def test_json_holds_every_field() -> None:
    machines = to_json(estate())

    json.dumps(machines)  # serialisable as is
    web = machines[0]
    assert web == {
        "cloud": "aws", "id": INSTANCE, "name": "web", "place": REGION,
        "private_ip": "10.0.1.10", "firewalls": [GROUP], "status": "not configured",
        "exposed": True, "reason": "ssh 22, rdp 3389, winrm 5985, winrm-https 5986 open to "
                                   "the internet", "target": None,
        "exposures": [
            {"port": 22, "service": "ssh", "protocol": "tcp", "source": "0.0.0.0/0",
             "firewall": GROUP, "rule": "sgr-1", "via": None},
            {"port": 22, "service": "ssh", "protocol": "tcp", "source": "::/0",
             "firewall": GROUP, "rule": "sgr-all", "via": None},
            *({"port": port, "service": MANAGED_PORTS[port], "protocol": "tcp",
               "source": "::/0", "firewall": GROUP, "rule": "sgr-all", "via": None}
              for port in (3389, 5985, 5986))]}
    assert [m["status"] for m in machines] == [
        "not configured", "not configured", "configured", "not configured", "unsupported"]
    assert machines[2]["target"] == "guarded"
    assert machines[1]["exposed"] is False


# ---- the policy suggestion ------------------------------------------------------------------


def parse_suggestion(snippet: str) -> dict[str, Target]:
    data = {"defaults": {"approvers": ["U0BOB"]}, **yaml.safe_load(snippet)}
    return dict(parse_policy(data, "suggested").targets)


def test_the_suggestion_is_a_valid_policy_for_the_exposed_machines_only() -> None:
    snippet = suggest_policy(estate())

    suggested = parse_suggestion(snippet)

    assert sorted(suggested) == ["vm-web", "web"]
    web = suggested["web"]
    assert isinstance(web.location, AwsLocation)
    assert (web.location.region, web.location.instance_id) == (REGION, INSTANCE)
    assert {name: p.port for name, p in web.ports.items()} == {
        "ssh": 22, "rdp": 3389, "winrm": 5985, "winrm-https": 5986}
    vm_web = suggested["vm-web"]
    assert isinstance(vm_web.location, AzureLocation)
    assert vm_web.location.nsg_id == nsg_id("nsg-web")
    assert vm_web.location.destination == VM_IP
    assert {name: p.port for name, p in vm_web.ports.items()} == {"rdp": 3389}
    assert f"# ssh 22/tcp open to 0.0.0.0/0 by {GROUP} rule sgr-1" in snippet


def test_suggested_names_are_valid_and_distinct() -> None:
    machines = [classify_vm(vm(nic(nsg("nsg-a", allow("ssh", 100))), name="Web_VM.01"), []),
                classify(AwsInstance(REGION, INSTANCE, "Web VM 01!", "10.0.0.1", "vpc-1",
                                     (GROUP,), (sg_rule(),)), []),
                classify(AwsInstance("eu-west-1", "i-0000000000000000e", "web vm 01", "10.0.0.2",
                                     "vpc-2", (GROUP,), (sg_rule(),)), [])]

    suggested = parse_suggestion(suggest_policy(machines))

    assert sorted(suggested) == ["web-vm-01", "web-vm-01-2", "web_vm.01"]


def test_the_subnet_nsg_is_named_when_the_nic_has_one_too() -> None:
    machine = classify_vm(vm(nic(nsg("nsg-nic", allow("ssh", 100)),
                              nsg("nsg-subnet", allow("ssh", 100)))), [])

    snippet = suggest_policy([machine])

    location = parse_suggestion(snippet)["vm-web"].location
    assert isinstance(location, AzureLocation)
    assert location.nsg_id == nsg_id("nsg-nic")
    assert f"# also in front of it: {nsg_id('nsg-subnet')}" in snippet


def test_a_vm_without_an_address_is_left_to_the_operator() -> None:
    machine = classify_vm(vm(AzureNic("nic-id", "nic", (), nsg("nsg-a", allow("ssh", 100)), None)),
                       [])

    snippet = suggest_policy([machine])

    assert machine.exposed and machine.private_ip is None
    assert f"# vm-web ({machine.id}) has no private address: add its target by hand." in snippet
    assert yaml.safe_load(snippet) is None  # no empty `targets:` that a policy would refuse
    with_others = suggest_policy([machine, *estate()])
    assert "add its target by hand" in with_others
    assert sorted(parse_suggestion(with_others)) == ["vm-web", "web"]  # estate's, not this one


def test_nothing_to_suggest_is_a_comment() -> None:
    snippet = suggest_policy([m for m in estate() if not m.exposed])

    assert snippet.startswith("#")
    assert yaml.safe_load(snippet) is None


# ---- the rest ----------------------------------------------------------------------------------


def test_the_managed_ports_are_defenders() -> None:
    assert MANAGED_PORTS == {22: "ssh", 3389: "rdp", 5985: "winrm", 5986: "winrm-https"}


def test_arm_ids_split_into_subscription_group_and_name() -> None:
    assert parse_arm_id(nsg_id("nsg-web")) == (SUB, RG, "nsg-web")
    with pytest.raises(ValueError, match="not an Azure resource id"):
        parse_arm_id("nsg-web")


def test_nothing_asked_nothing_scanned() -> None:
    assert run_scan([], [], []) == []


def test_importing_the_scan_loads_no_cloud_sdk() -> None:
    code = ("import sys, jitcore.scan, jitcore.scan_azure, jitcore.scan_report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore') "
            "or m.startswith('azure')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()

    assert loaded == "[]"
