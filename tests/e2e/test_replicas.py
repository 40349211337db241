"""Three engine processes on one PostgreSQL: a burst of 500 expiries, one process killed.

The processes are real `jit run` processes; their EC2 calls go through a recording proxy in
front of moto, which also tells which process sent each call (by the client's TCP port).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from jitcore import audit
from jitcore.domain import Status
from jitcore.ports import LogNotifier
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store
from jitcore.store.models import AuditEvent, Grant
from tests.fakes.aws_throttle import Relayed, ThrottlingProxy
from tests.support.aws import jit_rule_ids
from tests.support.fixtures import ManualClock
from tests.support.policies import APPROVER, REQUESTER

GROUPS, PER_GROUP = 10, 50  # 500 grants; moto, like AWS, allows 60 inbound rules a group
REPLICAS = 3
DURATION = timedelta(minutes=10)


def _policy(groups: list[str]) -> dict[str, Any]:
    return {
        "slack": {"approvals_channel": "C0APPROVE", "audit_channel": "C0AUDIT"},
        "defaults": {"max_duration": "3h", "requesters": ["*"], "approvers": [APPROVER]},
        "targets": {f"db-{i}": {"aws": {"region": "us-east-1", "security_group_id": group},
                                "ports": {"ssh": {"port": 22, "max_duration": "1h"}},
                                "auto_approve": {"users": [REQUESTER], "max_duration": "1h"}}
                    for i, group in enumerate(groups)},
    }


def _seed(store: Store, groups: list[str], config: Path, due: datetime) -> list[str]:
    """500 ACTIVE grants with real rules, all ending at the instant `due`."""
    from jitcore.policy_file import load_policy

    clock = ManualClock(due - DURATION)  # every grant opens "then", so all end at `due`
    service = JitService(store, load_policy(str(config)), {"aws": AwsProvider()},
                         LogNotifier(), clock)

    def grant(index: int) -> str:
        g, n = divmod(index, PER_GROUP)
        result = service.request(REQUESTER, f"db-{g}", "ssh", DURATION, f"198.51.{100 + g}.{n + 1}")
        assert result.auto_approved
        view = service.open(result.grant.id)
        assert view.status is Status.ACTIVE and view.rule_ref
        return view.rule_ref

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(grant, range(len(groups) * PER_GROUP)))


def _pid_of_client(port: int, pids: list[int], server_port: int) -> int | None:
    """The process (of `pids`) holding the TCP connection from local `port` to the proxy."""
    wanted = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(wanted) and fields[2].endswith(f":{server_port:04X}"):
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if links & inodes:
            return pid
    return None


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_three_replicas_close_each_rule_once_and_survive_a_kill(
        db_url: str, aws_env: str, aws_group: Any, tmp_path: Path) -> None:
    ec2 = aws_group.ec2
    groups = [ec2.create_security_group(GroupName=f"db-{i}", Description="db",
                                        VpcId=aws_group.vpc_id)["GroupId"]
              for i in range(GROUPS)]
    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(_policy(groups)))
    store = Store.from_url(db_url)
    rules = _seed(store, groups, config, due=datetime.now(UTC) - timedelta(seconds=5))
    assert _count(store, Status.ACTIVE) == len(rules)  # all due, in the same second

    procs: list[subprocess.Popen[str]] = []
    killed: dict[str, int] = {}
    revokes_by_pid: Counter[int] = Counter()
    kill_lock = threading.Lock()

    def before_forward(call: Relayed) -> None:
        """Attribute each revoke to its process; the fifth one's sender dies holding it.
        Each revoke takes 50 ms, as a real cloud call does, so the burst lasts a while."""
        if call.action != "RevokeSecurityGroupIngress":
            return
        time.sleep(0.05)
        pid = _pid_of_client(call.client_port, [p.pid for p in procs], proxy_port)
        with kill_lock:
            if pid is not None:
                revokes_by_pid[pid] += 1
            if not killed and pid is not None and sum(revokes_by_pid.values()) >= 5:
                os.kill(pid, signal.SIGKILL)  # mid-sweep: this very call is in flight
                killed["pid"] = pid
                killed["closing_then"] = _count(store, Status.CLOSING)

    with ThrottlingProxy(aws_env, throttle=0, before_forward=before_forward) as proxy:
        proxy_port = int(proxy.url.rsplit(":", 1)[1].rstrip("/"))
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "JIT_CONFIG": str(config),
               "JIT_DATABASE_URL": db_url, "JIT_LEASE": "3s", "JIT_SWEEP_BATCH": "20",
               "JIT_LOG_FORMAT": "json"}
        # Output to files: a pipe nobody reads fills up, and a process logging into it stops.
        logs = [tmp_path / f"replica-{n}.log" for n in range(REPLICAS)]
        for log in logs:
            with log.open("w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "jitcore", "run", "--interval", "0.2",
                     "--reconcile-every", "0"], env=env, text=True, stdout=out,
                    stderr=subprocess.STDOUT))
        try:
            deadline = time.monotonic() + 90
            while _count(store, Status.CLOSED) < len(rules) and time.monotonic() < deadline:
                for proc, log in zip(procs, logs, strict=True):
                    if proc.pid != killed.get("pid"):
                        assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)
            outputs = [log.read_text() for log in logs]
        answered = list(proxy.answered)

    # One process died mid-sweep, holding claimed grants; the other two finished its work.
    assert killed, "no process was killed: the burst never reached the fifth revoke"
    assert killed["closing_then"] > 0, "nothing was in flight when the process died"
    survivors = [p for p in procs if p.pid != killed["pid"]]
    assert all(p.returncode == 0 for p in survivors), outputs
    statuses = {s.value: n for s in Status if (n := _count(store, s))}
    assert statuses == {"CLOSED": len(rules)}, "not every grant was closed"
    assert not [line for out in outputs for line in out.splitlines()
                if '"level": "error"' in line], "a replica logged an error"
    for group in groups:
        assert jit_rule_ids(ec2, group) == set(), f"rules left open in {group}"

    # Every rule removed by exactly one successful cloud call.
    removed = Counter(ref for call in answered
                      if call.action == "RevokeSecurityGroupIngress" and call.status == 200
                      for key, values in call.params.items()
                      if key.startswith("SecurityGroupRuleId.") for ref in values)
    assert set(removed) == set(rules)
    assert max(removed.values()) == 1, [r for r, n in removed.items() if n > 1]
    assert sum(1 for pid in revokes_by_pid if revokes_by_pid[pid]) >= 2

    # Exactly one CLOSING and one CLOSED event per grant, and the chain holds.
    with store.read() as session:
        events = Counter(session.execute(
            select(AuditEvent.grant_id, AuditEvent.action)
            .where(AuditEvent.action.in_(["closing", "closed"]))).all())
        verified = audit.verify(session)
    assert len(events) == 2 * len(rules)
    assert set(events.values()) == {1}, [k for k, n in events.items() if n > 1]
    assert verified.ok, verified.problem
    store.dispose()


def _count(store: Store, status: Status) -> int:
    with store.read() as session:
        return int(session.execute(select(func.count()).select_from(Grant)
                                   .where(Grant.status == status.value)).scalar_one())
