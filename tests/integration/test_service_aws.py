"""The whole lifecycle through the service, on real boto3 against moto's server over HTTP,
on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from jitcore import audit
from jitcore.cli import cli
from jitcore.domain import Status
from jitcore.errors import InvalidTransition, NotAllowed
from jitcore.policy import Reason
from jitcore.providers.aws import AwsProvider
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from jitcore.store.models import AuditEvent
from tests.support.aws import ingress, jit_rules, plant_marked_rule
from tests.support.fixtures import ManualClock, RecordingNotifier, audit_actions
from tests.support.policies import (
    APPROVER,
    APPROVER_2,
    AUTO_USER,
    REQUESTER,
    aws_policy,
)

SOURCE = "203.0.113.7"


@pytest.fixture
def service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
            aws_group: Any) -> JitService:
    return JitService(store, aws_policy(aws_group.group_id), {"aws": AwsProvider()},
                      notifier, clock,
                      settings=EngineSettings(retry_base=timedelta(seconds=1)))


def approved_grant(service: JitService, source: str = SOURCE, port: str = "ssh",
                   duration: timedelta = timedelta(minutes=30)) -> int:
    result = service.request(REQUESTER, "prod-db", port, duration, source, "fix replication")
    service.approve(result.grant.id, APPROVER)
    return result.grant.id


def test_full_lifecycle(service: JitService, store: Store, db_url: str, clock: ManualClock,
                        notifier: RecordingNotifier, aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    before = ingress(ec2, group_id)

    result = service.request(REQUESTER, "prod-db", "SSH", timedelta(minutes=30), SOURCE,
                             "fix replication")
    assert result.grant.status is Status.PENDING and not result.auto_approved
    gid = result.grant.id
    assert service.approve(gid, APPROVER).status is Status.APPROVED
    opened = service.open(gid)
    assert opened.status is Status.ACTIVE
    assert opened.expires_at == clock.now() + timedelta(minutes=30)

    rules = jit_rules(ec2, group_id)
    assert len(rules) == 1
    rule = rules[0]
    assert rule["CidrIpv4"] == "203.0.113.7/32"
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert {"Key": "jit:grant", "Value": str(gid)} in rule["Tags"]
    assert f"#{gid}" in rule["Description"]
    assert opened.rule_ref == rule["SecurityGroupRuleId"]

    clock.advance(timedelta(minutes=29))
    assert service.sweep().closed == []
    assert len(jit_rules(ec2, group_id)) == 1
    clock.advance(timedelta(minutes=1))
    report = service.sweep()
    assert report.closed == [gid]
    closed = service.get(gid)
    assert closed.status is Status.CLOSED and closed.close_reason == "expired"
    assert ingress(ec2, group_id) == before  # read back: the group is as it was

    expected = ["requested", "approved", "opening", "opened", "expiring", "closing", "closed"]
    assert audit_actions(store, gid) == expected
    assert notifier.kinds(gid) == expected
    verify = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify"])
    assert verify.exit_code == 0 and "ok: 7 events" in verify.output


def test_racing_approvals_one_wins(service: JitService, store: Store,
                                   aws_group: Any) -> None:
    gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=30), SOURCE).grant.id
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def approve(who: str) -> None:
        barrier.wait()
        try:
            outcomes[who] = service.approve(gid, who)
        except InvalidTransition as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=approve, args=(who,)) for who in (APPROVER, APPROVER_2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [o for o in outcomes.values() if not isinstance(o, Exception)]
    losses = [o for o in outcomes.values() if isinstance(o, InvalidTransition)]
    assert len(wins) == 1 and len(losses) == 1
    assert str(losses[0]) == f"#{gid} is already approved; cannot approve it"

    # Two racing opens: one rule.
    opens: list[Any] = []
    barrier2 = threading.Barrier(2)

    def open_it() -> None:
        barrier2.wait()
        try:
            opens.append(service.open(gid))
        except InvalidTransition as exc:
            opens.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in opens) == ["GrantView", "InvalidTransition"]
    assert len(jit_rules(aws_group.ec2, aws_group.group_id)) == 1
    assert audit_actions(store, gid).count("approved") == 1


def test_shared_rule_closes_with_its_last_grant(service: JitService, store: Store,
                                                aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    first = approved_grant(service)
    second = approved_grant(service)
    a, b = service.open(first), service.open(second)
    assert a.status is b.status is Status.ACTIVE
    rules = jit_rules(ec2, group_id)
    assert len(rules) == 1 and a.rule_ref == b.rule_ref == rules[0]["SecurityGroupRuleId"]

    assert service.revoke(first, REQUESTER, "done").status is Status.CLOSED
    assert [r["SecurityGroupRuleId"] for r in jit_rules(ec2, group_id)] == [a.rule_ref]
    with store.read() as session:
        details = session.scalars(select(AuditEvent.details).where(
            AuditEvent.grant_id == first, AuditEvent.action == "closed")).one()
    assert f"kept: shared with #{second}" in details

    assert service.revoke(second, APPROVER, "done").status is Status.CLOSED
    assert jit_rules(ec2, group_id) == []


def test_group_full_fails_the_grant(service: JitService, notifier: RecordingNotifier,
                                    aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
         "IpRanges": [{"CidrIp": f"198.51.100.{i}/32"} for i in range(1, 61)]}])
    assert len(ingress(ec2, group_id)) == 60

    gid = approved_grant(service)
    view = service.open(gid)
    assert view.status is Status.FAILED
    assert view.error and "is full" in view.error and group_id in view.error
    assert service.grants([Status.ACTIVE]) == []
    assert jit_rules(ec2, group_id) == []
    failed = [e for e in notifier.events if e.grant.id == gid and e.kind.value == "open_failed"]
    assert failed and failed[0].alert


def test_auto_approved_request_opens(service: JitService, aws_group: Any) -> None:
    result = service.request(AUTO_USER, "prod-db", "22", timedelta(minutes=20), SOURCE)
    assert result.auto_approved and result.grant.status is Status.APPROVED
    assert result.grant.decided_by == "policy"
    assert service.open(result.grant.id).status is Status.ACTIVE
    # Longer than the auto-approval limit: an approver is needed.
    longer = service.request(AUTO_USER, "prod-db", "22", timedelta(minutes=45), SOURCE)
    assert not longer.auto_approved and longer.grant.status is Status.PENDING


def test_refusals_change_nothing(service: JitService, store: Store) -> None:
    cases = [
        (dict(source="0.0.0.0/0"), Reason.SOURCE_ANYWHERE),
        (dict(duration=timedelta(hours=2)), Reason.DURATION_TOO_LONG),
        (dict(target="nope"), Reason.UNKNOWN_TARGET),
        (dict(port="5432"), Reason.UNKNOWN_PORT),
        (dict(source="10.1.2.3"), Reason.SOURCE_PRIVATE),
    ]
    for change, reason in cases:
        args: dict[str, Any] = dict(target="prod-db", port="ssh", duration=timedelta(minutes=5),
                                    source=SOURCE)
        args.update(change)
        with pytest.raises(NotAllowed) as caught:
            service.request(REQUESTER, args["target"], args["port"], args["duration"],
                            args["source"])
        assert caught.value.decision.reason is reason
    gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE).grant.id
    with pytest.raises(NotAllowed, match="your own request"):
        service.approve(gid, REQUESTER)
    with pytest.raises(NotAllowed, match="not an approver"):
        service.approve(gid, "U0MALLORY")
    with store.read() as session:
        assert [e.action for e in session.scalars(select(AuditEvent))] == ["requested"]
    assert service.get(gid).status is Status.PENDING


def test_deny_cancel_and_lapse(service: JitService, clock: ManualClock) -> None:
    denied = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE).grant.id
    assert service.deny(denied, APPROVER, "not now").status is Status.DENIED
    with pytest.raises(InvalidTransition, match="already denied; cannot approve"):
        service.approve(denied, APPROVER_2)

    cancelled = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5),
                                SOURCE).grant.id
    with pytest.raises(NotAllowed, match="only the requester"):
        service.cancel(cancelled, APPROVER)
    assert service.cancel(cancelled, REQUESTER).status is Status.CANCELLED

    lapsing = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5), SOURCE).grant.id
    clock.advance(timedelta(minutes=59))
    assert service.sweep().lapsed == []
    clock.advance(timedelta(minutes=1))
    assert service.sweep().lapsed == [lapsing]
    assert service.get(lapsing).status is Status.LAPSED


def test_extend_moves_expiry(service: JitService, clock: ManualClock,
                             aws_group: Any) -> None:
    gid = approved_grant(service, duration=timedelta(minutes=10))
    service.open(gid)
    clock.advance(timedelta(minutes=8))
    with pytest.raises(NotAllowed, match="longer than the 1h"):
        service.extend(gid, APPROVER, timedelta(hours=2))
    with pytest.raises(NotAllowed, match="only the requester or an approver"):
        service.extend(gid, "U0MALLORY", timedelta(minutes=30))
    extension = service.extend(gid, APPROVER, timedelta(minutes=30))
    assert extension.request is None
    assert extension.grant.expires_at == clock.now() + timedelta(minutes=30)
    clock.advance(timedelta(minutes=5))
    assert service.sweep().closed == []
    assert len(jit_rules(aws_group.ec2, aws_group.group_id)) == 1


def test_requester_extension_goes_through_approval(service: JitService, clock: ManualClock,
                                                    aws_group: Any) -> None:
    gid = approved_grant(service, duration=timedelta(minutes=10))
    service.open(gid)
    clock.advance(timedelta(minutes=8))
    asked = service.extend(gid, REQUESTER, timedelta(minutes=20)).request
    assert asked is not None and asked.grant.status is Status.PENDING
    assert asked.grant.reason == "extension of #1: fix replication"
    service.approve(asked.grant.id, APPROVER)
    assert service.open(asked.grant.id).status is Status.ACTIVE
    rules = jit_rules(aws_group.ec2, aws_group.group_id)
    assert len(rules) == 1  # the extension shares the open rule
    clock.advance(timedelta(minutes=2))
    assert service.sweep().closed == [gid]  # the original ends on time...
    assert len(jit_rules(aws_group.ec2, aws_group.group_id)) == 1  # ...the rule stays
    clock.advance(timedelta(minutes=20))
    assert service.sweep().closed == [asked.grant.id]
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []


def test_expiry_warning_once_per_end(service: JitService, clock: ManualClock,
                                     notifier: RecordingNotifier) -> None:
    gid = approved_grant(service, duration=timedelta(minutes=30))
    service.open(gid)
    clock.advance(timedelta(minutes=24))
    service.sweep()
    assert "expiring" not in notifier.kinds(gid)
    clock.advance(timedelta(minutes=1, seconds=30))
    service.sweep()
    service.sweep()
    assert notifier.kinds(gid).count("expiring") == 1
    service.extend(gid, APPROVER, timedelta(minutes=30))  # a new end: a new warning later
    clock.advance(timedelta(minutes=26))
    service.sweep()
    assert notifier.kinds(gid).count("expiring") == 2


def test_reconcile_removes_orphans(service: JitService, store: Store,
                                   notifier: RecordingNotifier, aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    live = approved_grant(service)
    service.open(live)
    # A rule jit marked but whose grant never recorded it (a crash between the two).
    plant_marked_rule(ec2, group_id)
    assert len(jit_rules(ec2, group_id)) == 2

    dry = service.reconcile(dry_run=True)
    assert [(o.grant_id, o.port, o.removed) for o in dry] == [(999, 3389, False)]
    assert len(jit_rules(ec2, group_id)) == 2

    done = service.reconcile()
    assert [(o.grant_id, o.removed) for o in done] == [(999, True)]
    remaining = jit_rules(ec2, group_id)
    assert len(remaining) == 1 and remaining[0]["FromPort"] == 22
    assert any("orphan" in a for a in notifier.alerts)
    with store.read() as session:
        assert audit.verify(session).ok
        assert "orphan_removed" in session.scalars(select(AuditEvent.action)).all()


def test_burst_closes_in_one_batch(service: JitService, store: Store, clock: ManualClock,
                                   aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    ids = [approved_grant(service, source=f"203.0.113.{i}") for i in range(10, 14)]
    views = [service.open(gid) for gid in ids]
    # One rule disappears behind jit's back before expiry.
    ec2.revoke_security_group_ingress(GroupId=group_id,
                                      SecurityGroupRuleIds=[views[1].rule_ref])
    clock.advance(timedelta(minutes=30))
    report = service.sweep()
    assert sorted(report.closed) == ids and report.failed == []
    assert jit_rules(ec2, group_id) == []
    with store.read() as session:
        outcomes = {gid: session.scalars(select(AuditEvent.details).where(
            AuditEvent.grant_id == gid, AuditEvent.action == "closed")).one() for gid in ids}
        assert audit.verify(session).ok
    assert '"outcome":"already gone"' in outcomes[ids[1]]
    assert all('"outcome":"removed"' in outcomes[g] for g in ids if g != ids[1])
