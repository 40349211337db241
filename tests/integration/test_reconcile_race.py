"""Reconcile and the sweep over the same rules: what the sweep closes between reconcile's
listing and its acting is no orphan, nor is a rule already gone; a real orphan still is,
and the engine lets reconcile run only once the sweep has caught up. Real boto3 against
moto's server, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from jitcore.domain import EventKind, Status
from jitcore.errors import TransientProviderError
from jitcore.outbox import Post
from jitcore.policy import Target
from jitcore.ports import LockdownProvider, OpenedRule, OwnedRule, RuleSpec, SlotPool
from jitcore.providers.aws import AwsProvider
from jitcore.scheduler import Engine
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from jitcore.store.models import AuditEvent, Grant, OutboxPost, RuleHandle
from tests.support.aws import jit_rule_ids, jit_rules, plant_marked_rule
from tests.support.fixtures import ManualClock, RecordingNotifier, audit_actions
from tests.support.policies import APPROVER, REQUESTER, aws_policy


class WatchedAws:
    """The real AWS provider, with a hook run right after a listing (the sweep, say), a
    switch that makes closes fail, and a record of what each call did and when."""

    cloud = "aws"

    def __init__(self, close_delay: float = 0.0) -> None:
        self.real = AwsProvider()
        self.after_listing: Callable[[], None] | None = None
        self.failing = False
        self.close_delay = close_delay  # s: a slow firewall, so that a drain takes a while
        self.answers: list[dict[str, bool]] = []  # what each close_rules call returned
        self.listed: list[float] = []  # monotonic times of the listings
        self.closed: list[float] = []  # monotonic times close_rules calls returned
        self._lock = threading.Lock()

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        return self.real.open_rule(spec)

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        if self.failing:
            raise TransientProviderError(f"security group {scope}: RequestLimitExceeded")
        time.sleep(self.close_delay)
        answer = self.real.close_rules(target, scope, refs)
        with self._lock:
            self.answers.append(answer)
            self.closed.append(time.monotonic())
        return answer

    def present_rules(self, target: Target, scope: str, refs: Sequence[str]) -> set[str]:
        return self.real.present_rules(target, scope, refs)

    def list_owned_rules(self, target: Target) -> list[OwnedRule]:
        with self._lock:
            self.listed.append(time.monotonic())
        rules = self.real.list_owned_rules(target)
        hook, self.after_listing = self.after_listing, None
        if hook is not None:
            hook()
        return rules

    def warm(self, target: Target) -> None:
        self.real.warm(target)

    def placement(self, target: Target) -> SlotPool | None:
        return self.real.placement(target)

    def used_slots(self, target: Target) -> set[int]:
        return self.real.used_slots(target)

    def lockdowns(self) -> LockdownProvider | None:
        return None


@pytest.fixture
def aws() -> WatchedAws:
    return WatchedAws()


@pytest.fixture
def service(store: Store, clock: ManualClock, notifier: RecordingNotifier, aws_group: Any,
            aws: WatchedAws) -> JitService:
    return JitService(store, aws_policy(aws_group.group_id), {"aws": aws}, notifier, clock,
                      settings=EngineSettings(retry_base=timedelta(seconds=1)))


def active_grant(service: JitService, source: str = "203.0.113.7",
                 minutes: int = 30) -> int:
    gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=minutes),
                          source).grant.id
    service.approve(gid, APPROVER)
    assert service.open(gid).status is Status.ACTIVE
    return gid


def orphan_reports(store: Store) -> tuple[int, int]:
    """orphan_removed audit events, and alerts owed to the audit channel."""
    with store.read() as session:
        events = session.scalar(select(func.count()).select_from(AuditEvent)
                                .where(AuditEvent.action == EventKind.ORPHAN_REMOVED.value))
        alerts = session.scalar(select(func.count()).select_from(OutboxPost)
                                .where(OutboxPost.post == Post.ALERT.value))
    return events or 0, alerts or 0


def test_a_rule_the_sweep_closes_after_the_listing_is_no_orphan(
        service: JitService, store: Store, clock: ManualClock, notifier: RecordingNotifier,
        aws: WatchedAws, aws_group: Any) -> None:
    gid = active_grant(service)
    rule = service.get(gid).rule_ref
    clock.advance(timedelta(minutes=31))
    aws.after_listing = service.sweep  # listed while ACTIVE, closed before reconcile acts

    assert service.reconcile() == []
    assert service.get(gid).status is Status.CLOSED
    assert jit_rule_ids(aws_group.ec2, aws_group.group_id) == set()
    assert aws.answers == [{rule: True}]  # the sweep's close only: reconcile called no cloud
    assert orphan_reports(store) == (0, 0) and notifier.alerts == []
    assert audit_actions(store, gid)[-2:] == ["closing", "closed"]


def test_a_leftover_marked_by_a_grant_closed_since_the_listing_waits_for_the_next_run(
        service: JitService, store: Store, clock: ManualClock, notifier: RecordingNotifier,
        aws: WatchedAws, aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    gid = active_grant(service)
    # A second rule marked with the grant, never recorded (a crash mid-open): no handle.
    plant_marked_rule(ec2, group_id, grant_id=str(gid))
    leftover = jit_rule_ids(ec2, group_id) - {service.get(gid).rule_ref}
    clock.advance(timedelta(minutes=31))
    aws.after_listing = service.sweep

    # Its grant was closed by the sweep since the listing: that close is not reconcile's.
    assert service.reconcile() == []
    assert jit_rule_ids(ec2, group_id) == leftover
    assert orphan_reports(store) == (0, 0) and notifier.alerts == []

    # Listed after the close, it is an orphan like any other.
    clock.advance(timedelta(seconds=1))
    removed = service.reconcile()
    assert [(o.ref, o.grant_id, o.removed) for o in removed] == [(leftover.pop(), gid, True)]
    assert jit_rule_ids(ec2, group_id) == set()
    assert orphan_reports(store) == (1, 1) and len(notifier.alerts) == 1


def test_a_rule_already_gone_is_not_reported(
        service: JitService, store: Store, notifier: RecordingNotifier, aws: WatchedAws,
        aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    plant_marked_rule(ec2, group_id)
    planted = jit_rule_ids(ec2, group_id)
    # Someone else removes it between the listing and reconcile's close.
    aws.after_listing = lambda: ec2.revoke_security_group_ingress(
        GroupId=group_id, SecurityGroupRuleIds=sorted(planted))

    assert service.reconcile() == []
    assert aws.answers == [dict.fromkeys(planted, False)]  # asked; the cloud: already gone
    assert orphan_reports(store) == (0, 0) and notifier.alerts == []
    assert audit_actions(store, 999) == []


def test_a_real_orphan_is_removed_recorded_and_alerted(
        service: JitService, store: Store, notifier: RecordingNotifier, aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    live = active_grant(service)
    kept = service.get(live).rule_ref
    plant_marked_rule(ec2, group_id)
    orphan = (jit_rule_ids(ec2, group_id) - {kept}).pop()

    removed = service.reconcile()
    assert [(o.ref, o.grant_id, o.removed) for o in removed] == [(orphan, 999, True)]
    assert jit_rule_ids(ec2, group_id) == {kept}
    assert orphan_reports(store) == (1, 1)  # the planted rule, and only it
    assert audit_actions(store, 999) == ["orphan_removed"]
    assert orphan_reports(store) == (1, 1)
    assert len(notifier.alerts) == 1 and orphan in notifier.alerts[0]
    assert service.get(live).status is Status.ACTIVE


def test_an_orphan_whose_handle_was_left_live_has_it_marked_removed(
        service: JitService, store: Store, clock: ManualClock, aws_group: Any) -> None:
    """A grant recorded CLOSED while its rule stayed (an edit by hand, a cloud that said
    "gone" and was wrong): reconcile removes the rule and marks its handle removed, so
    no later open shares a rule that is not there."""
    gid = active_grant(service)
    with store.transaction() as session:
        session.execute(update(Grant).where(Grant.id == gid).values(
            status=Status.CLOSED.value, closed_at=clock.now()))
    clock.advance(timedelta(minutes=1))
    [orphan] = service.reconcile()
    assert (orphan.grant_id, orphan.removed) == (gid, True)
    assert jit_rule_ids(aws_group.ec2, aws_group.group_id) == set()
    with store.read() as session:
        handle = session.scalars(select(RuleHandle)).one()
    assert handle.removed_at == clock.now()


def test_the_engine_reconciles_only_once_the_sweep_has_caught_up(
        service: JitService, store: Store, clock: ManualClock, notifier: RecordingNotifier,
        aws: WatchedAws, aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    overdue = active_grant(service)
    plant_marked_rule(ec2, group_id)
    clock.advance(timedelta(minutes=31))
    engine = Engine(service, reconcile_every=None, posture_every=None)

    engine.reconcile()  # before any sweep: not even a listing
    assert aws.listed == [] and not engine.caught_up

    aws.failing = True  # the first close fails: the grant stays CLOSING, retried later
    engine.sweep()
    assert service.get(overdue).status is Status.CLOSING and not engine.caught_up
    engine.reconcile()
    assert aws.listed == []

    aws.failing = False
    clock.advance(timedelta(seconds=5))
    engine.sweep()  # the retry closes it: nothing due is left unclosed
    assert service.get(overdue).status is Status.CLOSED and engine.caught_up
    engine.reconcile()
    assert len(aws.listed) == 1
    assert len(jit_rules(ec2, group_id)) == 0
    assert orphan_reports(store) == (1, 1)  # the planted rule, and only it
    assert audit_actions(store, 999) == ["orphan_removed"]


def test_a_running_engine_lists_no_firewall_while_the_sweep_drains(
        store: Store, clock: ManualClock, notifier: RecordingNotifier, aws_group: Any) -> None:
    ec2, group_id = aws_group.ec2, aws_group.group_id
    aws = WatchedAws(close_delay=0.3)
    # One rule per batch: the drain takes a few slow cloud calls.
    service = JitService(store, aws_policy(aws_group.group_id), {"aws": aws}, notifier, clock,
                         settings=EngineSettings(batch=1, rules_per_call=1))
    grants = [active_grant(service, f"203.0.113.{i}") for i in range(10, 14)]
    plant_marked_rule(ec2, group_id)
    clock.advance(timedelta(minutes=31))
    engine = Engine(service, interval=timedelta(seconds=0.05),
                    reconcile_every=timedelta(seconds=0.05), posture_every=None)

    engine.start()
    try:
        deadline = time.monotonic() + 20
        while orphan_reports(store) != (1, 1):
            assert time.monotonic() < deadline, "the drain or the reconcile never ended"
            time.sleep(0.05)
    finally:
        engine.shutdown()
    assert jit_rules(ec2, group_id) == []
    assert all(service.get(gid).status is Status.CLOSED for gid in grants)
    assert len(aws.closed) == len(grants) + 1  # each grant's rule, then the orphan
    assert min(aws.listed) > max(aws.closed[:len(grants)])  # listed after the drain only
    assert audit_actions(store, 999) == ["orphan_removed"]
