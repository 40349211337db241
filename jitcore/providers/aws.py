"""AWS EC2 security groups as a jit `Provider`. With its sibling modules aws_ec2.py (clients,
error translation, shared calls), aws_lockdown.py (enable/disable) and aws_scan.py, the only
code that uses boto3.

A grant is one inbound rule tagged `jit:grant=<id>` and `jit:managed-by=jit`, in the target's
`security_group_id` or, for an `instance_id` target, in the group jit keeps for that instance
(`jit-<target>`, tagged `jit:target=<target>`, attached to each of its network interfaces).
`InvalidPermission.Duplicate` means the same port and source is already open: the grant
shares that rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from jitcore.errors import ProviderError, TransientProviderError
from jitcore.policy import Target
from jitcore.ports import OpenedRule, OwnedRule, RuleSpec
from jitcore.providers.aws_ec2 import (
    GRANT_TAG,
    MANAGED_BY_TAG,
    Ec2Client,
    Ec2Clients,
    aws_location,
    ec2_filter,
    error_code,
    grant_id_of,
    held_rule_ids,
    ingress_rules,
    instance_group,
    protocol_of,
    ready_instance_group,
    revoke,
    source_of,
    tag_spec,
    tags_of,
    translated,
)
from jitcore.providers.aws_lockdown import AwsLockdownSupport

_ALREADY_GONE = frozenset({
    "InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound", "InvalidGroup.NotFound",
})
# EC2 accepts only these characters in a rule description (at most 255 of them).
_DESCRIPTION_REFUSED = re.compile(r"[^a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]")
# Rule ids per revoke; well inside EC2's request limits.
_REVOKE_BATCH = 100


class AwsProvider(AwsLockdownSupport):
    """Opens and closes jit's inbound rules in EC2 security groups (and, through
    `AwsLockdownSupport`, keeps a target closed by default).

    `max_attempts` is botocore's: how often a throttled or failed call is retried after the
    first try. Timeouts are in seconds. Nothing talks to AWS until the first call.
    """

    cloud = "aws"

    def __init__(
        self, *, max_attempts: int = 5, connect_timeout: float = 5.0, read_timeout: float = 30.0
    ) -> None:
        self._clients = Ec2Clients(max_attempts=max_attempts, connect_timeout=connect_timeout,
                                   read_timeout=read_timeout)

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        location = aws_location(spec.target)
        ec2 = self._clients.client(location)
        group_id = location.security_group_id or ready_instance_group(ec2, spec.target, location)
        with translated(f"security group {group_id}", location):
            for _ in range(2):  # a shared rule can vanish between Duplicate and the lookup
                try:
                    rule_id = _authorize(ec2, group_id, spec)
                    return OpenedRule(group_id, rule_id, created=True, owned=True)
                except ClientError as exc:
                    if error_code(exc) != "InvalidPermission.Duplicate":
                        raise
                existing = _find_same_rule(ec2, group_id, spec)
                if existing is not None:
                    return OpenedRule(
                        group_id, str(existing["SecurityGroupRuleId"]),
                        created=False, owned=GRANT_TAG in tags_of(existing),
                    )
        raise TransientProviderError(
            f"security group {group_id} ({location.region}) reports a rule for {spec.source} "
            f"on port {spec.port.port} as a duplicate, but no such rule can be found; try again"
        )

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        location = aws_location(target)
        ec2 = self._clients.client(location)
        results: dict[str, bool] = {}
        with translated(f"security group {scope}", location):
            for start in range(0, len(refs), _REVOKE_BATCH):
                chunk = list(refs[start:start + _REVOKE_BATCH])
                try:
                    results.update(revoke(ec2, scope, chunk, location))
                except ClientError as exc:
                    if error_code(exc) not in _ALREADY_GONE:
                        raise
                    if error_code(exc) == "InvalidGroup.NotFound":
                        results.update(dict.fromkeys(chunk, False))
                        continue
                    # One unknown id fails the whole call: sort the gone from the present.
                    present = held_rule_ids(ec2, scope, chunk)
                    results.update({ref: False for ref in chunk if ref not in present})
                    if present:
                        results.update(revoke(ec2, scope, sorted(present), location))
        return results

    def present_rules(self, target: Target, scope: str, refs: Sequence[str]) -> set[str]:
        location = aws_location(target)
        ec2 = self._clients.client(location)
        with translated(f"security group {scope}", location):
            try:
                return held_rule_ids(ec2, scope, list(refs))
            except ClientError as exc:
                if error_code(exc) == "InvalidGroup.NotFound":
                    return set()
                raise

    def list_owned_rules(self, target: Target) -> list[OwnedRule]:
        location = aws_location(target)
        ec2 = self._clients.client(location)
        group_id = location.security_group_id or instance_group(ec2, target, location)
        if group_id is None:
            return []
        with translated(f"security group {group_id}", location):
            filters = [ec2_filter("group-id", group_id), ec2_filter("tag-key", GRANT_TAG)]
            return [
                OwnedRule(
                    scope=group_id, ref=str(rule["SecurityGroupRuleId"]),
                    grant_id=grant_id_of(rule), port=int(rule.get("FromPort", -1)),
                    protocol=protocol_of(rule), source=str(source),
                )
                for rule in ingress_rules(ec2, filters)
                if (source := source_of(rule)) is not None
            ]

    def warm(self, target: Target) -> None:
        """Build the target's EC2 client now (no call to AWS): loading botocore's models
        takes a tenth of a second of CPU that should not land in the middle of requests."""
        self._clients.client(aws_location(target))

    def placement(self, target: Target) -> None:
        """Security group rules are unordered: a grant's rule needs no slot."""
        return None

    def used_slots(self, target: Target) -> set[int]:
        return set()

    def lockdowns(self) -> AwsProvider:
        """plan_lockdown, lock_down, lift_lockdown and posture: see AwsLockdownSupport."""
        return self


def _authorize(ec2: Ec2Client, group_id: str, spec: RuleSpec) -> str:
    source = ipaddress.ip_network(spec.source)
    description = _DESCRIPTION_REFUSED.sub(" ", spec.description)[:255]
    permission: dict[str, Any] = {
        "IpProtocol": str(spec.port.protocol),
        "FromPort": spec.port.port,
        "ToPort": spec.port.port,
    }
    if source.version == 4:
        permission["IpRanges"] = [{"CidrIp": str(source), "Description": description}]
    else:
        permission["Ipv6Ranges"] = [{"CidrIpv6": str(source), "Description": description}]
    response = ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[permission],
        TagSpecifications=tag_spec(
            "security-group-rule", {GRANT_TAG: str(spec.grant_id), MANAGED_BY_TAG: "jit"}
        ),
    )
    rules = response.get("SecurityGroupRules", [])
    if len(rules) != 1:
        raise ProviderError(
            f"security group {group_id}: expected AWS to add one rule, it reported {len(rules)}"
        )
    return str(rules[0]["SecurityGroupRuleId"])


def _find_same_rule(ec2: Ec2Client, group_id: str, spec: RuleSpec) -> dict[str, Any] | None:
    """The inbound rule that makes `spec` a duplicate: same protocol, port and source."""
    wanted = ipaddress.ip_network(spec.source)
    for rule in ingress_rules(ec2, [ec2_filter("group-id", group_id)]):
        if (
            protocol_of(rule) == str(spec.port.protocol)
            and rule.get("FromPort") == spec.port.port
            and rule.get("ToPort") == spec.port.port
            and source_of(rule) == wanted
        ):
            return rule
    return None
