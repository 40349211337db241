"""Shared fixtures: a real moto server that boto3 talks to over HTTP, and the databases."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

# The local Azure Resource Manager the real azure-mgmt-network SDK talks to over HTTPS.
from tests.support.azure import arm_emulator  # noqa: F401

# Database, clock and notifier fixtures, registered once for every suite (a session
# fixture imported by two conftest files would be two fixtures fighting over one database).
from tests.support.fixtures import (  # noqa: F401
    clock,
    db_url,
    notifier,
    postgres_database,
    sqlite_template,
    store,
)

if TYPE_CHECKING:
    from tests.support.cloud_calls import CloudCallRecorder

# The cloud-call recorder: the `cloud_calls` fixture and the `@runs_last` ordering.
pytest_plugins = ("tests.support.cloud_calls", "tests.support.arm_requests")

AWS_REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free local port for the whole run; yields its base URL."""
    werkzeug_log = logging.getLogger("werkzeug")
    previous_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # one access-log line per AWS call is noise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug_log.setLevel(previous_level)


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch,
            cloud_calls: CloudCallRecorder) -> str:
    """Point the standard boto3 environment at a freshly reset moto; returns its URL.

    The test's AWS calls are recorded (`cloud_calls`), for the least-privilege check.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    # Nothing from the developer's own AWS setup may leak into a test.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_EC2",
                 "AWS_ENDPOINT_URL_STS", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/jit-tests/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/jit-tests/aws-credentials")
    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10) as response:
        assert response.status == 200
    return moto_server


@dataclass(frozen=True)
class AwsGroup:
    vpc_id: str
    group_id: str
    ec2: Any  # a boto3 EC2 client for us-east-1 against the moto server


@pytest.fixture
def aws_group(aws_env: str) -> AwsGroup:
    """A VPC and an empty (no inbound rules) security group in it, in us-east-1."""
    ec2 = boto3.client("ec2", region_name=AWS_REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group_id = ec2.create_security_group(
        GroupName="app-servers", Description="app servers", VpcId=vpc_id
    )["GroupId"]
    return AwsGroup(vpc_id=vpc_id, group_id=group_id, ec2=ec2)

