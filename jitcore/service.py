"""The use cases, as the bot and the CLI call them: request, decide, open, extend, revoke,
the engine's sweep and reconcile, and the queries.

A thin facade. Each use case that changes a grant lives in a module of its own and goes
through `UnitOfWork` (one transaction: the change, its audit link, the Slack posts it
owes; published after commit):

    store/intake.py  new requests (SQLite group commit, PostgreSQL one statement)
    opening.py       APPROVED -> OPENING -> ACTIVE | FAILED; slots asked of the provider
    closing.py       ACTIVE -> CLOSING -> CLOSED | CLOSE_FAILED; rule locks; read-back
    sweep.py         one engine tick: lapse, warn, expire, retry stalled
    reconcile.py     orphans: find and remove

Who may do what is decided in `policy.py`, as values with a reason; nothing here knows
which cloud a target is on (DESIGN.md §1, §2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from jitcore import audit, outbox
from jitcore.closing import Closer, RuleLocks
from jitcore.domain import CloseReason, EventKind, GrantEvent, GrantView, Status, format_duration
from jitcore.engine import EngineSettings, SweepReport
from jitcore.errors import InvalidTransition, NotAllowed, NotFound, ProviderError, StoreError
from jitcore.metrics import GrantMetrics
from jitcore.opening import Opener
from jitcore.policy import (
    Decision,
    Policy,
    Reason,
    Target,
    check_approver,
    check_auto_approve,
    check_cancel,
    check_extend,
    check_request,
    check_revoke,
    names,
)
from jitcore.ports import Clock, Directory, NoDirectory, Notifier, Provider
from jitcore.reconcile import Orphan, Reconciler
from jitcore.store import Store
from jitcore.store import repository as repo
from jitcore.store.deadlines import patient
from jitcore.store.intake import Intake
from jitcore.sweep import Sweep
from jitcore.unit_of_work import ENGINE_ACTOR, POLICY_ACTOR, UnitOfWork, log

__all__ = ["ENGINE_ACTOR", "POLICY_ACTOR", "EngineSettings", "Extension", "JitService",
           "RequestResult", "SweepReport"]

# How long the engine's work (an open after its approval was acknowledged, a sweep) waits
# for a pooled connection in all; a request waiting on its ack keeps the pool's 1.5 s.
BACKGROUND_CHECKOUT = 30.0  # s


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
        self.uow = UnitOfWork(store, clock, notifier, self.outbox, metrics)
        self.intake = Intake(store, self.outbox, clock, self.uow.alert)
        locks = RuleLocks(store)
        self.reconciler = Reconciler(self.uow, policy, providers, self.settings, locks)
        self.opener = Opener(self.uow, policy, providers, self.settings, locks,
                             self.reconciler.remove_left_by)
        self.closer = Closer(self.uow, policy, providers, self.settings, locks)
        self.engine = Sweep(self.uow, self.settings, self.opener, self.closer)

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
            events = self.intake.write(
                values, lambda chain, grant_id: self._requested(chain, grant_id, values,
                                                                check.duration))
        except DBAPIError as exc:
            raise StoreError(f"the database did not take the request: {exc.orig}") from exc
        self.uow.publish(events)
        self._count_request("auto_approved" if auto else "approval_needed")
        return RequestResult(events[-1].grant, bool(auto))

    def _requested(self, chain: audit.ChainWriter, grant_id: int, values: dict[str, Any],
                   duration: timedelta | None) -> list[GrantEvent]:
        """The `requested` link and event of a new grant, and `auto_approved` if it is."""
        pending = GrantView(
            id=grant_id, status=Status.PENDING, requester=values["requester"],
            target=values["target"], cloud=values["cloud"], service=values["service"],
            port=values["port"], protocol=values["protocol"], source=values["source"],
            duration=timedelta(seconds=values["duration_s"]), reason=values["reason"],
            created_at=values["created_at"])
        events = [self.uow.link(chain, pending, pending.requester, EventKind.REQUESTED,
                                duration=format_duration(duration or pending.duration),
                                reason=pending.reason)]
        if values["status"] == Status.APPROVED.value:
            approved = replace(pending, status=Status.APPROVED, decided_by=POLICY_ACTOR,
                               decided_at=values["decided_at"])
            events.append(self.uow.link(chain, approved, POLICY_ACTOR, EventKind.AUTO_APPROVED))
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
        try:
            return self.uow.change(grant_id, Status.PENDING, to, approver, kind, values,
                                   action, unlapsed_at=now, reason=note.strip())
        except InvalidTransition as exc:
            if exc.current is not Status.PENDING:
                raise
        # Past its approval timeout, not yet lapsed by the sweep: a decision comes too late.
        self.engine.lapse_pending()
        raise InvalidTransition(grant_id, self.get(grant_id).status, action)

    def cancel(self, grant_id: int, actor: str, *, admin: bool = False) -> GrantView:
        grant = self.get(grant_id)
        decision = check_cancel(grant.requester, actor, admin=admin)
        if not decision:
            raise NotAllowed(decision)
        return self.uow.change(grant_id, Status.PENDING, Status.CANCELLED, actor,
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
        if grant.status is not Status.ACTIVE:
            raise InvalidTransition(grant_id, grant.status, "extend")
        check = check_extend(target, grant, actor, self._groups_of(actor), duration,
                             self.clock.now())
        if not check.decision:
            raise NotAllowed(check.decision)
        if check.ask:
            asked = self.request(actor, grant.target, grant.service, duration, grant.source,
                                 f"extension of #{grant_id}: {grant.reason}".strip(": "))
            return Extension(grant, asked)
        assert check.new_end is not None
        old_end = grant.expires_at.isoformat() if grant.expires_at else None
        return Extension(self.uow.change(
            grant_id, Status.ACTIVE, Status.ACTIVE, actor, EventKind.EXTENDED,
            dict(expires_at=check.new_end, warned_at=None), "extend", old_expires_at=old_end,
            new_expires_at=check.new_end.isoformat()))

    def revoke(self, grant_id: int, actor: str, reason: str = "", *,
               admin: bool = False) -> GrantView:
        """Close an active grant now, on the requester's, an approver's or an admin's word."""
        grant = self.get(grant_id)
        decision = check_revoke(self._target(grant.target), grant.requester, actor,
                                self._groups_of(actor), admin=admin)
        if not decision:
            raise NotAllowed(decision)
        if not self.closer.claim([grant_id], CloseReason.REVOKED, actor, reason):
            raise InvalidTransition(grant_id, self.get(grant_id).status, "revoke")
        self.closer.close([grant_id], SweepReport())
        return self.get(grant_id)

    # ---- the engine -------------------------------------------------------------------

    def open(self, grant_id: int) -> GrantView:
        """APPROVED -> OPENING -> ACTIVE (or FAILED). Safe to call again after a crash."""
        with patient(BACKGROUND_CHECKOUT):
            return self.opener.open(grant_id)

    def next_due(self) -> datetime | None:
        """When the sweep next has something to do (the engine's alarm sleeps until then)."""
        with self.store.read() as session:
            return repo.next_due(session, self.settings.warn_before, self.clock.now())

    def sweep(self) -> SweepReport:
        """One pass of the engine: lapse, warn, expire, retry closes, finish stalled opens."""
        with patient(BACKGROUND_CHECKOUT):
            return self.engine.run()

    def expire_due(self) -> SweepReport:
        report = SweepReport()
        with patient(BACKGROUND_CHECKOUT):
            self.engine.expire_due(report)
        return report

    def warn_expiring(self) -> list[int]:
        return self.engine.warn_expiring()

    def lapse_pending(self) -> list[int]:
        return self.engine.lapse_pending()

    def stop(self) -> None:
        """Ask a running sweep to finish the batches in hand and return (at shutdown)."""
        self.engine.stop()

    def reconcile(self, dry_run: bool = False) -> list[Orphan]:
        """Remove rules carrying jit's marker with no live grant behind them."""
        return self.reconciler.run(dry_run)

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
        self.uow.alert(message)

    # ---- reading ----------------------------------------------------------------------

    def get(self, grant_id: int) -> GrantView:
        return self.uow.view(grant_id)

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

    def _target(self, name: str) -> Target:
        target = self.policy.targets.get(name)
        if target is None:
            raise NotFound(f"target {name!r} is no longer in the policy")
        return target

    def _groups_of(self, user: str) -> frozenset[str]:
        return frozenset(h for h in self.policy.group_handles()
                         if user in self.directory.members(h))
