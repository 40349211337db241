"""Grants through an Azure Firewall: the service and the real azure-mgmt-network SDK over
HTTPS to the ARM emulator, classic rules and Firewall Policy, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from sqlalchemy import func, select

from jitcore.domain import Entry, Status
from jitcore.policy_file import parse_policy
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from jitcore.store.models import PriorityReservation
from tests.fakes.arm import ArmEmulator
from tests.fakes.arm.gateway import Call
from tests.support.azure import SUBSCRIPTION, emulator_provider
from tests.support.bursts import open_together
from tests.support.fixtures import ManualClock, RecordingNotifier, audit_actions
from tests.support.policies import APPROVER, REQUESTER, firewall_policy_data

HUB, FIREWALL, POLICY, PUBLIC_IP, VM = "rg-hub", "fw-hub", "fwpol-hub", "20.30.40.50", "10.1.0.4"
SOURCE = "203.0.113.7"
FIREWALL_WRITE = "Microsoft.Network/azureFirewalls/write"
GROUP_WRITE = "Microsoft.Network/firewallPolicies/ruleCollectionGroups/write"


@pytest.fixture
def emulator(arm_emulator: ArmEmulator) -> ArmEmulator:
    arm_emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP)
    arm_emulator.add_firewall_policy(SUBSCRIPTION, HUB, POLICY)
    arm_emulator.add_nsg(SUBSCRIPTION, "rg-spoke", "nsg-spoke")
    return arm_emulator


def make_service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
                 emulator: ArmEmulator, **policy: Any) -> JitService:
    data = firewall_policy_data(emulator.url, SUBSCRIPTION, **policy)
    return JitService(store, parse_policy(data, "test-policy.yaml"),
                      {"azure": emulator_provider(emulator)}, notifier, clock,
                      settings=EngineSettings(close_attempts=3))


@pytest.fixture(params=["classic", "policy"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
            emulator: ArmEmulator, mode: str) -> Iterator[JitService]:
    yield make_service(store, clock, notifier, emulator, mode=mode)


def approved(service: JitService, source: str = SOURCE, port: str = "ssh") -> int:
    gid = service.request(REQUESTER, "hub-vm", port, timedelta(minutes=30), source,
                          "fix replication").grant.id
    service.approve(gid, APPROVER)
    return gid


def dnat_rules(emulator: ArmEmulator, mode: str) -> dict[str, dict[str, Any]]:
    """jit's DNAT rules as the emulator holds them, by name."""
    if mode == "classic":
        collection = emulator.nat_collection(SUBSCRIPTION, HUB, FIREWALL, "jit")
        if collection is None:
            return {}
        assert collection["properties"]["action"] == {"type": "Dnat"}
        return {r["name"]: r for r in collection["properties"]["rules"]}
    group = emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, "jit")
    if group is None:
        return {}
    [collection] = group["properties"]["ruleCollections"]
    assert collection["name"] == "jit"
    assert collection["ruleCollectionType"] == "FirewallPolicyNatRuleCollection"
    assert collection["action"]["type"].upper() == "DNAT"  # sent DNAT; ARM echoes either
    return {r["name"]: r for r in collection["rules"]}


def reservations(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(PriorityReservation)) or 0)


def test_a_grant_through_the_firewall_is_one_dnat_rule_removed_at_the_end(
        service: JitService, store: Store, clock: ManualClock, emulator: ArmEmulator,
        mode: str) -> None:
    gid = approved(service)
    opened = service.open(gid)
    assert opened.status is Status.ACTIVE, opened.error
    assert opened.rule_ref == f"jit-{gid}"
    assert opened.entry == Entry(PUBLIC_IP, 50000, VM, 22)
    assert str(opened.entry) == "20.30.40.50:50000 -> 10.1.0.4:22"

    rule = dnat_rules(emulator, mode)[f"jit-{gid}"]
    protocols = rule["protocols"] if mode == "classic" else rule["ipProtocols"]
    assert (protocols, rule["sourceAddresses"], rule["destinationAddresses"],
            rule["destinationPorts"], rule["translatedAddress"], rule["translatedPort"]) == \
        (["TCP"], [f"{SOURCE}/32"], [PUBLIC_IP], ["50000"], VM, "22")
    assert reservations(store) == 1

    clock.advance(timedelta(minutes=31))
    report = service.sweep()
    assert report.closed == [gid]
    assert dnat_rules(emulator, mode) == {}, "read back: the rule (and jit's collection) gone"
    assert service.get(gid).status is Status.CLOSED
    assert reservations(store) == 0
    assert audit_actions(store, gid) == ["requested", "approved", "opening", "opened",
                                         "closing", "closed"]  # overdue when swept: no warning


def test_mapped_ports_are_the_lowest_free_and_skip_ports_others_forward(
        service: JitService, emulator: ArmEmulator, mode: str) -> None:
    standing = {"name": "web", "sourceAddresses": ["*"], "destinationAddresses": [PUBLIC_IP],
                "destinationPorts": ["50000"], "translatedAddress": "10.1.0.9",
                "translatedPort": "443"}
    if mode == "classic":
        emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP,
                              nat_collections=[{"name": "standing", "properties": {
                                  "priority": 100, "action": {"type": "Dnat"},
                                  "rules": [{**standing, "protocols": ["TCP"]}]}}])
    else:
        emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "standing", 100, [{
            "ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": "standing",
            "priority": 100, "action": {"type": "DNAT"},
            "rules": [{**standing, "ruleType": "NatRule", "ipProtocols": ["TCP"]}]}])
    first = service.open(approved(service))
    second = service.open(approved(service, source="198.51.100.2", port="rdp"))
    assert (first.status, second.status) == (Status.ACTIVE, Status.ACTIVE), \
        (first.error, second.error)
    assert first.entry == Entry(PUBLIC_IP, 50001, VM, 22)
    assert second.entry == Entry(PUBLIC_IP, 50002, VM, 3389)
    rules = dnat_rules(emulator, mode)
    assert sorted(r["destinationPorts"][0] for r in rules.values()) == ["50001", "50002"]


def test_a_foreign_change_between_jits_read_and_write_survives(
        service: JitService, emulator: ArmEmulator, mode: str) -> None:
    """Someone writes the firewall (or jit's group) after jit read it: jit's write is refused
    with 412, and jit reads again and keeps their change."""
    foreign = {"name": "ops", "priority": 300, "action": {"type": "Dnat"}, "rules": [{
        "name": "ops-rdp", "sourceAddresses": ["192.0.2.1"], "destinationAddresses": [PUBLIC_IP],
        "destinationPorts": ["40000"], "translatedAddress": "10.1.0.8", "translatedPort": "3389"}]}
    done = threading.Event()

    def meddle(call: Call, headers: Message) -> None:
        if done.is_set() or call.method != "GET" or call.status != 200:
            return
        if mode == "classic" and call.path.lower().endswith(f"/azurefirewalls/{FIREWALL}"):
            current = emulator.firewall(SUBSCRIPTION, HUB, FIREWALL)["properties"]
            kept = [{"name": c["name"], "properties": c["properties"]}
                    for c in current["natRuleCollections"]]
            ops = {"name": "ops", "properties": {
                **{k: v for k, v in foreign.items() if k != "name"},
                "rules": [{**foreign["rules"][0], "protocols": ["TCP"]}]}}  # type: ignore[index]
            emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP,
                                  nat_collections=[*kept, ops])
            done.set()
        elif mode == "policy" and call.path.lower().endswith("/rulecollectiongroups"):
            emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "ops", 300, [{
                "ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": "ops",
                "priority": 300, "action": {"type": "DNAT"},
                "rules": [{**foreign["rules"][0], "ruleType": "NatRule",  # type: ignore[index]
                           "ipProtocols": ["TCP"]}]}])
            # ...and into jit's own group, once it exists, a collection of theirs:
            done.set()

    ArmEmulator.observers.append(meddle)
    try:
        gid = approved(service)
        assert service.open(gid).status is Status.ACTIVE
    finally:
        ArmEmulator.observers.remove(meddle)
    assert done.is_set()
    assert f"jit-{gid}" in dnat_rules(emulator, mode)
    if mode == "classic":
        assert emulator.nat_collection(SUBSCRIPTION, HUB, FIREWALL, "ops") is not None
        refused = [c.status for c in emulator.calls_to(FIREWALL_WRITE)]
        assert refused[0] == 412 and refused[-1] in (200, 201), refused
    else:
        assert emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, "ops") is not None


def test_twenty_approvals_at_once_open_within_three_writes(
        store: Store, clock: ManualClock, notifier: RecordingNotifier, emulator: ArmEmulator,
        mode: str) -> None:
    """Writes that take 10 s on ARM (one at a time): twenty people approved at once share at
    most three writes (about two), so all are open within three writes' time."""
    service = make_service(store, clock, notifier, emulator, mode=mode)
    grants = [approved(service, source=f"198.51.100.{n + 1}") for n in range(20)]
    emulator.op_delay = 10.0
    results, took = open_together(service, grants)
    emulator.op_delay = 0.0
    assert all(view.status is Status.ACTIVE for view in results.values()), \
        {gid: view.error for gid, view in results.items()}
    assert took >= 10.0  # the writes really took their 10 s; how long in all: bench.azure_burst
    rules = dnat_rules(emulator, mode)
    assert set(rules) == {f"jit-{gid}" for gid in grants}
    ports = [r["destinationPorts"][0] for r in rules.values()]
    assert len(set(ports)) == 20
    for gid in grants:
        rule = rules[f"jit-{gid}"]
        assert rule["sourceAddresses"] == [results[gid].source]
        assert rule["destinationPorts"] == [str(results[gid].entry.port)]
        assert (rule["translatedAddress"], rule["translatedPort"]) == (VM, "22")
    writes = emulator.calls_to(FIREWALL_WRITE if mode == "classic" else GROUP_WRITE)
    assert len([c for c in writes if c.status in (200, 201)]) <= 3


def test_with_an_nsg_too_the_nsg_allows_the_firewalls_subnet(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    service = make_service(store, clock, notifier, emulator, nsg="nsg-spoke")
    gid = approved(service)
    opened = service.open(gid)
    assert opened.status is Status.ACTIVE, opened.error
    [rule] = [r for r in emulator.rules(SUBSCRIPTION, "rg-spoke", "nsg-spoke")
              if r["name"] == f"jit-{gid}"]
    p = rule["properties"]
    assert (p["sourceAddressPrefix"], p["destinationAddressPrefix"], p["destinationPortRange"],
            p["access"], p["priority"]) == ("10.0.1.0/26", VM, "22", "Allow", 100)
    assert f"jit-{gid}" in dnat_rules(emulator, "classic")

    clock.advance(timedelta(minutes=31))
    assert service.sweep().closed == [gid]
    assert dnat_rules(emulator, "classic") == {}
    assert not [r for r in emulator.rules(SUBSCRIPTION, "rg-spoke", "nsg-spoke")
                if r["name"].startswith("jit-")]


def test_reconcile_removes_a_jit_dnat_rule_no_grant_holds(
        service: JitService, emulator: ArmEmulator, mode: str) -> None:
    live = service.open(approved(service))
    assert live.status is Status.ACTIVE, live.error
    # A crash between the write and its record leaves a rule like this one.
    orphan = {"name": "jit-999", "sourceAddresses": ["192.0.2.9/32"],
              "destinationAddresses": [PUBLIC_IP], "destinationPorts": ["50500"],
              "translatedAddress": VM, "translatedPort": "3389"}
    if mode == "classic":
        current = emulator.nat_collection(SUBSCRIPTION, HUB, FIREWALL, "jit")
        assert current is not None
        properties = current["properties"]
        emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP, nat_collections=[
            {"name": "jit", "properties": {
                "priority": properties["priority"], "action": {"type": "Dnat"},
                "rules": [*properties["rules"], {**orphan, "protocols": ["TCP"]}]}}])
    else:
        group = emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, "jit")
        assert group is not None
        [collection] = group["properties"]["ruleCollections"]
        emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "jit",
                                           group["properties"]["priority"], [{
            **collection,
            "rules": [*collection["rules"],
                      {**orphan, "ruleType": "NatRule", "ipProtocols": ["TCP"]}]}])
    assert set(dnat_rules(emulator, mode)) == {f"jit-{live.id}", "jit-999"}

    dry = service.reconcile(dry_run=True)
    assert [(o.grant_id, o.port, o.removed) for o in dry] == [(999, 3389, False)]
    done = service.reconcile()
    assert [(o.grant_id, o.removed) for o in done] == [(999, True)]
    assert set(dnat_rules(emulator, mode)) == {f"jit-{live.id}"}
    assert service.get(live.id).status is Status.ACTIVE


def test_a_firewall_write_that_fails_fails_the_grant_and_leaves_no_rule(
        service: JitService, store: Store, emulator: ArmEmulator, mode: str) -> None:
    gid = approved(service)
    emulator.faults.fail_next_operations(1, code="InternalServerError",
                                         message="The firewall could not be updated.")
    failed = service.open(gid)
    assert failed.status is Status.FAILED
    assert failed.error and "The firewall could not be updated." in failed.error
    assert "firewall" in failed.error
    assert dnat_rules(emulator, mode) == {}, "the half-made rule was taken away"
    assert reservations(store) == 0


def test_metrics_count_firewall_grants_and_the_writes_that_carried_them(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from jitcore.metrics import GrantMetrics, WriteCollector

    registry = CollectorRegistry()
    registry.register(WriteCollector())

    def sample(name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for found in family.samples:
                if found.name == name and found.labels == labels:
                    return float(found.value)
        return 0.0

    data = firewall_policy_data(emulator.url, SUBSCRIPTION)
    service = JitService(store, parse_policy(data, "test-policy.yaml"),
                         {"azure": emulator_provider(emulator)}, notifier, clock,
                         metrics=GrantMetrics(registry))
    writes = sample("jit_cloud_writes_total", kind="azure_firewall")
    changes = sample("jit_cloud_write_changes_total", kind="azure_firewall")
    grants = [approved(service, source=f"198.51.100.{n + 1}") for n in range(5)]
    emulator.op_delay = 0.5  # the first write runs while the others queue behind it
    threads = [threading.Thread(target=service.open, args=(gid,)) for gid in grants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    emulator.op_delay = 0.0
    assert sample("jit_grants_opened_total", cloud="azure") == 5
    assert sample("jit_cloud_write_changes_total", kind="azure_firewall") - changes == 5
    assert 1 <= sample("jit_cloud_writes_total", kind="azure_firewall") - writes <= 3


def test_jits_classic_write_leaves_the_rest_of_the_firewall_as_it_was(
        service: JitService, emulator: ArmEmulator, mode: str) -> None:
    before = emulator.firewall(SUBSCRIPTION, HUB, FIREWALL)["properties"]
    assert service.open(approved(service)).status is Status.ACTIVE
    after = emulator.firewall(SUBSCRIPTION, HUB, FIREWALL)["properties"]
    # IP configurations (the private address ARM assigned included), SKU, threat intel mode:
    # all as they were; only jit's NAT collection is new (classic mode).
    for key in ("ipConfigurations", "sku", "threatIntelMode", "networkRuleCollections",
                "applicationRuleCollections"):
        assert [strip(x) for x in after[key]] == [strip(x) for x in before[key]] \
            if isinstance(before[key], list) else after[key] == before[key], key
    assert after["ipConfigurations"][0]["properties"]["privateIPAddress"] == "10.0.1.4"
    expected = ["jit"] if mode == "classic" else []
    assert [c["name"] for c in after["natRuleCollections"]] == expected


def strip(value: dict[str, Any]) -> dict[str, Any]:
    """Without what every write changes."""
    return {k: (strip(v) if isinstance(v, dict) else v) for k, v in value.items()
            if k not in ("etag", "provisioningState")}
