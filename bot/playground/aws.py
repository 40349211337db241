"""The playground's EC2: moto's server on 127.0.0.1, with a demo VPC, security group and
instance, and the process's AWS settings forced onto it so nothing can reach a real cloud.

`sealed_aws_environment` is applied before jit builds any AWS client: the endpoint is the
embedded server for every service (EC2 and STS alike), the credentials are dummies, and
every variable or file through which a developer's own AWS setup could leak in (profiles,
session tokens, per-service endpoints, the instance metadata service) is cleared. boto3 then
has nowhere to go but 127.0.0.1, whatever the environment said.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

REGION = "us-east-1"
DUMMY_KEY = "playground"  # moto takes any credentials; these sign nothing anywhere else
# What a developer's shell may hold that would point boto3 elsewhere or sign as someone.
_LEAKS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
          "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME",
          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
          "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CA_BUNDLE",
          "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
          "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def sealed_aws_environment(endpoint: str, env: MutableMapping[str, str] | None = None) -> None:
    """Point every AWS client this process builds at `endpoint` (the embedded server)."""
    env = os.environ if env is None else env
    for name in list(env):
        if name in _LEAKS or name.startswith("AWS_ENDPOINT_URL_"):
            del env[name]
    env.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
    })


@dataclass(frozen=True, slots=True)
class DemoNetwork:
    vpc_id: str
    group_id: str
    group_name: str
    instance_id: str


class EmbeddedEc2:
    """moto's server on a free loopback port, seeded with the demo's network."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # an access line per call
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""
        self.network: DemoNetwork | None = None
        self._groups: dict[str, str] = {}  # group id -> name, every group shown on the page

    def start(self) -> DemoNetwork:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        sealed_aws_environment(self.url)
        ec2 = self.client()
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(
            GroupName="demo-vm", Description="demo-vm: management ports closed, jit opens them",
            VpcId=vpc)["GroupId"]
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=subnet,
            SecurityGroupIds=[group], PrivateIpAddress="10.0.1.10",
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "Name", "Value": "demo-vm"}]}],
        )["Instances"][0]["InstanceId"]
        self.network = DemoNetwork(vpc, group, "demo-vm", instance)
        self._groups[group] = "demo-vm"
        return self.network

    def group_for(self, target: str) -> str:
        """A group of its own for a target of someone's policy (`jit demo --policy`)."""
        assert self.network is not None, "start() first"
        group = self.client().create_security_group(
            GroupName=f"jit-demo-{target}", Description=f"{target} (jit demo)",
            VpcId=self.network.vpc_id)["GroupId"]
        self._groups[group] = target
        return str(group)

    def client(self) -> Any:
        import boto3

        return boto3.client("ec2", region_name=REGION, endpoint_url=self.url,
                            aws_access_key_id=DUMMY_KEY, aws_secret_access_key=DUMMY_KEY)

    def rules(self) -> dict[str, Any]:
        """The demo group's inbound rules, for the page's panel."""
        if self.network is None:
            return {"group": None, "rules": []}
        network = self.network
        found = self.client().describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": list(self._groups)}])["SecurityGroupRules"]
        rules = [{"protocol": rule.get("IpProtocol"), "from_port": rule.get("FromPort"),
                  "to_port": rule.get("ToPort"),
                  "cidr": rule.get("CidrIpv4") or rule.get("CidrIpv6") or "",
                  "description": rule.get("Description", ""),
                  "group": self._groups.get(rule.get("GroupId", ""), "")}
                 for rule in found if not rule.get("IsEgress")]
        return {"group": {"id": network.group_id, "name": network.group_name,
                          "instance": network.instance_id}, "rules": rules}

    def stop(self) -> None:
        self._server.stop()
