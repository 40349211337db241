"""The role documents jit's operators install grant what jitcore calls, and nothing more.

docs/aws-iam-policy.json is the IAM policy for the identity jit runs as (and for the roles
that targets name in `role_arn`); docs/azure-role.json is the Azure custom role for jit's
identity, assigned at the subscriptions it manages (put their ids in AssignableScopes).

The IAM policy, statement by statement (IAM JSON holds no comments, so the reasons are here):
- ReadInstancesAndSecurityGroups: EC2's Describe* actions take no resource-level
  permissions, so their Resource must be "*".
- OpenAndCloseInboundRules: grants, enabling and disabling add and remove inbound rules in the
  groups the policy file names by id. Those groups are the operators' own and the docs ask
  no one to tag them, so no tag condition can narrow these two actions; the resources are
  security groups and their rules only. An operator may list the groups' ARNs instead.
- TagRulesAndGroupsAsJitCreatesThem: jit tags every rule it adds (`jit:grant`,
  `jit:managed-by`) and the instance groups it makes; EC2 checks ec2:CreateTags for tags given
  at creation, limited here to the two calls that create them (ec2:CreateAction).
- AdoptAGroupNamedForATarget: when a group `jit-<target>` already exists, jit adopts it by
  tagging it `jit:target` (the only key this statement lets it write on an existing group).
- CreateInstanceGroupsTaggedForJit, CreateInstanceGroupsInTheirVpc: an instance target's group
  must be created tagged `jit:managed-by=jit`; the VPC is a resource of the same call.
- DeleteOnlyInstanceGroupsOfTargets: disabling an instance target deletes jit's group for it,
  and only groups tagged `jit:target` (made or adopted by jit) can be deleted.
- AttachInstanceGroupsToInterfaces: the instance group is attached beside, and detached from,
  the instance's network interfaces; the interfaces carry no tag jit could match.
- AssumeTheRolesTargetsName: STS for targets with `role_arn`; narrow it to those roles' ARNs.
The ARNs are for the `aws` partition; elsewhere replace it (e.g. `aws-us-gov`).

The Azure role: writing NSGs (grants and deny rules go out in one PUT of the whole NSG) and
reading them and their rules; reading and writing Azure Firewalls (a classic firewall's DNAT
grants go out in one PUT of the whole firewall) and reading, writing and deleting Firewall
Policy rule collection groups (jit's group `jit`, deleted once empty); reading NICs, virtual
networks and subnets (the scan, which lists firewalls and their policies' groups too); and
reading the status of the asynchronous writes ARM answers with
(Microsoft.Network/locations/operations/read, and .../locations/nfvOperations/read for
rule collection groups: the emulator's action for those polls, not verified against Azure).
No join/action is granted: jit never PUTs a firewall that names a Firewall Policy (in policy
mode it writes only the rule collection group), and a classic firewall's PUT carries its
subnet and public IP references unchanged; whether ARM checks join/action on those unchanged
references is not on record here (if it refuses with LinkedAuthorizationFailed, add
Microsoft.Network/virtualNetworks/subnets/join/action and
Microsoft.Network/publicIPAddresses/join/action on the hub's network).

The check runs last in the session (`@runs_last`, tests/support/cloud_calls.py): it drives the
providers through every call they make, against moto's server and the ARM emulator, then
asserts that every action jitcore was recorded calling, by it and by every test before it, is
granted, and that each document grants only actions that this workflow called.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from azure.mgmt.network.models import AzureFirewall, SubResource

from jitcore.domain import Status
from jitcore.policy import AwsLocation, PortPolicy, Target
from jitcore.policy_file import parse_policy
from jitcore.ports import RuleSpec
from jitcore.providers.aws import AwsProvider
from jitcore.providers.aws_scan import scan_aws
from jitcore.providers.azure_scan import scan_azure
from jitcore.service import JitService
from jitcore.store import Store
from tests.fakes.arm import (
    FIREWALL_WRITE,
    GROUP_DELETE,
    GROUP_WRITE,
    ArmEmulator,
    rule_properties,
)
from tests.support.azure import (
    SUBSCRIPTION,
    StaticTokenCredential,
    emulator_provider,
    network_client,
)
from tests.support.cloud_calls import CloudCallRecorder, runs_last
from tests.support.fixtures import ManualClock, RecordingNotifier
from tests.support.policies import APPROVER, REQUESTER, azure_policy, firewall_policy_data

if TYPE_CHECKING:
    from tests.conftest import AwsGroup

DOCS = Path(__file__).resolve().parents[2] / "docs"
IAM_POLICY = DOCS / "aws-iam-policy.json"
AZURE_ROLE = DOCS / "azure-role.json"

# Actions a document may grant although the workflow below never calls them, each with the
# reason. Empty: ec2:CreateTags is also what IAM checks for tags given at creation, which no
# recorded call shows, but jit calls it directly too (adopting a group), and the workflow does.
GRANTED_WITHOUT_A_CALL: dict[str, str] = {}

REGION = "us-east-1"
SSH = PortPolicy("ssh", 22)
SOURCE = "203.0.113.7/32"
OTHER_ACCOUNT_ROLE = "arn:aws:iam::111122223333:role/jit-operator"
RG, NSG = "rg-app", "nsg-app"
HUB, POLICY = "rg-hub", "fwpol-hub"
_ACTION = re.compile(r"[a-z0-9-]+:[A-Za-z0-9]+")
_AZURE_ACTION = re.compile(r"Microsoft\.[A-Za-z]+(/[A-Za-z]+)+/(read|write|delete|action)")
_SUBSCRIPTION_SCOPE = re.compile(r"/subscriptions/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


# ---- the documents ------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    assert isinstance(document, dict), f"{path.name}: not a JSON object"
    return document


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def iam_actions() -> set[str]:
    return {action for statement in load(IAM_POLICY)["Statement"]
            for action in as_list(statement["Action"])}


def azure_actions() -> set[str]:
    return set(load(AZURE_ROLE)["Actions"])


def test_the_iam_policy_is_a_valid_least_privilege_policy() -> None:
    policy = load(IAM_POLICY)
    assert set(policy) == {"Version", "Statement"}
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    assert isinstance(statements, list) and statements
    sids = [statement.get("Sid") for statement in statements]
    assert all(isinstance(sid, str) and re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids
    assert len(set(sids)) == len(sids), f"Sids repeat: {sids}"
    for statement in statements:
        sid = statement["Sid"]
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, sid
        assert statement["Effect"] == "Allow", sid
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        assert actions and all(_ACTION.fullmatch(a) for a in actions), \
            f"{sid}: actions must be named exactly, no wildcards: {actions}"
        assert resources and all(r == "*" or r.startswith("arn:") for r in resources), sid
        assert isinstance(statement.get("Condition", {}), dict), sid
        reads = [a for a in actions if a.startswith("ec2:Describe")]
        if reads:
            assert reads == actions and resources == ["*"], \
                f"{sid}: Describe* actions go alone in a statement with Resource \"*\""
        else:
            assert "*" not in resources, f"{sid}: {actions} must name their resources' ARNs"


def test_the_azure_role_is_a_valid_custom_role() -> None:
    role = load(AZURE_ROLE)
    assert set(role) == {"Name", "IsCustom", "Description", "Actions", "NotActions",
                         "DataActions", "NotDataActions", "AssignableScopes"}
    assert isinstance(role["Name"], str) and role["Name"].strip()
    assert isinstance(role["Description"], str) and role["Description"].strip()
    assert role["IsCustom"] is True
    actions = role["Actions"]
    assert actions and all(isinstance(a, str) and _AZURE_ACTION.fullmatch(a) for a in actions), \
        f"actions must be named exactly, no wildcards: {actions}"
    assert len(set(actions)) == len(actions), f"actions repeat: {actions}"
    assert role["NotActions"] == role["DataActions"] == role["NotDataActions"] == []
    scopes = role["AssignableScopes"]
    assert scopes and all(_SUBSCRIPTION_SCOPE.fullmatch(scope) for scope in scopes), scopes


# ---- the workflow -------------------------------------------------------------------------------


def aws_target(name: str, **location: str) -> Target:
    return Target(name=name, location=AwsLocation(region=REGION, **location),
                  ports={"ssh": SSH}, requesters=("*",), approvers=("U0LEAD",),
                  max_duration=timedelta(hours=3), approval_timeout=timedelta(hours=1))


def spec(target: Target, grant_id: int, priority: int | None = None) -> RuleSpec:
    port = target.ports["ssh"]
    return RuleSpec(grant_id=grant_id, target=target, port=port, source=SOURCE,
                    description=f"jit grant #{grant_id} for alice", slot=priority)


def drive_aws(aws_group: AwsGroup) -> None:
    """Every call AwsProvider and the AWS scan make, each at least once."""
    ec2, provider = aws_group.ec2, AwsProvider()
    group = aws_target("prod-db", security_group_id=aws_group.group_id)

    # A grant, a second grant sharing its rule (Duplicate), read back, then closed together
    # with a rule that is already gone.
    first, second = provider.open_rule(spec(group, 1)), provider.open_rule(spec(group, 2))
    assert (first.created, second.created, second.ref) == (True, False, first.ref)
    assert provider.present_rules(group, first.scope, [first.ref]) == {first.ref}
    assert [rule.grant_id for rule in provider.list_owned_rules(group)] == [1]
    gone = "sgr-0123456789abcdef0"
    assert provider.close_rules(group, first.scope, [first.ref, gone]) == {first.ref: True,
                                                                          gone: False}

    # Closed by default: a standing rule revoked, then put back.
    ec2.authorize_security_group_ingress(GroupId=aws_group.group_id, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
        "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "ssh from anywhere"}]}])
    lockdown = provider.lock_down(group, provider.plan_lockdown(group), take_over=False)
    assert len(lockdown.removed) == 1
    assert provider.posture(group, lockdown) == []
    assert provider.lift_lockdown(group, lockdown) == []

    # An instance target: jit's own group made, attached, used, detached and deleted.
    subnet = ec2.create_subnet(VpcId=aws_group.vpc_id, CidrBlock="10.0.1.0/24")["Subnet"]
    web1, web2 = (ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                    SubnetId=subnet["SubnetId"],
                                    SecurityGroupIds=[aws_group.group_id])["Instances"][0]
                  ["InstanceId"] for _ in range(2))
    web = aws_target("web-1", instance_id=web1)
    lockdown = provider.lock_down(web, provider.plan_lockdown(web), take_over=False)
    opened = provider.open_rule(spec(web, 3))
    assert opened.scope == lockdown.created["group_id"]
    assert provider.posture(web, lockdown) == []
    assert provider.close_rules(web, opened.scope, [opened.ref]) == {opened.ref: True}
    assert provider.lift_lockdown(web, lockdown) == []

    # An instance whose group name someone took first: jit adopts that group (tags it).
    ec2.create_security_group(GroupName="jit-web-2", Description="by hand",
                              VpcId=aws_group.vpc_id)
    web = aws_target("web-2", instance_id=web2)
    opened = provider.open_rule(spec(web, 4))
    assert provider.close_rules(web, opened.scope, [opened.ref]) == {opened.ref: True}

    # A group in another account, reached through the target's role.
    credentials = boto3.client("sts").assume_role(
        RoleArn=OTHER_ACCOUNT_ROLE, RoleSessionName="setup")["Credentials"]
    other = boto3.client("ec2", aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])
    vpc_id = other.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    group_id = other.create_security_group(GroupName="db", Description="db",
                                           VpcId=vpc_id)["GroupId"]
    far = aws_target("far", security_group_id=group_id, role_arn=OTHER_ACCOUNT_ROLE)
    opened = provider.open_rule(spec(far, 5))
    assert provider.close_rules(far, opened.scope, [opened.ref]) == {opened.ref: True}

    assert sorted(machine.id for machine in scan_aws([REGION], [])) == sorted([web1, web2])


def vm_id(name: str) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Compute/"
            f"virtualMachines/{name}")


def drive_azure(arm: ArmEmulator) -> None:
    """Every call AzureProvider and the Azure scan make, each at least once. The emulator is
    seeded directly (no HTTP), so every request it answers here is jitcore's."""
    nsg_id = arm.add_nsg(SUBSCRIPTION, RG, NSG, rules=[
        {"name": "allow-ssh-any", "properties": rule_properties(150, 22, source="*")}])
    target = azure_policy(arm.url, SUBSCRIPTION).targets["web-vm"]
    provider = emulator_provider(arm)

    opened = provider.open_rule(spec(target, 1, priority=100))
    assert provider.present_rules(target, opened.scope, [opened.ref]) == {opened.ref}
    assert [rule.grant_id for rule in provider.list_owned_rules(target)] == [1]
    provider.used_slots(target)  # a list of the rules, like list_owned_rules
    assert provider.close_rules(target, opened.scope, [opened.ref, "jit-999"]) == {
        opened.ref: True, "jit-999": False}

    # Closed by default, taking over a wide allow rule; then put back.
    plan = provider.plan_lockdown(target)
    assert [rule.ref for rule in plan.blockers] == ["allow-ssh-any"]
    lockdown = provider.lock_down(target, plan, take_over=True)
    assert provider.posture(target, lockdown) == []
    assert provider.lift_lockdown(target, lockdown) == []

    # The scan: a VM behind the NSG, and one whose subnet is gone from the virtual network
    # list (the scan asks for that subnet by itself).
    arm.add_vnet(SUBSCRIPTION, RG, "vnet-app", "10.0.0.0/16")
    subnet = arm.add_subnet(SUBSCRIPTION, RG, "vnet-app", "app", "10.0.1.0/24", nsg_id=nsg_id)
    arm.add_nic(SUBSCRIPTION, RG, "web-nic", subnet, "10.0.1.4", vm_id=vm_id("web-vm"))
    arm.add_vnet(SUBSCRIPTION, RG, "vnet-old", "10.1.0.0/16")
    subnet = arm.add_subnet(SUBSCRIPTION, RG, "vnet-old", "old", "10.1.0.0/24")
    arm.add_nic(SUBSCRIPTION, RG, "old-nic", subnet, "10.1.0.4", nsg_id=nsg_id,
                vm_id=vm_id("old-vm"))
    arm.add_vnet(SUBSCRIPTION, RG, "vnet-old", "10.1.0.0/16")  # again: without its subnet
    # Firewalls: a classic one forwarding ssh to web-vm, and one using a Firewall Policy
    # (seed_firewall_policy) whose rule collection group forwards rdp to it.
    arm.add_firewall(SUBSCRIPTION, HUB, "fw-classic", public_ip="20.30.40.50", nat_collections=[
        {"name": "inbound", "properties": {"priority": 200, "action": {"type": "Dnat"}, "rules": [
            {"name": "ssh", "sourceAddresses": ["*"], "destinationAddresses": ["20.30.40.50"],
             "destinationPorts": ["2222"], "protocols": ["TCP"], "translatedAddress": "10.0.1.4",
             "translatedPort": "22"}]}}])
    arm.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "platform", 300, [{
        "ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": "nat", "priority": 100,
        "action": {"type": "DNAT"}, "rules": [
            {"ruleType": "NatRule", "name": "rdp", "ipProtocols": ["TCP"],
             "sourceAddresses": ["*"], "destinationAddresses": ["20.30.40.60"],
             "destinationPorts": ["3390"], "translatedAddress": "10.0.1.4",
             "translatedPort": "3389"}]}])
    machines = scan_azure([SUBSCRIPTION], [target], credential=StaticTokenCredential(),
                          arm_endpoint=arm.url,
                          client_options={"connection_verify": arm.ca_bundle})
    assert sorted(machine.name for machine in machines) == ["old-vm", "web-vm"]
    web = next(machine for machine in machines if machine.name == "web-vm")
    assert sorted((e.firewall, e.port) for e in web.exposures if e.via) == [
        ("fw-classic", 22), ("fw-policy", 3389)]


def seed_firewall_policy(arm: ArmEmulator) -> None:
    """fw-policy, using the Firewall Policy fwpol-hub. A firewall names its policy in the body
    of its PUT, which the emulator's seeding does not take: this PUT is the test's own, made
    before the workflow's calls are counted."""
    policy_id = arm.add_firewall_policy(SUBSCRIPTION, HUB, POLICY)
    arm.add_firewall(SUBSCRIPTION, HUB, "fw-policy", public_ip="20.30.40.60")
    network_client(arm).azure_firewalls.begin_create_or_update(
        HUB, "fw-policy", AzureFirewall(location="westeurope",
                                        firewall_policy=SubResource(id=policy_id))).result()


def drive_azure_firewalls(arm: ArmEmulator, store: Store) -> None:
    """A DNAT grant's whole life through JitService, classic rules then Firewall Policy: opened,
    found by the reconciler as a live grant's, closed at expiry (jit's policy group deleted
    once empty)."""
    arm.add_firewall(SUBSCRIPTION, "rg-hub", "fw-hub", public_ip="20.30.40.50")
    arm.add_firewall_policy(SUBSCRIPTION, "rg-hub", "fwpol-hub")
    clock = ManualClock()
    for mode in ("classic", "policy"):
        policy = parse_policy(firewall_policy_data(arm.url, SUBSCRIPTION, mode=mode), mode)
        service = JitService(store, policy, {"azure": emulator_provider(arm)},
                             RecordingNotifier(), clock)
        grant = service.request(REQUESTER, "hub-vm", "ssh", timedelta(minutes=30), SOURCE,
                                "least privilege").grant.id
        service.approve(grant, APPROVER)
        opened = service.open(grant)
        assert opened.status is Status.ACTIVE, opened.error
        assert service.reconcile() == []
        clock.advance(timedelta(minutes=31))
        assert service.sweep().closed == [grant]


# ---- the check ----------------------------------------------------------------------------------


def missing(called: dict[str, str], granted: set[str], document: Path) -> list[str]:
    return [f"jitcore called {action} (first in {test or 'no test'}), which "
            f"docs/{document.name} does not grant: add {action} to docs/{document.name}"
            for action, test in sorted(called.items()) if action not in granted]


def unused(called: dict[str, str], granted: set[str], document: Path, driver: str) -> list[str]:
    return [f"docs/{document.name} grants {action}, which jitcore never called: remove it, or "
            f"make {driver} exercise the code that needs it"
            for action in sorted(granted - called.keys() - GRANTED_WITHOUT_A_CALL.keys())]


@runs_last
def test_the_documents_grant_every_cloud_call_jitcore_makes_and_nothing_else(
        cloud_calls: CloudCallRecorder, aws_group: AwsGroup, arm_emulator: ArmEmulator,
        sqlite_template: Path, tmp_path: Path) -> None:
    seed_firewall_policy(arm_emulator)
    shutil.copy(sqlite_template, tmp_path / "jit.db")
    store = Store.from_url(f"sqlite:///{tmp_path / 'jit.db'}")
    start = cloud_calls.mark()
    drive_aws(aws_group)
    drive_azure(arm_emulator)
    drive_azure_firewalls(arm_emulator, store)
    store.dispose()

    calls = cloud_calls.calls(since=start)
    assert any(c.by_jitcore for c in calls if c.cloud == "aws")
    assert any(not c.by_jitcore for c in calls if c.cloud == "aws"), \
        "the test's own boto3 calls (seeding, checking) should not count as jitcore's"
    requests = [c for c in calls if c.cloud == "azure"]
    assert requests and all(c.by_jitcore for c in requests), \
        "every request the emulator answered here came from jitcore; some were not credited"
    aws, azure = cloud_calls.jitcore_actions("aws", start), cloud_calls.jitcore_actions(
        "azure", start)
    problems = missing(aws, iam_actions(), IAM_POLICY) + missing(azure, azure_actions(),
                                                                 AZURE_ROLE)
    problems += unused(aws, iam_actions(), IAM_POLICY, "drive_aws")
    problems += unused(azure, azure_actions(), AZURE_ROLE,
                       "drive_azure or drive_azure_firewalls")
    assert not problems, "\n".join(problems)
    assert {FIREWALL_WRITE, GROUP_WRITE, GROUP_DELETE} <= azure.keys(), \
        "the firewall grants should have written in both modes"

    # Everything jitcore called in this session, in every test that ran before this one.
    problems = missing(cloud_calls.jitcore_actions("aws"), iam_actions(), IAM_POLICY)
    problems += missing(cloud_calls.jitcore_actions("azure"), azure_actions(), AZURE_ROLE)
    assert not problems, "\n".join(problems)
