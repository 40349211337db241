"""Closed by default on AWS (`jit enable` / `jit disable`): the `LockdownProvider` half of
`AwsProvider`.

Enabling revokes the standing inbound rules that open one of the target's managed ports
(jit's own grant rules aside), after snapshotting each one whole; for an instance target it
also makes jit's own group and attaches it beside the instance's groups, so that grants can
open meanwhile. Disabling puts every snapshotted rule back (same protocol, ports, source,
description and tags; EC2 gives it a new id), removes jit's group and reads the groups back.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from jitcore.policy import AwsLocation, Target
from jitcore.ports import FirewallRule, Lockdown, LockdownPlan
from jitcore.providers.aws_ec2 import (
    GRANT_TAG,
    TARGET_TAG,
    Ec2Client,
    Ec2Clients,
    aws_location,
    describe_instance,
    ec2_filter,
    error_code,
    find_group,
    ingress_rules,
    protocol_of,
    ready_instance_group,
    revoke,
    tags_of,
    translated,
)


class AwsLockdownSupport:
    """`plan_lockdown`, `lock_down`, `lift_lockdown` and `posture` for EC2 security groups,
    through the clients of the provider this is part of."""

    _clients: Ec2Clients

    def plan_lockdown(self, target: Target) -> LockdownPlan:
        """The standing rules that open one of the target's ports; for an instance target,
        also jit's own group, attached beside the instance's groups."""
        location = aws_location(target)
        ec2 = self._clients.client(location)
        with translated(_subject(location), location):
            groups, _ = _lockdown_scope(ec2, target, location)
            add: tuple[str, ...] = ()
            if location.instance_id:
                add = (f"security group jit-{target.name} (jit's grants go there), attached "
                       f"to every network interface of {location.instance_id} beside "
                       f"{', '.join(groups) or 'no other group'}",)
            return LockdownPlan(target.name, tuple(_standing(ec2, groups, target)), add)

    def lock_down(self, target: Target, plan: LockdownPlan, take_over: bool) -> Lockdown:
        location = aws_location(target)
        ec2 = self._clients.client(location)
        created: dict[str, Any] = {}
        with translated(_subject(location), location):
            if location.instance_id:  # jit's group first, so that grants can open meanwhile
                created["group_id"] = ready_instance_group(ec2, target, location)
            by_group: dict[str, list[str]] = defaultdict(list)
            for rule in plan.remove:
                by_group[rule.scope].append(rule.ref)
            for group_id, refs in by_group.items():
                revoke(ec2, group_id, refs, location)
        return Lockdown(plan.remove, created)

    def lift_lockdown(self, target: Target, lockdown: Lockdown) -> list[str]:
        location = aws_location(target)
        ec2 = self._clients.client(location)
        with translated(_subject(location), location):
            for rule in lockdown.removed:
                _restore(ec2, rule)
            if lockdown.created.get("group_id"):
                _remove_instance_group(ec2, location, str(lockdown.created["group_id"]))
            groups = sorted({r.scope for r in lockdown.removed} | {
                location.security_group_id or ""} - {""})
            now = {_content(r.body) for r in _standing(ec2, groups, target)}
        before = {_content(r.body): r for r in lockdown.removed}
        differences = [f"{rule.scope}: {rule.summary} is not back as it was"
                       for key, rule in before.items() if key not in now]
        differences += [f"{key[0]}: {_describe(key)} was added while jit was enabled"
                        for key in sorted(now - set(before))]
        return differences

    def posture(self, target: Target, lockdown: Lockdown) -> list[str]:
        location = aws_location(target)
        ec2 = self._clients.client(location)
        with translated(_subject(location), location):
            groups, instance = _lockdown_scope(ec2, target, location)
            problems = [f"{rule.scope}: rule {rule.ref} ({rule.summary}) opens a managed port "
                        "outside jit" for rule in _standing(ec2, groups, target)]
        group_id = lockdown.created.get("group_id")
        interfaces = instance.get("NetworkInterfaces", []) if group_id and instance else []
        for interface in interfaces:
            if group_id not in {g["GroupId"] for g in interface.get("Groups", [])}:
                problems.append(f"jit's group {group_id} is no longer attached to "
                                f"{interface['NetworkInterfaceId']}")
        return problems


def _subject(location: AwsLocation) -> str:
    return (f"security group {location.security_group_id}" if location.security_group_id
            else f"instance {location.instance_id}")


def _lockdown_scope(ec2: Ec2Client, target: Target,
                    location: AwsLocation) -> tuple[list[str], dict[str, Any] | None]:
    """The groups whose standing rules enabling removes, and the instance when there is one:
    the target's group, or every group of the instance's interfaces but jit's own."""
    if not location.instance_id:
        return [location.security_group_id or ""], None
    instance = describe_instance(ec2, location)
    own = find_group(ec2, instance["VpcId"], ec2_filter(f"tag:{TARGET_TAG}", target.name))
    groups = sorted({g["GroupId"] for i in instance.get("NetworkInterfaces", [])
                     for g in i.get("Groups", [])} - {own})
    return groups, instance


def _covers(rule: dict[str, Any], port: int, protocol: str) -> bool:
    """Does this inbound rule let `port`/`protocol` in (from whatever source)?"""
    if protocol_of(rule) not in (protocol, "-1"):
        return False
    low, high = int(rule.get("FromPort", -1)), int(rule.get("ToPort", -1))
    return low == -1 or low <= port <= high


def _standing(ec2: Ec2Client, groups: Sequence[str], target: Target) -> Iterator[FirewallRule]:
    """Inbound rules of these groups that open one of the target's ports, jit's own aside."""
    for group_id in groups:
        for rule in ingress_rules(ec2, [ec2_filter("group-id", group_id)]):
            if GRANT_TAG in tags_of(rule):
                continue
            if any(_covers(rule, p.port, str(p.protocol)) for p in target.ports.values()):
                body = json.loads(json.dumps(rule, default=str))
                yield FirewallRule(group_id, str(rule["SecurityGroupRuleId"]),
                                   _describe(_content(body)), body)


def _content(body: Mapping[str, Any]) -> tuple[str, ...]:
    """What a rule is, without its id: restored rules get new ids."""
    source = (body.get("CidrIpv4") or body.get("CidrIpv6") or body.get("PrefixListId")
              or (body.get("ReferencedGroupInfo") or {}).get("GroupId") or "?")
    return (str(body.get("GroupId", "")), protocol_of(dict(body)), str(body.get("FromPort", -1)),
            str(body.get("ToPort", -1)), str(source), str(body.get("Description") or ""))


def _describe(content: tuple[str, ...]) -> str:
    _, protocol, low, high, source, description = content
    ports = "all ports" if low == "-1" else low if low == high else f"{low}-{high}"
    protocol = "all protocols" if protocol == "-1" else protocol
    return f"{protocol} {ports} from {source}" + (f" ({description})" if description else "")


def _restore(ec2: Ec2Client, rule: FirewallRule) -> None:
    """Put a snapshotted rule back: same protocol, ports, source, description and tags."""
    body = rule.body
    tags = [t for t in body.get("Tags", []) if not str(t.get("Key", "")).startswith("aws:")]
    extra = {"TagSpecifications": [{"ResourceType": "security-group-rule", "Tags": tags}]} \
        if tags else {}
    try:
        ec2.authorize_security_group_ingress(GroupId=rule.scope,
                                             IpPermissions=[_permission(body)], **extra)
    except ClientError as exc:
        if error_code(exc) != "InvalidPermission.Duplicate":  # someone put it back already
            raise


def _permission(body: Mapping[str, Any]) -> dict[str, Any]:
    """The IpPermission that recreates a rule as DescribeSecurityGroupRules described it."""
    permission: dict[str, Any] = {"IpProtocol": body["IpProtocol"]}
    if str(body["IpProtocol"]) != "-1":
        permission.update(FromPort=body.get("FromPort"), ToPort=body.get("ToPort"))
    described = {"Description": body["Description"]} if body.get("Description") else {}
    if body.get("CidrIpv4"):
        permission["IpRanges"] = [{"CidrIp": body["CidrIpv4"], **described}]
    elif body.get("CidrIpv6"):
        permission["Ipv6Ranges"] = [{"CidrIpv6": body["CidrIpv6"], **described}]
    elif body.get("PrefixListId"):
        permission["PrefixListIds"] = [{"PrefixListId": body["PrefixListId"], **described}]
    else:
        group = body.get("ReferencedGroupInfo") or {}
        permission["UserIdGroupPairs"] = [{"GroupId": group.get("GroupId"), **described}]
    return permission


def _remove_instance_group(ec2: Ec2Client, location: AwsLocation, group_id: str) -> None:
    """Detach jit's group from the instance's interfaces and delete it."""
    instance = describe_instance(ec2, location)
    for interface in instance.get("NetworkInterfaces", []):
        groups = [g["GroupId"] for g in interface.get("Groups", [])]
        if group_id in groups and len(groups) > 1:
            ec2.modify_network_interface_attribute(
                NetworkInterfaceId=interface["NetworkInterfaceId"],
                Groups=[g for g in groups if g != group_id])
    try:
        ec2.delete_security_group(GroupId=group_id)
    except ClientError as exc:
        if error_code(exc) != "InvalidGroup.NotFound":
            raise
