"""Every edge of the request state machine (jitcore.domain.TRANSITIONS), driven through the
service's public API on the in-memory provider: one test per edge, named after it, each
checking the states, the audit trail (the chain verified), what the notifier was told and
the rules the firewall holds; then the queries. The last test checks that the table of
edge tests here is the state machine's."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from jitcore.domain import TRANSITIONS, EventKind, Status
from jitcore.errors import (
    InvalidTransition,
    NotAllowed,
    NotFound,
    ProviderError,
    TargetNotFound,
    TransientProviderError,
)
from jitcore.service import SweepReport
from tests.support.lifecycle import SETTINGS, SOURCE, Move, World, open_world
from tests.support.policies import APPROVER, APPROVER_2, AUTO_USER, REQUESTER

PENDING, APPROVED, DENIED = Status.PENDING, Status.APPROVED, Status.DENIED
CANCELLED, LAPSED, OPENING = Status.CANCELLED, Status.LAPSED, Status.OPENING
FAILED, ACTIVE, CLOSING = Status.FAILED, Status.ACTIVE, Status.CLOSING
CLOSED, CLOSE_FAILED = Status.CLOSED, Status.CLOSE_FAILED
OPENED = ["requested", "approved", "opening", "opened"]


def path(*statuses: Status) -> set[Move]:
    """The moves of a walk through the state machine."""
    return set(itertools.pairwise(statuses))


@pytest.fixture
def world(sqlite_template: Path, tmp_path: Path) -> Iterator[World]:
    with open_world(sqlite_template, tmp_path) as world:
        yield world


# ---- PENDING -> ... --------------------------------------------------------------------

def test_pending_to_approved(world: World) -> None:
    service = world.service
    result = service.request(REQUESTER, "prod-db", "SSH", timedelta(minutes=30), SOURCE,
                             "fix replication")
    gid = result.grant.id
    assert result.grant.status is PENDING and not result.auto_approved
    with pytest.raises(NotAllowed, match="your own request"):
        service.approve(gid, REQUESTER)
    with pytest.raises(NotAllowed, match="not an approver"):
        service.approve(gid, "U0MALLORY")

    view = service.approve(gid, APPROVER)
    assert (view.status, view.decided_by) == (APPROVED, APPROVER)
    assert view.decided_at == world.clock.now()
    with pytest.raises(InvalidTransition, match="already approved; cannot approve"):
        service.approve(gid, APPROVER_2)
    assert world.moves(gid) == path(PENDING, APPROVED)
    assert world.trail(gid) == world.told(gid) == ["requested", "approved"]
    assert world.provider.calls_to("open_rule") == [] and world.rules() == {}


def test_pending_to_approved_by_policy(world: World) -> None:
    result = world.service.request(AUTO_USER, "prod-db", "22", timedelta(minutes=20), SOURCE)
    assert result.auto_approved and result.grant.status is APPROVED
    assert result.grant.decided_by == "policy"
    assert world.trail(result.grant.id) == ["requested", "auto_approved"]
    assert world.moves(result.grant.id) == path(PENDING, APPROVED)
    # Longer than the auto-approval allows: a person decides.
    longer = world.service.request(AUTO_USER, "prod-db", "22", timedelta(minutes=45), SOURCE)
    assert not longer.auto_approved and longer.grant.status is PENDING


def test_pending_to_denied(world: World) -> None:
    gid = world.request()
    with pytest.raises(NotAllowed, match="your own request"):
        world.service.deny(gid, REQUESTER)
    view = world.service.deny(gid, APPROVER, "  not during the freeze ")
    assert (view.status, view.decided_by) == (DENIED, APPROVER)
    with pytest.raises(InvalidTransition, match="already denied; cannot approve"):
        world.service.approve(gid, APPROVER_2)
    with pytest.raises(InvalidTransition, match="already denied; cannot open"):
        world.service.open(gid)
    assert world.moves(gid) == path(PENDING, DENIED)
    denied = world.link(gid, "denied")
    assert denied["actor"] == APPROVER and denied["details"]["reason"] == "not during the freeze"
    assert world.told(gid) == ["requested", "denied"]
    assert world.provider.calls_to("open_rule") == [] and world.rules() == {}


def test_pending_to_cancelled(world: World) -> None:
    gid = world.request()
    with pytest.raises(NotAllowed, match="only the requester can cancel"):
        world.service.cancel(gid, APPROVER)
    assert world.service.get(gid).status is PENDING
    assert world.service.cancel(gid, REQUESTER).status is CANCELLED
    with pytest.raises(InvalidTransition, match="already cancelled; cannot cancel"):
        world.service.cancel(gid, REQUESTER)
    assert world.moves(gid) == path(PENDING, CANCELLED)
    assert world.trail(gid) == world.told(gid) == ["requested", "cancelled"]

    other = world.request()  # an admin (the CLI) may cancel anyone's
    assert world.service.cancel(other, "admin", admin=True).status is CANCELLED
    approved = world.approved()
    with pytest.raises(InvalidTransition, match="already approved; cannot cancel"):
        world.service.cancel(approved, REQUESTER)
    assert world.rules() == {}


def test_pending_to_lapsed(world: World) -> None:
    gid = world.request()  # approval_timeout: 1h
    world.clock.advance(timedelta(minutes=59, seconds=59))
    assert world.service.sweep().lapsed == []
    world.clock.advance(timedelta(seconds=1))
    assert world.service.sweep().lapsed == [gid]
    assert world.service.sweep().lapsed == []
    assert world.service.get(gid).status is LAPSED
    with pytest.raises(InvalidTransition, match="already lapsed; cannot approve"):
        world.service.approve(gid, APPROVER)
    assert world.moves(gid) == path(PENDING, LAPSED)
    lapsed = world.link(gid, "lapsed")
    assert lapsed["actor"] == "jit"
    assert world.told(gid) == ["requested", "lapsed"]


# ---- opening ---------------------------------------------------------------------------

def test_approved_to_opening(world: World) -> None:
    """A crashed open: the rule was made, the process died before recording it. The grant
    stays OPENING under its lease; once the lease runs out the sweep finishes the open,
    which finds the rule already there (no second rule)."""
    gid = world.approved()
    world.provider.fail_next("open_rule", RuntimeError("the process died"), after_effect=True)
    with pytest.raises(RuntimeError, match="the process died"):
        world.service.open(gid)
    assert world.service.get(gid).status is OPENING
    assert set(world.rules()) == {f"jit-{gid}"}

    world.clock.advance(SETTINGS.lease - timedelta(seconds=1))
    assert world.service.sweep().opened == []  # the lease still holds it
    with pytest.raises(InvalidTransition, match="already opening; cannot open"):
        world.service.open(gid)
    world.clock.advance(timedelta(seconds=1))
    assert world.service.sweep().opened == [gid]

    view = world.service.get(gid)
    assert view.status is ACTIVE and view.rule_ref == f"jit-{gid}"
    assert list(world.rules()) == [f"jit-{gid}"]
    assert [c.grant_id for c in world.provider.calls_to("open_rule")] == [gid, gid]
    assert world.moves(gid) == path(PENDING, APPROVED, OPENING, ACTIVE)
    retry = [link["details"].get("retry") for link in world.links(gid)
             if link["action"] == "opening"]
    assert retry == [None, True]
    assert world.trail(gid) == ["requested", "approved", "opening", "opening", "opened"]
    # Like AWS's duplicate: the retry finds the grant's own marked rule and takes it.
    assert world.link(gid, "opened")["details"]["created"] is False


def test_approved_grant_left_unopened_is_opened_by_the_sweep(world: World) -> None:
    result = world.service.request(AUTO_USER, "prod-db", "ssh", timedelta(minutes=20), SOURCE)
    gid = result.grant.id  # approved, and the process died before it opened the rule
    assert world.service.sweep().opened == []
    world.clock.advance(SETTINGS.lease)
    assert world.service.sweep().opened == [gid]
    assert world.service.get(gid).status is ACTIVE
    assert world.trail(gid) == ["requested", "auto_approved", "opening", "opened"]


def test_opening_to_active(world: World) -> None:
    gid = world.approved()
    view = world.service.open(gid)
    now = world.clock.now()
    assert view.status is ACTIVE
    assert (view.opened_at, view.expires_at) == (now, now + timedelta(minutes=30))
    assert view.rule_ref == f"jit-{gid}"
    rule = world.rules()[f"jit-{gid}"]
    assert (rule.scope, rule.port, rule.protocol, rule.source) == (
        world.scope, 22, "tcp", "203.0.113.7/32")
    assert rule.marked and rule.grant_id == gid
    opened = world.link(gid, "opened")
    assert opened["details"]["created"] is True and opened["details"]["owned"] is True
    assert opened["details"]["rule"] == f"jit-{gid}"
    with pytest.raises(InvalidTransition, match="already active; cannot open"):
        world.service.open(gid)
    assert world.moves(gid) == path(PENDING, APPROVED, OPENING, ACTIVE)
    assert world.trail(gid) == world.told(gid) == OPENED
    assert len(world.provider.calls_to("open_rule")) == 1


def test_opening_to_failed(world: World) -> None:
    gid = world.approved()
    world.provider.fail_next("open_rule", TargetNotFound("security group sg-0123456789abcdef0 "
                                                         "does not exist in us-east-1"))
    view = world.service.open(gid)
    assert view.status is FAILED
    assert view.error == "security group sg-0123456789abcdef0 does not exist in us-east-1"
    failed = [e for e in world.notifier.events if e.kind is EventKind.OPEN_FAILED]
    assert len(failed) == 1 and failed[0].alert and failed[0].grant.id == gid
    world.clock.advance(timedelta(hours=2))
    assert world.service.sweep() == SweepReport()  # a failed grant is never retried
    assert len(world.provider.calls_to("open_rule")) == 1 and world.rules() == {}
    assert world.moves(gid) == path(PENDING, APPROVED, OPENING, FAILED)
    assert world.trail(gid) == world.told(gid) == [
        "requested", "approved", "opening", "open_failed"]


def test_a_full_firewall_fails_the_grant(sqlite_template: Path, tmp_path: Path) -> None:
    with open_world(sqlite_template, tmp_path, rule_limit=1) as world:
        world.provider.add_rule(world.target, 443, "198.51.100.1/32")
        view = world.service.open(world.approved())
        assert view.status is FAILED and view.error and "is full" in view.error
        assert list(world.rules()) == ["rule-1"]
        assert world.trail(view.id)[-1] == "open_failed"


# ---- closing ---------------------------------------------------------------------------

def test_active_to_closing(world: World) -> None:
    """A revoke claims the grant (CLOSING) before the cloud call; when the call fails the
    grant stays CLOSING, with the error, for the sweep to retry."""
    gid = world.active()
    world.provider.fail_next("close_rules", TransientProviderError("RequestLimitExceeded"))
    view = world.service.revoke(gid, REQUESTER, "done early")
    assert view.status is CLOSING and view.close_reason == "revoked"
    assert view.error == "RequestLimitExceeded"
    assert f"jit-{gid}" in world.rules()
    closing = world.link(gid, "closing")
    assert closing["actor"] == REQUESTER
    assert closing["details"].items() >= {
        "status": "CLOSING", "reason": "revoked", "note": "done early"}.items()
    assert world.moves(gid) == path(PENDING, APPROVED, OPENING, ACTIVE, CLOSING)
    assert world.trail(gid) == world.told(gid) == [*OPENED, "closing", "close_retry"]


def test_closing_to_closed(world: World) -> None:
    gid = world.active()
    world.clock.advance(timedelta(minutes=29, seconds=59))
    assert world.service.sweep().closed == []
    assert f"jit-{gid}" in world.rules()
    world.clock.advance(timedelta(seconds=1))
    assert world.service.sweep() == SweepReport(closed=[gid])
    view = world.service.get(gid)
    assert view.status is CLOSED and view.close_reason == "expired"
    assert view.closed_at == world.clock.now()
    assert world.rules() == {}
    close, read_back = world.provider.calls_to("close_rules"), world.provider.calls_to(
        "present_rules")
    assert [c.refs for c in close] == [c.refs for c in read_back] == [(f"jit-{gid}",)]
    closed = world.link(gid, "closed")
    assert closed["details"]["outcome"] == "removed" and closed["actor"] == "jit"
    assert world.moves(gid) == path(PENDING, APPROVED, OPENING, ACTIVE, CLOSING, CLOSED)
    assert world.trail(gid) == world.told(gid) == [*OPENED, "expiring", "closing", "closed"]


def fail_until_close_failed(world: World, gid: int) -> None:
    """Expire the grant while every close fails: five attempts, each only after its
    jittered exponential backoff (2 s base, doubled, capped at 30 s), then CLOSE_FAILED."""
    world.provider.fail_always("close_rules", TransientProviderError("RequestLimitExceeded"))
    world.clock.advance(timedelta(minutes=30))
    assert world.service.sweep().failed == [gid]  # attempt 1
    for attempt in range(2, SETTINGS.close_attempts + 1):
        assert world.service.get(gid).status is CLOSING
        backoff = min(SETTINGS.retry_cap, SETTINGS.retry_base * 2 ** (attempt - 2))
        world.clock.advance(backoff * 0.5 - timedelta(milliseconds=10))
        assert world.service.sweep().failed == [], f"attempt {attempt} ran before its backoff"
        world.clock.advance(backoff + timedelta(milliseconds=20))  # past backoff * 1.5
        assert world.service.sweep().failed == [gid], f"attempt {attempt} did not run"
    assert len(world.provider.calls_to("close_rules")) == SETTINGS.close_attempts


def test_closing_to_close_failed(world: World) -> None:
    gid = world.active()
    fail_until_close_failed(world, gid)
    view = world.service.get(gid)
    assert view.status is CLOSE_FAILED and view.error == "RequestLimitExceeded"
    assert f"jit-{gid}" in world.rules()
    alerts = [e for e in world.notifier.events if e.kind is EventKind.CLOSE_FAILED]
    assert len(alerts) == 1 and alerts[0].alert and alerts[0].grant.id == gid
    retries = [link["details"]["attempts"] for link in world.links(gid)
               if link["action"] in ("close_retry", "close_failed")]
    assert retries == [1, 2, 3, 4, 5]
    assert world.moves(gid) == path(PENDING, APPROVED, OPENING, ACTIVE, CLOSING, CLOSE_FAILED)
    assert world.trail(gid) == world.told(gid) == [
        *OPENED, "closing", *["close_retry"] * 4, "close_failed"]


def test_close_failed_to_closed(world: World) -> None:
    gid = world.active()
    fail_until_close_failed(world, gid)
    # Retries go on at the slow pace (5 min, jittered by a fifth), without more alerts.
    world.clock.advance(timedelta(minutes=3, seconds=59))
    assert world.service.sweep().failed == []
    world.clock.advance(timedelta(minutes=2, seconds=2))
    assert world.service.sweep().failed == [gid]
    assert world.service.get(gid).status is CLOSE_FAILED

    world.provider.heal()  # the cloud recovers
    world.clock.advance(timedelta(minutes=6, seconds=1))
    assert world.service.sweep().closed == [gid]
    view = world.service.get(gid)
    assert view.status is CLOSED and view.close_reason == "expired" and view.error is None
    assert world.rules() == {}
    assert [e.kind for e in world.notifier.events].count(EventKind.CLOSE_FAILED) == 1
    assert world.moves(gid) == path(PENDING, APPROVED, OPENING, ACTIVE, CLOSING, CLOSE_FAILED,
                                    CLOSED)
    assert world.trail(gid)[-3:] == ["close_failed", "close_retry", "closed"]


# ---- queries and the rest --------------------------------------------------------------

def test_queries(world: World) -> None:
    assert world.service.last_source(REQUESTER) is None
    pending = world.request(source="203.0.113.50")
    active = world.active(source="203.0.113.51")
    assert [g.id for g in world.service.grants([Status.PENDING])] == [pending]
    assert {g.id for g in world.service.grants()} == {pending, active}
    assert {g.id for g in world.service.grants(requester=REQUESTER, target="prod-db")} == {
        pending, active}
    assert world.service.grants(requester=APPROVER) == []
    assert [g.id for g in world.service.awaiting(APPROVER)] == [pending]
    assert world.service.awaiting(REQUESTER) == []  # nobody decides their own
    assert world.service.awaiting("U0MALLORY") == []
    assert [t.name for t in world.service.requestable(REQUESTER)] == ["prod-db"]
    assert world.service.last_source(REQUESTER) == "203.0.113.51/32"
    with pytest.raises(NotFound, match="no request #999"):
        world.service.get(999)


def test_warm_up_prepares_each_target_and_outlives_a_failure(world: World) -> None:
    world.service.warm_up()
    world.provider.fail_next("warm", ProviderError("no credentials"))
    world.service.warm_up()  # logged; the first real call will say it again
    assert len(world.provider.calls_to("warm")) == 2


def test_an_alert_reaches_the_notifier(world: World) -> None:
    world.service.alert("the audit channel is unreachable")
    assert world.notifier.alerts == ["the audit channel is unreachable"]


# ---- the table of edges ----------------------------------------------------------------

EDGE_TESTS: dict[Move, Callable[..., None]] = {
    (PENDING, APPROVED): test_pending_to_approved,
    (PENDING, DENIED): test_pending_to_denied,
    (PENDING, CANCELLED): test_pending_to_cancelled,
    (PENDING, LAPSED): test_pending_to_lapsed,
    (APPROVED, OPENING): test_approved_to_opening,
    (OPENING, ACTIVE): test_opening_to_active,
    (OPENING, FAILED): test_opening_to_failed,
    (ACTIVE, CLOSING): test_active_to_closing,
    (CLOSING, CLOSED): test_closing_to_closed,
    (CLOSING, CLOSE_FAILED): test_closing_to_close_failed,
    (CLOSE_FAILED, CLOSED): test_close_failed_to_closed,
}


def test_every_edge_of_the_state_machine_has_its_test() -> None:
    edges = {(a, b) for a, nexts in TRANSITIONS.items() for b in nexts}
    assert set(EDGE_TESTS) == edges
    for (a, b), test in EDGE_TESTS.items():
        assert test.__name__.startswith(f"test_{a.value.lower()}_to_{b.value.lower()}"), test
