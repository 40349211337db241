"""A backlog of due grants (a restart after an outage) drains in batches, the next batch
claimed while the one before is being closed in the cloud. Real boto3 against moto's
server, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from jitcore.domain import Status
from jitcore.policy import Target
from jitcore.providers.aws import AwsProvider
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from jitcore.store.models import Grant
from tests.support.fixtures import ManualClock, RecordingNotifier
from tests.support.policies import APPROVER, REQUESTER, aws_policy

BATCH = 5


def closing_count(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(Grant)
                                  .where(Grant.status == Status.CLOSING.value)) or 0)


class ObservedAws(AwsProvider):
    """The real provider; its first close waits (up to 10 s) to see the next batch
    claimed meanwhile, and notes how many grants were CLOSING at most."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.closing_seen: list[int] = []

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        if not self.closing_seen:
            deadline = time.monotonic() + 10
            seen = closing_count(self.store)
            while seen < 2 * BATCH and time.monotonic() < deadline:
                time.sleep(0.01)
                seen = closing_count(self.store)
            self.closing_seen.append(seen)
        return super().close_rules(target, scope, refs)


def test_a_backlog_is_claimed_a_batch_ahead_and_all_of_it_closed(
        store: Store, clock: ManualClock, notifier: RecordingNotifier, aws_group: Any) -> None:
    aws = ObservedAws(store)
    service = JitService(store, aws_policy(aws_group.group_id), {"aws": aws}, notifier,
                         clock, settings=EngineSettings(batch=BATCH, warn_before=None))
    grants = []
    for n in range(3 * BATCH + 2):
        gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30),
                              f"198.51.100.{n + 1}").grant.id
        service.approve(gid, APPROVER)
        assert service.open(gid).status is Status.ACTIVE
        grants.append(gid)
    clock.advance(timedelta(minutes=31))

    report = service.expire_due()

    assert sorted(report.closed) == grants and report.failed == []
    assert {service.get(gid).status for gid in grants} == {Status.CLOSED}
    # While the first batch's rules were being removed, the second batch was claimed
    # (and no more: one batch closing, one claimed).
    assert aws.closing_seen == [2 * BATCH]
    rules = aws_group.ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [aws_group.group_id]}])["SecurityGroupRules"]
    assert [r for r in rules if not r["IsEgress"]] == []
