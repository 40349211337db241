"""Closing: ACTIVE -> CLOSING -> CLOSED, or CLOSE_FAILED after repeated failures.

The claim commits first (CLOSING, with a lease); the rules are then removed batched per
firewall, one revoke and one read-back for many rules, and the outcomes commit in one
transaction. A rule that another live grant still holds is kept; a rule still present
after its removal is a failed attempt, retried with backoff.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

from jitcore.domain import CloseReason, EventKind, Status, format_duration
from jitcore.engine import EngineSettings, SweepReport
from jitcore.errors import ProviderError
from jitcore.policy import Policy
from jitcore.ports import Provider
from jitcore.store import Store
from jitcore.store import repository as repo
from jitcore.store.deadlines import in_callers_context
from jitcore.store.models import AnyGrant, GrantRecord, HandleRecord
from jitcore.unit_of_work import ENGINE_ACTOR, UnitOfWork, Work

log = logging.getLogger("jitcore.service")

CLOSABLE = (Status.CLOSING, Status.CLOSE_FAILED)
# A rule's key for its lock: (target, port, protocol, source).
RuleKey = tuple[str, int, str, str]
_Pair = tuple[GrantRecord, HandleRecord | None]


class RuleLocks:
    """Serialise opens, closes and orphan removals of the same port and source, so that a
    shared rule is not removed while another grant binds to it: a thread lock per key in
    this process, then the database's lock for replicas on one PostgreSQL."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._locks: dict[RuleKey, threading.Lock] = {}
        self._guard = threading.Lock()

    def of_grants(self, rows: Iterable[AnyGrant]) -> AbstractContextManager[None]:
        return self.held([(r.target, r.port, r.protocol, r.source) for r in rows])

    @contextmanager
    def held(self, wanted: Iterable[RuleKey]) -> Iterator[None]:
        """The locks of these keys, taken in sorted order (no deadlock). The thread locks
        come first, so that one thread per process waits on the database."""
        keys = sorted(set(wanted))
        with self._guard:
            locks = [self._locks.setdefault(key, threading.Lock()) for key in keys]
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            stack.enter_context(self._store.exclusive(
                "rule:" + "/".join(map(str, key)) for key in keys))
            yield


class UseCase:
    """What the steps that touch firewalls (opening, closing, reconcile) work with."""

    def __init__(self, uow: UnitOfWork, policy: Policy, providers: Mapping[str, Provider],
                 settings: EngineSettings, locks: RuleLocks) -> None:
        self.uow = uow
        self.policy = policy
        self.providers = providers
        self.settings = settings
        self.locks = locks


class Closer(UseCase):
    """Claims closes and carries them out."""

    def claim(self, grant_ids: list[int] | None, reason: CloseReason, actor: str,
              note: str = "") -> list[int]:
        """ACTIVE -> CLOSING for those still ACTIVE, each with its audit event. None: the
        grants due for expiry, claimed in the same transaction (a batch)."""
        now = self.uow.clock.now()
        with self.uow.begin() as work:
            if grant_ids is None:
                grant_ids = list(repo.due_for_expiry(work.db, now, self.settings.batch))
            rows = repo.transition_many(
                work.db, grant_ids, Status.ACTIVE, Status.CLOSING,
                close_reason=reason.value, closed_by=actor, attempts=0,
                next_attempt_at=now + self.settings.lease)
            for row in rows:
                self.uow.record(work, row, actor, EventKind.CLOSING, reason=reason.value,
                                note=note.strip())
        return [row.id for row in rows]

    def close(self, grant_ids: list[int], report: SweepReport) -> None:
        """Remove the rules of these closing grants, batched per firewall, and commit."""
        with self.uow.store.read() as session:
            pairs = repo.with_handles(session, grant_ids)
        batches: dict[tuple[str, str], list[_Pair]] = defaultdict(list)
        for row, handle in pairs:
            if Status(row.status) in CLOSABLE:
                batches[(row.target, handle.scope if handle else "")].append((row, handle))
        per_call = self.settings.rules_per_call
        chunks = [items[i:i + per_call] for items in batches.values()
                  for i in range(0, len(items), per_call)]
        if len(chunks) <= 1:
            results = [self._close_chunk(chunk) for chunk in chunks]
        else:
            workers = min(self.settings.workers, len(chunks))
            with ThreadPoolExecutor(workers, thread_name_prefix="jit-close") as pool:
                results = list(pool.map(in_callers_context(self._close_chunk), chunks))
        for closed, failed in results:
            report.closed.extend(closed)
            report.failed.extend(failed)

    def _close_chunk(self, chunk: list[_Pair]) -> tuple[list[int], list[int]]:
        """One firewall's worth of closes: a cloud call or two, then one transaction."""
        errors: dict[int, str] = {}
        with self.locks.of_grants([row for row, _ in chunk]):
            outcomes, removable = self._sort_out(chunk)
            if removable:
                outcomes.update(self._remove_rules(removable, errors))
        self._record_closes(chunk, outcomes, errors)
        return sorted(outcomes), sorted(errors)

    def _sort_out(self, chunk: list[_Pair]
                  ) -> tuple[dict[int, str], list[tuple[GrantRecord, HandleRecord]]]:
        """The grants whose close needs no cloud call (with why), and those whose rule
        must be removed."""
        outcomes: dict[int, str] = {}
        removable: list[tuple[GrantRecord, HandleRecord]] = []
        with self.uow.store.read() as session:
            holders = repo.holders(session, [h.id for _, h in chunk if h is not None])
        for row, handle in chunk:
            if handle is None:
                outcomes[row.id] = "no rule recorded"
            elif not handle.owned:
                outcomes[row.id] = "left in place: a standing rule jit did not create"
            elif holders.get(handle.id):
                outcomes[row.id] = "kept: shared with " + ", ".join(
                    f"#{g}" for g in holders[handle.id])
            else:
                removable.append((row, handle))
        return outcomes, removable

    def _remove_rules(self, removable: list[tuple[GrantRecord, HandleRecord]],
                      errors: dict[int, str]) -> dict[int, str]:
        row, handle = removable[0]
        target = self.policy.targets.get(row.target)
        provider = self.providers.get(row.cloud)
        if target is None or provider is None:
            error = f"target {row.target} is no longer in the policy; cannot reach its firewall"
            errors.update({r.id: error for r, _ in removable})
            return {}
        refs = sorted({h.ref for _, h in removable})
        try:
            removed = provider.close_rules(target, handle.scope, refs)
            still = provider.present_rules(target, handle.scope, refs)
        except ProviderError as exc:
            errors.update({r.id: str(exc) for r, _ in removable})
            return {}
        outcomes: dict[int, str] = {}
        for row, handle in removable:
            if handle.ref in still:
                errors[row.id] = f"rule {handle.ref} is still in {handle.scope} after removal"
            else:
                outcomes[row.id] = "removed" if removed.get(handle.ref) else "already gone"
        return outcomes

    def _record_closes(self, chunk: list[_Pair], outcomes: dict[int, str],
                       errors: dict[int, str]) -> None:
        now = self.uow.clock.now()
        handles = {row.id: handle for row, handle in chunk}
        with self.uow.begin() as work:
            for row in repo.transition_many(work.db, list(outcomes), CLOSABLE,
                                            Status.CLOSED, closed_at=now, next_attempt_at=None,
                                            last_error=None):
                self.uow.record(work, row, row.closed_by or ENGINE_ACTOR, EventKind.CLOSED,
                                reason=row.close_reason, outcome=outcomes[row.id])
            gone = [h.id for gid, h in handles.items()
                    if h is not None and outcomes.get(gid) in ("removed", "already gone")]
            repo.mark_removed(work.db, gone, now)
            repo.release_slots(work.db, list(outcomes))
            for gid, error in errors.items():
                self._failed_attempt(work, gid, error)

    def _failed_attempt(self, work: Work, grant_id: int, error: str) -> None:
        """A close that did not happen: retried with backoff, CLOSE_FAILED (and alerted)
        once `close_attempts` are spent, then retried at the slow pace."""
        s = self.settings
        row = self.uow.row(work.db, grant_id)
        attempts = row.attempts + 1
        exhausted = attempts >= s.close_attempts
        if exhausted:
            delay = s.slow_retry * random.uniform(0.8, 1.2)
        else:
            delay = min(s.retry_cap, s.retry_base * 2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
        values: dict[str, Any] = dict(attempts=attempts, last_error=error,
                                      next_attempt_at=self.uow.clock.now() + delay)
        details: dict[str, Any] = dict(attempts=attempts, error=error,
                                       next_attempt_in=format_duration(delay))
        log.warning("close of #%s failed (attempt %s): %s", grant_id, attempts, error)
        if exhausted and row.state is Status.CLOSING:
            self.uow.move(work, grant_id, Status.CLOSING, Status.CLOSE_FAILED, ENGINE_ACTOR,
                          EventKind.CLOSE_FAILED, alert=True, values=values, **details)
        else:
            self.uow.move(work, grant_id, row.state, row.state, ENGINE_ACTOR,
                          EventKind.CLOSE_RETRY, values=values, **details)
