"""`jit` as a real process, both the installed console script and `python -m jitcore`:
exit codes, what lands on stdout and stderr, and never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from jitcore.domain import Status
from jitcore.ports import LogNotifier
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store
from jitcore.store.db import SCHEMA_REVISION
from tests.support.fixtures import ManualClock
from tests.support.policies import APPROVER, REQUESTER, aws_policy, aws_policy_data

JIT = Path(sys.executable).with_name("jit")  # the installed console script
ENTRY_POINTS = {"jit": [str(JIT)], "python -m jitcore": [sys.executable, "-m", "jitcore"]}


def run(command: list[str], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*command, *args], env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


@pytest.mark.parametrize("command", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))
def test_check_exit_codes(command: list[str], tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(aws_policy_data("sg-0123456789abcdef0")))
    ok = run(command, "check", "--config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{good}: ok, 1 target(s)\n")

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(aws_policy_data("sg-nothex")))
    refused = run(command, "check", "--config", str(bad))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith(
        f"error: {bad}: targets.prod-db.aws.security_group_id: 'sg-nothex'")

    missing = run(command, "check", JIT_CONFIG=str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "file not found" in missing.stderr

    usage = run(command, "frobnicate")
    assert usage.returncode == 2
    assert "No such command 'frobnicate'" in usage.stderr


def test_fresh_sqlite_install(tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(yaml.safe_dump(aws_policy_data("sg-0123456789abcdef0")))
    env = {"JIT_CONFIG": str(policy), "JIT_DATABASE_URL": f"sqlite:///{tmp_path / 'jit.db'}"}

    before = run([str(JIT)], "grants", **env)
    assert before.returncode == 1
    assert before.stderr.startswith("error: ") and "run `jit db upgrade`" in before.stderr

    upgraded = run([str(JIT)], "db", "upgrade", **env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == f"database at revision {SCHEMA_REVISION}\n"
    after = run([sys.executable, "-m", "jitcore"], "grants", **env)
    assert (after.returncode, after.stdout) == (0, "no grants\n")


def test_unreachable_postgres(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    result = run([str(JIT)], "--database-url", url, "db", "upgrade")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the database: ")


def test_operator_lists_and_revokes(db_url: str, aws_env: str, aws_group: Any,
                                    tmp_path: Path) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    policy = tmp_path / "jit.yaml"
    policy.write_text(yaml.safe_dump(aws_policy_data(group_id)))
    store = Store.from_url(db_url)
    service = JitService(store, aws_policy(group_id), {"aws": AwsProvider()}, LogNotifier(),
                         ManualClock(datetime.now(UTC)))
    gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30),
                          "203.0.113.7").grant.id
    service.approve(gid, APPROVER)
    rule = service.open(gid).rule_ref
    env = {"JIT_CONFIG": str(policy), "JIT_DATABASE_URL": db_url, "LOGNAME": "ops-erin"}

    listed = run([str(JIT)], "grants", "--active", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    [grant] = json.loads(listed.stdout)
    assert (grant["id"], grant["status"], grant["rule"]) == (gid, "ACTIVE", rule)

    revoked = run([str(JIT)], "revoke", str(gid), "--reason", "shift over", **env)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"#{gid} revoked: rule closed\n"
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    assert rule not in {r["SecurityGroupRuleId"] for r in rules}
    view = service.get(gid)
    assert view.status is Status.CLOSED and view.close_reason == "revoked"

    exported = run([sys.executable, "-m", "jitcore"], "audit", "export", **env)
    assert exported.returncode == 0, exported.stderr
    closing = [e for e in map(json.loads, exported.stdout.splitlines())
               if e["action"] == "closing"]
    assert [(e["actor"], e["details"]["note"]) for e in closing] == [
        ("cli:ops-erin", "shift over")]

    again = run([str(JIT)], "revoke", str(gid), "--reason", "again", **env)
    assert again.returncode == 1
    assert again.stderr == f"error: #{gid} is already closed; cannot revoke it\n"
    store.dispose()
