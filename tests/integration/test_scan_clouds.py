"""`jit scan` against seeded estates: boto3 against moto's server, azure-mgmt-network against the
ARM emulator. Every machine's classification is checked, with the rule that opens its port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from jitcore.errors import ProviderError, TargetNotFound, TransientProviderError
from jitcore.policy import AwsLocation, AzureLocation, Target
from jitcore.policy_file import parse_policy
from jitcore.providers.aws_scan import scan_aws
from jitcore.providers.azure_scan import scan_azure
from jitcore.scan import Exposure, Machine, Status, run_scan
from jitcore.scan_report import suggest_policy
from tests.fakes.arm import (
    FIREWALL_READ,
    NIC_READ,
    NSG_READ,
    VNET_READ,
    ArmEmulator,
    rule_properties,
)
from tests.fakes.aws_throttle import ThrottlingProxy
from tests.support.azure import SUBSCRIPTION, StaticTokenCredential

if TYPE_CHECKING:
    from tests.conftest import AwsGroup

REGION = "us-east-1"
AMI = "ami-12c6146b"
RG = "rg-estate"


def targets(**specs: dict[str, Any]) -> list[Target]:
    """Enabled targets, through the real policy validation."""
    data = {"defaults": {"approvers": ["U0BOB"]},
            "targets": {name: {"ports": {"ssh": 22, "rdp": 3389}, **spec}
                        for name, spec in specs.items()}}
    return list(parse_policy(data, "enabled").targets.values())


def by_name(machines: list[Machine]) -> dict[str, Machine]:
    return {machine.name: machine for machine in machines}


# ---- AWS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsEstate:
    open_group: str
    open_rule: str
    closed_group: str
    guarded_group: str
    guarded_rule: str
    instances: dict[str, str]  # Name tag -> instance id
    enabled: list[Target]


def _group(ec2: Any, vpc_id: str, name: str) -> str:
    return str(ec2.create_security_group(GroupName=name, Description=name,
                                         VpcId=vpc_id)["GroupId"])


def _allow(ec2: Any, group_id: str, port: int, cidr: str) -> str:
    answer = ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}])
    return str(answer["SecurityGroupRules"][0]["SecurityGroupRuleId"])


def _launch(ec2: Any, subnet_id: str, name: str, group_id: str) -> str:
    answer = ec2.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet_id, SecurityGroupIds=[group_id],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}])
    return str(answer["Instances"][0]["InstanceId"])


@pytest.fixture
def aws_estate(aws_group: AwsGroup) -> AwsEstate:
    """web: 22 open to 0.0.0.0/0; db: 22 from one office range and 443 to all (closed to
    management); app: 3389 open, in a group an enabled target names; bastion: 22 open, the
    instance named by an enabled target; gone: 22 open, terminated."""
    ec2, vpc_id = aws_group.ec2, aws_group.vpc_id
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    open_group = aws_group.group_id
    open_rule = _allow(ec2, open_group, 22, "0.0.0.0/0")
    closed_group = _group(ec2, vpc_id, "closed")
    _allow(ec2, closed_group, 22, "203.0.113.0/24")
    _allow(ec2, closed_group, 443, "0.0.0.0/0")
    guarded_group = _group(ec2, vpc_id, "guarded")
    guarded_rule = _allow(ec2, guarded_group, 3389, "0.0.0.0/0")
    instances = {name: _launch(ec2, subnet_id, name, group) for name, group in (
        ("web", open_group), ("db", closed_group), ("app", guarded_group),
        ("bastion", open_group), ("gone", open_group))}
    ec2.terminate_instances(InstanceIds=[instances["gone"]])
    enabled = targets(app={"aws": {"region": REGION, "security_group_id": guarded_group}},
                      bastion={"aws": {"region": REGION, "instance_id": instances["bastion"]}})
    return AwsEstate(open_group, open_rule, closed_group, guarded_group, guarded_rule, instances,
                     enabled)


def test_aws_instances_are_classified_with_the_rule_that_opens_them(
        aws_estate: AwsEstate) -> None:
    machines = by_name(scan_aws([REGION], aws_estate.enabled))

    assert sorted(machines) == ["app", "bastion", "db", "web"]  # not the terminated one
    web, db, app, bastion = (machines[n] for n in ("web", "db", "app", "bastion"))
    assert (web.status, web.target) == (Status.NOT_CONFIGURED, None)
    assert web.exposures == (Exposure(22, "tcp", "0.0.0.0/0", aws_estate.open_group,
                                      aws_estate.open_rule),)
    assert (web.id, web.place, web.firewalls) == (
        aws_estate.instances["web"], REGION, (aws_estate.open_group,))
    assert web.private_ip is not None and web.private_ip.startswith("10.0.1.")
    assert (db.status, db.exposures) == (Status.NOT_CONFIGURED, ())
    assert db.reason == "healthy: no exposed management port"
    assert (app.status, app.target) == (Status.CONFIGURED, "app")
    assert app.exposures == (Exposure(3389, "tcp", "0.0.0.0/0", aws_estate.guarded_group,
                                      aws_estate.guarded_rule),)  # still open outside jit
    assert (bastion.status, bastion.target) == (Status.CONFIGURED, "bastion")


def test_aws_regions_are_scanned_each_and_the_ec2_endpoint_is_honoured(
        aws_estate: AwsEstate, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with ThrottlingProxy(aws_env, throttle=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        machines = scan_aws([REGION, "eu-west-1", REGION], [])

    assert sorted(m.name for m in machines) == ["app", "bastion", "db", "web"]
    assert {m.place for m in machines} == {REGION}
    # per region: the instances, then the rules of their groups (none in eu-west-1)
    assert proxy.ec2_requests == 3


def test_an_aws_failure_is_a_provider_error_naming_the_region(aws_env: str) -> None:
    with pytest.raises(ProviderError, match="us east 1"):
        scan_aws(["us east 1"], [])


# ---- Azure ------------------------------------------------------------------------------------


def vm_id(name: str) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Compute/"
            f"virtualMachines/{name}")


@dataclass(frozen=True)
class AzureEstate:
    arm: ArmEmulator
    enabled: list[Target]
    nsg_ids: dict[str, str]


@pytest.fixture
def azure_estate(arm_emulator: ArmEmulator) -> AzureEstate:
    """vm-nic: ssh open on its NIC's NSG; vm-subnet (two NICs): rdp open on its subnet's NSG;
    vm-both: ssh open on its NIC's NSG, blocked by its subnet's; vm-none: no NSG anywhere;
    vm-guarded: ssh open, its NSG and address named by an enabled target; and a NIC attached
    to no VM. Lists come back two items a page."""
    arm = arm_emulator
    arm.page_size = 2
    open_ssh = [{"name": "allow-ssh", "properties": rule_properties(100, 22)}]
    nsgs = {
        "nic-open": arm.add_nsg(SUBSCRIPTION, RG, "nsg-nic-open", rules=open_ssh),
        "subnet-open": arm.add_nsg(SUBSCRIPTION, RG, "nsg-subnet-open", rules=[
            {"name": "allow-rdp", "properties": rule_properties(200, 3389, "Internet")}]),
        "subnet-closed": arm.add_nsg(SUBSCRIPTION, RG, "nsg-subnet-closed", rules=[
            {"name": "deny-ssh", "properties": rule_properties(100, 22, access="Deny")}]),
        "guarded": arm.add_nsg(SUBSCRIPTION, RG, "nsg-guarded", rules=open_ssh),
    }
    arm.add_vnet(SUBSCRIPTION, RG, "vnet", "10.0.0.0/16")
    front = arm.add_subnet(SUBSCRIPTION, RG, "vnet", "front", "10.0.1.0/24",
                           nsg_id=nsgs["subnet-open"])
    back = arm.add_subnet(SUBSCRIPTION, RG, "vnet", "back", "10.0.2.0/24",
                          nsg_id=nsgs["subnet-closed"])
    bare = arm.add_subnet(SUBSCRIPTION, RG, "vnet", "bare", "10.0.3.0/24")
    for nic, subnet, address, nsg, vm in (
            ("nic-1", bare, "10.0.3.4", nsgs["nic-open"], "vm-nic"),
            ("subnet-1", front, "10.0.1.4", None, "vm-subnet"),
            ("subnet-2", front, "10.0.1.5", None, "vm-subnet"),
            ("both-1", back, "10.0.2.4", nsgs["nic-open"], "vm-both"),
            ("none-1", bare, "10.0.3.5", None, "vm-none"),
            ("guarded-1", bare, "10.0.3.6", nsgs["guarded"], "vm-guarded"),
            ("spare", front, "10.0.1.9", nsgs["nic-open"], None)):
        arm.add_nic(SUBSCRIPTION, RG, nic, subnet, address, nsg_id=nsg,
                    vm_id=vm_id(vm) if vm else None)
    enabled = targets(guarded={"azure": {
        "subscription_id": SUBSCRIPTION, "resource_group": RG,
        "network_security_group": "nsg-guarded", "destination": "10.0.3.6",
        "arm_endpoint": arm.url}})
    return AzureEstate(arm, enabled, nsgs)


def azure_options(arm: ArmEmulator) -> dict[str, Any]:
    return {"credential": StaticTokenCredential(), "arm_endpoint": arm.url,
            "client_options": {"connection_verify": arm.ca_bundle, "retry_backoff_factor": 0.01}}


def test_azure_vms_are_classified_with_the_rule_that_opens_them(
        azure_estate: AzureEstate) -> None:
    arm, nsgs = azure_estate.arm, azure_estate.nsg_ids

    machines = by_name(scan_azure([SUBSCRIPTION], azure_estate.enabled, **azure_options(arm)))

    assert sorted(machines) == ["vm-both", "vm-guarded", "vm-nic", "vm-none", "vm-subnet"]
    on_nic, on_subnet, both, none, guarded = (machines[f"vm-{n}"] for n in (
        "nic", "subnet", "both", "none", "guarded"))
    assert on_nic.status is Status.NOT_CONFIGURED
    assert on_nic.exposures == (Exposure(22, "tcp", "*", "nsg-nic-open", "allow-ssh"),)
    assert (on_nic.id, on_nic.place, on_nic.private_ip, on_nic.firewalls) == (
        vm_id("vm-nic"), f"{SUBSCRIPTION}/{RG}", "10.0.3.4", (nsgs["nic-open"],))
    assert on_subnet.status is Status.NOT_CONFIGURED
    assert on_subnet.exposures == (Exposure(3389, "tcp", "Internet", "nsg-subnet-open",
                                            "allow-rdp"),)
    assert on_subnet.private_ip == "10.0.1.4"  # its primary (first) NIC's
    assert (both.status, both.exposures) == (Status.NOT_CONFIGURED, ())
    assert both.firewalls == (nsgs["nic-open"], nsgs["subnet-closed"])
    assert none.status is Status.UNSUPPORTED
    assert none.reason == "no network security group on its network interface or subnet"
    assert (guarded.status, guarded.target) == (Status.CONFIGURED, "guarded")
    assert guarded.exposures == (Exposure(22, "tcp", "*", "nsg-guarded", "allow-ssh"),)


def test_the_azure_scan_only_lists(azure_estate: AzureEstate) -> None:
    arm = azure_estate.arm

    scan_azure([SUBSCRIPTION], [], **azure_options(arm))

    assert arm.operations() == {NIC_READ, VNET_READ, NSG_READ, FIREWALL_READ}
    assert all(call.method == "GET" and call.ok for call in arm.calls)
    # 7 NICs and 4 NSGs two a page, one virtual network, no firewall: 4 + 1 + 2 + 1 requests
    assert [len(arm.calls_to(op)) for op in (NIC_READ, VNET_READ, NSG_READ, FIREWALL_READ)] \
        == [4, 1, 2, 1]


def test_an_unknown_subscription_is_target_not_found(azure_estate: AzureEstate) -> None:
    other = "99999999-9999-9999-9999-999999999999"
    with pytest.raises(TargetNotFound, match=f"subscription {other}"):
        scan_azure([other], [], **azure_options(azure_estate.arm))


def test_throttling_that_outlasts_the_retries_is_transient(azure_estate: AzureEstate) -> None:
    azure_estate.arm.faults.throttle_next(4, retry_after=0.01)

    with pytest.raises(TransientProviderError, match=f"subscription {SUBSCRIPTION}"):
        scan_azure([SUBSCRIPTION], [], **azure_options(azure_estate.arm))


# ---- both clouds, and the suggestion --------------------------------------------------------


def test_run_scan_covers_both_clouds_and_its_suggestion_is_a_valid_policy(
        aws_estate: AwsEstate, azure_estate: AzureEstate) -> None:
    arm = azure_estate.arm
    options = azure_options(arm)

    machines = run_scan([REGION], [SUBSCRIPTION], [*aws_estate.enabled, *azure_estate.enabled],
                        azure_credential=options["credential"], azure_endpoint=arm.url,
                        azure_client_options=options["client_options"])
    snippet = suggest_policy(machines)
    policy = parse_policy({"defaults": {"approvers": ["U0BOB"]}, **yaml.safe_load(snippet)},
                          "suggested")

    assert [(m.cloud, m.name) for m in machines] == [
        ("aws", "app"), ("aws", "bastion"), ("aws", "db"), ("aws", "web"),
        ("azure", "vm-both"), ("azure", "vm-guarded"), ("azure", "vm-nic"), ("azure", "vm-none"),
        ("azure", "vm-subnet")]
    assert sorted(policy.targets) == ["vm-nic", "vm-subnet", "web"]
    web = policy.targets["web"]
    assert isinstance(web.location, AwsLocation)
    assert web.location.instance_id == aws_estate.instances["web"]
    assert [p.port for p in web.ports.values()] == [22]
    on_subnet = policy.targets["vm-subnet"]
    assert isinstance(on_subnet.location, AzureLocation)
    assert on_subnet.location.nsg_id == azure_estate.nsg_ids["subnet-open"]
    assert on_subnet.location.destination == "10.0.1.4"
    assert [p.port for p in on_subnet.ports.values()] == [3389]


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_scan_counts_a_target_enabled_with_jit_enable(aws_estate: AwsEstate, db_url: str,
                                                          tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from jitcore.cli import cli

    policy = {"defaults": {"approvers": ["U0BOB"]}, "targets": {
        "web": {"aws": {"region": REGION, "instance_id": aws_estate.instances["web"]},
                "ports": {"ssh": 22}}}}
    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(policy))
    env = {"JIT_CONFIG": str(config), "JIT_DATABASE_URL": db_url}

    def jit(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env)

    assert jit("scan").exit_code == 2  # says what to scan
    before = {m["name"]: m for m in json.loads(jit("scan", "--aws-region", REGION,
                                                    "--json").output)}
    assert before["web"]["status"] == "not configured"
    assert [e["rule"] for e in before["web"]["exposures"]] == [aws_estate.open_rule]

    suggested = jit("scan", "--aws-region", REGION, "--suggest").output
    assert f'instance_id: "{aws_estate.instances["web"]}"' in suggested

    assert jit("enable", "web", "--yes").exit_code == 0
    table = jit("scan", "--aws-region", REGION)
    assert table.exit_code == 0, table.output
    after = {m["name"]: m for m in json.loads(jit("scan", "--aws-region", REGION,
                                                   "--json").output)}
    assert after["web"]["status"] == "configured" and after["web"]["target"] == "web"
    assert after["web"]["exposures"] == []  # enable took the open rule away
    assert "configured" in table.output
    # The table ends with its summary line, printed once.
    assert [line for line in table.output.splitlines() if "not configured (" in line] == [
        table.output.splitlines()[-1]]
