"""Small policies for tests, built through the real policy-file validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from jitcore.policy import Policy
from jitcore.policy_file import parse_policy

REQUESTER = "U0ALICE"
APPROVER = "U0BOB"
APPROVER_2 = "U0CAROL"
AUTO_USER = "U0ONCALL"


def aws_policy_data(group_id: str, region: str = "us-east-1", **target: Any) -> dict[str, Any]:
    return {
        "slack": {"approvals_channel": "C0APPROVE", "audit_channel": "C0AUDIT"},
        "defaults": {"max_duration": "3h", "approval_timeout": "1h",
                     "requesters": ["*"], "approvers": [APPROVER, APPROVER_2]},
        "targets": {
            "prod-db": {
                "aws": {"region": region, "security_group_id": group_id},
                "ports": {"ssh": {"port": 22, "max_duration": "1h"}, "rdp": 3389},
                "auto_approve": {"users": [AUTO_USER], "max_duration": "30m"},
                **target,
            },
        },
    }


def aws_policy(group_id: str, region: str = "us-east-1", **target: Any) -> Policy:
    return parse_policy(aws_policy_data(group_id, region, **target), "test-policy.yaml")


def azure_policy_data(arm_endpoint: str, subscription_id: str, resource_group: str = "rg-app",
                      nsg: str = "nsg-app", destination: str = "10.0.1.4",
                      band: tuple[int, int] | None = None, **target: Any) -> dict[str, Any]:
    """One Azure target, web-vm, behind `nsg` at the ARM endpoint given (the emulator's)."""
    azure: dict[str, Any] = {"subscription_id": subscription_id,
                             "resource_group": resource_group, "network_security_group": nsg,
                             "destination": destination, "arm_endpoint": arm_endpoint}
    if band is not None:
        azure["priority_band"] = list(band)
    return {
        "slack": {"approvals_channel": "C0APPROVE", "audit_channel": "C0AUDIT"},
        "defaults": {"max_duration": "3h", "approval_timeout": "1h",
                     "requesters": ["*"], "approvers": [APPROVER, APPROVER_2]},
        "targets": {"web-vm": {"azure": azure,
                               "ports": {"ssh": {"port": 22, "max_duration": "1h"},
                                         "rdp": 3389},
                               **target}},
    }


def azure_policy(arm_endpoint: str, subscription_id: str, **kwargs: Any) -> Policy:
    return parse_policy(azure_policy_data(arm_endpoint, subscription_id, **kwargs),
                        "test-policy.yaml")


def write_bot_policy(config: Path, group_id: str, **target: Any) -> Path:
    """The policy the jit-bot process tests run with: prod-db (ssh up to 30m) on an AWS
    group, U0BOB its approver, the approvals and audit channels C0APPROVE and C0AUDIT."""
    config.write_text(yaml.safe_dump({
        "slack": {"approvals_channel": "C0APPROVE", "audit_channel": "C0AUDIT"},
        "defaults": {"approvers": [APPROVER], "max_duration": "1h"},
        "targets": {"prod-db": {
            "aws": {"region": "us-east-1", "security_group_id": group_id},
            "ports": {"ssh": {"port": 22, "max_duration": "30m"}},
            **target,
        }},
    }))
    return config


def firewall_policy_data(arm_endpoint: str, subscription_id: str, *, mode: str = "classic",
                         nsg: str | None = None, mapped_ports: tuple[int, int] = (50000, 50999),
                         destination: str = "10.1.0.4") -> dict[str, Any]:
    """One Azure target, hub-vm, reached through the hub firewall fw-hub (20.30.40.50):
    classic rules, or the Firewall Policy fwpol-hub when `mode` is "policy"; with `nsg`, the
    VM's NSG in rg-spoke too (the firewall's subnet 10.0.1.0/26 its source)."""
    firewall: dict[str, Any] = {"name": "fw-hub", "resource_group": "rg-hub",
                                "public_ip": "20.30.40.50", "mapped_ports": list(mapped_ports)}
    if mode == "policy":
        firewall["policy"] = "fwpol-hub"
    azure: dict[str, Any] = {"subscription_id": subscription_id, "resource_group": "rg-spoke",
                             "destination": destination, "arm_endpoint": arm_endpoint,
                             "firewall": firewall}
    if nsg is not None:
        azure["network_security_group"] = nsg
        firewall["source_range"] = "10.0.1.0/26"
    return {
        "slack": {"approvals_channel": "C0APPROVE", "audit_channel": "C0AUDIT"},
        "defaults": {"max_duration": "3h", "approval_timeout": "1h",
                     "requesters": ["*"], "approvers": [APPROVER, APPROVER_2]},
        "targets": {"hub-vm": {"azure": azure, "ports": {"ssh": 22, "rdp": 3389}}},
    }
