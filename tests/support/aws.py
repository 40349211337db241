"""Reading a security group back, and planting rules, the way the tests check jit's work."""

from __future__ import annotations

from typing import Any


def ingress(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    """Every inbound rule of the group."""
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    return [r for r in rules if not r["IsEgress"]]


def jit_rules(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    """The inbound rules carrying jit's marker tag."""
    return [r for r in ingress(ec2, group_id)
            if any(t["Key"] == "jit:grant" for t in r.get("Tags", []))]


def jit_rule_ids(ec2: Any, group_id: str) -> set[str]:
    return {r["SecurityGroupRuleId"] for r in jit_rules(ec2, group_id)}


def plant_marked_rule(ec2: Any, group_id: str, grant_id: str = "999", port: int = 3389,
                      cidr: str = "198.51.100.9/32") -> None:
    """A rule with jit's marker but no grant behind it: what a crash mid-open leaves."""
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                        "IpRanges": [{"CidrIp": cidr}]}],
        TagSpecifications=[{"ResourceType": "security-group-rule",
                            "Tags": [{"Key": "jit:grant", "Value": grant_id}]}])
