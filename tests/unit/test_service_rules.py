"""What the service does with the rules of granted access, through its public API on the
in-memory provider: closing (the read-back, rules gone behind jit's back, shared and
standing rules, one call per firewall, a sweep asked to stop), orphan removal, revoke,
extend and the expiry warning, and placement in numbered slots (Azure's priorities)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from jitcore.domain import EventKind, Status
from jitcore.errors import (
    InvalidTransition,
    NotAllowed,
    ProviderError,
    TransientProviderError,
)
from tests.support.lifecycle import SETTINGS, SOURCE, World, open_world
from tests.support.policies import APPROVER, APPROVER_2, AUTO_USER, REQUESTER

SLOTS = (100, 102)
OPENED = ["requested", "approved", "opening", "opened"]


@pytest.fixture
def world(sqlite_template: Path, tmp_path: Path) -> Iterator[World]:
    with open_world(sqlite_template, tmp_path) as world:
        yield world


@pytest.fixture
def slotted(sqlite_template: Path, tmp_path: Path) -> Iterator[World]:
    """An Azure-like target: every rule takes a priority of the band 100-102."""
    with open_world(sqlite_template, tmp_path, cloud="azure", slots=SLOTS) as world:
        yield world


def outcome(world: World, gid: int) -> str:
    """What the grant's close did to its rule, as its `closed` audit link says."""
    return str(world.link(gid, "closed")["details"]["outcome"])


def test_a_rule_still_there_after_the_close_is_not_closed(world: World) -> None:
    gid = world.active()
    ref = f"jit-{gid}"
    world.provider.keep_on_close(world.scope, ref)  # the cloud says removed; it is not
    world.clock.advance(timedelta(minutes=30))
    assert world.service.sweep().failed == [gid]
    view = world.service.get(gid)
    assert view.status is Status.CLOSING
    assert view.error == f"rule {ref} is still in {world.scope} after removal"
    assert ref in world.rules()
    assert [c.refs for c in world.provider.calls_to("present_rules")] == [(ref,)]
    assert world.trail(gid)[-2:] == ["closing", "close_retry"]

    world.provider.keep_on_close(world.scope, ref, keep=False)
    world.clock.advance(timedelta(seconds=5))  # past the first backoff (at most 3 s)
    assert world.service.sweep().closed == [gid]
    assert world.service.get(gid).status is Status.CLOSED and world.rules() == {}
    assert outcome(world, gid) == "removed"


def test_a_rule_removed_behind_jits_back_closes_as_already_gone(world: World) -> None:
    gid = world.active()
    world.provider.remove_rule(world.scope, f"jit-{gid}")
    world.clock.advance(timedelta(minutes=30))
    assert world.service.sweep().closed == [gid]
    assert world.service.get(gid).status is Status.CLOSED
    assert outcome(world, gid) == "already gone"


def test_a_shared_rule_stays_while_another_grant_holds_it(world: World) -> None:
    first = world.active()
    second = world.active()  # the same port and source: AWS calls it a duplicate
    ref = f"jit-{first}"
    assert world.service.get(second).rule_ref == ref
    assert list(world.rules()) == [ref]
    opened = world.link(second, "opened")
    assert opened["details"]["created"] is False and opened["details"]["owned"] is True

    assert world.service.revoke(first, REQUESTER, "done").status is Status.CLOSED
    assert outcome(world, first) == f"kept: shared with #{second}"
    assert list(world.rules()) == [ref]
    assert world.provider.calls_to("close_rules") == []

    assert world.service.revoke(second, APPROVER).status is Status.CLOSED
    assert outcome(world, second) == "removed"
    assert world.link(second, "closed")["actor"] == APPROVER
    assert world.rules() == {}
    assert world.trail(first) == world.told(first) == [*OPENED, "closing", "closed"]


def test_grants_sharing_a_rule_that_end_together_remove_it_once(world: World) -> None:
    first, second = world.active(), world.active()
    world.clock.advance(timedelta(minutes=30))
    assert sorted(world.service.sweep().closed) == [first, second]
    assert [c.refs for c in world.provider.calls_to("close_rules")] == [(f"jit-{first}",)]
    assert world.rules() == {}
    assert [outcome(world, first), outcome(world, second)] == ["removed", "removed"]


def test_a_close_whose_answer_was_lost_ends_as_already_gone(world: World) -> None:
    gid = world.active()
    world.provider.fail_next("close_rules", TransientProviderError("read timed out"),
                             after_effect=True)  # removed, but jit never heard so
    world.clock.advance(timedelta(minutes=30))
    assert world.service.sweep().failed == [gid]
    assert world.rules() == {} and world.service.get(gid).status is Status.CLOSING
    world.clock.advance(timedelta(seconds=5))
    assert world.service.sweep().closed == [gid]
    assert outcome(world, gid) == "already gone"
    assert world.trail(gid)[-3:] == ["closing", "close_retry", "closed"]


def test_a_standing_rule_jit_did_not_create_is_shared_and_left_in_place(world: World) -> None:
    standing = world.provider.add_rule(world.target, 22, "203.0.113.7/32")
    gid = world.active()
    view = world.service.get(gid)
    assert view.rule_ref == standing.ref
    opened = world.link(gid, "opened")
    assert opened["details"]["created"] is False and opened["details"]["owned"] is False

    world.clock.advance(timedelta(minutes=30))
    assert world.service.sweep().closed == [gid]
    assert outcome(world, gid) == "left in place: a standing rule jit did not create"
    assert list(world.rules()) == [standing.ref]
    assert world.provider.calls_to("close_rules") == []
    assert world.service.reconcile() == []  # not jit's: never an orphan


def test_grants_ending_together_close_in_one_call_per_firewall(world: World) -> None:
    grants = [world.active(source=f"203.0.113.{n}") for n in (10, 11, 12)]
    world.provider.remove_rule(world.scope, f"jit-{grants[1]}")
    world.clock.advance(timedelta(minutes=30))
    report = world.service.sweep()
    assert sorted(report.closed) == grants and report.failed == []
    refs = tuple(sorted(f"jit-{gid}" for gid in grants))
    assert [c.refs for c in world.provider.calls_to("close_rules")] == [refs]
    assert [c.refs for c in world.provider.calls_to("present_rules")] == [refs]
    assert world.rules() == {}
    assert [outcome(world, gid) for gid in grants] == ["removed", "already gone", "removed"]


def test_a_sweep_asked_to_stop_leaves_due_grants_for_the_next_process(world: World) -> None:
    gid = world.active()
    world.clock.advance(timedelta(minutes=30))
    world.service.stop()
    assert world.service.expire_due().closed == []
    assert world.service.get(gid).status is Status.ACTIVE
    assert world.provider.calls_to("close_rules") == [] and f"jit-{gid}" in world.rules()


# ---- reconcile -------------------------------------------------------------------------

def test_reconcile_removes_a_marked_rule_no_live_grant_holds(world: World) -> None:
    live = world.active()
    orphan = world.provider.add_rule(world.target, 3389, "198.51.100.9/32", grant_id=999)
    standing = world.provider.add_rule(world.target, 3389, "198.51.100.10/32")

    dry = world.service.reconcile(dry_run=True)
    assert [(o.grant_id, o.ref, o.port, o.removed) for o in dry] == [
        (999, orphan.ref, 3389, False)]
    assert set(world.rules()) == {f"jit-{live}", orphan.ref, standing.ref}

    done = world.service.reconcile()
    assert [(o.grant_id, o.scope, o.ref, o.removed, o.error) for o in done] == [
        (999, world.scope, orphan.ref, True, "")]
    assert set(world.rules()) == {f"jit-{live}", standing.ref}
    assert [c.refs for c in world.provider.calls_to("close_rules")] == [(orphan.ref,)]
    (removed,) = world.links(999)
    assert (removed["action"], removed["actor"], removed["port"]) == ("orphan_removed", "jit",
                                                                      3389)
    assert removed["details"] == {"scope": world.scope, "rule": orphan.ref}
    assert any("orphan" in alert and orphan.ref in alert for alert in world.notifier.alerts)
    assert world.service.reconcile() == []
    assert world.service.get(live).status is Status.ACTIVE


def test_a_rule_made_by_an_open_that_failed_is_removed_at_once(world: World) -> None:
    gid = world.approved()
    world.provider.fail_next("open_rule", TransientProviderError("timed out"),
                             after_effect=True)  # made, but jit never heard so
    assert world.service.open(gid).status is Status.FAILED
    assert world.rules() == {}  # not left open until the next reconcile
    assert world.trail(gid) == ["requested", "approved", "opening", "open_failed",
                                "orphan_removed"]
    assert any(f"jit-{gid}" in alert for alert in world.notifier.alerts)
    assert world.service.reconcile() == []


def test_reconcile_removes_what_a_failed_open_could_not(world: World) -> None:
    gid = world.approved()
    world.provider.fail_next("open_rule", TransientProviderError("timed out"),
                             after_effect=True)
    world.provider.fail_next("list_owned_rules", TransientProviderError("throttled"))
    assert world.service.open(gid).status is Status.FAILED
    assert f"jit-{gid}" in world.rules()  # the look for it failed: reconcile's turn

    (orphan,) = world.service.reconcile()
    assert (orphan.grant_id, orphan.ref, orphan.removed) == (gid, f"jit-{gid}", True)
    assert world.rules() == {}
    assert world.trail(gid) == ["requested", "approved", "opening", "open_failed",
                                "orphan_removed"]


def test_reconcile_leaves_rules_the_sweep_owns(world: World) -> None:
    closing = world.active(source="203.0.113.20")
    opening = world.approved(source="203.0.113.21")
    world.provider.fail_next("open_rule", RuntimeError("the process died"), after_effect=True)
    with pytest.raises(RuntimeError):
        world.service.open(opening)
    world.provider.fail_always("close_rules", TransientProviderError("RequestLimitExceeded"))
    assert world.service.revoke(closing, REQUESTER).status is Status.CLOSING
    world.provider.heal()

    assert world.service.reconcile() == []
    assert set(world.rules()) == {f"jit-{closing}", f"jit-{opening}"}
    assert len(world.provider.calls_to("close_rules")) == 1  # the revoke's only


def test_reconcile_reports_an_orphan_it_cannot_remove(world: World) -> None:
    orphan = world.provider.add_rule(world.target, 22, "198.51.100.9/32", grant_id=998)
    world.provider.fail_next("close_rules", ProviderError("AccessDenied: not allowed"))
    (found,) = world.service.reconcile()
    assert (found.ref, found.removed, found.error) == (orphan.ref, False,
                                                      "AccessDenied: not allowed")
    assert orphan.ref in world.rules()
    assert any("could not be removed" in alert for alert in world.notifier.alerts)
    assert world.links(998) == []  # nothing removed, nothing recorded


# ---- revoke ----------------------------------------------------------------------------

def test_revoke_by_the_requester_an_approver_or_an_admin_only(world: World) -> None:
    gid = world.active(source="203.0.113.30")
    with pytest.raises(NotAllowed, match="only the requester or an approver can revoke"):
        world.service.revoke(gid, "U0MALLORY")
    assert world.service.get(gid).status is Status.ACTIVE and f"jit-{gid}" in world.rules()

    assert world.service.revoke(gid, APPROVER_2, "incident over").status is Status.CLOSED
    assert world.service.get(gid).close_reason == "revoked"
    with pytest.raises(InvalidTransition, match="already closed; cannot revoke"):
        world.service.revoke(gid, REQUESTER)
    closing = [link for link in world.links(gid) if link["action"] in ("closing", "closed")]
    assert [(link["action"], link["actor"]) for link in closing] == [
        ("closing", APPROVER_2), ("closed", APPROVER_2)]

    other = world.active(source="203.0.113.31")
    assert world.service.revoke(other, "admin", admin=True).status is Status.CLOSED
    mine = world.active(source="203.0.113.32")
    assert world.service.revoke(mine, REQUESTER).status is Status.CLOSED
    assert world.rules() == {}
    pending = world.request()
    with pytest.raises(InvalidTransition, match=r"#\d+ is pending; cannot revoke"):
        world.service.revoke(pending, APPROVER)


# ---- extend ----------------------------------------------------------------------------

def test_extend_by_an_approver_moves_the_expiry(world: World) -> None:
    gid = world.active(minutes=10)
    world.clock.advance(timedelta(minutes=8))
    with pytest.raises(NotAllowed, match="longer than the 1h"):
        world.service.extend(gid, APPROVER, timedelta(hours=2))
    with pytest.raises(NotAllowed, match="only the requester or an approver can extend"):
        world.service.extend(gid, "U0MALLORY", timedelta(minutes=30))
    with pytest.raises(NotAllowed, match="already open until"):
        world.service.extend(gid, APPROVER, timedelta(minutes=1))
    old_end = world.service.get(gid).expires_at

    extension = world.service.extend(gid, APPROVER, timedelta(minutes=30))
    new_end = world.clock.now() + timedelta(minutes=30)
    assert extension.request is None
    assert extension.grant.status is Status.ACTIVE and extension.grant.expires_at == new_end
    extended = world.link(gid, "extended")
    assert extended["actor"] == APPROVER
    assert old_end is not None and extended["details"]["old_expires_at"] == old_end.isoformat()
    assert extended["details"]["new_expires_at"] == new_end.isoformat()

    world.clock.advance(timedelta(minutes=29))
    assert world.service.sweep().closed == [] and f"jit-{gid}" in world.rules()
    world.clock.advance(timedelta(minutes=1))
    assert world.service.sweep().closed == [gid] and world.rules() == {}
    assert world.trail(gid) == world.told(gid) == [
        "requested", "approved", "opening", "opened", "extended", "expiring", "closing",
        "closed"]


def test_extend_by_the_requester_within_auto_approval_is_at_once(world: World) -> None:
    gid = world.service.request(AUTO_USER, "prod-db", "ssh", timedelta(minutes=10),
                                SOURCE).grant.id
    assert world.service.open(gid).status is Status.ACTIVE
    extension = world.service.extend(gid, AUTO_USER, timedelta(minutes=20))
    assert extension.request is None
    assert extension.grant.expires_at == world.clock.now() + timedelta(minutes=20)
    extended = world.link(gid, "extended")
    assert extended["actor"] == AUTO_USER
    # Beyond the 30m approved automatically: a new request for an approver.
    asked = world.service.extend(gid, AUTO_USER, timedelta(minutes=45)).request
    assert asked is not None and asked.grant.status is Status.PENDING


def test_extend_by_the_requester_is_a_new_request_that_shares_the_rule(world: World) -> None:
    gid = world.active(minutes=10)
    world.clock.advance(timedelta(minutes=8))
    extension = world.service.extend(gid, REQUESTER, timedelta(minutes=20))
    asked = extension.request
    assert asked is not None and asked.grant.status is Status.PENDING
    assert not asked.auto_approved and extension.grant.status is Status.ACTIVE
    assert asked.grant.reason == f"extension of #{gid}: fix replication"
    assert (asked.grant.source, asked.grant.port) == ("203.0.113.7/32", 22)
    assert "extended" not in world.trail(gid)

    world.service.approve(asked.grant.id, APPROVER)
    assert world.service.open(asked.grant.id).rule_ref == f"jit-{gid}"
    assert list(world.rules()) == [f"jit-{gid}"]
    world.clock.advance(timedelta(minutes=2))
    assert world.service.sweep().closed == [gid]  # the original ends on time...
    assert list(world.rules()) == [f"jit-{gid}"]  # ...and the rule stays for the extension
    world.clock.advance(timedelta(minutes=20))
    assert world.service.sweep().closed == [asked.grant.id]
    assert world.rules() == {}


def test_only_an_active_grant_is_extended(world: World) -> None:
    gid = world.approved()
    with pytest.raises(InvalidTransition, match="already approved; cannot extend"):
        world.service.extend(gid, APPROVER, timedelta(minutes=10))


def test_an_overdue_grant_is_not_extended(world: World) -> None:
    gid = world.active()  # 30 min
    world.clock.advance(timedelta(minutes=30))  # due, and the sweep has not closed it yet
    with pytest.raises(NotAllowed, match=f"#{gid} has already expired and is being closed"):
        world.service.extend(gid, APPROVER, timedelta(minutes=30))
    assert world.service.get(gid).expires_at == world.clock.now()
    assert world.service.sweep().closed == [gid]


def test_a_decision_after_the_approval_timeout_comes_too_late(world: World) -> None:
    gid = world.request()  # approval_timeout: 1h
    other = world.request(port="22", minutes=10)
    world.clock.advance(timedelta(hours=1))  # due to lapse; the sweep has not run
    with pytest.raises(InvalidTransition, match=f"#{gid} is already lapsed; cannot approve"):
        world.service.approve(gid, APPROVER)
    with pytest.raises(InvalidTransition, match=f"#{other} is already lapsed; cannot deny"):
        world.service.deny(other, APPROVER)
    assert world.trail(gid) == ["requested", "lapsed"]
    assert world.provider.calls_to("open_rule") == []


def test_the_expiry_warning_comes_once_per_end(world: World) -> None:
    gid = world.active()
    world.clock.advance(timedelta(minutes=24))  # warn_before: 5 min
    assert world.service.warn_expiring() == []
    world.clock.advance(timedelta(minutes=1, seconds=30))
    assert world.service.warn_expiring() == [gid]
    assert world.service.warn_expiring() == []
    (warning,) = [e for e in world.notifier.events if e.kind is EventKind.EXPIRING]
    assert warning.grant.id == gid and not warning.alert
    world.service.extend(gid, APPROVER, timedelta(minutes=30))  # a new end: a new warning
    world.clock.advance(timedelta(minutes=26))
    assert world.service.warn_expiring() == [gid]
    assert world.trail(gid).count("expiring") == 2


def test_a_grant_already_overdue_is_closed_not_warned(world: World) -> None:
    """After downtime: "ends in 1s" for a grant that ended long ago is noise, and costs the
    restart time; the sweep closes it."""
    overdue = world.active()
    world.clock.advance(timedelta(minutes=40))  # jit was down; the grant ended 10 min ago
    assert world.service.warn_expiring() == []
    assert world.service.next_due() == world.service.get(overdue).expires_at
    report = world.service.sweep()
    assert report.closed == [overdue]
    assert "expiring" not in world.trail(overdue)


def test_the_next_due_time_is_the_earliest_end_lapse_retry_or_warning(world: World) -> None:
    assert world.service.next_due() is None
    gid = world.active()  # ends in 30 min: its warning, 5 min before, comes first
    ends = world.service.get(gid).expires_at
    assert ends is not None
    assert world.service.next_due() == ends - timedelta(minutes=5)
    world.clock.advance(timedelta(minutes=26))
    assert world.service.warn_expiring() == [gid]
    assert world.service.next_due() == ends
    pending = world.request()  # lapses after the approval timeout (1 h)
    lapses = world.clock.now() + timedelta(hours=1)
    assert world.service.next_due() == ends
    world.clock.advance(timedelta(minutes=5))
    world.service.sweep()
    assert world.service.get(gid).status.value == "CLOSED"
    assert world.service.next_due() == lapses
    assert world.service.get(pending).status.value == "PENDING"


# ---- slots -----------------------------------------------------------------------------

def slots_tried(world: World, gid: int) -> list[int | None]:
    return [c.slot for c in world.provider.calls_to("open_rule") if c.grant_id == gid]


def test_a_slot_held_by_a_foreign_rule_moves_the_grant_to_the_next(slotted: World) -> None:
    world = slotted
    foreign = world.provider.add_rule(world.target, 443, "198.51.100.1/32", slot=100)
    first = world.active(source="203.0.113.40")
    assert slots_tried(world, first) == [100, 101]  # SlotTaken at 100
    assert world.rules()[f"jit-{first}"].slot == 101
    assert world.provider.calls_to("used_slots")  # it learnt what the NSG holds

    second = world.active(source="203.0.113.40")  # same source: its own rule on Azure
    assert slots_tried(world, second) == [102]  # 100 known taken: no second conflict
    assert {ref: rule.slot for ref, rule in world.rules().items()} == {
        foreign.ref: 100, f"jit-{first}": 101, f"jit-{second}": 102}

    full = world.service.open(world.approved(source="203.0.113.41"))
    assert full.status is Status.FAILED and full.error and "100-102" in full.error
    assert f"jit-{full.id}" not in world.rules()

    assert world.service.revoke(first, REQUESTER).status is Status.CLOSED
    again = world.active(source="203.0.113.42")
    assert world.rules()[f"jit-{again}"].slot == 101  # freed by the close
    assert world.link(again, "opened")["details"]["priority"] == 101


def test_a_retried_open_keeps_its_slot(slotted: World) -> None:
    world = slotted
    gid = world.approved()
    world.provider.fail_next("open_rule", RuntimeError("the process died"), after_effect=True)
    with pytest.raises(RuntimeError):
        world.service.open(gid)
    world.clock.advance(SETTINGS.lease)
    assert world.service.sweep().opened == [gid]
    assert slots_tried(world, gid) == [100, 100]
    assert {ref: rule.slot for ref, rule in world.rules().items()} == {f"jit-{gid}": 100}
    # Like Azure's PUT by name: the retry writes the same rule again.
    assert world.link(gid, "opened")["details"]["created"] is True
    world.clock.advance(timedelta(minutes=30))
    assert world.service.sweep().closed == [gid] and world.rules() == {}
