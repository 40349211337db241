"""A JitService on a migrated SQLite file and the in-memory provider (tests/fakes), for the
service's lifecycle unit tests; and readers of what it recorded: the audit trail of a grant
(the chain verified on every read) and the moves of the state machine it shows."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from jitcore import audit
from jitcore.domain import Status
from jitcore.policy import Policy, Target
from jitcore.ports import Provider
from jitcore.service import EngineSettings, JitService
from jitcore.store import Store
from tests.fakes.memory_provider import MemoryProvider, MemoryRule
from tests.support.fixtures import ManualClock, RecordingNotifier
from tests.support.policies import APPROVER, REQUESTER, aws_policy, azure_policy

GROUP_ID = "sg-0123456789abcdef0"
SUBSCRIPTION = "00000000-0000-0000-0000-0000000c0ffe"
ARM_ENDPOINT = "https://arm.example.test"  # never called: the provider is in memory
SOURCE = "203.0.113.7"
SETTINGS = EngineSettings(close_attempts=5, retry_base=timedelta(seconds=2),
                          retry_cap=timedelta(seconds=30), slow_retry=timedelta(minutes=5),
                          lease=timedelta(seconds=60))
Move = tuple[Status, Status]


@dataclass(frozen=True)
class World:
    """A service and what it talks to: the clock, the notifier, the firewall."""

    service: JitService
    store: Store
    clock: ManualClock
    notifier: RecordingNotifier
    provider: MemoryProvider
    policy: Policy

    @property
    def target(self) -> Target:
        (target,) = self.policy.targets.values()
        return target

    @property
    def scope(self) -> str:
        return self.provider.scope_of(self.target)

    def rules(self) -> dict[str, MemoryRule]:
        """The rules of the target's firewall now, by ref."""
        return self.provider.rules(self.target)

    def request(self, requester: str = REQUESTER, *, port: str = "ssh",
                minutes: float = 30, source: str = SOURCE, reason: str = "fix replication",
                ) -> int:
        return self.service.request(requester, self.target.name, port,
                                    timedelta(minutes=minutes), source, reason).grant.id

    def approved(self, **request: Any) -> int:
        gid = self.request(**request)
        assert self.service.approve(gid, APPROVER).status is Status.APPROVED
        return gid

    def active(self, **request: Any) -> int:
        gid = self.approved(**request)
        view = self.service.open(gid)
        assert view.status is Status.ACTIVE, view.error
        return gid

    def trail(self, grant_id: int) -> list[str]:
        """The grant's audit actions, oldest first; the whole chain must verify."""
        return [link["action"] for link in self.links(grant_id)]

    def links(self, grant_id: int | None) -> list[dict[str, Any]]:
        """The grant's audit links as exported, oldest first; the chain must verify."""
        with self.store.read() as session:
            verified = audit.verify(session)
            assert verified.ok, verified.problem
            return [link for link in audit.export(session) if link["grant_id"] == grant_id]

    def link(self, grant_id: int | None, action: str) -> dict[str, Any]:
        """The grant's one audit link of this action."""
        (found,) = [link for link in self.links(grant_id) if link["action"] == action]
        return found

    def moves(self, grant_id: int) -> set[Move]:
        """The state changes the grant's audit trail shows (each link names the status
        after it): the edges of the state machine it went through."""
        statuses = [Status(link["details"]["status"]) for link in self.links(grant_id)]
        return {(a, b) for a, b in itertools.pairwise(statuses) if a != b}

    def told(self, grant_id: int) -> list[str]:
        """What the notifier heard about the grant, in order (published after commit)."""
        return self.notifier.kinds(grant_id)


@contextmanager
def open_world(template: Path, directory: Path, *, cloud: str = "aws",
               slots: tuple[int, int] | None = None, rule_limit: int | None = None,
               settings: EngineSettings = SETTINGS) -> Iterator[World]:
    """A service on a copy of the migrated SQLite `template`, with one target, prod-db
    (an AWS security group) or web-vm (an Azure NSG, whose priority band is `slots`)."""
    path = directory / "jit.db"
    shutil.copy(template, path)
    if cloud == "aws":
        policy = aws_policy(GROUP_ID)
    else:
        policy = azure_policy(ARM_ENDPOINT, SUBSCRIPTION, band=slots)
    provider = MemoryProvider(cloud, slots=slots, rule_limit=rule_limit)
    port: Provider = provider  # the fake is a whole Provider (checked by mypy)
    store = Store.from_url(f"sqlite:///{path}")
    clock, notifier = ManualClock(), RecordingNotifier()
    try:
        yield World(JitService(store, policy, {cloud: port}, notifier, clock,
                               settings=settings),
                    store, clock, notifier, provider, policy)
    finally:
        store.dispose()
