"""A close that keeps failing becomes CLOSE_FAILED, is alerted once, and still succeeds
when the cloud recovers. The failures come from a real HTTP proxy in front of moto that
answers EC2 with RequestLimitExceeded."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jitcore.domain import Status
from jitcore.providers.aws import AwsProvider
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from tests.fakes.aws_throttle import ThrottlingProxy
from tests.support.fixtures import ManualClock, RecordingNotifier, audit_actions
from tests.support.policies import APPROVER, REQUESTER, aws_policy

SETTINGS = EngineSettings(close_attempts=5, retry_base=timedelta(seconds=2),
                          retry_cap=timedelta(seconds=30), slow_retry=timedelta(minutes=5))


def test_close_failed_then_recovers(store: Store, clock: ManualClock,
                                    notifier: RecordingNotifier, aws_env: str, aws_group: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with ThrottlingProxy(aws_env, throttle=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        # No botocore retries: every throttled answer is one failed close attempt.
        service = JitService(store, aws_policy(aws_group.group_id),
                             {"aws": AwsProvider(max_attempts=0)}, notifier, clock,
                             settings=SETTINGS)
        gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=10),
                              "203.0.113.7").grant.id
        service.approve(gid, APPROVER)
        rule = service.open(gid).rule_ref
        assert rule

        proxy.throttle = proxy.throttled + 10_000  # EC2 now refuses everything
        clock.advance(timedelta(minutes=10))
        assert service.sweep().failed == [gid]
        assert service.get(gid).status is Status.CLOSING
        for attempt in range(2, 6):
            before = service.get(gid)
            clock.advance(timedelta(milliseconds=500))
            assert service.sweep().failed == [], "retried before its backoff elapsed"
            clock.advance(timedelta(minutes=1))
            assert service.sweep().failed == [gid], f"attempt {attempt} did not run"
            assert before.status is Status.CLOSING
        failed = service.get(gid)
        assert failed.status is Status.CLOSE_FAILED
        assert failed.error and "RequestLimitExceeded" in failed.error
        alerts = [e for e in notifier.events if e.kind.value == "close_failed"]
        assert len(alerts) == 1 and alerts[0].alert and alerts[0].grant.id == gid

        # Retries go on at the slow pace, without further alerts.
        clock.advance(timedelta(minutes=2))
        assert service.sweep().failed == []
        clock.advance(timedelta(minutes=5))
        assert service.sweep().failed == [gid]
        assert len([e for e in notifier.events if e.kind.value == "close_failed"]) == 1

        proxy.throttle = proxy.throttled  # the cloud recovers
        clock.advance(timedelta(minutes=7))
        assert service.sweep().closed == [gid]

    closed = service.get(gid)
    assert closed.status is Status.CLOSED and closed.close_reason == "expired"
    rules = aws_group.ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [aws_group.group_id]}])["SecurityGroupRules"]
    assert rule not in {r["SecurityGroupRuleId"] for r in rules}
    assert audit_actions(store, gid) == [
        "requested", "approved", "opening", "opened", "closing", "close_retry",
        "close_retry", "close_retry", "close_retry", "close_failed", "close_retry", "closed"]
