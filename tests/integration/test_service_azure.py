"""The lifecycle on Azure: the service and the real azure-mgmt-network SDK over HTTPS to the ARM
emulator (which answers like ARM: async operations, one writer per NSG, priority conflicts,
429 with Retry-After), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from jitcore.domain import Status
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from jitcore.store.db import make_engine
from jitcore.store.models import PriorityReservation
from tests.fakes.arm import ArmEmulator, rule_properties
from tests.support.azure import SUBSCRIPTION, emulator_provider, network_client
from tests.support.bursts import open_together
from tests.support.fixtures import ManualClock, RecordingNotifier, audit_actions, emptied
from tests.support.policies import APPROVER, REQUESTER, azure_policy

RG, NSG, DESTINATION = "rg-app", "nsg-app", "10.0.1.4"
SOURCE = "203.0.113.7"
SETTINGS = EngineSettings(close_attempts=5, retry_base=timedelta(seconds=2),
                          retry_cap=timedelta(seconds=30), slow_retry=timedelta(minutes=5))


@pytest.fixture
def emulator(arm_emulator: ArmEmulator) -> ArmEmulator:
    arm_emulator.add_nsg(SUBSCRIPTION, RG, NSG)
    return arm_emulator


def make_service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
                 emulator: ArmEmulator, **policy: Any) -> JitService:
    return JitService(store, azure_policy(emulator.url, SUBSCRIPTION, **policy),
                      {"azure": emulator_provider(emulator)}, notifier, clock,
                      settings=SETTINGS)


@pytest.fixture
def service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
            emulator: ArmEmulator) -> Iterator[JitService]:
    yield make_service(store, clock, notifier, emulator)


def approved(service: JitService, source: str = SOURCE, port: str = "ssh") -> int:
    gid = service.request(REQUESTER, "web-vm", port, timedelta(minutes=30), source,
                          "patch").grant.id
    service.approve(gid, APPROVER)
    return gid


def jit_rules(emulator: ArmEmulator) -> dict[str, dict[str, Any]]:
    return {r["name"]: r["properties"] for r in emulator.rules(SUBSCRIPTION, RG, NSG)
            if r["name"].startswith("jit-")}


def reservations(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(PriorityReservation)) or 0)


def test_lifecycle_on_azure(service: JitService, store: Store, clock: ManualClock,
                            emulator: ArmEmulator) -> None:
    gid = approved(service)
    opened = service.open(gid)
    assert opened.status is Status.ACTIVE, opened.error
    assert opened.rule_ref == f"jit-{gid}"

    rule = jit_rules(emulator)[f"jit-{gid}"]
    assert rule["priority"] == 100  # the lowest of the default band 100-199
    assert (rule["access"], rule["direction"], rule["protocol"]) == ("Allow", "Inbound", "Tcp")
    assert rule["sourceAddressPrefix"] == "203.0.113.7/32"
    assert rule["destinationAddressPrefix"] == DESTINATION
    assert rule["destinationPortRange"] == "22"
    assert rule["provisioningState"] == "Succeeded"
    assert reservations(store) == 1

    clock.advance(timedelta(minutes=31))
    assert service.sweep().closed == [gid]
    assert jit_rules(emulator) == {}
    assert service.get(gid).status is Status.CLOSED
    assert reservations(store) == 0  # the priority is free again

    assert audit_actions(store, gid) == ["requested", "approved", "opening", "opened",
                                         "closing", "closed"]  # overdue when swept: no warning

    again = service.open(approved(service, source="198.51.100.9"))
    assert jit_rules(emulator)[again.rule_ref or ""]["priority"] == 100


def test_fifty_concurrent_approvals_on_a_busy_nsg(service: JitService, store: Store,
                                                  emulator: ArmEmulator) -> None:
    emulator.op_delay = 0.01  # ARM refuses a second write while one is in progress
    emulator.faults.conflict_next(3)  # ...and, on top, the first writes: AnotherOperation...
    grants = [approved(service, source=f"198.51.100.{n + 1}") for n in range(50)]
    results: dict[int, Status] = {}

    def open_one(gid: int) -> None:
        results[gid] = service.open(gid).status

    threads = [threading.Thread(target=open_one, args=(gid,)) for gid in grants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert results == dict.fromkeys(grants, Status.ACTIVE)
    rules = jit_rules(emulator)
    assert set(rules) == {f"jit-{gid}" for gid in grants}
    priorities = [r["priority"] for r in rules.values()]
    assert len(set(priorities)) == 50 and all(100 <= p <= 199 for p in priorities)
    busy = [c for c in emulator.calls if c.error_code == "AnotherOperationInProgress"]
    assert len(busy) == 3, "the emulator should have refused the first three writes"
    # Opens waiting on one NSG are written together: while the refused writes backed off,
    # the others queued, so some write carried several (how many: test_a_hundred_... below).
    assert 1 <= len(nsg_writes(emulator)) < 50
    assert reservations(store) == 50


def nsg_writes(emulator: ArmEmulator) -> list[object]:
    """Accepted writes of the whole NSG (jit's only kind of write since they coalesce)."""
    return [c for c in emulator.calls if c.method == "PUT" and c.status in (200, 201)
            and c.operation == "Microsoft.Network/networkSecurityGroups/write"]


def test_band_exhaustion_fails_clearly_and_leaves_nothing(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    service = make_service(store, clock, notifier, emulator, band=(100, 102))
    for n in range(3):
        assert service.open(approved(service, source=f"198.51.100.{n + 1}")).status \
            is Status.ACTIVE
    fourth = service.open(approved(service, source="198.51.100.99"))
    assert fourth.status is Status.FAILED
    assert fourth.error == (
        f"no free priority in band 100-102 of network security group {NSG} (resource group "
        f"{RG}): every one is held by an active grant or another rule; widen priority_band "
        "in the policy or wait for grants to end")
    assert f"jit-{fourth.id}" not in jit_rules(emulator)
    assert len(jit_rules(emulator)) == 3 and reservations(store) == 3


def test_a_rule_jit_did_not_make_moves_jit_to_the_next_priority(
        service: JitService, emulator: ArmEmulator) -> None:
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "allow-https",
                      rule_properties(100, 443, source="*", destination="*"))
    gid = approved(service)
    opened = service.open(gid)
    assert opened.status is Status.ACTIVE, opened.error
    assert jit_rules(emulator)[f"jit-{gid}"]["priority"] == 101
    # The clash is seen in the NSG read before the write: ARM never refuses one, and the
    # NSG is written once, with the rule at the next priority.
    assert not [c for c in emulator.calls if c.error_code == "SecurityRuleConflict"]
    assert len(nsg_writes(emulator)) == 1
    # The next grant skips 100 straight away: the service learnt which priorities are taken.
    second = service.open(approved(service, source="198.51.100.2"))
    assert jit_rules(emulator)[second.rule_ref or ""]["priority"] == 102
    assert len(nsg_writes(emulator)) == 2


def test_one_conflict_teaches_every_priority_others_hold(
        service: JitService, emulator: ArmEmulator) -> None:
    for priority, port in ((100, 443), (101, 80), (102, 8443)):
        emulator.add_rule(SUBSCRIPTION, RG, NSG, f"allow-{port}",
                          rule_properties(priority, port, source="*", destination="*"))
    opened = service.open(approved(service))
    assert opened.status is Status.ACTIVE, opened.error
    assert jit_rules(emulator)[f"jit-{opened.id}"]["priority"] == 103
    # After the first clash the NSG's rules were read once: one write, at 103.
    assert not [c for c in emulator.calls if c.error_code == "SecurityRuleConflict"]
    assert len(nsg_writes(emulator)) == 1


def test_throttling_is_retried_after_the_time_arm_asks(service: JitService,
                                                      emulator: ArmEmulator) -> None:
    gid = approved(service)
    emulator.faults.throttle_next(1, retry_after=1.0)
    started = time.monotonic()
    opened = service.open(gid)
    took = time.monotonic() - started
    assert opened.status is Status.ACTIVE, opened.error
    assert 0.9 <= took < 10, f"Retry-After 1 s: took {took:.2f}s"
    assert [c.status for c in emulator.calls if c.status == 429] == [429]


def test_an_async_failure_fails_the_grant_with_azures_message(
        service: JitService, store: Store, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    gid = approved(service)
    emulator.faults.fail_next_operations(1, code="InternalServerError",
                                         message="Allocation failed in the fabric.")
    failed = service.open(gid)
    assert failed.status is Status.FAILED
    assert failed.error and "Allocation failed in the fabric." in failed.error
    assert jit_rules(emulator) == {}, "the half-made rule was taken away"
    assert reservations(store) == 0
    assert any(e.alert and e.grant.id == gid for e in notifier.events)


def test_a_close_that_keeps_failing_becomes_close_failed_then_succeeds(
        service: JitService, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    gid = approved(service)
    assert service.open(gid).status is Status.ACTIVE
    # A close is a PUT of the whole NSG without the rule.
    emulator.faults.break_puts(status=500, code="InternalServerError",
                               message="The server encountered an internal error.")

    clock.advance(timedelta(minutes=31))
    assert service.sweep().failed == [gid]
    for _ in range(4):
        clock.advance(timedelta(minutes=1))
        assert service.sweep().failed == [gid]
    failed = service.get(gid)
    assert failed.status is Status.CLOSE_FAILED
    assert failed.error and NSG in failed.error
    assert "The server encountered an internal error." in failed.error
    assert [e.kind.value for e in notifier.events if e.alert and e.grant.id == gid] \
        == ["close_failed"]
    assert f"jit-{gid}" in jit_rules(emulator)

    emulator.faults.heal()
    clock.advance(timedelta(minutes=6))
    assert service.sweep().closed == [gid]
    assert service.get(gid).status is Status.CLOSED
    assert jit_rules(emulator) == {}


def test_reconcile_removes_an_orphan_jit_rule(service: JitService,
                                              emulator: ArmEmulator) -> None:
    kept = service.open(approved(service))
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "jit-999999",
                      rule_properties(150, 22, source="198.51.100.50/32",
                                      destination=DESTINATION))
    emulator.add_rule(SUBSCRIPTION, RG, NSG, "allow-https", rule_properties(300, 443))
    orphans = service.reconcile()
    assert [o.ref for o in orphans] == ["jit-999999"]
    names = {r["name"] for r in emulator.rules(SUBSCRIPTION, RG, NSG)}
    assert names == {kept.rule_ref, "allow-https"}


def test_a_missing_nsg_fails_the_grant_naming_it(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        arm_emulator: ArmEmulator) -> None:
    arm_emulator.add_resource_group(SUBSCRIPTION, RG)
    service = make_service(store, clock, notifier, arm_emulator)
    failed = service.open(approved(service))
    assert failed.status is Status.FAILED
    assert failed.error and f"network security group {NSG}" in failed.error
    assert "not found" in failed.error
    assert reservations(store) == 0


def test_cli_shows_azure_targets_and_grants(store: Store, db_url: str, clock: ManualClock,
                                           notifier: RecordingNotifier, emulator: ArmEmulator,
                                           tmp_path: Any) -> None:
    import json

    import yaml
    from click.testing import CliRunner

    from jitcore.cli import cli
    from tests.support.policies import azure_policy_data

    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(azure_policy_data(emulator.url, SUBSCRIPTION)))
    service = make_service(store, clock, notifier, emulator)
    gid = approved(service)
    assert service.open(gid).status is Status.ACTIVE
    env = {"JIT_CONFIG": str(config), "JIT_DATABASE_URL": db_url}

    checked = CliRunner().invoke(cli, ["check"], env=env)
    assert checked.exit_code == 0, checked.output
    assert f"azure {SUBSCRIPTION}/{RG}/{NSG} -> {DESTINATION}" in checked.output

    listed = CliRunner().invoke(cli, ["grants", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [grant] = json.loads(listed.output)
    assert (grant["id"], grant["cloud"], grant["status"], grant["rule"]) == (
        gid, "azure", "ACTIVE", f"jit-{gid}")


def test_a_grant_whose_nsg_was_deleted_closes_as_already_gone(
        service: JitService, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    gid = approved(service)
    assert service.open(gid).status is Status.ACTIVE
    network_client(emulator).network_security_groups.begin_delete(RG, NSG).result()
    clock.advance(timedelta(minutes=31))
    assert service.sweep().closed == [gid]
    assert service.get(gid).status is Status.CLOSED
    [closed] = [e for e in notifier.events if e.grant.id == gid and e.kind.value == "closed"]
    assert closed.detail == "already gone"


def test_a_hundred_approvals_on_one_nsg_open_within_three_writes(
        service: JitService, store: Store, emulator: ArmEmulator) -> None:
    """Writes that take 2 s on ARM, one at a time per NSG: a hundred people approved at once
    share at most three writes (about two), not a hundred."""
    grants = [approved(service, source=f"198.51.{100 + n // 200}.{n % 200 + 1}")
              for n in range(100)]
    emulator.op_delay = 2.0
    results, took = open_together(service, grants)
    emulator.op_delay = 0.0
    assert all(view.status is Status.ACTIVE for view in results.values()), \
        {gid: view.error for gid, view in results.items() if view.status is not Status.ACTIVE}
    # How long is measured by bench.azure_burst; here, what bounds it: at most three
    # writes of the NSG carried all hundred opens.
    assert took >= 2.0  # (the writes really took their 2 s)
    rules = jit_rules(emulator)
    assert set(rules) == {f"jit-{gid}" for gid in grants}
    for gid in grants:
        rule = rules[f"jit-{gid}"]
        assert (rule["sourceAddressPrefix"], rule["destinationAddressPrefix"],
                rule["destinationPortRange"], rule["access"], rule["direction"]) == \
            (results[gid].source, DESTINATION, "22", "Allow", "Inbound")
    priorities = [r["priority"] for r in rules.values()]
    assert sorted(priorities) == list(range(100, 200))  # unique, the whole band
    assert len(nsg_writes(emulator)) <= 3
    assert reservations(store) == 100


def test_opens_after_a_burst_of_approvals_queue_for_a_busy_pool(
        postgres_database: str, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    """Opens run after the ack, so none fails because every pooled connection was busy for
    longer than a request may wait (their commits take turns on the audit chain): each
    waits for one. Here the pool's two connections are held for 0.5 s, five times its
    timeout, while twelve opens start."""
    store = Store(make_engine(emptied(postgres_database), pool_size=2, max_overflow=0,
                              pool_timeout=0.1))
    try:
        service = make_service(store, clock, notifier, emulator)
        grants = [approved(service, source=f"198.51.100.{n + 1}") for n in range(12)]
        held = [store.engine.connect() for _ in range(2)]
        for conn in held:
            threading.Timer(0.5, conn.close).start()
        results, _ = open_together(service, grants)
        assert {gid: view.status for gid, view in results.items()} == \
            dict.fromkeys(grants, Status.ACTIVE)
        assert set(jit_rules(emulator)) == {f"jit-{gid}" for gid in grants}
    finally:
        store.dispose()
