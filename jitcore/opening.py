"""Opening: APPROVED -> OPENING -> ACTIVE, or FAILED.

The claim (OPENING, with a lease) commits before the cloud call and the outcome after
it; a crashed open is finished by the sweep once its lease runs out, and the cloud call
is idempotent (the rule is marked with the grant). Where a firewall gives its rules
numbered places (`Provider.placement`: Azure priorities), a slot is reserved in the
database first; nothing here knows which cloud it is talking to.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from jitcore.closing import RuleLocks, UseCase
from jitcore.domain import EventKind, GrantView, Status
from jitcore.engine import EngineSettings
from jitcore.errors import InvalidTransition, ProviderError, RuleLimitExceeded, SlotTaken
from jitcore.policy import Policy, Target
from jitcore.ports import OpenedRule, Provider, RuleSpec, SlotPool
from jitcore.store import repository as repo
from jitcore.store.models import GrantRecord
from jitcore.unit_of_work import ENGINE_ACTOR, UnitOfWork


class Opener(UseCase):
    def __init__(self, uow: UnitOfWork, policy: Policy, providers: Mapping[str, Provider],
                 settings: EngineSettings, locks: RuleLocks,
                 left_behind: Callable[[Target, int], object]) -> None:
        super().__init__(uow, policy, providers, settings, locks)
        # Removes a rule a failed open may have made all the same (Reconciler.remove_left_by).
        self._left_behind = left_behind
        self._pool_locks: dict[str, threading.Lock] = {}
        self._pool_locks_guard = threading.Lock()
        # Slots found held by rules jit has no reservation for, per pool (a hint).
        self._foreign: dict[str, set[int]] = defaultdict(set)

    def open(self, grant_id: int) -> GrantView:
        """APPROVED -> OPENING -> ACTIVE (or FAILED). Safe to call again after a crash."""
        row = self._claim(grant_id)
        target = self.policy.targets.get(row.target)
        port = target.ports.get(row.service) if target else None
        provider = self.providers.get(row.cloud)
        if target is None or port is None or provider is None:
            return self._fail(grant_id, f"{row.service} on {row.target} is no longer in "
                                        "the policy or has no provider")
        spec = RuleSpec(grant_id=grant_id, target=target, port=port, source=row.source,
                        description=f"jit grant #{row.id} for {row.requester}"[:255])
        try:
            pool = provider.placement(target)
            if pool is not None:
                return self._open_in_pool(row, spec, pool, provider)
            with self.locks.of_grants([row]):
                # Recorded under the lock: a close of a shared rule must see this holder.
                return self._opened(row, provider.open_rule(spec))
        except ProviderError as exc:
            failed = self._fail(grant_id, str(exc))
            if failed.status is Status.FAILED:  # outside the lock: removal takes it again
                self._left_behind(target, grant_id)
            return failed

    def _claim(self, grant_id: int) -> GrantRecord:
        now = self.uow.clock.now()
        lease = dict(next_attempt_at=now + self.settings.lease)
        with self.uow.begin() as work:
            row = self.uow.move(work, grant_id, Status.APPROVED, Status.OPENING, ENGINE_ACTOR,
                                EventKind.OPENING, values=lease)
            # A retry takes over an OPENING grant only once the previous worker's lease ran out.
            row = row or self.uow.move(work, grant_id, Status.OPENING, Status.OPENING,
                                       ENGINE_ACTOR, EventKind.OPENING, values=lease,
                                       lease_expired_before=now, retry=True)
            if row is None:
                raise InvalidTransition(grant_id, self.uow.row(work.db, grant_id).state,
                                        "open")
        return row

    def _open_in_pool(self, row: GrantRecord, spec: RuleSpec, pool: SlotPool,
                      provider: Provider) -> GrantView:
        """A slot reserved in the pool, then the rule; on a conflict with a rule jit did
        not reserve for, the next free slot."""
        conflicts: set[int] = set()
        for _ in range(pool.high - pool.low + 2):
            slot = self._reserve(row.id, pool, conflicts)
            try:
                opened = provider.open_rule(replace(spec, slot=slot))
            except SlotTaken:
                conflicts.add(slot)
                self._learn(provider, spec, pool, slot)
                continue
            return self._opened(row, opened, slot=slot)
        raise RuleLimitExceeded(pool.full)  # pragma: no cover (loop bound)

    def _reserve(self, grant_id: int, pool: SlotPool, refused: set[int]) -> int:
        """The lowest free slot of the pool, reserved for this grant (kept on a retry).

        Chosen under a per-pool lock in this process; the unique (scope, slot) constraint
        keeps replicas apart: a loser of that race takes the next one.
        """
        with self._pool_lock(pool.scope):
            for _ in range(pool.high - pool.low + 2):
                try:
                    with self.uow.store.transaction() as session:
                        held = repo.slot_of(session, grant_id, pool.scope)
                        if held is not None and held not in refused:
                            return held
                        repo.release_slots(session, [grant_id])
                        taken = (repo.reserved_slots(session, pool.scope) | refused
                                 | self._foreign[pool.scope])
                        free = next((s for s in range(pool.low, pool.high + 1)
                                     if s not in taken), None)
                        if free is None:
                            raise RuleLimitExceeded(pool.full)
                        repo.reserve_slot(session, pool.scope, free, grant_id,
                                          self.uow.clock.now())
                        return free
                except IntegrityError:
                    continue  # another replica reserved it first: choose again
        raise RuleLimitExceeded(pool.full)

    def _learn(self, provider: Provider, spec: RuleSpec, pool: SlotPool, refused: int) -> None:
        """After a conflict, read which slots the firewall really holds (one read)."""
        used = {refused}
        with suppress(ProviderError):  # the refused slot alone is still worth keeping
            used |= provider.used_slots(spec.target)
        with self.uow.store.read() as session:
            reserved = repo.reserved_slots(session, pool.scope)
        # This grant's own reservation is the refused slot: held by someone else.
        self._foreign[pool.scope] = (used - reserved) | {refused}

    def _pool_lock(self, scope: str) -> threading.Lock:
        with self._pool_locks_guard:
            return self._pool_locks.setdefault(scope, threading.Lock())

    def _opened(self, before: GrantRecord, opened: OpenedRule,
                slot: int | None = None) -> GrantView:
        now = self.uow.clock.now()
        expires = now + timedelta(seconds=before.duration_s)
        with self.uow.begin() as work:
            # A rule the cloud just created cannot have a handle yet; a shared one may.
            handle = (None if opened.created
                      else repo.live_handle(work.db, opened.scope, opened.ref))
            if handle is None:
                handle = repo.add_handle(
                    work.db, cloud=before.cloud, scope=opened.scope, ref=opened.ref,
                    port=before.port, protocol=before.protocol, source=before.source,
                    owned=opened.owned, created_at=now,
                    entry=opened.entry.to_text() if opened.entry else None)
            row = self.uow.move(
                work, before.id, Status.OPENING, Status.ACTIVE, ENGINE_ACTOR, EventKind.OPENED,
                values=dict(opened_at=now, expires_at=expires, next_attempt_at=None,
                            rule_handle_id=handle.id, last_error=None),
                scope=opened.scope, rule=opened.ref, created=opened.created,
                owned=opened.owned, priority=slot, expires_at=expires.isoformat(),
                entry=str(opened.entry) if opened.entry else None)
            view = repo.to_view(row, handle) if row is not None else None
            if view is not None:
                # The event carries the rule and where to connect: the card, the DM and
                # the audit line say them.
                work.events[-1] = replace(work.events[-1], grant=view)
        return view if view is not None else self.uow.view(before.id)

    def _fail(self, grant_id: int, error: str) -> GrantView:
        with self.uow.begin() as work:
            row = self.uow.move(work, grant_id, Status.OPENING, Status.FAILED, ENGINE_ACTOR,
                                EventKind.OPEN_FAILED, alert=True,
                                values=dict(last_error=error, next_attempt_at=None),
                                error=error)
            repo.release_slots(work.db, [grant_id])
        return repo.to_view(row) if row else self.uow.view(grant_id)
