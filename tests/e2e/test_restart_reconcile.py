"""`jit run` restarted over a backlog of overdue grants closes them all and reports no orphan:
reconcile waits until the sweep has caught up, and rules the sweep closes are none of its."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from bench.common import (
    RULES_PER_GROUP,
    build_policy,
    count_jit_rules,
    count_status,
    create_groups,
    ec2_client,
    insert_grants,
    open_rules,
    policy_data,
    seeds,
)
from jitcore.domain import EventKind, Status
from jitcore.outbox import Post
from jitcore.providers.aws import AwsProvider
from jitcore.store import make_engine
from jitcore.store.models import AuditEvent, OutboxPost

OVERDUE = 1_000
DRAIN_TIMEOUT = 30.0  # s; a healthy drain of 1,000 closes takes a few seconds
RECONCILE_EVERY = 0.1  # s: reconcile would run throughout the drain if not held back
CAUGHT_UP = "sweep caught up"  # logged once the engine lets reconcile run


def test_restart_over_overdue_grants_raises_no_orphan_alert(db_url: str, aws_env: Any,
                                                            tmp_path: Path) -> None:
    ec2 = ec2_client()
    groups = create_groups(ec2, -(-OVERDUE // RULES_PER_GROUP), prefix="restart")
    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(policy_data(groups), sort_keys=False))

    # Grants a process that has since gone away opened, due 1 s to 30 min ago.
    now = datetime.now(UTC)
    overdue = seeds(1, OVERDUE, groups,
                    [now - timedelta(seconds=1 + (i * 7) % 1800) for i in range(OVERDUE)])
    open_rules(AwsProvider(), build_policy(groups), overdue, workers=16)
    db = make_engine(db_url)
    insert_grants(db, overdue)
    assert count_jit_rules(ec2, groups) == OVERDUE

    env = {**os.environ, "JIT_CONFIG": str(config), "JIT_DATABASE_URL": db_url}
    log_path = tmp_path / "jit-run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jitcore", "run", "--interval", "0.1",
             "--reconcile-every", str(RECONCILE_EVERY)],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while count_status(db, 1, OVERDUE, Status.CLOSED) < OVERDUE:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the overdue grants were not all closed"
                time.sleep(0.1)
            # Reconcile gets its turn once the sweep has caught up: let it run a few times.
            deadline = time.monotonic() + 10
            while CAUGHT_UP not in log_path.read_text():
                assert time.monotonic() < deadline, "reconcile never started"
                time.sleep(0.1)
            time.sleep(4 * RECONCILE_EVERY)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "jit engine stopped" in output

    assert count_jit_rules(ec2, groups) == 0
    with db.connect() as conn:
        orphan_events = conn.execute(
            select(func.count()).select_from(AuditEvent)
            .where(AuditEvent.action == EventKind.ORPHAN_REMOVED.value)).scalar_one()
        alert_posts = conn.execute(
            select(func.count()).select_from(OutboxPost)
            .where(OutboxPost.post == Post.ALERT.value)).scalar_one()
    db.dispose()
    alerts = [line for line in output.splitlines() if "jit alert:" in line]
    assert (orphan_events, alert_posts, len(alerts)) == (0, 0, 0), alerts[:5]
