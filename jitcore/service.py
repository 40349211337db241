"""The use cases. The one place that orchestrates store, providers, notifier and audit.

Every state change and its audit event commit in one transaction; a cloud call runs
only after its intent (OPENING, CLOSING) has committed, and its outcome commits after
it returns (DESIGN.md §2).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from jitcore import audit
from jitcore.domain import (
    CloseReason,
    EventKind,
    GrantEvent,
    GrantView,
    Status,
    format_duration,
)
from jitcore.errors import (
    InvalidTransition,
    JitError,
    NotAllowed,
    NotFound,
    ProviderError,
)
from jitcore.policy import (
    Decision,
    Policy,
    Reason,
    Target,
    check_approver,
    check_auto_approve,
    check_request,
    names,
)
from jitcore.ports import (
    Clock,
    Directory,
    NoDirectory,
    Notifier,
    OwnedRule,
    Provider,
    RuleSpec,
)
from jitcore.reconcile import Orphan, find_orphans
from jitcore.store import Store
from jitcore.store import repository as repo
from jitcore.store.models import Grant, RuleHandle

log = logging.getLogger(__name__)

POLICY_ACTOR = "policy"
ENGINE_ACTOR = "jit"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How hard the engine tries, and how it spreads its work."""

    close_attempts: int = 5  # failed closes before the grant is CLOSE_FAILED and alerted
    retry_base: timedelta = timedelta(seconds=2)
    retry_cap: timedelta = timedelta(minutes=2)
    slow_retry: timedelta = timedelta(minutes=5)  # pace of retries after CLOSE_FAILED
    lease: timedelta = timedelta(seconds=60)  # how long a claimed cloud step is left alone
    batch: int = 500
    workers: int = 8


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
    ) -> None:
        self.store = store
        self.policy = policy
        self.providers = providers
        self.notifier = notifier
        self.clock = clock
        self.directory = directory or NoDirectory()
        self.settings = settings or EngineSettings()
        self._rule_locks: dict[tuple[str, int, str, str], threading.Lock] = {}
        self._rule_locks_guard = threading.Lock()

    # ---- requests and decisions -------------------------------------------------------

    def request(self, requester: str, target: str, port: str, duration: timedelta,
                source: str, reason: str = "") -> RequestResult:
        """Record a request (PENDING), or an approved one when policy auto-approves it."""
        groups = self._groups_of(requester)
        check = check_request(self.policy, requester, groups, target, port, duration, source)
        if not check.decision:
            raise NotAllowed(check.decision)
        assert check.target and check.port and check.source and check.duration
        if check.target.cloud not in self.providers:
            raise NotAllowed(Decision(False, Reason.UNKNOWN_TARGET,
                                      f"{check.target.name} is on {check.target.cloud}, "
                                      "which this jit has no provider for"))
        auto = check_auto_approve(check.target, check.port, requester, check.duration, groups)
        now = self.clock.now()
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            row = Grant(
                status=Status.PENDING.value, requester=requester, target=check.target.name,
                cloud=check.target.cloud, service=check.port.name, port=check.port.port,
                protocol=check.port.protocol.value, source=str(check.source),
                duration_s=int(check.duration.total_seconds()), reason=reason.strip(),
                created_at=now, lapses_at=now + check.target.approval_timeout, attempts=0,
            )
            session.add(row)
            session.flush()
            self._audit(session, row, requester, EventKind.REQUESTED, events,
                        duration=format_duration(check.duration), reason=row.reason)
            if auto:
                self._move(session, row, Status.PENDING, Status.APPROVED, POLICY_ACTOR,
                           EventKind.AUTO_APPROVED, events,
                           values=dict(decided_by=POLICY_ACTOR, decided_at=now,
                                       next_attempt_at=now + self.settings.lease))
        self._publish(events)
        return RequestResult(repo.to_view(row), bool(auto))

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
        kind = EventKind.APPROVED if to is Status.APPROVED else EventKind.DENIED
        values: dict[str, Any] = dict(decided_by=approver, decided_at=now,
                                      decision_note=note.strip() or None)
        if to is Status.APPROVED:
            values["next_attempt_at"] = now + self.settings.lease
        return self._change(grant_id, Status.PENDING, to, approver, kind, values,
                            "approve" if to is Status.APPROVED else "deny",
                            reason=note.strip())

    def cancel(self, grant_id: int, actor: str, *, admin: bool = False) -> GrantView:
        grant = self.get(grant_id)
        if not admin and actor != grant.requester:
            raise NotAllowed(Decision(False, Reason.NOT_A_REQUESTER,
                                      "only the requester can cancel a request"))
        return self._change(grant_id, Status.PENDING, Status.CANCELLED, actor,
                            EventKind.CANCELLED,
                            dict(decided_by=actor, decided_at=self.clock.now()), "cancel")

    def extend(self, grant_id: int, actor: str, duration: timedelta) -> GrantView:
        """Move an active grant's end to now + duration (never earlier than it was)."""
        grant = self.get(grant_id)
        target = self._target(grant.target)
        port = target.ports.get(grant.service)
        if port is None:
            raise NotAllowed(Decision(False, Reason.UNKNOWN_PORT,
                                      f"{target.name} no longer offers {grant.service}"))
        groups = self._groups_of(actor)
        may = (check_approver(target, grant.requester, actor, groups).allowed
               or (actor == grant.requester
                   and check_auto_approve(target, port, actor, duration, groups).allowed))
        if not may:
            raise NotAllowed(Decision(False, Reason.NOT_AUTO_APPROVED,
                                      "extending this grant needs an approver"))
        limit = target.port_max_duration(port)
        if duration > limit:
            raise NotAllowed(Decision(False, Reason.DURATION_TOO_LONG,
                                      f"{format_duration(duration)} is longer than the "
                                      f"{format_duration(limit)} allowed for {port.name} "
                                      f"on {target.name}"))
        now = self.clock.now()
        new_end = now + duration
        if grant.status is Status.ACTIVE and grant.expires_at and new_end <= grant.expires_at:
            raise NotAllowed(Decision(False, Reason.DURATION_INVALID,
                                      f"#{grant_id} is already open until "
                                      f"{grant.expires_at:%H:%M} UTC"))
        return self._change(grant_id, Status.ACTIVE, Status.ACTIVE, actor, EventKind.EXTENDED,
                            dict(expires_at=new_end), "extend",
                            old_expires_at=grant.expires_at.isoformat()
                            if grant.expires_at else None,
                            new_expires_at=new_end.isoformat())

    def revoke(self, grant_id: int, actor: str, reason: str = "", *,
               admin: bool = False) -> GrantView:
        """Close an active grant now, on the requester's, an approver's or an admin's word."""
        grant = self.get(grant_id)
        if not admin and actor != grant.requester and not names(
                actor, self._target(grant.target).approvers, self._groups_of(actor)):
            raise NotAllowed(Decision(False, Reason.NOT_AN_APPROVER,
                                      "only the requester or an approver can revoke a grant"))
        if grant.status is not Status.ACTIVE:
            raise InvalidTransition(grant_id, grant.status, "revoke")
        if not self._claim_close(grant_id, CloseReason.REVOKED, actor, reason):
            raise InvalidTransition(grant_id, self.get(grant_id).status, "revoke")
        self._attempt_close(grant_id)
        return self.get(grant_id)

    # ---- opening ----------------------------------------------------------------------

    def open(self, grant_id: int) -> GrantView:
        """APPROVED -> OPENING -> ACTIVE (or FAILED). Safe to call again after a crash."""
        now = self.clock.now()
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            row = self._row(session, grant_id)
            retry = row.status == Status.OPENING.value
            # A retry takes over an OPENING grant only once the previous worker's lease ran out.
            claimed = repo.transition(
                session, grant_id, Status.OPENING if retry else Status.APPROVED,
                Status.OPENING, lease_expired_before=now if retry else None,
                next_attempt_at=now + self.settings.lease,
            )
            if not claimed:
                raise InvalidTransition(grant_id, Status(row.status), "open")
            session.refresh(row)
            self._audit(session, row, ENGINE_ACTOR, EventKind.OPENING, events, retry=retry)
        self._publish(events)
        target = self.policy.targets.get(row.target)
        port = target.ports.get(row.service) if target else None
        provider = self.providers.get(row.cloud)
        if target is None or port is None or provider is None:
            return self._fail_open(grant_id, f"{row.service} on {row.target} is no longer in "
                                             "the policy or has no provider")
        spec = RuleSpec(grant_id=grant_id, target=target, port=port, source=row.source,
                        description=self._rule_description(row))
        try:
            with self._rule_lock(row):
                opened = provider.open_rule(spec)
                # Recorded under the lock: a close of a shared rule must see this holder.
                return self._opened(grant_id, opened.scope, opened.ref, opened.created,
                                    opened.owned)
        except ProviderError as exc:
            return self._fail_open(grant_id, str(exc))

    def _opened(self, grant_id: int, scope: str, ref: str, created: bool,
                owned: bool) -> GrantView:
        now = self.clock.now()
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            row = self._row(session, grant_id)
            handle = repo.live_handle(session, scope, ref)
            if handle is None:
                handle = RuleHandle(cloud=row.cloud, scope=scope, ref=ref, port=row.port,
                                    protocol=row.protocol, source=row.source, owned=owned,
                                    created_at=now)
                session.add(handle)
                session.flush()
            expires = now + timedelta(seconds=row.duration_s)
            self._move(session, row, Status.OPENING, Status.ACTIVE, ENGINE_ACTOR,
                       EventKind.OPENED, events,
                       values=dict(opened_at=now, expires_at=expires, next_attempt_at=None,
                                   rule_handle_id=handle.id, last_error=None),
                       scope=scope, rule=ref, created=created, owned=owned,
                       expires_at=expires.isoformat())
        self._publish(events)
        return repo.to_view(row, handle)

    def _fail_open(self, grant_id: int, error: str) -> GrantView:
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            row = self._row(session, grant_id)
            self._move(session, row, Status.OPENING, Status.FAILED, ENGINE_ACTOR,
                       EventKind.OPEN_FAILED, events, alert=True,
                       values=dict(last_error=error, next_attempt_at=None), error=error)
            repo.release_priorities(session, grant_id)
        self._publish(events)
        return repo.to_view(row)

    # ---- closing ----------------------------------------------------------------------

    def _claim_close(self, grant_id: int, reason: CloseReason, actor: str,
                     note: str = "") -> bool:
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            claimed = self._claim_close_in(session, grant_id, reason, actor, note, events)
        self._publish(events)
        return claimed

    def _claim_close_in(self, session: Session, grant_id: int, reason: CloseReason,
                        actor: str, note: str, events: list[GrantEvent]) -> bool:
        now = self.clock.now()
        values: dict[str, Any] = dict(close_reason=reason.value, closed_by=actor, attempts=0,
                                      next_attempt_at=now + self.settings.lease)
        if not repo.transition(session, grant_id, Status.ACTIVE, Status.CLOSING, **values):
            return False
        row = self._row(session, grant_id)
        self._audit(session, row, actor, EventKind.CLOSING, events, reason=reason.value,
                    note=note.strip())
        return True

    def _attempt_close(self, grant_id: int) -> bool:
        """One try at removing the grant's rule; the outcome is committed either way."""
        with self.store.read() as session:
            row = self._row(session, grant_id)
            handle = session.get(RuleHandle, row.rule_handle_id) if row.rule_handle_id else None
        if Status(row.status) not in (Status.CLOSING, Status.CLOSE_FAILED):
            return False
        outcome = "no rule recorded"
        try:
            with self._rule_lock(row):
                if handle is not None:
                    outcome = self._remove_rule(row, handle)
        except JitError as exc:
            self._close_failed_attempt(grant_id, str(exc))
            return False
        events: list[GrantEvent] = []
        now = self.clock.now()
        with self.store.transaction() as session:
            row = self._row(session, grant_id)
            self._move(session, row, {Status.CLOSING, Status.CLOSE_FAILED}, Status.CLOSED,
                       row.closed_by or ENGINE_ACTOR, EventKind.CLOSED, events,
                       values=dict(closed_at=now, next_attempt_at=None, last_error=None),
                       reason=row.close_reason, outcome=outcome)
            if handle is not None and outcome in ("removed", "already gone"):
                live = session.get(RuleHandle, handle.id)
                if live is not None and live.removed_at is None:
                    live.removed_at = now
            repo.release_priorities(session, grant_id)
        self._publish(events)
        return True

    def _remove_rule(self, row: Grant, handle: RuleHandle) -> str:
        """Remove the cloud rule unless another grant still relies on it; verify it is gone."""
        if not handle.owned:
            return "left in place: a standing rule jit did not create"
        with self.store.read() as session:
            others = repo.other_holders(session, handle.id, row.id)
        if others:
            return "kept: shared with " + ", ".join(f"#{g}" for g in others)
        target = self._target(row.target)
        provider = self.providers[row.cloud]
        removed = provider.close_rule(target, handle.scope, handle.ref)
        if provider.rule_exists(target, handle.scope, handle.ref):
            raise ProviderError(f"rule {handle.ref} is still in {handle.scope} after removal")
        return "removed" if removed else "already gone"

    def _close_failed_attempt(self, grant_id: int, error: str) -> None:
        now = self.clock.now()
        s = self.settings
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            row = self._row(session, grant_id)
            attempts = row.attempts + 1
            exhausted = attempts >= s.close_attempts
            if exhausted:
                delay = s.slow_retry * random.uniform(0.8, 1.2)
            else:
                fast = min(s.retry_cap, s.retry_base * 2 ** (attempts - 1))
                delay = fast * random.uniform(0.5, 1.5)
            values: dict[str, Any] = dict(attempts=attempts, last_error=error,
                                          next_attempt_at=now + delay)
            if exhausted and row.status == Status.CLOSING.value:
                self._move(session, row, Status.CLOSING, Status.CLOSE_FAILED, ENGINE_ACTOR,
                           EventKind.CLOSE_FAILED, events, alert=True, values=values,
                           attempts=attempts, error=error,
                           next_attempt_in=format_duration(delay))
            else:
                repo.transition(session, grant_id, Status(row.status), Status(row.status),
                                **values)
                self._audit(session, row, ENGINE_ACTOR, EventKind.CLOSE_RETRY, events,
                            attempts=attempts, error=error,
                            next_attempt_in=format_duration(delay))
        log.warning("close of #%s failed (attempt %s): %s", grant_id, attempts, error)
        self._publish(events)

    # ---- the sweep ----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """One pass of the engine: lapse, expire, retry closes, finish stalled opens."""
        report = SweepReport()
        report.lapsed = self.lapse_pending()
        self._expire_due(report)
        self._retry_stalled(report)
        return report

    def expire_due(self) -> SweepReport:
        report = SweepReport()
        self._expire_due(report)
        return report

    def _expire_due(self, report: SweepReport) -> None:
        while True:
            now = self.clock.now()
            events: list[GrantEvent] = []
            with self.store.transaction() as session:
                due = repo.due_for_expiry(session, now, self.settings.batch)
                claimed = [gid for gid in due if self._claim_close_in(
                    session, gid, CloseReason.EXPIRED, ENGINE_ACTOR, "", events)]
            self._publish(events)
            self._run_closes(claimed, report)
            if len(due) < self.settings.batch:
                return

    def _retry_stalled(self, report: SweepReport) -> None:
        now = self.clock.now()
        lease = now + self.settings.lease
        with self.store.transaction() as session:
            closes = [gid for gid in repo.due_for_retry(
                session, (Status.CLOSING, Status.CLOSE_FAILED), now, self.settings.batch)
                if self._take_lease(session, gid, now, lease)]
            opens = repo.due_for_retry(session, (Status.APPROVED, Status.OPENING), now,
                                       self.settings.batch)
        self._run_closes(closes, report)
        for gid in opens:
            try:
                view = self.open(gid)
            except InvalidTransition:
                continue  # another worker took it
            (report.opened if view.status is Status.ACTIVE else report.failed).append(gid)

    def _take_lease(self, session: Session, grant_id: int, now: datetime,
                    lease: datetime) -> bool:
        row = self._row(session, grant_id)
        status = Status(row.status)
        return repo.transition(session, grant_id, status, status, lease_expired_before=now,
                               next_attempt_at=lease)

    def _run_closes(self, grant_ids: list[int], report: SweepReport) -> None:
        if not grant_ids:
            return
        workers = min(self.settings.workers, len(grant_ids))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jit-close") as pool:
            for gid, ok in zip(grant_ids, pool.map(self._attempt_close, grant_ids),
                               strict=True):
                (report.closed if ok else report.failed).append(gid)

    def lapse_pending(self) -> list[int]:
        now = self.clock.now()
        events: list[GrantEvent] = []
        lapsed: list[int] = []
        with self.store.transaction() as session:
            for gid in repo.due_to_lapse(session, now, self.settings.batch):
                row = self._row(session, gid)
                if self._move(session, row, Status.PENDING, Status.LAPSED, ENGINE_ACTOR,
                              EventKind.LAPSED, events, values=dict(decided_at=now)):
                    lapsed.append(gid)
        self._publish(events)
        return lapsed

    # ---- reconcile ----------------------------------------------------------------------

    def reconcile(self, dry_run: bool = False) -> list[Orphan]:
        """Find rules carrying jit's marker with no live grant behind them; remove them."""
        found = find_orphans(self.store, self.policy.targets.values(), self.providers)
        return [self._remove_orphan(target, rule, dry_run) for target, rule in found]

    def _remove_orphan(self, target: Target, rule: OwnedRule, dry_run: bool) -> Orphan:
        orphan = Orphan.of(target, rule)
        where = f"{rule.ref} ({rule.source} -> port {rule.port}) in {rule.scope} on {target.name}"
        if dry_run:
            return orphan
        try:
            self.providers[target.cloud].close_rule(target, rule.scope, rule.ref)
        except ProviderError as exc:
            self._tell_alert(f"orphan rule {where} could not be removed: {exc}")
            return replace(orphan, error=str(exc))
        now = self.clock.now()
        with self.store.transaction() as session:
            handle = repo.live_handle(session, rule.scope, rule.ref)
            if handle is not None:
                handle.removed_at = now
            audit.append(session, at=now, actor=ENGINE_ACTOR,
                         action=EventKind.ORPHAN_REMOVED.value, grant_id=rule.grant_id,
                         target=target.name, port=rule.port, source=rule.source,
                         details={"scope": rule.scope, "rule": rule.ref})
        self._tell_alert(f"removed orphan rule {where}: no active grant was behind it")
        return replace(orphan, removed=True)

    # ---- reading ----------------------------------------------------------------------

    def get(self, grant_id: int) -> GrantView:
        with self.store.read() as session:
            row = self._row(session, grant_id)
            handle = session.get(RuleHandle, row.rule_handle_id) if row.rule_handle_id else None
            return repo.to_view(row, handle)

    def grants(self, statuses: Iterable[Status] | None = None,
               limit: int = 200) -> list[GrantView]:
        with self.store.read() as session:
            return repo.list_views(session, list(statuses) if statuses else None, limit)

    # ---- helpers ------------------------------------------------------------------------

    def _change(self, grant_id: int, from_: Status, to: Status, actor: str, kind: EventKind,
                values: dict[str, Any], action: str, **details: Any) -> GrantView:
        events: list[GrantEvent] = []
        with self.store.transaction() as session:
            row = self._row(session, grant_id)
            if not self._move(session, row, from_, to, actor, kind, events, values=values,
                              **details):
                current = self._row(session, grant_id)
                raise InvalidTransition(grant_id, Status(current.status), action)
        self._publish(events)
        return repo.to_view(row)

    def _move(self, session: Session, row: Grant, from_: Status | set[Status], to: Status,
              actor: str, kind: EventKind, events: list[GrantEvent], *,
              values: dict[str, Any] | None = None, alert: bool = False,
              **details: Any) -> bool:
        """Conditional transition plus its audit event, in the caller's transaction."""
        if not repo.transition(session, row.id, from_, to, **(values or {})):
            return False
        session.refresh(row)
        self._audit(session, row, actor, kind, events, alert=alert, **details)
        return True

    def _audit(self, session: Session, row: Grant, actor: str, kind: EventKind,
               events: list[GrantEvent], alert: bool = False, **details: Any) -> None:
        now = self.clock.now()
        audit.append(session, at=now, actor=actor, action=kind.value, grant_id=row.id,
                     target=row.target, port=row.port, source=row.source,
                     details={"status": row.status, **{k: v for k, v in details.items()
                                                       if v not in (None, "")}})
        detail = str(details.get("error") or details.get("outcome") or details.get("reason")
                     or "")
        events.append(GrantEvent(kind, repo.to_view(row), actor, now, detail, alert))

    def _publish(self, events: list[GrantEvent]) -> None:
        for event in events:
            try:
                self.notifier.publish(event)
            except Exception:  # a notification failure must not undo a committed change
                log.exception("notifier failed for %s #%s", event.kind, event.grant.id)

    def _tell_alert(self, message: str) -> None:
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
            raise JitError(f"target {name!r} is no longer in the policy")
        return target

    def _groups_of(self, user: str) -> frozenset[str]:
        return frozenset(h for h in self.policy.group_handles()
                         if user in self.directory.members(h))

    def _rule_lock(self, row: Grant) -> threading.Lock:
        """Serialises open and close of the same port+source, so a shared rule is not
        removed while another grant is binding to it."""
        key = (row.target, row.port, row.protocol, row.source)
        with self._rule_locks_guard:
            return self._rule_locks.setdefault(key, threading.Lock())

    @staticmethod
    def _rule_description(row: Grant) -> str:
        return f"jit grant #{row.id} for {row.requester}"[:255]
