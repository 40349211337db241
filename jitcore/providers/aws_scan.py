"""The AWS half of `jit scan`: EC2 instances and the inbound rules of their security groups.

Read-only (ec2:DescribeInstances, ec2:DescribeSecurityGroupRules). The clients are the
ones `AwsProvider` uses (`aws_ec2.Ec2Clients`): the standard credential chain,
`AWS_ENDPOINT_URL[_EC2]` (honoured by boto3 itself) and botocore's retries; errors become
`ProviderError`s through the provider's own translation. What the answers mean is decided
in `jitcore.scan`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from jitcore.policy import AwsLocation, Target
from jitcore.providers.aws_ec2 import (
    DESCRIBE_BATCH,
    Ec2Client,
    Ec2Clients,
    ingress_rules,
    protocol_of,
    source_of,
    translated,
)
from jitcore.scan import AwsInstance, Machine, SecurityGroupRule, classify

# Instances on their way out, or gone: nothing left to protect.
_GONE = frozenset({"shutting-down", "terminated"})


def scan_aws(regions: Sequence[str], enabled: Sequence[Target]) -> list[Machine]:
    """Every live instance in these regions, classified against the enabled jit targets."""
    clients = Ec2Clients()
    machines: list[Machine] = []
    for region in dict.fromkeys(regions):
        location = AwsLocation(region=region)
        ec2 = clients.client(location)
        with translated("EC2 instances and security groups", location):
            instances = list(_instances(ec2))
            rules = _rules_by_group(ec2, {g for i in instances for g in _group_ids(i)})
        machines += [classify(_facts(region, instance, rules), enabled)
                     for instance in instances]
    return machines


def _instances(ec2: Ec2Client) -> Iterator[dict[str, Any]]:
    for page in ec2.get_paginator("describe_instances").paginate():
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                if instance.get("State", {}).get("Name") not in _GONE:
                    yield instance


def _group_ids(instance: dict[str, Any]) -> tuple[str, ...]:
    """The groups of every network interface (and of the instance), first seen first."""
    groups = [g["GroupId"] for interface in instance.get("NetworkInterfaces", [])
              for g in interface.get("Groups", [])]
    groups += [g["GroupId"] for g in instance.get("SecurityGroups", [])]
    return tuple(dict.fromkeys(str(g) for g in groups))


def _rules_by_group(ec2: Ec2Client,
                    group_ids: Iterable[str]) -> dict[str, list[SecurityGroupRule]]:
    """The inbound rules of these groups, one filtered call per 200 groups."""
    wanted = sorted(group_ids)
    rules: dict[str, list[SecurityGroupRule]] = {group_id: [] for group_id in wanted}
    for start in range(0, len(wanted), DESCRIBE_BATCH):
        filters = [{"Name": "group-id", "Values": wanted[start:start + DESCRIBE_BATCH]}]
        for rule in ingress_rules(ec2, filters):
            source = source_of(rule)
            rules.setdefault(str(rule["GroupId"]), []).append(SecurityGroupRule(
                group_id=str(rule["GroupId"]), rule_id=str(rule["SecurityGroupRuleId"]),
                protocol=protocol_of(rule), from_port=int(rule.get("FromPort", -1)),
                to_port=int(rule.get("ToPort", -1)),
                source=str(source) if source is not None else None))
    return rules


def _facts(region: str, instance: dict[str, Any],
           rules: dict[str, list[SecurityGroupRule]]) -> AwsInstance:
    tags = {tag.get("Key"): tag.get("Value") for tag in instance.get("Tags", [])}
    group_ids = _group_ids(instance)
    return AwsInstance(
        region=region,
        instance_id=str(instance["InstanceId"]),
        name=str(tags.get("Name") or instance["InstanceId"]),
        private_ip=instance.get("PrivateIpAddress"),
        vpc_id=instance.get("VpcId"),
        group_ids=group_ids,
        rules=tuple(rule for group_id in group_ids for rule in rules.get(group_id, [])),
    )
