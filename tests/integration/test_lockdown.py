"""jit enable / disable: closed by default, put back exactly; and the posture watch.

AWS through boto3 against moto's server, Azure through azure-mgmt-network against the ARM
emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jitcore.domain import Status
from jitcore.lockdown import LockdownRefused, Lockdowns
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store
from tests.conftest import AwsGroup
from tests.fakes.arm import ArmEmulator, rule_properties
from tests.support.aws import ingress
from tests.support.azure import SUBSCRIPTION, emulator_provider, network_client
from tests.support.fixtures import ManualClock, RecordingNotifier
from tests.support.policies import APPROVER, REQUESTER, aws_policy, azure_policy

ADMIN = "cli:ops"
RG, NSG, DESTINATION = "rg-app", "nsg-app", "10.0.1.4"


# ---- AWS ------------------------------------------------------------------------------------


def authorize(ec2: Any, group_id: str, port: int, cidr: str, description: str,
              protocol: str = "tcp") -> None:
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[{
        "IpProtocol": protocol, "FromPort": port, "ToPort": port,
        "IpRanges": [{"CidrIp": cidr, "Description": description}]}])


def group_content(ec2: Any, group_id: str) -> list[tuple[Any, ...]]:
    """The group's inbound rules without their ids (a restored rule gets a new id)."""
    return sorted((r["IpProtocol"], r.get("FromPort"), r.get("ToPort"), r.get("CidrIpv4"),
                   r.get("Description"), tuple(sorted((t["Key"], t["Value"])
                                                      for t in r.get("Tags", []))))
                  for r in ingress(ec2, group_id))


def aws_service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
                group_id: str, **target: Any) -> JitService:
    return JitService(store, aws_policy(group_id, **target), {"aws": AwsProvider()}, notifier,
                      clock)


def grant(service: JitService, target: str, source: str = "203.0.113.7") -> int:
    gid = service.request(REQUESTER, target, "ssh", timedelta(minutes=30), source).grant.id
    service.approve(gid, APPROVER)
    assert service.open(gid).status is Status.ACTIVE
    return gid


def test_aws_group_enable_then_disable_is_the_identity(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        aws_group: AwsGroup) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    authorize(ec2, group_id, 22, "0.0.0.0/0", "ssh from anywhere")
    authorize(ec2, group_id, 3389, "10.0.0.0/8", "rdp from the office")
    authorize(ec2, group_id, 443, "0.0.0.0/0", "https")
    before = group_content(ec2, group_id)
    service = aws_service(store, clock, notifier, group_id)
    lockdowns = Lockdowns(service)

    plan = lockdowns.plan_enable("prod-db")
    assert sorted(r.body["FromPort"] for r in plan.remove) == [22, 3389]
    assert plan.blockers == ()
    lockdowns.enable("prod-db", ADMIN, plan)
    assert [r[1] for r in group_content(ec2, group_id)] == [443]  # closed by default

    gid = grant(service, "prod-db")
    [status] = lockdowns.status(["prod-db"])
    assert status.enabled and len(status.snapshot) == 2 and status.active_grants == 1

    assert lockdowns.disable("prod-db", ADMIN) == []
    assert service.get(gid).status is Status.CLOSED
    assert service.get(gid).close_reason == "revoked"
    assert group_content(ec2, group_id) == before
    assert not lockdowns.status(["prod-db"])[0].enabled


def test_aws_disable_reports_a_rule_changed_meanwhile(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        aws_group: AwsGroup) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    authorize(ec2, group_id, 22, "0.0.0.0/0", "ssh from anywhere")
    lockdowns = Lockdowns(aws_service(store, clock, notifier, group_id))
    lockdowns.enable("prod-db", ADMIN, lockdowns.plan_enable("prod-db"))
    authorize(ec2, group_id, 22, "192.0.2.0/24", "added by hand meanwhile")

    problems = Lockdowns(lockdowns.service).check_posture()["prod-db"]
    assert len(problems) == 1 and "192.0.2.0/24" in problems[0]
    differences = lockdowns.disable("prod-db", ADMIN)
    assert len(differences) == 1 and "192.0.2.0/24" in differences[0]
    assert "was added while jit was enabled" in differences[0]


def test_aws_instance_target_gets_its_own_group_and_loses_it_again(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        aws_group: AwsGroup) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    authorize(ec2, group_id, 22, "0.0.0.0/0", "ssh from anywhere")
    subnet = ec2.create_subnet(VpcId=aws_group.vpc_id, CidrBlock="10.0.1.0/24")["Subnet"]
    instance_id = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                    SubnetId=subnet["SubnetId"],
                                    SecurityGroupIds=[group_id])["Instances"][0]["InstanceId"]
    before = group_content(ec2, group_id)
    service = JitService(store, aws_policy(group_id), {"aws": AwsProvider()}, notifier, clock)
    service.policy = _instance_policy(group_id, instance_id)
    lockdowns = Lockdowns(service)

    lockdowns.enable("prod-db", ADMIN, lockdowns.plan_enable("prod-db"))
    groups = _eni_groups(ec2, instance_id)
    assert len(groups) == 2 and group_id in groups
    assert group_content(ec2, group_id) == []
    grant(service, "prod-db")

    assert lockdowns.disable("prod-db", ADMIN) == []
    assert _eni_groups(ec2, instance_id) == {group_id}
    assert group_content(ec2, group_id) == before
    names = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert "jit-prod-db" not in names


def _instance_policy(group_id: str, instance_id: str) -> Any:
    from jitcore.policy_file import parse_policy
    from tests.support.policies import aws_policy_data

    data = aws_policy_data(group_id)
    data["targets"]["prod-db"]["aws"] = {"region": "us-east-1", "instance_id": instance_id}
    return parse_policy(data, "test-policy.yaml")


def _eni_groups(ec2: Any, instance_id: str) -> set[str]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"][0]
    return {g["GroupId"] for i in instance["NetworkInterfaces"] for g in i["Groups"]}


# ---- Azure ----------------------------------------------------------------------------------


@pytest.fixture
def azure(store: Store, clock: ManualClock, notifier: RecordingNotifier,
          arm_emulator: ArmEmulator) -> tuple[JitService, ArmEmulator]:
    arm_emulator.add_nsg(SUBSCRIPTION, RG, NSG)
    service = JitService(store, azure_policy(arm_emulator.url, SUBSCRIPTION),
                         {"azure": emulator_provider(arm_emulator)}, notifier, clock)
    return service, arm_emulator


def nsg_content(emulator: ArmEmulator) -> dict[str, dict[str, Any]]:
    keep = ("protocol", "sourcePortRange", "destinationPortRange", "sourceAddressPrefix",
            "destinationAddressPrefix", "access", "priority", "direction", "description")
    return {r["name"]: {k: r["properties"].get(k) for k in keep}
            for r in emulator.rules(SUBSCRIPTION, RG, NSG)}


def test_azure_enable_refuses_a_wide_allow_and_names_it(
        azure: tuple[JitService, ArmEmulator]) -> None:
    service, emulator = azure
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "allow-ssh-any",
                      rule_properties(150, 22, source="*", destination="*"))
    before = nsg_content(emulator)
    lockdowns = Lockdowns(service)
    plan = lockdowns.plan_enable("web-vm")
    assert [r.ref for r in plan.blockers] == ["allow-ssh-any"]
    with pytest.raises(LockdownRefused, match=r"allow-ssh-any \(Allow Tcp/22 from \* at "
                                              r"priority 150\).*--take-over"):
        lockdowns.enable("web-vm", ADMIN, plan)
    assert nsg_content(emulator) == before  # nothing changed
    assert not lockdowns.status(["web-vm"])[0].enabled


def test_azure_take_over_enable_then_disable_is_the_identity(
        azure: tuple[JitService, ArmEmulator]) -> None:
    service, emulator = azure
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "allow-ssh-any",
                      rule_properties(150, 22, source="*", destination="*",
                                      description="left open in 2019"))
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "allow-https", rule_properties(300, 443))
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "ssh-from-bastion",
                      rule_properties(400, 22, source="10.9.0.0/24", destination="*"))
    before = nsg_content(emulator)
    lockdowns = Lockdowns(service)

    plan = lockdowns.plan_enable("web-vm")
    lockdowns.enable("web-vm", ADMIN, plan, take_over=True)
    during = nsg_content(emulator)
    assert "allow-ssh-any" not in during
    assert during["jit-deny-22-tcp"]["access"] == "Deny"
    assert during["jit-deny-22-tcp"]["destinationAddressPrefix"] == DESTINATION
    assert {during["jit-deny-22-tcp"]["priority"], during["jit-deny-3389-tcp"]["priority"]} \
        == {200, 201}  # right behind the grant band 100-199

    gid = grant(service, "web-vm")
    assert nsg_content(emulator)[f"jit-{gid}"]["priority"] == 100

    assert lockdowns.disable("web-vm", ADMIN) == []
    assert service.get(gid).status is Status.CLOSED
    assert nsg_content(emulator) == before  # rule for rule, priority 150 included


def test_posture_reports_a_deleted_deny_rule_and_a_new_wide_allow(
        azure: tuple[JitService, ArmEmulator], notifier: RecordingNotifier) -> None:
    service, emulator = azure
    lockdowns = Lockdowns(service)
    lockdowns.enable("web-vm", ADMIN, lockdowns.plan_enable("web-vm"))
    assert lockdowns.check_posture() == {"web-vm": []}

    client = network_client(emulator)
    client.security_rules.begin_delete(RG, NSG, "jit-deny-22-tcp").result()
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "rdp-for-vendor",
                      rule_properties(120, 3389, source="Internet", destination="*"))

    problems = lockdowns.check_posture()["web-vm"]
    assert any("jit-deny-22-tcp is missing" in p for p in problems)
    assert any(p.startswith("rdp-for-vendor (Allow Tcp/3389 from Internet") for p in problems)
    alerts = [a for a in notifier.alerts if a.startswith("posture of web-vm")]
    assert len(alerts) == 2
    lockdowns.check_posture()  # the same problems again: no second alert
    assert len([a for a in notifier.alerts if a.startswith("posture of web-vm")]) == 2
    [status] = lockdowns.status(["web-vm"])
    assert status.checked_at is not None and len(status.problems) == 2


# ---- the CLI --------------------------------------------------------------------------------


def test_cli_enable_status_disable(db_url: str, aws_group: AwsGroup, tmp_path: Any) -> None:
    import yaml
    from click.testing import CliRunner

    from jitcore.cli import cli
    from tests.support.policies import aws_policy_data

    ec2, group_id = aws_group.ec2, aws_group.group_id
    authorize(ec2, group_id, 22, "0.0.0.0/0", "ssh from anywhere")
    before = group_content(ec2, group_id)
    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(aws_policy_data(group_id)))
    env = {"JIT_CONFIG": str(config), "JIT_DATABASE_URL": db_url}

    def jit(*args: str, given: str | None = None) -> Any:
        return CliRunner().invoke(cli, list(args), env=env, input=given)

    dry = jit("enable", "prod-db", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"remove (recorded, restored by disable): {group_id} sgr-" in dry.output
    assert "tcp 22 from 0.0.0.0/0 (ssh from anywhere)" in dry.output
    declined = jit("enable", "prod-db", given="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert group_content(ec2, group_id) == before  # neither changed anything

    assert jit("enable", "prod-db", "--yes").output.endswith("jit enabled on prod-db\n")
    assert group_content(ec2, group_id) == []
    again = jit("enable", "prod-db", "--yes")
    assert again.exit_code == 1 and "already enabled on prod-db" in again.output
    shown = jit("status", "prod-db")
    assert "prod-db (aws): enabled since" in shown.output
    assert "snapshot: 1 rule(s) to restore on disable" in shown.output

    done = jit("disable", "prod-db", "--yes")
    assert done.exit_code == 0, done.output
    assert "the firewall is as it was" in done.output
    assert group_content(ec2, group_id) == before
    assert "prod-db (aws): not enabled" in jit("status").output
    unknown = jit("status", "nope")
    assert unknown.exit_code == 1 and "no target 'nope'" in unknown.output
