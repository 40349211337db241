"""AWS EC2 security groups as a jit `Provider`. With aws_scan.py, the only code that uses boto3.

A grant is one inbound rule tagged `jit:grant=<id>` and `jit:managed-by=jit`, in the target's
`security_group_id` or, for an `instance_id` target, in the group jit keeps for that instance
(`jit-<target>`, tagged `jit:target=<target>`, attached to each of its network interfaces).
Credentials: the standard boto3 chain, plus STS for a target's `role_arn` (refreshed before
expiry). boto3 itself honours `AWS_ENDPOINT_URL[_EC2]`. botocore retries throttling and network
errors with backoff; what outlasts the retries becomes a `TransientProviderError`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from jitcore.domain import IPNetwork
from jitcore.errors import (
    AccessDenied,
    ProviderError,
    RuleLimitExceeded,
    TargetNotFound,
    TransientProviderError,
)
from jitcore.policy import AwsLocation, Target
from jitcore.ports import FirewallRule, Lockdown, LockdownPlan, OpenedRule, OwnedRule, RuleSpec

GRANT_TAG = "jit:grant"
MANAGED_BY_TAG = "jit:managed-by"
TARGET_TAG = "jit:target"
ROLE_SESSION_NAME = "jit"

# boto3 generates its clients at runtime; the EC2 client is typed at this boundary only.
Ec2Client = Any

_NOT_FOUND = frozenset({
    "InvalidGroup.NotFound", "InvalidGroupId.Malformed",
    "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed",
})
_DENIED = frozenset({
    "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure",
    "InvalidClientTokenId", "ExpiredToken",
})
_TRANSIENT = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
    "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure",
})
_ALREADY_GONE = frozenset({
    "InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound", "InvalidGroup.NotFound",
})
# EC2 accepts only these characters in a rule description (at most 255 of them).
_DESCRIPTION_REFUSED = re.compile(r"[^a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]")
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp"}
# Rule ids per revoke and per describe filter; well inside EC2's request limits.
_REVOKE_BATCH = 100
_DESCRIBE_BATCH = 200


class AwsProvider:
    """Opens and closes jit's inbound rules in EC2 security groups.

    `max_attempts` is botocore's: how often a throttled or failed call is retried after the
    first try. Timeouts are in seconds. Nothing talks to AWS until the first call.
    """

    cloud = "aws"

    def __init__(
        self, *, max_attempts: int = 5, connect_timeout: float = 5.0, read_timeout: float = 30.0
    ) -> None:
        self._config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="jit",
        )
        self._session: boto3.Session | None = None
        self._clients: dict[tuple[str, str | None], Ec2Client] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        location = _aws(spec.target)
        ec2 = self._ec2(location)
        group_id = location.security_group_id or _ready_instance_group(ec2, spec.target, location)
        with _translated(f"security group {group_id}", location):
            for _ in range(2):  # a shared rule can vanish between Duplicate and the lookup
                try:
                    rule_id = _authorize(ec2, group_id, spec)
                    return OpenedRule(group_id, rule_id, created=True, owned=True)
                except ClientError as exc:
                    if _code(exc) != "InvalidPermission.Duplicate":
                        raise
                existing = _find_same_rule(ec2, group_id, spec)
                if existing is not None:
                    return OpenedRule(
                        group_id, str(existing["SecurityGroupRuleId"]),
                        created=False, owned=GRANT_TAG in _tags(existing),
                    )
        raise TransientProviderError(
            f"security group {group_id} ({location.region}) reports a rule for {spec.source} "
            f"on port {spec.port.port} as a duplicate, but no such rule can be found; try again"
        )

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        location = _aws(target)
        ec2 = self._ec2(location)
        results: dict[str, bool] = {}
        with _translated(f"security group {scope}", location):
            for start in range(0, len(refs), _REVOKE_BATCH):
                chunk = list(refs[start:start + _REVOKE_BATCH])
                try:
                    results.update(_revoke(ec2, scope, chunk, location))
                except ClientError as exc:
                    if _code(exc) not in _ALREADY_GONE:
                        raise
                    if _code(exc) == "InvalidGroup.NotFound":
                        results.update(dict.fromkeys(chunk, False))
                        continue
                    # One unknown id fails the whole call: sort the gone from the present.
                    present = _present(ec2, scope, chunk)
                    results.update({ref: False for ref in chunk if ref not in present})
                    if present:
                        results.update(_revoke(ec2, scope, sorted(present), location))
        return results

    def present_rules(self, target: Target, scope: str, refs: Sequence[str]) -> set[str]:
        location = _aws(target)
        ec2 = self._ec2(location)
        with _translated(f"security group {scope}", location):
            try:
                return _present(ec2, scope, list(refs))
            except ClientError as exc:
                if _code(exc) == "InvalidGroup.NotFound":
                    return set()
                raise

    def list_owned_rules(self, target: Target) -> list[OwnedRule]:
        location = _aws(target)
        ec2 = self._ec2(location)
        group_id = location.security_group_id or _instance_group(ec2, target, location)
        if group_id is None:
            return []
        with _translated(f"security group {group_id}", location):
            filters = [_filter("group-id", group_id), _filter("tag-key", GRANT_TAG)]
            return [
                OwnedRule(
                    scope=group_id, ref=str(rule["SecurityGroupRuleId"]),
                    grant_id=_grant_id(rule), port=int(rule.get("FromPort", -1)),
                    protocol=_protocol(rule), source=str(source),
                )
                for rule in _ingress_rules(ec2, filters)
                if (source := _rule_source(rule)) is not None
            ]

    def warm(self, target: Target) -> None:
        """Build the target's EC2 client now (no call to AWS): loading botocore's models
        takes a tenth of a second of CPU that should not land in the middle of requests."""
        self._ec2(_aws(target))

    def placement(self, target: Target) -> None:
        """Security group rules are unordered: a grant's rule needs no slot."""
        return None

    def used_slots(self, target: Target) -> set[int]:
        return set()

    def lockdowns(self) -> AwsProvider:
        return self

    # ---- closed by default: jit enable / disable ------------------------------------------

    def plan_lockdown(self, target: Target) -> LockdownPlan:
        """The standing rules that open one of the target's ports; for an instance target,
        also jit's own group, attached beside the instance's groups."""
        location = _aws(target)
        ec2 = self._ec2(location)
        with _translated(_subject(location), location):
            groups, _ = _lockdown_scope(ec2, target, location)
            add: tuple[str, ...] = ()
            if location.instance_id:
                add = (f"security group jit-{target.name} (jit's grants go there), attached "
                       f"to every network interface of {location.instance_id} beside "
                       f"{', '.join(groups) or 'no other group'}",)
            return LockdownPlan(target.name, tuple(_standing(ec2, groups, target)), add)

    def lock_down(self, target: Target, plan: LockdownPlan, take_over: bool) -> Lockdown:
        location = _aws(target)
        ec2 = self._ec2(location)
        created: dict[str, Any] = {}
        with _translated(_subject(location), location):
            if location.instance_id:  # jit's group first, so that grants can open meanwhile
                created["group_id"] = _ready_instance_group(ec2, target, location)
            by_group: dict[str, list[str]] = defaultdict(list)
            for rule in plan.remove:
                by_group[rule.scope].append(rule.ref)
            for group_id, refs in by_group.items():
                _revoke(ec2, group_id, refs, location)
        return Lockdown(plan.remove, created)

    def lift_lockdown(self, target: Target, lockdown: Lockdown) -> list[str]:
        location = _aws(target)
        ec2 = self._ec2(location)
        with _translated(_subject(location), location):
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
        location = _aws(target)
        ec2 = self._ec2(location)
        with _translated(_subject(location), location):
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

    def _ec2(self, location: AwsLocation) -> Ec2Client:
        key = (location.region, location.role_arn)
        with self._lock, _translated("the EC2 client", location):
            if key not in self._clients:
                if self._session is None:
                    self._session = boto3.Session()  # the standard credential chain
                session = self._session
                if location.role_arn:
                    sts = session.client("sts", region_name=location.region, config=self._config)
                    assumed = botocore.session.Session()
                    assumed.register_component("credential_provider", CredentialResolver(
                        [_AssumedRole(sts, location.role_arn)]
                    ))
                    session = boto3.Session(botocore_session=assumed)
                self._clients[key] = session.client(
                    "ec2", region_name=location.region, config=self._config
                )
            return self._clients[key]


class _AssumedRole(CredentialProvider):
    """Credentials for `role_arn`, fetched on first use and refreshed before they expire."""

    METHOD = "jit-assume-role"
    CANONICAL_NAME = "jit-assume-role"

    def __init__(self, sts: Any, role_arn: str) -> None:
        super().__init__()
        self._sts = sts
        self._role_arn = role_arn

    def load(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(refresh_using=self._fetch, method=self.METHOD)

    def _fetch(self) -> dict[str, str]:
        response = self._sts.assume_role(RoleArn=self._role_arn, RoleSessionName=ROLE_SESSION_NAME)
        credentials = response["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }


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
        TagSpecifications=_tag_spec(
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
    for rule in _ingress_rules(ec2, [_filter("group-id", group_id)]):
        if (
            _protocol(rule) == str(spec.port.protocol)
            and rule.get("FromPort") == spec.port.port
            and rule.get("ToPort") == spec.port.port
            and _rule_source(rule) == wanted
        ):
            return rule
    return None


def _revoke(ec2: Ec2Client, group_id: str, refs: list[str],
            location: AwsLocation) -> dict[str, bool]:
    revoked = ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=refs)
    if revoked.get("Return", True) and not revoked.get("UnknownIpPermissions"):
        return dict.fromkeys(refs, True)
    still = _present(ec2, group_id, refs)
    if still:
        raise ProviderError(f"security group {group_id} ({location.region}) did not remove "
                            f"rule(s) {', '.join(sorted(still))}")
    return dict.fromkeys(refs, False)


def _present(ec2: Ec2Client, group_id: str, refs: list[str]) -> set[str]:
    """Which of these rule ids the group holds; one filtered call per 200 ids."""
    present: set[str] = set()
    for start in range(0, len(refs), _DESCRIBE_BATCH):
        chunk = refs[start:start + _DESCRIBE_BATCH]
        filters = [_filter("group-id", group_id),
                   {"Name": "security-group-rule-id", "Values": chunk}]
        present.update(str(rule["SecurityGroupRuleId"]) for rule in _ingress_rules(ec2, filters))
    return present & set(refs)


def _ingress_rules(ec2: Ec2Client, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    paginator = ec2.get_paginator("describe_security_group_rules")
    for page in paginator.paginate(Filters=filters):
        for rule in page.get("SecurityGroupRules", []):
            if not rule.get("IsEgress", False):
                yield rule


def _instance_group(ec2: Ec2Client, target: Target, location: AwsLocation) -> str | None:
    """jit's own group for an instance target, if it has been made."""
    with _translated(f"instance {location.instance_id}", location):
        instance = _describe_instance(ec2, location)
        return _find_group(ec2, instance["VpcId"], _filter(f"tag:{TARGET_TAG}", target.name))


def _ready_instance_group(ec2: Ec2Client, target: Target, location: AwsLocation) -> str:
    """jit's own group for an instance target: found or made, attached to every interface."""
    with _translated(f"instance {location.instance_id}", location):
        instance = _describe_instance(ec2, location)
        vpc_id = instance["VpcId"]
        group_id = _find_group(ec2, vpc_id, _filter(f"tag:{TARGET_TAG}", target.name))
        if group_id is None:
            group_id = _create_instance_group(ec2, target.name, vpc_id)
        for interface in instance.get("NetworkInterfaces", []):
            groups = [g["GroupId"] for g in interface.get("Groups", [])]
            if group_id not in groups:  # keep the groups it has; add ours
                ec2.modify_network_interface_attribute(
                    NetworkInterfaceId=interface["NetworkInterfaceId"], Groups=[*groups, group_id]
                )
    return group_id


def _describe_instance(ec2: Ec2Client, location: AwsLocation) -> dict[str, Any]:
    response = ec2.describe_instances(InstanceIds=[location.instance_id])
    instances = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
    if not instances:
        raise TargetNotFound(f"instance {location.instance_id} does not exist in {location.region}")
    instance: dict[str, Any] = instances[0]
    if not instance.get("VpcId"):
        raise ProviderError(f"instance {location.instance_id} ({location.region}) is not in a VPC")
    return instance


def _create_instance_group(ec2: Ec2Client, target_name: str, vpc_id: str) -> str:
    name = f"jit-{target_name}"
    try:
        response = ec2.create_security_group(
            GroupName=name,
            Description=f"jit: just-in-time access for {target_name}",
            VpcId=vpc_id,
            TagSpecifications=_tag_spec(
                "security-group", {TARGET_TAG: target_name, MANAGED_BY_TAG: "jit"}
            ),
        )
        return str(response["GroupId"])
    except ClientError as exc:
        if _code(exc) != "InvalidGroup.Duplicate":
            raise
    # Someone made it first (another replica, or by hand): adopt it under our tag so that
    # list_owned_rules finds the rules in it.
    group_id = _find_group(ec2, vpc_id, _filter("group-name", name))
    if group_id is None:
        raise TransientProviderError(f"security group {name} in {vpc_id} cannot be found")
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": TARGET_TAG, "Value": target_name}])
    return group_id


def _find_group(ec2: Ec2Client, vpc_id: str, match: dict[str, Any]) -> str | None:
    response = ec2.describe_security_groups(Filters=[_filter("vpc-id", vpc_id), match])
    groups = response.get("SecurityGroups", [])
    return str(groups[0]["GroupId"]) if groups else None


def _aws(target: Target) -> AwsLocation:
    location = target.location
    if not isinstance(location, AwsLocation):
        raise ProviderError(f"target {target.name} is not an AWS target")
    if not location.security_group_id and not location.instance_id:
        raise ProviderError(f"target {target.name} names neither a security group nor an instance")
    return location


def _filter(name: str, value: str) -> dict[str, Any]:
    return {"Name": name, "Values": [value]}


def _tag_spec(resource_type: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type,
             "Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}]


def _tags(rule: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in rule.get("Tags", [])}


def _grant_id(rule: dict[str, Any]) -> int | None:
    try:
        return int(_tags(rule)[GRANT_TAG])
    except (KeyError, ValueError):
        return None


def _protocol(rule: dict[str, Any]) -> str:
    protocol = str(rule.get("IpProtocol", "")).lower()
    return _PROTOCOL_NAMES.get(protocol, protocol)


def _rule_source(rule: dict[str, Any]) -> IPNetwork | None:
    cidr = rule.get("CidrIpv4") or rule.get("CidrIpv6")
    return ipaddress.ip_network(cidr, strict=False) if cidr else None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _translated(subject: str, location: AwsLocation) -> Iterator[None]:
    """Turn botocore's errors into jit's ProviderError tree, once, at the boundary."""
    region = location.region
    as_role = f" as {location.role_arn}" if location.role_arn else ""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code == "RulesPerSecurityGroupLimitExceeded":
            raise RuleLimitExceeded(
                f"{subject} ({region}) is full: it already holds the maximum number of "
                "inbound rules, so no rule could be added"
            ) from exc
        if code in _NOT_FOUND:
            raise TargetNotFound(f"{subject} does not exist in {region} ({code})") from exc
        if code in _DENIED:
            raise AccessDenied(
                f"AWS denied {exc.operation_name} on {subject} in {region}{as_role}: {message}"
            ) from exc
        if code in _TRANSIENT or status >= 500:
            raise TransientProviderError(
                f"AWS is throttling or unavailable in {region} ({code}: {message}); "
                "retries ran out, try again later"
            ) from exc
        raise ProviderError(f"{code}: {message} ({subject}, {region})") from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        raise TransientProviderError(f"could not reach AWS EC2 in {region}: {exc}") from exc
    except NoCredentialsError as exc:
        raise AccessDenied(f"no AWS credentials found for {subject} in {region}") from exc
    except BotoCoreError as exc:
        raise ProviderError(f"AWS call for {subject} in {region} failed: {exc}") from exc


def _subject(location: AwsLocation) -> str:
    return (f"security group {location.security_group_id}" if location.security_group_id
            else f"instance {location.instance_id}")


def _lockdown_scope(ec2: Ec2Client, target: Target,
                    location: AwsLocation) -> tuple[list[str], dict[str, Any] | None]:
    """The groups whose standing rules enabling removes, and the instance when there is one:
    the target's group, or every group of the instance's interfaces but jit's own."""
    if not location.instance_id:
        return [location.security_group_id or ""], None
    instance = _describe_instance(ec2, location)
    own = _find_group(ec2, instance["VpcId"], _filter(f"tag:{TARGET_TAG}", target.name))
    groups = sorted({g["GroupId"] for i in instance.get("NetworkInterfaces", [])
                     for g in i.get("Groups", [])} - {own})
    return groups, instance


def _covers(rule: dict[str, Any], port: int, protocol: str) -> bool:
    """Does this inbound rule let `port`/`protocol` in (from whatever source)?"""
    if _protocol(rule) not in (protocol, "-1"):
        return False
    low, high = int(rule.get("FromPort", -1)), int(rule.get("ToPort", -1))
    return low == -1 or low <= port <= high


def _standing(ec2: Ec2Client, groups: Sequence[str], target: Target) -> Iterator[FirewallRule]:
    """Inbound rules of these groups that open one of the target's ports, jit's own aside."""
    for group_id in groups:
        for rule in _ingress_rules(ec2, [_filter("group-id", group_id)]):
            if GRANT_TAG in _tags(rule):
                continue
            if any(_covers(rule, p.port, str(p.protocol)) for p in target.ports.values()):
                body = json.loads(json.dumps(rule, default=str))
                yield FirewallRule(group_id, str(rule["SecurityGroupRuleId"]),
                                   _describe(_content(body)), body)


def _content(body: Mapping[str, Any]) -> tuple[str, ...]:
    """What a rule is, without its id: restored rules get new ids."""
    source = (body.get("CidrIpv4") or body.get("CidrIpv6") or body.get("PrefixListId")
              or (body.get("ReferencedGroupInfo") or {}).get("GroupId") or "?")
    return (str(body.get("GroupId", "")), _protocol(dict(body)), str(body.get("FromPort", -1)),
            str(body.get("ToPort", -1)), str(source), str(body.get("Description") or ""))


def _describe(content: tuple[str, ...]) -> str:
    _, protocol, low, high, source, description = content
    ports = "all ports" if low == "-1" else low if low == high else f"{low}-{high}"
    protocol = "all protocols" if protocol == "-1" else protocol
    return f"{protocol} {ports} from {source}" + (f" ({description})" if description else "")


def _restore(ec2: Ec2Client, rule: FirewallRule) -> None:
    """Put a snapshotted rule back: same protocol, ports, source, description and tags."""
    body = rule.body
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
    tags = [t for t in body.get("Tags", []) if not str(t.get("Key", "")).startswith("aws:")]
    extra = {"TagSpecifications": [{"ResourceType": "security-group-rule", "Tags": tags}]} \
        if tags else {}
    try:
        ec2.authorize_security_group_ingress(GroupId=rule.scope, IpPermissions=[permission],
                                             **extra)
    except ClientError as exc:
        if _code(exc) != "InvalidPermission.Duplicate":  # someone put it back already
            raise


def _remove_instance_group(ec2: Ec2Client, location: AwsLocation, group_id: str) -> None:
    """Detach jit's group from the instance's interfaces and delete it."""
    instance = _describe_instance(ec2, location)
    for interface in instance.get("NetworkInterfaces", []):
        groups = [g["GroupId"] for g in interface.get("Groups", [])]
        if group_id in groups and len(groups) > 1:
            ec2.modify_network_interface_attribute(
                NetworkInterfaceId=interface["NetworkInterfaceId"],
                Groups=[g for g in groups if g != group_id])
    try:
        ec2.delete_security_group(GroupId=group_id)
    except ClientError as exc:
        if _code(exc) != "InvalidGroup.NotFound":
            raise
