"""AwsProvider through real boto3 against a real moto server over HTTP.

The provider is never told where AWS is: every test here reaches moto only because boto3
honours AWS_ENDPOINT_URL (set by the `aws_env` fixture) or AWS_ENDPOINT_URL_EC2.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from jitcore.errors import RuleLimitExceeded, TargetNotFound, TransientProviderError
from jitcore.policy import AwsLocation, PortPolicy, Target
from jitcore.ports import RuleSpec
from jitcore.providers.aws import AwsProvider
from tests.fakes.aws_throttle import ThrottlingProxy

if TYPE_CHECKING:
    from tests.conftest import AwsGroup

REGION = "us-east-1"
SSH = PortPolicy("ssh", 22)
SOURCE = "203.0.113.7/32"
OTHER_ACCOUNT_ROLE = "arn:aws:iam::111122223333:role/jit-operator"


def aws_target(name: str = "prod-db", **location: str) -> Target:
    return Target(
        name=name,
        location=AwsLocation(region=REGION, **location),
        ports={"ssh": SSH},
        requesters=("*",),
        approvers=("U0LEAD",),
        max_duration=timedelta(hours=3),
        approval_timeout=timedelta(hours=1),
    )


def spec(target: Target, grant_id: int = 1, source: str = SOURCE) -> RuleSpec:
    return RuleSpec(grant_id=grant_id, target=target, port=SSH, source=source,
                    description=f"jit grant #{grant_id} for alice")


def ingress_rules(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )["SecurityGroupRules"]
    return [r for r in rules if not r["IsEgress"]]


def tags(rule: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in rule.get("Tags", [])}


def add_standing_rule(ec2: Any, group_id: str, cidr: str, tag: dict[str, str] | None = None) -> str:
    kwargs: dict[str, Any] = {}
    if tag:
        kwargs["TagSpecifications"] = [{
            "ResourceType": "security-group-rule",
            "Tags": [{"Key": k, "Value": v} for k, v in tag.items()],
        }]
    response = ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                        "IpRanges": [{"CidrIp": cidr, "Description": "bastion"}]}],
        **kwargs,
    )
    return str(response["SecurityGroupRules"][0]["SecurityGroupRuleId"])


def launch_instance(aws_group: AwsGroup) -> str:
    ec2 = aws_group.ec2
    subnet = ec2.create_subnet(VpcId=aws_group.vpc_id, CidrBlock="10.0.1.0/24")["Subnet"]
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet["SubnetId"],
        SecurityGroupIds=[aws_group.group_id],
    )["Instances"][0]
    return str(instance["InstanceId"])


def eni_groups(ec2: Any, instance_id: str) -> set[str]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    (interface,) = instance["NetworkInterfaces"]
    return {g["GroupId"] for g in interface["Groups"]}


# -- open ---------------------------------------------------------------------------------------


def test_open_adds_exactly_one_tagged_rule(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)

    opened = AwsProvider().open_rule(spec(target, grant_id=42))

    assert (opened.scope, opened.created, opened.owned) == (aws_group.group_id, True, True)
    (rule,) = ingress_rules(aws_group.ec2, aws_group.group_id)
    assert rule["SecurityGroupRuleId"] == opened.ref
    assert rule["CidrIpv4"] == "203.0.113.7/32"
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert rule["Description"] == "jit grant #42 for alice"
    assert tags(rule) == {"jit:grant": "42", "jit:managed-by": "jit"}


def test_open_with_an_ipv6_source(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)

    opened = AwsProvider().open_rule(spec(target, source="2001:db8::7/128"))

    (rule,) = ingress_rules(aws_group.ec2, aws_group.group_id)
    assert rule["SecurityGroupRuleId"] == opened.ref
    assert rule["CidrIpv6"] == "2001:db8::7/128"
    assert "CidrIpv4" not in rule
    assert tags(rule)["jit:grant"] == "1"


def test_description_is_cleaned_of_characters_ec2_refuses(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)
    messy = RuleSpec(grant_id=3, target=target, port=SSH, source=SOURCE,
                     description="jit #3 <@U123> fix \"replication\" ¿" + "x" * 300)

    AwsProvider().open_rule(messy)

    (rule,) = ingress_rules(aws_group.ec2, aws_group.group_id)
    assert rule["Description"].startswith("jit #3  @U123  fix  replication")
    assert len(rule["Description"]) == 255


def test_same_source_and_port_again_shares_the_rule(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)
    provider = AwsProvider()

    first = provider.open_rule(spec(target, grant_id=1))
    second = provider.open_rule(spec(target, grant_id=2))

    assert second.ref == first.ref
    assert (second.created, second.owned) == (False, True)
    (rule,) = ingress_rules(aws_group.ec2, aws_group.group_id)
    assert tags(rule)["jit:grant"] == "1"  # the rule still names the grant that made it


def test_duplicate_of_a_standing_rule_is_shared_but_not_owned(aws_group: AwsGroup) -> None:
    standing = add_standing_rule(aws_group.ec2, aws_group.group_id, SOURCE)
    target = aws_target(security_group_id=aws_group.group_id)

    opened = AwsProvider().open_rule(spec(target))

    assert (opened.ref, opened.created, opened.owned) == (standing, False, False)
    assert len(ingress_rules(aws_group.ec2, aws_group.group_id)) == 1


def test_a_full_group_raises_rule_limit_exceeded(aws_group: AwsGroup) -> None:
    aws_group.ec2.authorize_security_group_ingress(
        GroupId=aws_group.group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                        "IpRanges": [{"CidrIp": f"198.51.100.{i}/32"} for i in range(60)]}],
    )
    target = aws_target(security_group_id=aws_group.group_id)

    with pytest.raises(RuleLimitExceeded) as raised:
        AwsProvider().open_rule(spec(target))

    message = str(raised.value)
    assert "is full" in message
    assert aws_group.group_id in message
    assert REGION in message
    assert len(ingress_rules(aws_group.ec2, aws_group.group_id)) == 60


def test_unknown_group_is_target_not_found(aws_env: str) -> None:
    target = aws_target(security_group_id="sg-0123456789abcdef0")

    with pytest.raises(TargetNotFound, match="sg-0123456789abcdef0"):
        AwsProvider().open_rule(spec(target))


def test_concurrent_opens_share_one_provider(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)
    provider = AwsProvider()
    refs: list[str] = []
    errors: list[BaseException] = []

    def open_one(n: int) -> None:
        try:
            opened = provider.open_rule(spec(target, grant_id=n, source=f"203.0.113.{n}/32"))
            refs.append(opened.ref)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(refs)) == 8
    assert {r["SecurityGroupRuleId"] for r in ingress_rules(aws_group.ec2, aws_group.group_id)} \
        == set(refs)


# -- close and exists ---------------------------------------------------------------------------


def test_close_removes_the_rule_and_a_second_close_reports_it_gone(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)
    provider = AwsProvider()
    opened = provider.open_rule(spec(target))
    assert opened.ref in provider.present_rules(target, opened.scope, [opened.ref])

    assert provider.close_rules(target, opened.scope, [opened.ref]) == {opened.ref: True}

    assert ingress_rules(aws_group.ec2, aws_group.group_id) == []
    assert opened.ref not in provider.present_rules(target, opened.scope, [opened.ref])
    assert provider.close_rules(target, opened.scope, [opened.ref]) == {opened.ref: False}


def test_close_in_a_deleted_group_reports_the_rule_gone(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)
    provider = AwsProvider()
    opened = provider.open_rule(spec(target))
    aws_group.ec2.delete_security_group(GroupId=aws_group.group_id)

    assert provider.close_rules(target, opened.scope, [opened.ref]) == {opened.ref: False}
    assert opened.ref not in provider.present_rules(target, opened.scope, [opened.ref])


def test_close_leaves_other_rules_alone(aws_group: AwsGroup) -> None:
    standing = add_standing_rule(aws_group.ec2, aws_group.group_id, "198.51.100.1/32")
    target = aws_target(security_group_id=aws_group.group_id)
    provider = AwsProvider()
    opened = provider.open_rule(spec(target))

    provider.close_rules(target, opened.scope, [opened.ref])

    assert [r["SecurityGroupRuleId"] for r in ingress_rules(aws_group.ec2, aws_group.group_id)] \
        == [standing]


def test_close_many_sorts_the_gone_from_the_removed(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)
    provider = AwsProvider()
    refs = [provider.open_rule(spec(target, source=f"203.0.113.{i}/32", grant_id=i)).ref
            for i in range(1, 6)]
    aws_group.ec2.revoke_security_group_ingress(GroupId=aws_group.group_id,
                                                SecurityGroupRuleIds=[refs[2]])
    # One unknown id makes EC2 refuse a whole revoke; the provider still removes the rest.
    result = provider.close_rules(target, aws_group.group_id, refs)
    assert result == {**dict.fromkeys(refs, True), refs[2]: False}
    assert ingress_rules(aws_group.ec2, aws_group.group_id) == []
    assert provider.present_rules(target, aws_group.group_id, refs) == set()


# -- list owned ---------------------------------------------------------------------------------


def test_list_owned_rules_returns_only_jit_tagged_rules(aws_group: AwsGroup) -> None:
    target = aws_target(security_group_id=aws_group.group_id)
    provider = AwsProvider()
    first = provider.open_rule(spec(target, grant_id=7))
    second = provider.open_rule(spec(target, grant_id=8, source="2001:db8::8/128"))
    add_standing_rule(aws_group.ec2, aws_group.group_id, "198.51.100.1/32")
    odd = add_standing_rule(aws_group.ec2, aws_group.group_id, "198.51.100.2/32",
                            tag={"jit:grant": "not-a-number"})

    owned = provider.list_owned_rules(target)

    assert {(r.ref, r.grant_id, r.source, r.port, r.protocol) for r in owned} == {
        (first.ref, 7, "203.0.113.7/32", 22, "tcp"),
        (second.ref, 8, "2001:db8::8/128", 22, "tcp"),
        (odd, None, "198.51.100.2/32", 22, "tcp"),
    }
    assert {r.scope for r in owned} == {aws_group.group_id}


# -- instance targets ---------------------------------------------------------------------------


def test_instance_target_gets_one_dedicated_group_attached_beside_its_own(
    aws_group: AwsGroup,
) -> None:
    ec2 = aws_group.ec2
    instance_id = launch_instance(aws_group)
    target = aws_target(name="web-1", instance_id=instance_id)
    provider = AwsProvider()

    first = provider.open_rule(spec(target, grant_id=1))
    second = provider.open_rule(spec(target, grant_id=2, source="198.51.100.9/32"))

    assert first.scope == second.scope != aws_group.group_id
    (group,) = ec2.describe_security_groups(GroupIds=[first.scope])["SecurityGroups"]
    assert group["GroupName"] == "jit-web-1"
    assert group["VpcId"] == aws_group.vpc_id
    assert group["Description"] == "jit: just-in-time access for web-1"
    assert tags(group)["jit:target"] == "web-1"
    named = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["jit-web-1"]}]
    )["SecurityGroups"]
    assert len(named) == 1
    assert eni_groups(ec2, instance_id) == {aws_group.group_id, first.scope}
    assert {r["SecurityGroupRuleId"] for r in ingress_rules(ec2, first.scope)} \
        == {first.ref, second.ref}
    assert {r.grant_id for r in provider.list_owned_rules(target)} == {1, 2}


def test_instance_target_without_a_group_yet_owns_nothing(aws_group: AwsGroup) -> None:
    target = aws_target(name="web-1", instance_id=launch_instance(aws_group))

    assert AwsProvider().list_owned_rules(target) == []
    assert aws_group.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["jit-web-1"]}]
    )["SecurityGroups"] == []


def test_instance_target_adopts_an_untagged_group_of_the_same_name(aws_group: AwsGroup) -> None:
    instance_id = launch_instance(aws_group)
    made_by_hand = aws_group.ec2.create_security_group(
        GroupName="jit-web-1", Description="by hand", VpcId=aws_group.vpc_id
    )["GroupId"]
    target = aws_target(name="web-1", instance_id=instance_id)
    provider = AwsProvider()

    opened = provider.open_rule(spec(target))

    assert opened.scope == made_by_hand
    assert [r.ref for r in provider.list_owned_rules(target)] == [opened.ref]
    assert eni_groups(aws_group.ec2, instance_id) == {aws_group.group_id, made_by_hand}


def test_unknown_instance_is_target_not_found(aws_env: str) -> None:
    target = aws_target(instance_id="i-0123456789abcdef0")

    with pytest.raises(TargetNotFound, match="i-0123456789abcdef0"):
        AwsProvider().open_rule(spec(target))


# -- credentials and endpoints ------------------------------------------------------------------


def test_role_arn_is_assumed_and_the_rule_lands_in_that_account(
    aws_env: str, aws_group: AwsGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto keeps one world per account and serves assumed-role keys from the role's account.
    creds = boto3.client("sts").assume_role(
        RoleArn=OTHER_ACCOUNT_ROLE, RoleSessionName="setup"
    )["Credentials"]
    other = boto3.client(
        "ec2", aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"],
    )
    vpc_id = other.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    group_id = other.create_security_group(
        GroupName="db", Description="db", VpcId=vpc_id
    )["GroupId"]
    with pytest.raises(TargetNotFound):  # without the role the group does not exist
        AwsProvider().open_rule(spec(aws_target(security_group_id=group_id)))
    target = aws_target(security_group_id=group_id, role_arn=OTHER_ACCOUNT_ROLE)
    provider = AwsProvider()

    with ThrottlingProxy(aws_env, throttle=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # to see what STS is asked
        opened = provider.open_rule(spec(target))
        assert opened.ref in provider.present_rules(target, opened.scope, [opened.ref])

    assert [r["SecurityGroupRuleId"] for r in ingress_rules(other, group_id)] == [opened.ref]
    assert ingress_rules(aws_group.ec2, group_id) == []  # not in the caller's own account
    sts_calls = [urllib.parse.parse_qs(body.decode()) for svc, body in proxy.seen if svc == "sts"]
    assert len(sts_calls) == 1  # fetched once, then reused until close to expiry
    assert sts_calls[0]["Action"] == ["AssumeRole"]
    assert sts_calls[0]["RoleArn"] == [OTHER_ACCOUNT_ROLE]
    assert sts_calls[0]["RoleSessionName"] == ["jit"]


def test_aws_endpoint_url_ec2_is_honoured(
    aws_env: str, aws_group: AwsGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ThrottlingProxy(aws_env, throttle=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        target = aws_target(security_group_id=aws_group.group_id)

        AwsProvider().open_rule(spec(target))

    assert proxy.ec2_requests == 1
    assert len(ingress_rules(aws_group.ec2, aws_group.group_id)) == 1


def test_throttling_is_retried_until_it_passes(
    aws_env: str, aws_group: AwsGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ThrottlingProxy(aws_env, throttle=2) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        target = aws_target(security_group_id=aws_group.group_id)

        opened = AwsProvider(max_attempts=2).open_rule(spec(target))

    assert (proxy.throttled, proxy.ec2_requests) == (2, 3)
    (rule,) = ingress_rules(aws_group.ec2, aws_group.group_id)
    assert rule["SecurityGroupRuleId"] == opened.ref


def test_throttling_that_outlasts_the_retries_is_transient(
    aws_env: str, aws_group: AwsGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ThrottlingProxy(aws_env, throttle=100) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        target = aws_target(security_group_id=aws_group.group_id)

        with pytest.raises(TransientProviderError, match="RequestLimitExceeded"):
            AwsProvider(max_attempts=1).open_rule(spec(target))

    assert proxy.ec2_requests == 2  # the first try and one retry
    assert ingress_rules(aws_group.ec2, aws_group.group_id) == []


def test_unreachable_endpoint_is_transient(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:  # a port nothing listens on once the socket is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", f"http://127.0.0.1:{port}")
    target = aws_target(security_group_id="sg-0123456789abcdef0")

    with pytest.raises(TransientProviderError, match=REGION):
        AwsProvider(max_attempts=0, connect_timeout=1).open_rule(spec(target))
