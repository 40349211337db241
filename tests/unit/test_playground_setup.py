"""What `jit demo` does to the environment and to someone's own policy before it starts."""

from __future__ import annotations

import os
from typing import Any

import click
import pytest

from bot.playground.aws import sealed_aws_environment
from bot.playground.demo import APPROVER, adapted_policy, demo_policy
from jitcore.policy_file import parse_policy


def test_the_aws_environment_is_sealed_onto_the_embedded_server() -> None:
    env = {"AWS_PROFILE": "production", "AWS_SESSION_TOKEN": "token",
           "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_ENDPOINT_URL_EC2": "https://ec2",
           "AWS_ENDPOINT_URL_STS": "https://sts", "HTTPS_PROXY": "http://proxy:3128",
           "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token", "PATH": "/usr/bin"}
    sealed_aws_environment("http://127.0.0.1:5555", env)
    assert env == {
        "PATH": "/usr/bin", "AWS_ENDPOINT_URL": "http://127.0.0.1:5555",
        "AWS_ACCESS_KEY_ID": "playground", "AWS_SECRET_ACCESS_KEY": "playground",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost"}


def test_the_demo_policy_is_a_valid_policy_with_short_grants() -> None:
    policy = parse_policy(demo_policy("sg-0123456789abcdef0"), "demo")
    target = policy.targets["demo-vm"]
    assert set(target.ports) == {"ssh", "rdp"}
    assert target.approvers == (APPROVER,)
    assert all(p.max_duration is not None and p.max_duration.total_seconds() == 300
               for p in target.ports.values())


def own_policy() -> dict[str, Any]:
    return {"slack": {"approvals_channel": "C0REAL", "audit_channel": "C0REALAUDIT"},
            "defaults": {"approvers": ["U0MYLEAD"]},
            "targets": {"db": {"aws": {"region": "eu-west-1", "instance_id": "i-0123456789abcdef0",
                                       "role_arn": "arn:aws:iam::123456789012:role/jit"},
                               "ports": {"ssh": 22}}}}


def test_someones_policy_runs_on_the_embedded_ec2_with_avery_approving() -> None:
    made: list[str] = []

    def group_for(target: str) -> str:
        made.append(target)
        return "sg-0aaaaaaaaaaaaaaaa"

    data = adapted_policy(own_policy(), group_for)
    assert made == ["db"]
    assert data["targets"]["db"]["aws"] == {"region": "us-east-1",
                                            "security_group_id": "sg-0aaaaaaaaaaaaaaaa"}
    assert data["targets"]["db"]["approvers"] == ["U0MYLEAD", APPROVER]
    assert data["slack"] == {"approvals_channel": "C0APPROVALS", "audit_channel": "C0AUDIT"}
    assert parse_policy(data, "adapted").targets["db"].approvers == ("U0MYLEAD", APPROVER)


def test_an_azure_target_is_refused_with_a_clear_message() -> None:
    data = own_policy()
    data["targets"]["hub"] = {"azure": {"subscription_id": "x"}, "ports": {"ssh": 22}}
    with pytest.raises(click.UsageError, match="target hub is on Azure: the playground has "
                                               "an embedded EC2 only"):
        adapted_policy(data, lambda target: "sg-0aaaaaaaaaaaaaaaa")


@pytest.mark.parametrize("data", [None, [], {"targets": []}, {"targets": {"a": "x"}}])
def test_a_policy_that_is_not_one_is_refused(data: Any) -> None:
    with pytest.raises(click.UsageError):
        adapted_policy(data, lambda target: "sg-0aaaaaaaaaaaaaaaa")

