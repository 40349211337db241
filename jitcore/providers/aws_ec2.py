"""EC2 at the boundary: clients, the error translation, and the calls jit's AWS modules share.

`AwsProvider` (aws.py), its enable/disable support (aws_lockdown.py) and the scan
(aws_scan.py) reach EC2 only through what is here. Credentials: the standard boto3 chain,
plus STS for a target's `role_arn` (refreshed before expiry). boto3 itself honours
`AWS_ENDPOINT_URL[_EC2]`. botocore retries throttling and network errors with backoff; what
outlasts the retries becomes a `TransientProviderError` in `translated`.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
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
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp"}
# Rule ids per describe filter; well inside EC2's request limits.
DESCRIBE_BATCH = 200


class Ec2Clients:
    """EC2 clients, one per region and role, built on first use and shared by threads.

    `max_attempts` is botocore's: how often a throttled or failed call is retried after the
    first try. Timeouts are in seconds.
    """

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

    def client(self, location: AwsLocation) -> Ec2Client:
        key = (location.region, location.role_arn)
        with self._lock, translated("the EC2 client", location):
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


# ---- errors ---------------------------------------------------------------------------------


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def translated(subject: str, location: AwsLocation) -> Iterator[None]:
    """Turn botocore's errors into jit's ProviderError tree, once, at the boundary."""
    region = location.region
    try:
        yield
    except ClientError as exc:
        raise _refusal(exc, subject, location) from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        raise TransientProviderError(f"could not reach AWS EC2 in {region}: {exc}") from exc
    except NoCredentialsError as exc:
        raise AccessDenied(f"no AWS credentials found for {subject} in {region}") from exc
    except BotoCoreError as exc:
        raise ProviderError(f"AWS call for {subject} in {region} failed: {exc}") from exc


def _refusal(exc: ClientError, subject: str, location: AwsLocation) -> ProviderError:
    """What an EC2 error answer means for jit, naming the group or instance and the region."""
    region = location.region
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code == "RulesPerSecurityGroupLimitExceeded":
        return RuleLimitExceeded(
            f"{subject} ({region}) is full: it already holds the maximum number of "
            "inbound rules, so no rule could be added"
        )
    if code in _NOT_FOUND:
        return TargetNotFound(f"{subject} does not exist in {region} ({code})")
    if code in _DENIED:
        as_role = f" as {location.role_arn}" if location.role_arn else ""
        return AccessDenied(
            f"AWS denied {exc.operation_name} on {subject} in {region}{as_role}: {message}"
        )
    if code in _TRANSIENT or status >= 500:
        return TransientProviderError(
            f"AWS is throttling or unavailable in {region} ({code}: {message}); "
            "retries ran out, try again later"
        )
    return ProviderError(f"{code}: {message} ({subject}, {region})")


# ---- targets, filters and rules as EC2 describes them ----------------------------------------


def aws_location(target: Target) -> AwsLocation:
    location = target.location
    if not isinstance(location, AwsLocation):
        raise ProviderError(f"target {target.name} is not an AWS target")
    if not location.security_group_id and not location.instance_id:
        raise ProviderError(f"target {target.name} names neither a security group nor an instance")
    return location


def ec2_filter(name: str, value: str) -> dict[str, Any]:
    return {"Name": name, "Values": [value]}


def tag_spec(resource_type: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type,
             "Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}]


def tags_of(rule: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in rule.get("Tags", [])}


def grant_id_of(rule: dict[str, Any]) -> int | None:
    try:
        return int(tags_of(rule)[GRANT_TAG])
    except (KeyError, ValueError):
        return None


def protocol_of(rule: dict[str, Any]) -> str:
    protocol = str(rule.get("IpProtocol", "")).lower()
    return _PROTOCOL_NAMES.get(protocol, protocol)


def source_of(rule: dict[str, Any]) -> IPNetwork | None:
    cidr = rule.get("CidrIpv4") or rule.get("CidrIpv6")
    return ipaddress.ip_network(cidr, strict=False) if cidr else None


# ---- calls ----------------------------------------------------------------------------------


def ingress_rules(ec2: Ec2Client, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    paginator = ec2.get_paginator("describe_security_group_rules")
    for page in paginator.paginate(Filters=filters):
        for rule in page.get("SecurityGroupRules", []):
            if not rule.get("IsEgress", False):
                yield rule


def held_rule_ids(ec2: Ec2Client, group_id: str, refs: list[str]) -> set[str]:
    """Which of these rule ids the group holds; one filtered call per 200 ids."""
    present: set[str] = set()
    for start in range(0, len(refs), DESCRIBE_BATCH):
        chunk = refs[start:start + DESCRIBE_BATCH]
        filters = [ec2_filter("group-id", group_id),
                   {"Name": "security-group-rule-id", "Values": chunk}]
        present.update(str(rule["SecurityGroupRuleId"]) for rule in ingress_rules(ec2, filters))
    return present & set(refs)


def revoke(ec2: Ec2Client, group_id: str, refs: list[str],
           location: AwsLocation) -> dict[str, bool]:
    revoked = ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=refs)
    if revoked.get("Return", True) and not revoked.get("UnknownIpPermissions"):
        return dict.fromkeys(refs, True)
    still = held_rule_ids(ec2, group_id, refs)
    if still:
        raise ProviderError(f"security group {group_id} ({location.region}) did not remove "
                            f"rule(s) {', '.join(sorted(still))}")
    return dict.fromkeys(refs, False)


def describe_instance(ec2: Ec2Client, location: AwsLocation) -> dict[str, Any]:
    response = ec2.describe_instances(InstanceIds=[location.instance_id])
    instances = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
    if not instances:
        raise TargetNotFound(f"instance {location.instance_id} does not exist in {location.region}")
    instance: dict[str, Any] = instances[0]
    if not instance.get("VpcId"):
        raise ProviderError(f"instance {location.instance_id} ({location.region}) is not in a VPC")
    return instance


def find_group(ec2: Ec2Client, vpc_id: str, match: dict[str, Any]) -> str | None:
    response = ec2.describe_security_groups(Filters=[ec2_filter("vpc-id", vpc_id), match])
    groups = response.get("SecurityGroups", [])
    return str(groups[0]["GroupId"]) if groups else None


# ---- the group jit keeps for an instance target ---------------------------------------------


def instance_group(ec2: Ec2Client, target: Target, location: AwsLocation) -> str | None:
    """jit's own group for an instance target, if it has been made."""
    with translated(f"instance {location.instance_id}", location):
        instance = describe_instance(ec2, location)
        return find_group(ec2, instance["VpcId"], ec2_filter(f"tag:{TARGET_TAG}", target.name))


def ready_instance_group(ec2: Ec2Client, target: Target, location: AwsLocation) -> str:
    """jit's own group for an instance target: found or made, attached to every interface."""
    with translated(f"instance {location.instance_id}", location):
        instance = describe_instance(ec2, location)
        vpc_id = instance["VpcId"]
        group_id = find_group(ec2, vpc_id, ec2_filter(f"tag:{TARGET_TAG}", target.name))
        if group_id is None:
            group_id = _create_instance_group(ec2, target.name, vpc_id)
        for interface in instance.get("NetworkInterfaces", []):
            groups = [g["GroupId"] for g in interface.get("Groups", [])]
            if group_id not in groups:  # keep the groups it has; add ours
                ec2.modify_network_interface_attribute(
                    NetworkInterfaceId=interface["NetworkInterfaceId"], Groups=[*groups, group_id]
                )
    return group_id


def _create_instance_group(ec2: Ec2Client, target_name: str, vpc_id: str) -> str:
    name = f"jit-{target_name}"
    try:
        response = ec2.create_security_group(
            GroupName=name,
            Description=f"jit: just-in-time access for {target_name}",
            VpcId=vpc_id,
            TagSpecifications=tag_spec(
                "security-group", {TARGET_TAG: target_name, MANAGED_BY_TAG: "jit"}
            ),
        )
        return str(response["GroupId"])
    except ClientError as exc:
        if error_code(exc) != "InvalidGroup.Duplicate":
            raise
    # Someone made it first (another replica, or by hand): adopt it under our tag so that
    # list_owned_rules finds the rules in it.
    group_id = find_group(ec2, vpc_id, ec2_filter("group-name", name))
    if group_id is None:
        raise TransientProviderError(f"security group {name} in {vpc_id} cannot be found")
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": TARGET_TAG, "Value": target_name}])
    return group_id
