"""A jit process killed while its firewall write is still running on ARM: the next process
finishes the grant, and nothing is left that no grant records."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest

from jitcore.domain import Entry, Status
from jitcore.policy_file import parse_policy
from jitcore.ports import LogNotifier
from jitcore.service import JitService
from jitcore.store import Store
from tests.fakes.arm import ArmEmulator
from tests.fakes.arm.gateway import Call
from tests.support.azure import SUBSCRIPTION, emulator_provider
from tests.support.fixtures import ManualClock
from tests.support.policies import APPROVER, REQUESTER, firewall_policy_data

HUB, FIREWALL, POLICY, PUBLIC_IP = "rg-hub", "fw-hub", "fwpol-hub", "20.30.40.50"
REPO_ROOT = Path(__file__).resolve().parents[2]
WRITES = {"classic": "Microsoft.Network/azureFirewalls/write",
          "policy": "Microsoft.Network/firewallPolicies/ruleCollectionGroups/write"}

# The process that dies: opens one grant through the firewall, as the engine would.
_CHILD = """\
import sys
from jitcore.policy_file import parse_policy
from jitcore.ports import LogNotifier, SystemClock
from jitcore.service import JitService
from jitcore.store import Store
from tests.fakes.arm import ArmEmulator
from tests.support.azure import SUBSCRIPTION, emulator_provider
from tests.support.policies import firewall_policy_data

db_url, url, ca, gid, mode = sys.argv[1:6]
class Emulator:  # what emulator_provider reads of an ArmEmulator
    ca_bundle = ca
data = firewall_policy_data(url, SUBSCRIPTION, mode=mode)
service = JitService(Store.from_url(db_url), parse_policy(data, "crash.yaml"),
                     {"azure": emulator_provider(Emulator())}, LogNotifier(), SystemClock())
service.open(int(gid))
"""


@pytest.mark.parametrize("mode", ["classic", "policy"])
def test_killed_after_the_firewall_write_was_accepted_converges_on_restart(
        db_url: str, arm_emulator: ArmEmulator, mode: str) -> None:
    arm_emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP)
    arm_emulator.add_firewall_policy(SUBSCRIPTION, HUB, POLICY)
    policy = parse_policy(firewall_policy_data(arm_emulator.url, SUBSCRIPTION, mode=mode), "p")
    store = Store.from_url(db_url)
    clock = ManualClock(datetime.now(UTC))
    service = JitService(store, policy, {"azure": emulator_provider(arm_emulator)},
                         LogNotifier(), clock)
    gid = service.request(REQUESTER, "hub-vm", "ssh", timedelta(minutes=30), "203.0.113.7",
                          "crash").grant.id
    service.approve(gid, APPROVER)

    accepted = threading.Event()

    def watch(call: Call, headers: Message) -> None:
        if call.operation == WRITES[mode] and call.status in (200, 201):
            accepted.set()

    arm_emulator.op_delay = 3.0  # the write is still running when the process dies
    ArmEmulator.observers.append(watch)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db_url, arm_emulator.url, arm_emulator.ca_bundle,
         str(gid), mode], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert accepted.wait(60), "the child never wrote the firewall"
        child.kill()
        child.wait(10)
    finally:
        ArmEmulator.observers.remove(watch)
        if child.poll() is None:
            child.kill()
    assert service.get(gid).status is Status.OPENING  # the child died holding the claim
    arm_emulator.op_delay = 0.0

    # The next process: once the dead one's lease has run out, its sweep takes the open over.
    clock.advance(timedelta(minutes=2))
    report = service.sweep()
    assert report.opened == [gid]
    view = service.get(gid)
    assert view.status is Status.ACTIVE, view.error
    assert view.entry == Entry(PUBLIC_IP, 50000, "10.1.0.4", 22)
    # Nothing jit owns is unrecorded: reconcile finds no orphan.
    assert service.reconcile(dry_run=True) == []
    arm_emulator.wait_idle(10)  # (a close meanwhile would be refused as busy, and retried)
    clock.advance(timedelta(minutes=31))
    assert service.sweep().closed == [gid]
    assert service.reconcile(dry_run=True) == []
    store.dispose()
