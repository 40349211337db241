"""Two services on one database, as two replicas would be: the sweep's work is done once.

Each replica has a store (engine and pool) of its own; they sweep at the same moment.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from jitcore.domain import EventKind, Status
from jitcore.providers.aws import AwsProvider
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from tests.support.aws import jit_rule_ids
from tests.support.fixtures import ManualClock, RecordingNotifier, audit_actions
from tests.support.policies import APPROVER, REQUESTER, aws_policy

GRANTS = 30


@pytest.fixture
def replicas(db_url: str, clock: ManualClock,
             aws_group: Any) -> Iterator[list[tuple[JitService, RecordingNotifier]]]:
    made = []
    for _ in range(2):
        notifier = RecordingNotifier()
        service = JitService(Store.from_url(db_url), aws_policy(aws_group.group_id),
                             {"aws": AwsProvider()}, notifier, clock,
                             settings=EngineSettings(batch=7))  # several batches each
        made.append((service, notifier))
    yield made
    for service, _ in made:
        service.store.dispose()


def _open_grants(service: JitService, minutes: int) -> list[int]:
    ids = []
    for n in range(GRANTS):
        gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=minutes),
                              f"198.51.100.{n + 1}").grant.id
        service.approve(gid, APPROVER)
        assert service.open(gid).status is Status.ACTIVE
        ids.append(gid)
    return ids


def _at_once(replicas: list[tuple[JitService, RecordingNotifier]],
             work: Callable[[JitService], object]) -> None:
    start = threading.Barrier(len(replicas))

    def run(service: JitService) -> object:
        start.wait()
        return work(service)

    with ThreadPoolExecutor(len(replicas)) as pool:
        list(pool.map(run, [service for service, _ in replicas]))


def _published(replicas: list[tuple[JitService, RecordingNotifier]],
               kind: EventKind) -> Counter[int]:
    return Counter(e.grant.id for _, notifier in replicas for e in notifier.events
                   if e.kind is kind)


def test_expiry_warnings_are_sent_once(replicas: list[tuple[JitService, RecordingNotifier]],
                                       clock: ManualClock) -> None:
    ids = _open_grants(replicas[0][0], minutes=30)
    clock.advance(timedelta(minutes=26))  # inside the 5-minute warning window

    def warn_all(service: JitService) -> None:
        while service.warn_expiring():  # a batch per call, as the sweep does per tick
            pass

    _at_once(replicas, warn_all)
    assert _published(replicas, EventKind.EXPIRING) == dict.fromkeys(ids, 1)
    assert all(audit_actions(replicas[0][0].store, gid).count("expiring") == 1 for gid in ids)


def test_due_grants_are_closed_once(replicas: list[tuple[JitService, RecordingNotifier]],
                                    clock: ManualClock, aws_group: Any) -> None:
    ids = _open_grants(replicas[0][0], minutes=10)
    clock.advance(timedelta(minutes=11))
    _at_once(replicas, lambda service: service.sweep())
    assert _published(replicas, EventKind.CLOSED) == dict.fromkeys(ids, 1)
    assert _published(replicas, EventKind.CLOSING) == dict.fromkeys(ids, 1)
    assert jit_rule_ids(aws_group.ec2, aws_group.group_id) == set()
    for gid in ids:
        assert audit_actions(replicas[0][0].store, gid)[-2:] == ["closing", "closed"]


def test_a_stopping_replica_finishes_its_batch_and_leaves_the_rest(
        replicas: list[tuple[JitService, RecordingNotifier]], clock: ManualClock) -> None:
    (first, told), (second, _) = replicas
    ids = _open_grants(first, minutes=10)
    clock.advance(timedelta(minutes=11))
    publish = told.publish

    def stop_at_first_close(event: Any) -> None:  # SIGTERM arrives mid-burst
        publish(event)
        if event.kind is EventKind.CLOSED:
            first.stop()

    told.publish = stop_at_first_close  # type: ignore[method-assign]
    report = first.sweep()
    # The batch in hand, and the one claimed ahead of it while it closed (if the claim
    # came before the stop), then it returned.
    done = len(report.closed)
    assert done in (7, 14)
    statuses = Counter(first.get(gid).status for gid in ids)
    assert statuses == {Status.CLOSED: done, Status.ACTIVE: GRANTS - done}  # nothing half-done
    assert len(second.sweep().closed) == GRANTS - done  # another replica takes the rest
