"""The use cases. The one place that orchestrates store, providers, notifier and audit.

Every state change and its audit event commit in one transaction; a cloud call runs
only after its intent (OPENING, CLOSING) has committed, and its outcome commits after
it returns (DESIGN.md §2). Closing is batched per firewall: one revoke and one read-back
for many rules, and one transaction for their outcomes.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from jitcore import audit, outbox
from jitcore.domain import CloseReason, EventKind, GrantEvent, GrantView, Status, format_duration
from jitcore.errors import (
    InvalidTransition,
    NotAllowed,
    NotFound,
    ProviderError,
    RuleLimitExceeded,
    SlotTaken,
    StoreError,
)
from jitcore.metrics import GrantMetrics
from jitcore.policy import (
    AzureLocation,
    Decision,
    Policy,
    Reason,
    Target,
    check_approver,
    check_auto_approve,
    check_request,
    names,
)
from jitcore.ports import Clock, Directory, NoDirectory, Notifier, Provider, RuleSpec
from jitcore.reconcile import Candidate, Orphan, find_orphans, recheck
from jitcore.store import Store
from jitcore.store import repository as repo
from jitcore.store.models import Grant, RuleHandle, grants_table, outbox_table

log = logging.getLogger(__name__)
_INSERT_GRANT = insert(grants_table).returning(grants_table.c.id)
# PostgreSQL: a new grant (with an id taken beforehand), the Slack posts it owes and its
# audit links, one statement.
_REQUEST_FIELDS = (
    "id", "status", "requester", "target", "cloud", "service", "port", "protocol", "source",
    "duration_s", "reason", "created_at", "lapses_at", "attempts", "decided_by", "decided_at",
    "next_attempt_at",
)
_RECORD_REQUEST = audit.appending(
    insert(grants_table).values({name: bindparam(name) for name in _REQUEST_FIELDS})
    .returning(grants_table.c.id),
    outbox.RECORDING)

POLICY_ACTOR = "policy"
ENGINE_ACTOR = "jit"
_CLOSABLE = (Status.CLOSING, Status.CLOSE_FAILED)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How hard the engine tries, and how it spreads its work."""

    close_attempts: int = 5  # failed closes before the grant is CLOSE_FAILED and alerted
    retry_base: timedelta = timedelta(seconds=2)
    retry_cap: timedelta = timedelta(minutes=2)
    slow_retry: timedelta = timedelta(minutes=5)  # pace of retries after CLOSE_FAILED
    lease: timedelta = timedelta(seconds=60)  # how long a claimed cloud step is left alone
    batch: int = 100  # grants claimed per transaction by the sweep (spreads over replicas)
    rules_per_call: int = 100  # rules removed per cloud call
    workers: int = 8  # firewalls worked on at once
    warn_before: timedelta | None = timedelta(minutes=5)  # expiry warning; None: no warning


@dataclass(slots=True)
class SweepReport:
    closed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    lapsed: list[int] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return bool(self.closed or self.failed or self.opened or self.lapsed)


@dataclass(frozen=True, slots=True)
class RequestResult:
    grant: GrantView
    auto_approved: bool


@dataclass(frozen=True, slots=True)
class Extension:
    """The outcome of asking for more time: the grant as it stands, and, when an approver
    must decide, the new request (for the same port and source: once approved it shares
    the open rule and keeps it open past the grant's own end)."""

    grant: GrantView
    request: RequestResult | None = None


@dataclass(slots=True)
class _Queued:
    """A request waiting to be written with others (JitService._write_together)."""

    write: Callable[[_Work], list[GrantEvent]]
    events: list[GrantEvent] | None = None
    error: Exception | None = None
    done: bool = False


@dataclass(slots=True)
class _Work:
    """One transaction: its session, the audit links it adds, the events it will publish."""

    session: Session
    chain: audit.ChainWriter
    events: list[GrantEvent]


class JitService:
    def __init__(
        self,
        store: Store,
        policy: Policy,
        providers: Mapping[str, Provider],
        notifier: Notifier,
        clock: Clock,
        directory: Directory | None = None,
        settings: EngineSettings | None = None,
        metrics: GrantMetrics | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.providers = providers
        self.notifier = notifier
        self.clock = clock
        self.directory = directory or NoDirectory()
        self.settings = settings or EngineSettings()
        self.metrics = metrics
        # What events owe Slack, written with them; None when the policy has no slack: section.
        self.outbox = outbox.Outbox(policy) if policy.slack is not None else None
        self._stopping = threading.Event()
        self._rule_locks: dict[tuple[str, int, str, str], threading.Lock] = {}
        self._rule_locks_guard = threading.Lock()
        self._band_locks: dict[str, threading.Lock] = {}
        self._grant_ids = repo.GrantIds()
        self._queued: list[_Queued] = []  # SQLite requests waiting for a writer
        self._queue_guard = threading.Lock()
        self._combiner = threading.Lock()
        # Azure priorities found held by rules jit has no reservation for, per NSG (a hint).
        self._foreign_priorities: dict[str, set[int]] = defaultdict(set)

    # ---- requests and decisions -------------------------------------------------------

    def request(self, requester: str, target: str, port: str, duration: timedelta,
                source: str, reason: str = "") -> RequestResult:
        """Record a request (PENDING), or an approved one when policy auto-approves it."""
        groups = self._groups_of(requester)
        check = check_request(self.policy, requester, groups, target, port, duration, source,
                              reason)
        if check.decision and check.target and check.target.cloud not in self.providers:
            check = replace(check, decision=Decision(
                False, Reason.UNKNOWN_TARGET, f"{check.target.name} is on "
                f"{check.target.cloud}, which this jit has no provider for"))
        if not check.decision:
            self._count_request("refused")
            raise NotAllowed(check.decision)
        assert check.target and check.port and check.source and check.duration
        auto = check_auto_approve(check.target, check.port, requester, check.duration, groups)
        now = self.clock.now()
        values: dict[str, Any] = dict(
            status=Status.PENDING.value, requester=requester, target=check.target.name,
            cloud=check.target.cloud, service=check.port.name, port=check.port.port,
            protocol=check.port.protocol.value, source=str(check.source),
            duration_s=int(check.duration.total_seconds()), reason=reason.strip(),
            created_at=now, lapses_at=now + check.target.approval_timeout, attempts=0,
            decided_by=None, decided_at=None, next_attempt_at=None,
        )
        if auto:  # recorded approved at once: the sweep opens it if we die before we do
            values.update(status=Status.APPROVED.value, decided_by=POLICY_ACTOR, decided_at=now,
                          next_attempt_at=now + self.settings.lease)
        try:
            events = self._insert_request(values, check.duration)
        except DBAPIError as exc:
            raise StoreError(f"the database did not take the request: {exc.orig}") from exc
        self._count_request("auto_approved" if auto else "approval_needed")
        return RequestResult(events[-1].grant, bool(auto))

    def _insert_request(self, values: dict[str, Any], duration: timedelta) -> list[GrantEvent]:
        """The hot path of every /jit command: the grant row and its audit links, written
        together without the ORM, and the views made from what was written.

        PostgreSQL: one statement in autocommit (one round trip, the chain's lock held only
        inside the server), with an id taken beforehand. SQLite: INSERT ... RETURNING and
        the links in one transaction.
        """
        if self.store.dialect != "postgresql":
            def write(work: _Work) -> list[GrantEvent]:
                grant_id = work.session.execute(_INSERT_GRANT, values).scalar_one()
                events = self._requested(work.chain, grant_id, values, duration)
                work.events.extend(events)
                return events
            return self._write_together(write)
        with self.store.autocommit() as conn:
            grant_id = self._grant_ids.take(conn)
            chain = audit.ChainWriter(conn)
            events = self._requested(chain, grant_id, values, duration)
            posts = self.outbox.rows_json(events, values["created_at"]) if self.outbox else "[]"
            try:
                chain.flush(_RECORD_REQUEST, {**values, "id": grant_id, "posts": posts})
            except audit.AuditChainError as exc:  # committed all the same: a statement's own
                self._tell_alert(f"audit chain: {exc}; request #{grant_id} is recorded with "
                                 "that hash, which `jit audit verify` will report")
        self._publish(events)
        return events

    def _write_together(self, write: Callable[[_Work], list[GrantEvent]]) -> list[GrantEvent]:
        """SQLite: run `write` in a write transaction, with whatever other requests are
        waiting for one (group commit).

        SQLite takes one writer at a time, and each of its calls lets other threads have
        the GIL, which the writer then waits to get back: under a burst the write lock is
        held mostly by a writer waiting for the GIL, and requests queue behind it. So a
        request that arrives while another is being written is written by the next
        writer, together with all the others queued by then: one BEGIN IMMEDIATE, one
        head read and one COMMIT for all of them; each grant still commits with its links.
        """
        mine = _Queued(write)
        with self._queue_guard:
            self._queued.append(mine)
        with self._combiner:
            if not mine.done:
                with self._queue_guard:
                    batch, self._queued = self._queued, []
                self._write_batch(batch)
        if mine.error is not None:
            raise mine.error
        assert mine.events is not None
        return mine.events

    def _write_batch(self, batch: list[_Queued]) -> None:
        try:
            with self._work() as work:
                for queued in batch:
                    queued.events = queued.write(work)
        except OperationalError as exc:  # the database cannot be written: not for anyone
            for queued in batch:
                queued.error = exc
        except Exception as exc:  # noqa: BLE001 (raised again in its own caller's thread)
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one at a time, so that a write that fails fails alone
                for queued in batch:
                    queued.events = None
                    self._write_batch([queued])
        finally:
            for queued in batch:
                queued.done = True

    def _requested(self, chain: audit.ChainWriter, grant_id: int, values: dict[str, Any],
                   duration: timedelta) -> list[GrantEvent]:
        """The `requested` link and event of a new grant, and `auto_approved` if it is."""
        pending = GrantView(
            id=grant_id, status=Status.PENDING, requester=values["requester"],
            target=values["target"], cloud=values["cloud"], service=values["service"],
            port=values["port"], protocol=values["protocol"], source=values["source"],
            duration=timedelta(seconds=values["duration_s"]), reason=values["reason"],
            created_at=values["created_at"])
        events = [self._link(chain, pending, pending.requester, EventKind.REQUESTED,
                             duration=format_duration(duration), reason=pending.reason)]
        if values["status"] == Status.APPROVED.value:
            approved = replace(pending, status=Status.APPROVED, decided_by=POLICY_ACTOR,
                               decided_at=values["decided_at"])
            events.append(self._link(chain, approved, POLICY_ACTOR, EventKind.AUTO_APPROVED))
        return events

    def _count_request(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count_request(outcome)

    def approve(self, grant_id: int, approver: str) -> GrantView:
        return self._decide(grant_id, approver, Status.APPROVED, "")

    def deny(self, grant_id: int, approver: str, reason: str = "") -> GrantView:
        return self._decide(grant_id, approver, Status.DENIED, reason)

    def _decide(self, grant_id: int, approver: str, to: Status, note: str) -> GrantView:
        grant = self.get(grant_id)
        decision = check_approver(self._target(grant.target), grant.requester, approver,
                                  self._groups_of(approver))
        if not decision:
            raise NotAllowed(decision)
        now = self.clock.now()
        values: dict[str, Any] = dict(decided_by=approver, decided_at=now,
                                      decision_note=note.strip() or None)
        if to is Status.APPROVED:
            values["next_attempt_at"] = now + self.settings.lease  # the sweep opens it if we die
        kind, action = ((EventKind.APPROVED, "approve") if to is Status.APPROVED
                        else (EventKind.DENIED, "deny"))
        return self._change(grant_id, Status.PENDING, to, approver, kind, values, action,
                            reason=note.strip())

    def cancel(self, grant_id: int, actor: str, *, admin: bool = False) -> GrantView:
        grant = self.get(grant_id)
        if not admin and actor != grant.requester:
            raise NotAllowed(Decision(False, Reason.NOT_A_REQUESTER,
                                      "only the requester can cancel a request"))
        return self._change(grant_id, Status.PENDING, Status.CANCELLED, actor,
                            EventKind.CANCELLED,
                            dict(decided_by=actor, decided_at=self.clock.now()), "cancel")

    def extend(self, grant_id: int, actor: str, duration: timedelta) -> Extension:
        """More time for an active grant, until now + duration.

        An approver, or the requester within their auto-approval, extends at once. The
        requester otherwise gets a new request for the same port and source, which goes
        through approval like any other.
        """
        grant = self.get(grant_id)
        target = self._target(grant.target)
        port = target.ports.get(grant.service)
        if port is None:
            raise NotAllowed(Decision(False, Reason.UNKNOWN_PORT,
                                      f"{target.name} no longer offers {grant.service}"))
        if grant.status is not Status.ACTIVE:
            raise InvalidTransition(grant_id, grant.status, "extend")
        groups = self._groups_of(actor)
        approver = check_approver(target, grant.requester, actor, groups).allowed
        auto = actor == grant.requester and check_auto_approve(
            target, port, actor, duration, groups).allowed
        if not approver and not auto:
            if actor != grant.requester:
                raise NotAllowed(Decision(False, Reason.NOT_AN_APPROVER,
                                          "only the requester or an approver can extend "
                                          "a grant"))
            asked = self.request(actor, grant.target, grant.service, duration, grant.source,
                                 f"extension of #{grant_id}: {grant.reason}".strip(": "))
            return Extension(grant, asked)
        limit = target.port_max_duration(port)
        if duration > limit:
            raise NotAllowed(Decision(False, Reason.DURATION_TOO_LONG,
                                      f"{format_duration(duration)} is longer than the "
                                      f"{format_duration(limit)} allowed for {port.name} "
                                      f"on {target.name}"))
        new_end = self.clock.now() + duration
        if grant.expires_at and new_end <= grant.expires_at:
            raise NotAllowed(Decision(False, Reason.DURATION_INVALID,
                                      f"#{grant_id} is already open until "
                                      f"{grant.expires_at:%H:%M} UTC"))
        old_end = grant.expires_at.isoformat() if grant.expires_at else None
        return Extension(self._change(
            grant_id, Status.ACTIVE, Status.ACTIVE, actor, EventKind.EXTENDED,
            dict(expires_at=new_end, warned_at=None), "extend", old_expires_at=old_end,
            new_expires_at=new_end.isoformat()))

    def revoke(self, grant_id: int, actor: str, reason: str = "", *,
               admin: bool = False) -> GrantView:
        """Close an active grant now, on the requester's, an approver's or an admin's word."""
        grant = self.get(grant_id)
        if not admin and actor != grant.requester and not names(
                actor, self._target(grant.target).approvers, self._groups_of(actor)):
            raise NotAllowed(Decision(False, Reason.NOT_AN_APPROVER,
                                      "only the requester or an approver can revoke a grant"))
        if not self._claim_closes([grant_id], CloseReason.REVOKED, actor, reason):
            raise InvalidTransition(grant_id, self.get(grant_id).status, "revoke")
        self._close([grant_id], SweepReport())
        return self.get(grant_id)

    # ---- opening ----------------------------------------------------------------------

    def open(self, grant_id: int) -> GrantView:
        """APPROVED -> OPENING -> ACTIVE (or FAILED). Safe to call again after a crash."""
        now = self.clock.now()
        lease = dict(next_attempt_at=now + self.settings.lease)
        with self._work() as work:
            row = self._move(work, grant_id, Status.APPROVED, Status.OPENING, ENGINE_ACTOR,
                             EventKind.OPENING, values=lease)
            # A retry takes over an OPENING grant only once the previous worker's lease ran out.
            row = row or self._move(work, grant_id, Status.OPENING, Status.OPENING,
                                    ENGINE_ACTOR, EventKind.OPENING, values=lease,
                                    lease_expired_before=now, retry=True)
            if row is None:
                raise InvalidTransition(grant_id, self._row(work.session, grant_id).state,
                                        "open")
        target = self.policy.targets.get(row.target)
        port = target.ports.get(row.service) if target else None
        provider = self.providers.get(row.cloud)
        if target is None or port is None or provider is None:
            return self._fail_open(grant_id, f"{row.service} on {row.target} is no longer in "
                                             "the policy or has no provider")
        spec = RuleSpec(grant_id=grant_id, target=target, port=port, source=row.source,
                        description=f"jit grant #{row.id} for {row.requester}"[:255])
        try:
            if isinstance(target.location, AzureLocation):
                return self._open_in_band(row, spec, target.location, provider)
            with self._rule_locks_for([row]):
                opened = provider.open_rule(spec)
                # Recorded under the lock: a close of a shared rule must see this holder.
                return self._opened(row, opened.scope, opened.ref, opened.created, opened.owned)
        except ProviderError as exc:
            return self._fail_open(grant_id, str(exc))

    def _open_in_band(self, row: Grant, spec: RuleSpec, location: AzureLocation,
                      provider: Provider) -> GrantView:
        """Azure: a priority reserved in the target's band, then the rule; on a conflict
        with a rule jit did not reserve for, the next free priority."""
        low, high = location.priority_band
        conflicts: set[int] = set()
        for _ in range(high - low + 2):
            priority = self._reserve_priority(row.id, location, conflicts)
            try:
                opened = provider.open_rule(replace(spec, slot=priority))
            except SlotTaken:
                conflicts.add(priority)
                self._learn_priorities(provider, spec.target, location, priority)
                continue
            return self._opened(row, opened.scope, opened.ref, opened.created, opened.owned,
                                priority=priority)
        raise RuleLimitExceeded(self._band_full(location))  # pragma: no cover (loop bound)

    def _reserve_priority(self, grant_id: int, location: AzureLocation,
                          refused: set[int]) -> int:
        """The lowest free priority of the band, reserved for this grant (kept on a retry).

        Chosen under a per-NSG lock in this process; the unique (NSG, priority) constraint
        keeps replicas apart: a loser of that race takes the next one.
        """
        scope = location.nsg_id
        low, high = location.priority_band
        with self._band_lock(scope):
            for _ in range(high - low + 2):
                try:
                    with self.store.transaction() as session:
                        held = repo.priority_of(session, grant_id, scope)
                        if held is not None and held not in refused:
                            return held
                        repo.release_priorities(session, [grant_id])
                        taken = (repo.reserved_priorities(session, scope) | refused
                                 | self._foreign_priorities[scope])
                        free = next((p for p in range(low, high + 1) if p not in taken), None)
                        if free is None:
                            raise RuleLimitExceeded(self._band_full(location))
                        repo.reserve_priority(session, scope, free, grant_id, self.clock.now())
                        return free
                except IntegrityError:
                    continue  # another replica reserved it first: choose again
        raise RuleLimitExceeded(self._band_full(location))

    def _learn_priorities(self, provider: Provider, target: Target, location: AzureLocation,
                          refused: int) -> None:
        """After a conflict, read which priorities the NSG really holds (one list call)."""
        used = {refused}
        with suppress(ProviderError):  # the refused priority alone is still worth keeping
            used |= provider.used_slots(target)
        with self.store.read() as session:
            reserved = repo.reserved_priorities(session, location.nsg_id)
        # This grant's own reservation is the refused priority: held by someone else.
        self._foreign_priorities[location.nsg_id] = (used - reserved) | {refused}

    def _band_lock(self, scope: str) -> threading.Lock:
        with self._rule_locks_guard:
            return self._band_locks.setdefault(scope, threading.Lock())

    @staticmethod
    def _band_full(location: AzureLocation) -> str:
        low, high = location.priority_band
        return (f"no free priority in band {low}-{high} of network security group "
                f"{location.network_security_group} (resource group {location.resource_group})"
                ": every one is held by an active grant or another rule; widen "
                "priority_band in the policy or wait for grants to end")

    def _opened(self, before: Grant, scope: str, ref: str, created: bool,
                owned: bool, priority: int | None = None) -> GrantView:
        now = self.clock.now()
        expires = now + timedelta(seconds=before.duration_s)
        with self._work() as work:
            # A rule the cloud just created cannot have a handle yet; a shared one may.
            handle = None if created else repo.live_handle(work.session, scope, ref)
            if handle is None:
                handle = RuleHandle(cloud=before.cloud, scope=scope, ref=ref, port=before.port,
                                    protocol=before.protocol, source=before.source,
                                    owned=owned, created_at=now)
                work.session.add(handle)
                work.session.flush()
            row = self._move(work, before.id, Status.OPENING, Status.ACTIVE, ENGINE_ACTOR,
                             EventKind.OPENED,
                             values=dict(opened_at=now, expires_at=expires, next_attempt_at=None,
                                         rule_handle_id=handle.id, last_error=None),
                             scope=scope, rule=ref, created=created, owned=owned,
                             priority=priority, expires_at=expires.isoformat())
        return repo.to_view(row, handle) if row else self.get(before.id)

    def _fail_open(self, grant_id: int, error: str) -> GrantView:
        with self._work() as work:
            row = self._move(work, grant_id, Status.OPENING, Status.FAILED, ENGINE_ACTOR,
                             EventKind.OPEN_FAILED, alert=True,
                             values=dict(last_error=error, next_attempt_at=None), error=error)
            repo.release_priorities(work.session, [grant_id])
        return repo.to_view(row) if row else self.get(grant_id)

    # ---- closing ----------------------------------------------------------------------

    def _claim_closes(self, grant_ids: list[int] | None, reason: CloseReason, actor: str,
                      note: str = "") -> list[int]:
        """ACTIVE -> CLOSING for those still ACTIVE, each with its audit event. None: the
        grants due for expiry, claimed in the same transaction (a batch)."""
        now = self.clock.now()
        with self._work() as work:
            if grant_ids is None:
                grant_ids = list(repo.due_for_expiry(work.session, now, self.settings.batch))
            rows = repo.transition_many(
                work.session, grant_ids, Status.ACTIVE, Status.CLOSING,
                close_reason=reason.value, closed_by=actor, attempts=0,
                next_attempt_at=now + self.settings.lease)
            for row in rows:
                self._record(work, row, actor, EventKind.CLOSING, reason=reason.value,
                             note=note.strip())
        return [row.id for row in rows]

    def _close(self, grant_ids: list[int], report: SweepReport) -> None:
        """Remove the rules of these closing grants, batched per firewall, and commit."""
        with self.store.read() as session:
            pairs = repo.with_handles(session, grant_ids)
        batches: dict[tuple[str, str], list[tuple[Grant, RuleHandle | None]]] = defaultdict(list)
        for row, handle in pairs:
            if Status(row.status) in _CLOSABLE:
                batches[(row.target, handle.scope if handle else "")].append((row, handle))
        chunks = [items[i:i + self.settings.rules_per_call] for items in batches.values()
                  for i in range(0, len(items), self.settings.rules_per_call)]
        if len(chunks) <= 1:
            results = [self._close_chunk(chunk) for chunk in chunks]
        else:
            workers = min(self.settings.workers, len(chunks))
            with ThreadPoolExecutor(workers, thread_name_prefix="jit-close") as pool:
                results = list(pool.map(self._close_chunk, chunks))
        for closed, failed in results:
            report.closed.extend(closed)
            report.failed.extend(failed)

    def _close_chunk(self, chunk: list[tuple[Grant, RuleHandle | None]]
                     ) -> tuple[list[int], list[int]]:
        """One firewall's worth of closes: a cloud call or two, then one transaction."""
        outcomes: dict[int, str] = {}
        errors: dict[int, str] = {}
        with self._rule_locks_for([row for row, _ in chunk]):
            removable: list[tuple[Grant, RuleHandle]] = []
            with self.store.read() as session:
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
            if removable:
                outcomes.update(self._remove_rules(removable, errors))
        self._record_closes(chunk, outcomes, errors)
        return sorted(outcomes), sorted(errors)

    def _remove_rules(self, removable: list[tuple[Grant, RuleHandle]],
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

    def _record_closes(self, chunk: list[tuple[Grant, RuleHandle | None]],
                       outcomes: dict[int, str], errors: dict[int, str]) -> None:
        now = self.clock.now()
        handles = {row.id: handle for row, handle in chunk}
        with self._work() as work:
            for row in repo.transition_many(work.session, list(outcomes), _CLOSABLE,
                                            Status.CLOSED, closed_at=now, next_attempt_at=None,
                                            last_error=None):
                self._record(work, row, row.closed_by or ENGINE_ACTOR, EventKind.CLOSED,
                             reason=row.close_reason, outcome=outcomes[row.id])
            gone = [h.id for gid, h in handles.items()
                    if h is not None and outcomes.get(gid) in ("removed", "already gone")]
            repo.mark_removed(work.session, gone, now)
            repo.release_priorities(work.session, list(outcomes))
            for gid, error in errors.items():
                self._close_failed_attempt(work, gid, error)

    def _close_failed_attempt(self, work: _Work, grant_id: int, error: str) -> None:
        s = self.settings
        row = self._row(work.session, grant_id)
        attempts = row.attempts + 1
        exhausted = attempts >= s.close_attempts
        if exhausted:
            delay = s.slow_retry * random.uniform(0.8, 1.2)
        else:
            delay = min(s.retry_cap, s.retry_base * 2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
        values: dict[str, Any] = dict(attempts=attempts, last_error=error,
                                      next_attempt_at=self.clock.now() + delay)
        details: dict[str, Any] = dict(attempts=attempts, error=error,
                                       next_attempt_in=format_duration(delay))
        log.warning("close of #%s failed (attempt %s): %s", grant_id, attempts, error)
        if exhausted and row.state is Status.CLOSING:
            self._move(work, grant_id, Status.CLOSING, Status.CLOSE_FAILED, ENGINE_ACTOR,
                       EventKind.CLOSE_FAILED, alert=True, values=values, **details)
        else:
            self._move(work, grant_id, row.state, row.state, ENGINE_ACTOR,
                       EventKind.CLOSE_RETRY, values=values, **details)

    # ---- the sweep ----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """One pass of the engine: lapse, expire, retry closes, finish stalled opens."""
        report = SweepReport()
        report.lapsed = self.lapse_pending()
        self.warn_expiring()
        self._expire_due(report)
        self._retry_stalled(report)
        return report

    def expire_due(self) -> SweepReport:
        report = SweepReport()
        self._expire_due(report)
        return report

    def _expire_due(self, report: SweepReport) -> None:
        while not self._stopping.is_set():  # a batch is claimed and closed, or not begun
            claimed = self._claim_closes(None, CloseReason.EXPIRED, ENGINE_ACTOR)
            self._close(claimed, report)
            if len(claimed) < self.settings.batch:
                return

    def stop(self) -> None:
        """Ask a running sweep to finish the batch in hand and return (at shutdown):
        what is still due is left for the next process, or another replica."""
        self._stopping.set()

    def _retry_stalled(self, report: SweepReport) -> None:
        now = self.clock.now()
        with self.store.transaction() as session:
            closes = repo.take_leases(session, repo.due_for_retry(
                session, _CLOSABLE, now, self.settings.batch), now, now + self.settings.lease)
            opens = repo.due_for_retry(session, (Status.APPROVED, Status.OPENING), now,
                                       self.settings.batch)
        self._close(closes, report)
        for gid in opens:
            try:
                view = self.open(gid)
            except InvalidTransition:
                continue  # another worker took it
            (report.opened if view.status is Status.ACTIVE else report.failed).append(gid)

    def warn_expiring(self) -> list[int]:
        """Tell holders whose grant ends within `warn_before` (once per end time)."""
        if self.settings.warn_before is None:
            return []
        now = self.clock.now()
        with self._work() as work:
            due = repo.due_for_warning(work.session, now + self.settings.warn_before,
                                       self.settings.batch)
            rows = repo.transition_many(work.session, due, Status.ACTIVE, Status.ACTIVE,
                                        warned_at=now)
            for row in rows:
                left = (row.expires_at - now) if row.expires_at else timedelta(0)
                self._record(work, row, ENGINE_ACTOR, EventKind.EXPIRING,
                             left=format_duration(max(left, timedelta(seconds=1))))
        return [row.id for row in rows]

    def lapse_pending(self) -> list[int]:
        now = self.clock.now()
        with self._work() as work:
            due = repo.due_to_lapse(work.session, now, self.settings.batch)
            rows = repo.transition_many(work.session, due, Status.PENDING, Status.LAPSED,
                                        decided_at=now)
            for row in rows:
                self._record(work, row, ENGINE_ACTOR, EventKind.LAPSED)
        return [row.id for row in rows]

    # ---- reconcile ----------------------------------------------------------------------

    def reconcile(self, dry_run: bool = False) -> list[Orphan]:
        """Find rules carrying jit's marker with no live grant behind them; remove them.
        A candidate the sweep closed meanwhile, or one already gone, is no orphan: left out."""
        found = find_orphans(self.store, self.policy.targets.values(), self.providers,
                             self.clock)
        if dry_run:
            return [Orphan.of(c.target, c.rule) for c in found]
        return [orphan for candidate in found
                if (orphan := self._remove_orphan(candidate)) is not None]

    def _remove_orphan(self, candidate: Candidate) -> Orphan | None:
        target, rule = candidate.target, candidate.rule
        orphan = Orphan.of(target, rule)
        where = f"{rule.ref} ({rule.source} -> port {rule.port}) in {rule.scope} on {target.name}"
        # Under the lock opens and closes take (in this process and in other replicas): a
        # grant that bound to the rule meanwhile keeps it, a close that took it is seen.
        with self._locks_of_rules([(target.name, rule.port, rule.protocol, rule.source)]):
            check = recheck(self.store, candidate)
            if check.adopted:
                return replace(orphan, error="adopted by a grant meanwhile: kept")
            if check.skip:
                log.debug("reconcile: %s is no orphan: %s", where, check.skip)
                return None
            try:
                answer = self.providers[target.cloud].close_rules(target, rule.scope,
                                                                  [rule.ref])
            except ProviderError as exc:
                self._tell_alert(f"orphan rule {where} could not be removed: {exc}")
                return replace(orphan, error=str(exc))
        # No answer for the rule is taken as removed: an orphan is never hidden.
        if not answer.get(rule.ref, True):
            log.info("reconcile: %s was already gone: nothing removed", where)
            return None
        now = self.clock.now()
        with self._work() as work:
            handle = repo.live_handle(work.session, rule.scope, rule.ref)
            if handle is not None:
                handle.removed_at = now
            work.chain.add(at=now, actor=ENGINE_ACTOR, action=EventKind.ORPHAN_REMOVED.value,
                           grant_id=rule.grant_id, target=target.name, port=rule.port,
                           source=rule.source, details={"scope": rule.scope, "rule": rule.ref})
        self._tell_alert(f"removed orphan rule {where}: no active grant was behind it")
        return replace(orphan, removed=True)

    # ---- reading ----------------------------------------------------------------------

    def get(self, grant_id: int) -> GrantView:
        with self.store.read() as session:
            row = self._row(session, grant_id)
            handle = session.get(RuleHandle, row.rule_handle_id) if row.rule_handle_id else None
            return repo.to_view(row, handle)

    def grants(self, statuses: Iterable[Status] | None = None, limit: int = 200,
               requester: str | None = None, target: str | None = None) -> list[GrantView]:
        with self.store.read() as session:
            return repo.list_views(session, list(statuses) if statuses else None, limit,
                                   requester, target)

    def awaiting(self, approver: str, limit: int = 50) -> list[GrantView]:
        """Pending requests this person may decide."""
        groups = self._groups_of(approver)
        return [g for g in self.grants([Status.PENDING], limit=500)
                if (target := self.policy.targets.get(g.target)) is not None
                and check_approver(target, g.requester, approver, groups)][:limit]

    def requestable(self, requester: str) -> list[Target]:
        """The targets this person may ask for."""
        groups = self._groups_of(requester)
        return [t for t in self.policy.targets.values() if names(requester, t.requesters, groups)]

    def last_source(self, requester: str) -> str | None:
        with self.store.read() as session:
            return repo.last_source(session, requester)

    # ---- helpers ------------------------------------------------------------------------

    @contextmanager
    def _work(self) -> Iterator[_Work]:
        """A transaction whose audit links and the posts its events owe Slack are written
        before commit, and whose events are published after it; on an exception, none."""
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            work = _Work(session, audit.ChainWriter(session), events)
            yield work
            work.chain.flush()
            if self.outbox is not None:
                self.outbox.write(session, events, self.clock.now())
        self._publish(events)

    def _change(self, grant_id: int, from_: Status, to: Status, actor: str, kind: EventKind,
                values: dict[str, Any], action: str, **details: Any) -> GrantView:
        with self._work() as work:
            row = self._move(work, grant_id, from_, to, actor, kind, values=values, **details)
            if row is None:
                current = self._row(work.session, grant_id)
                raise InvalidTransition(grant_id, current.state, action)
        return repo.to_view(row)

    def _move(self, work: _Work, grant_id: int, from_: Status | tuple[Status, ...],
              to: Status, actor: str, kind: EventKind, *, values: dict[str, Any] | None = None,
              lease_expired_before: datetime | None = None, alert: bool = False,
              **details: Any) -> Grant | None:
        """Conditional transition plus its audit event, in the caller's transaction."""
        row = repo.transition(work.session, grant_id, from_, to,
                              lease_expired_before=lease_expired_before, **(values or {}))
        if row is not None:
            self._record(work, row, actor, kind, alert=alert, **details)
        return row

    def _record(self, work: _Work, row: Grant, actor: str, kind: EventKind,
                alert: bool = False, **details: Any) -> None:
        work.events.append(self._link(work.chain, repo.to_view(row), actor, kind, alert,
                                      **details))

    def _link(self, chain: audit.ChainWriter, view: GrantView, actor: str, kind: EventKind,
              alert: bool = False, **details: Any) -> GrantEvent:
        """Queue the audit link of an event on `view`; the event, to publish after commit."""
        now = self.clock.now()
        kept = {k: v for k, v in details.items() if v not in (None, "")}
        chain.add(at=now, actor=actor, action=kind.value, grant_id=view.id,
                  target=view.target, port=view.port, source=view.source,
                  details={"status": view.status.value, **kept})
        detail = str(kept.get("error") or kept.get("outcome") or kept.get("reason") or "")
        return GrantEvent(kind, view, actor, now, detail, alert)

    def _publish(self, events: list[GrantEvent]) -> None:
        for event in events:
            log.log(logging.WARNING if event.alert else logging.INFO,
                    "#%s %s (%s) by %s%s", event.grant.id, event.kind.value,
                    event.grant.status.value, event.actor,
                    f": {event.detail}" if event.detail else "",
                    extra={"grant_id": event.grant.id, "event": event.kind.value,
                           "status": event.grant.status.value, "actor": event.actor,
                           "target": event.grant.target})
            try:
                if self.metrics is not None:
                    self.metrics.observe(event)
                self.notifier.publish(event)
            except Exception:  # a notification failure must not undo a committed change
                log.exception("notifier failed for %s #%s", event.kind, event.grant.id)

    def warm_up(self) -> None:
        """Build every target's cloud client before the first request needs it."""
        for target in self.policy.targets.values():
            provider = self.providers.get(target.cloud)
            if provider is None:
                continue
            try:
                provider.warm(target)
            except ProviderError as exc:  # the first real call will say it again
                log.warning("cannot prepare the client for %s: %s", target.name, exc)

    def alert(self, message: str) -> None:
        """Raise an alert with the notifier (the audit channel); never fails the caller."""
        self._tell_alert(message)

    def _tell_alert(self, message: str) -> None:
        """Owed to the audit channel as a row of its own (never inside another transaction)."""
        if self.outbox is not None:
            try:
                with self.store.transaction() as session:
                    session.execute(insert(outbox_table),
                                    [self.outbox.alert_row(message, self.clock.now())])
            except DBAPIError as exc:  # the log is all that is left to tell
                log.error("alert not queued for Slack (database: %s): %s", exc.orig, message)
        try:
            self.notifier.alert(message)
        except Exception:  # see _publish
            log.exception("notifier failed to alert: %s", message)

    def _row(self, session: Session, grant_id: int) -> Grant:
        row = repo.get(session, grant_id)
        if row is None:
            raise NotFound(f"no request #{grant_id}")
        return row

    def _target(self, name: str) -> Target:
        target = self.policy.targets.get(name)
        if target is None:
            raise NotFound(f"target {name!r} is no longer in the policy")
        return target

    def _groups_of(self, user: str) -> frozenset[str]:
        return frozenset(h for h in self.policy.group_handles()
                         if user in self.directory.members(h))

    def _rule_locks_for(self, rows: Iterable[Grant]) -> AbstractContextManager[None]:
        """Serialise opens and closes of the same port and source, so that a shared rule
        is not removed while another grant binds to it."""
        return self._locks_of_rules([(r.target, r.port, r.protocol, r.source) for r in rows])

    @contextmanager
    def _locks_of_rules(self, wanted: Iterable[tuple[str, int, str, str]]) -> Iterator[None]:
        """The locks of these (target, port, protocol, source) keys, taken in sorted order
        (no deadlock). The thread locks come first, so that one thread per process waits on
        the database."""
        keys = sorted(set(wanted))
        with self._rule_locks_guard:
            locks = [self._rule_locks.setdefault(key, threading.Lock()) for key in keys]
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            # Replicas on one PostgreSQL: the same, across processes.
            stack.enter_context(self.store.exclusive(
                "rule:" + "/".join(map(str, key)) for key in keys))
            yield
