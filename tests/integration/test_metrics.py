"""Prometheus metrics: the service's counters and histograms move with each committed
transition, and the state gauges read the database at scrape time. Real boto3 against moto,
on SQLite and PostgreSQL; the exposition is parsed back with prometheus-client's parser."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jitcore.domain import Status
from jitcore.errors import NotAllowed
from jitcore.metrics import GrantMetrics, StateCollector
from jitcore.providers.aws import AwsProvider
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from tests.fakes.aws_throttle import ThrottlingProxy
from tests.support.fixtures import ManualClock, RecordingNotifier
from tests.support.policies import APPROVER, AUTO_USER, REQUESTER, aws_policy

SOURCE = "203.0.113.7"
AWS = {"cloud": "aws"}
STATE_GAUGES = ("jit_active_grants", "jit_close_failed_grants", "jit_pending_approvals",
                "jit_oldest_overdue_grant_seconds")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly these labels in a scrape; None if absent."""
    exposition = generate_latest(registry).decode()
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def names(registry: CollectorRegistry) -> set[str]:
    """Every sample name in a scrape."""
    exposition = generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(exposition) for s in f.samples}


@pytest.fixture
def registry(store: Store, clock: ManualClock) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StateCollector(store, clock))
    return registry


def make_service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
                 group_id: str, registry: CollectorRegistry, provider: AwsProvider | None = None,
                 settings: EngineSettings | None = None) -> JitService:
    return JitService(store, aws_policy(group_id), {"aws": provider or AwsProvider()},
                      notifier, clock,
                      settings=settings or EngineSettings(retry_base=timedelta(seconds=1)),
                      metrics=GrantMetrics(registry))


@pytest.fixture
def service(store: Store, clock: ManualClock, notifier: RecordingNotifier, aws_group: Any,
            registry: CollectorRegistry) -> JitService:
    return make_service(store, clock, notifier, aws_group.group_id, registry)


def approved_grant(service: JitService, minutes: int = 30, source: str = SOURCE) -> int:
    gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=minutes),
                          source).grant.id
    service.approve(gid, APPROVER)
    return gid


def test_requests_by_outcome(service: JitService, registry: CollectorRegistry) -> None:
    for outcome in ("approval_needed", "auto_approved", "refused"):
        assert sample(registry, "jit_requests_total", outcome=outcome) is None

    pending = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE)
    assert pending.grant.status is Status.PENDING
    auto = service.request(AUTO_USER, "prod-db", "ssh", timedelta(minutes=20), SOURCE)
    assert auto.auto_approved
    for refused in (dict(source="0.0.0.0/0"), dict(target="nope"),
                    dict(duration=timedelta(hours=2))):
        args: dict[str, Any] = dict(target="prod-db", duration=timedelta(minutes=5),
                                    source=SOURCE)
        args.update(refused)
        with pytest.raises(NotAllowed):
            service.request(REQUESTER, args["target"], "ssh", args["duration"], args["source"])

    assert sample(registry, "jit_requests_total", outcome="approval_needed") == 1
    assert sample(registry, "jit_requests_total", outcome="auto_approved") == 1
    assert sample(registry, "jit_requests_total", outcome="refused") == 3
    assert sample(registry, "jit_pending_approvals") == 1  # the auto-approved one waits not


def test_pending_approvals_gauge(service: JitService, registry: CollectorRegistry) -> None:
    assert sample(registry, "jit_pending_approvals") == 0
    first = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE)
    second = service.request(REQUESTER, "prod-db", "rdp", timedelta(minutes=30), SOURCE)
    assert sample(registry, "jit_pending_approvals") == 2
    service.approve(first.grant.id, APPROVER)
    assert sample(registry, "jit_pending_approvals") == 1
    service.deny(second.grant.id, APPROVER, "not today")
    assert sample(registry, "jit_pending_approvals") == 0
    assert sample(registry, "jit_database_up") == 1


def test_open_then_expire(service: JitService, registry: CollectorRegistry,
                          clock: ManualClock) -> None:
    gid = approved_grant(service)
    assert sample(registry, "jit_grants_opened_total", **AWS) is None
    assert sample(registry, "jit_active_grants", cloud="aws", target="prod-db") is None

    assert service.open(gid).status is Status.ACTIVE
    assert sample(registry, "jit_grants_opened_total", **AWS) == 1
    assert sample(registry, "jit_open_seconds_count", **AWS) == 1
    assert sample(registry, "jit_open_seconds_bucket", cloud="aws", le="+Inf") == 1
    assert sample(registry, "jit_open_failures_total", **AWS) is None
    assert sample(registry, "jit_active_grants", cloud="aws", target="prod-db") == 1
    assert sample(registry, "jit_oldest_overdue_grant_seconds") == 0

    clock.advance(timedelta(minutes=31))  # a minute past its end, not yet swept
    assert sample(registry, "jit_oldest_overdue_grant_seconds") == 60
    assert sample(registry, "jit_active_grants", cloud="aws", target="prod-db") == 1
    assert sample(registry, "jit_grants_closed_total", cloud="aws", reason="expired") is None

    assert service.sweep().closed == [gid]
    assert sample(registry, "jit_grants_closed_total", cloud="aws", reason="expired") == 1
    assert sample(registry, "jit_close_seconds_count", **AWS) == 1
    assert sample(registry, "jit_close_failures_total", **AWS) is None
    assert sample(registry, "jit_oldest_overdue_grant_seconds") == 0
    assert not sample(registry, "jit_active_grants", cloud="aws", target="prod-db")
    assert sample(registry, "jit_grants_opened_total", **AWS) == 1  # counters only go up


def test_revoke_counts_by_reason(service: JitService, registry: CollectorRegistry) -> None:
    first, second = approved_grant(service), approved_grant(service, source="203.0.113.8")
    service.open(first)
    service.open(second)
    assert sample(registry, "jit_active_grants", cloud="aws", target="prod-db") == 2
    assert sample(registry, "jit_grants_opened_total", **AWS) == 2
    assert sample(registry, "jit_open_seconds_count", **AWS) == 2

    assert service.revoke(first, REQUESTER, "done").status is Status.CLOSED
    assert sample(registry, "jit_grants_closed_total", cloud="aws", reason="revoked") == 1
    assert sample(registry, "jit_grants_closed_total", cloud="aws", reason="expired") is None
    assert sample(registry, "jit_close_seconds_count", **AWS) == 1
    assert sample(registry, "jit_active_grants", cloud="aws", target="prod-db") == 1


def test_open_failure_counted(service: JitService, registry: CollectorRegistry,
                              aws_group: Any) -> None:
    aws_group.ec2.authorize_security_group_ingress(GroupId=aws_group.group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
         "IpRanges": [{"CidrIp": f"198.51.100.{i}/32"} for i in range(1, 61)]}])
    gid = approved_grant(service)
    assert service.open(gid).status is Status.FAILED  # the group is full
    assert sample(registry, "jit_open_failures_total", **AWS) == 1
    assert sample(registry, "jit_grants_opened_total", **AWS) is None
    assert sample(registry, "jit_open_seconds_count", **AWS) is None  # only successes timed
    assert sample(registry, "jit_active_grants", cloud="aws", target="prod-db") is None


def test_close_failures_then_close_failed(store: Store, clock: ManualClock,
                                          notifier: RecordingNotifier, aws_env: str,
                                          aws_group: Any, registry: CollectorRegistry,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = EngineSettings(close_attempts=3, retry_base=timedelta(seconds=2),
                              retry_cap=timedelta(seconds=30), slow_retry=timedelta(minutes=5))
    with ThrottlingProxy(aws_env, throttle=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        # No botocore retries: every throttled answer is one failed close attempt.
        service = make_service(store, clock, notifier, aws_group.group_id, registry,
                               provider=AwsProvider(max_attempts=0), settings=settings)
        gid = approved_grant(service, minutes=10)
        assert service.open(gid).status is Status.ACTIVE

        proxy.throttle = proxy.throttled + 10_000  # EC2 now refuses everything
        clock.advance(timedelta(minutes=10))
        assert service.sweep().failed == [gid]
        assert sample(registry, "jit_close_failures_total", **AWS) == 1
        assert sample(registry, "jit_close_failed_total", **AWS) is None
        assert sample(registry, "jit_close_failed_grants") == 0
        assert sample(registry, "jit_oldest_overdue_grant_seconds") == 0  # due just now

        clock.advance(timedelta(minutes=1))
        assert service.sweep().failed == [gid]
        assert sample(registry, "jit_close_failures_total", **AWS) == 2
        assert sample(registry, "jit_oldest_overdue_grant_seconds") == 60  # CLOSING

        clock.advance(timedelta(minutes=1))
        assert service.sweep().failed == [gid]  # the last attempt
        assert service.get(gid).status is Status.CLOSE_FAILED
        assert sample(registry, "jit_close_failures_total", **AWS) == 3
        assert sample(registry, "jit_close_failed_total", **AWS) == 1
        assert sample(registry, "jit_close_failed_grants") == 1
        assert sample(registry, "jit_oldest_overdue_grant_seconds") == 120
        assert sample(registry, "jit_active_grants", cloud="aws", target="prod-db") is None

        proxy.throttle = proxy.throttled  # the cloud recovers
        clock.advance(timedelta(minutes=6))
        assert service.sweep().closed == [gid]

    assert sample(registry, "jit_close_failed_grants") == 0
    assert sample(registry, "jit_oldest_overdue_grant_seconds") == 0
    assert sample(registry, "jit_close_failed_total", **AWS) == 1  # alerted once
    assert sample(registry, "jit_close_failures_total", **AWS) == 3
    assert sample(registry, "jit_grants_closed_total", cloud="aws", reason="expired") == 1
    assert sample(registry, "jit_close_seconds_count", **AWS) == 1


def test_empty_database(registry: CollectorRegistry) -> None:
    assert sample(registry, "jit_database_up") == 1
    assert sample(registry, "jit_oldest_overdue_grant_seconds") == 0
    assert sample(registry, "jit_close_failed_grants") == 0
    assert "jit_active_grants" not in names(registry)  # no grant open: no series


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("where", ["postgres-nobody-listens", "sqlite-missing-directory"])
def test_database_down(where: str, tmp_path: Path, clock: ManualClock) -> None:
    url = (f"postgresql+psycopg://jit:pw@127.0.0.1:{unused_port()}/jit"
           if where.startswith("postgres") else f"sqlite:///{tmp_path}/gone/jit.db")
    down = Store.from_url(url)
    registry = CollectorRegistry()
    registry.register(StateCollector(down, clock))
    metrics = GrantMetrics(registry)
    metrics.count_request("refused")
    try:
        assert sample(registry, "jit_database_up") == 0
        assert not set(STATE_GAUGES) & names(registry)  # no stale or made-up state
        # The scrape still carries what this process did.
        assert sample(registry, "jit_requests_total", outcome="refused") == 1
    finally:
        down.dispose()
