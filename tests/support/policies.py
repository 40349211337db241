"""Small policies for tests, built through the real policy-file validation."""

from __future__ import annotations

from typing import Any

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
