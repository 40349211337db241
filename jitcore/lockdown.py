"""Enable and disable jit on a target: closed by default, and put back exactly.

Enabling removes what opens a managed port outside jit (after showing the plan) and records
it whole in the database; disabling revokes the target's grants, removes what jit put in
place, restores every recorded rule and reads the firewall back. While a target is enabled,
the posture check (scheduled with the sweep) reports anything that reopens it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from jitcore import audit
from jitcore.domain import HOLDS_RULE, Status
from jitcore.errors import (
    InvalidTransition,
    InvalidTransitionOnTarget,
    LockdownRefused,
    ProviderError,
    UnknownTarget,
)
from jitcore.policy import Target
from jitcore.ports import Lockdown, LockdownPlan, LockdownProvider
from jitcore.service import JitService
from jitcore.store import repository as repo
from jitcore.store.models import TargetState


@dataclass(frozen=True, slots=True)
class TargetStatus:
    target: str
    cloud: str
    enabled: bool
    changed_at: datetime | None = None
    changed_by: str | None = None
    jit_rules: tuple[str, ...] = ()  # what jit put in place (deny rules, its group)
    snapshot: tuple[str, ...] = ()  # the rules it removed and will put back
    active_grants: int = 0
    checked_at: datetime | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)


class Lockdowns:
    """The enable / disable / status / posture use cases, on top of the service."""

    def __init__(self, service: JitService) -> None:
        self.service = service

    # ---- enable -------------------------------------------------------------------------

    def plan_enable(self, name: str) -> LockdownPlan:
        target = self._target(name)
        state = self._state(name)
        if state is not None and state.enabled:
            raise InvalidTransitionOnTarget(f"jit is already enabled on {name}")
        return self._provider(target).plan_lockdown(target)

    def enable(self, name: str, actor: str, plan: LockdownPlan,
               take_over: bool = False) -> Lockdown:
        target = self._target(name)
        if plan.blockers and not take_over:
            lines = "; ".join(f"{r.ref} ({r.summary})" for r in plan.blockers)
            raise LockdownRefused(
                f"{name}: these rules let a managed port in ahead of jit from wider than the "
                f"policy allows: {lines}. Remove them, or run again with --take-over to have "
                "jit record and remove them (disable puts them back)")
        lockdown = self._provider(target).lock_down(target, plan, take_over)
        now = self.service.clock.now()
        with self.service.store.transaction() as session:
            state = session.get(TargetState, name) or TargetState(target=name)
            state.cloud, state.enabled = target.cloud, True
            state.changed_at, state.changed_by = now, actor
            state.lockdown = json.dumps(lockdown.to_json(), sort_keys=True)
            state.checked_at, state.problems = None, None
            session.add(state)
            session.flush()
            audit.append(session, at=now, actor=actor, action="target_enabled", target=name,
                         details={"removed": [f"{r.scope} {r.ref}: {r.summary}"
                                              for r in lockdown.removed],
                                  "added": list(plan.add), "take_over": take_over})
        return lockdown

    # ---- disable ------------------------------------------------------------------------

    def disable(self, name: str, actor: str) -> list[str]:
        """Revoke the target's grants, undo the lockdown; the differences found after."""
        target = self._target(name)
        state = self._state(name)
        if state is None or not state.enabled or state.lockdown is None:
            raise InvalidTransitionOnTarget(f"jit is not enabled on {name}")
        revoked = self._revoke_grants(name, actor)
        lockdown = Lockdown.from_json(json.loads(state.lockdown))
        differences = self._provider(target).lift_lockdown(target, lockdown)
        now = self.service.clock.now()
        with self.service.store.transaction() as session:
            row = session.get(TargetState, name)
            assert row is not None
            row.enabled, row.changed_at, row.changed_by = False, now, actor
            row.lockdown, row.checked_at, row.problems = None, None, None
            audit.append(session, at=now, actor=actor, action="target_disabled", target=name,
                         details={"revoked": revoked, "restored": len(lockdown.removed),
                                  "differences": differences})
        return differences

    def plan_disable(self, name: str) -> tuple[list[int], Lockdown]:
        """The grants disabling would revoke and the lockdown it would undo."""
        self._target(name)
        state = self._state(name)
        if state is None or not state.enabled or state.lockdown is None:
            raise InvalidTransitionOnTarget(f"jit is not enabled on {name}")
        return self._active(name), Lockdown.from_json(json.loads(state.lockdown))

    def _revoke_grants(self, name: str, actor: str) -> list[int]:
        revoked = []
        for grant_id in self._active(name):
            try:
                self.service.revoke(grant_id, actor, "target disabled", admin=True)
                revoked.append(grant_id)
            except InvalidTransition:
                continue  # it closed meanwhile
        return revoked

    def _active(self, name: str) -> list[int]:
        return [g.id for g in self.service.grants([Status.ACTIVE], limit=10_000, target=name)]

    # ---- status and posture -------------------------------------------------------------

    def status(self, names: Sequence[str] = ()) -> list[TargetStatus]:
        wanted = list(names) or sorted(self.service.policy.targets)
        for name in wanted:
            self._target(name)
        with self.service.store.read() as session:
            holding = repo.count_by_target(session, HOLDS_RULE)
        result = []
        for name in wanted:
            target = self.service.policy.targets[name]
            state = self._state(name)
            active = holding.get(name, 0)
            if state is None or not state.enabled or state.lockdown is None:
                result.append(TargetStatus(name, target.cloud, False, active_grants=active,
                                           changed_at=state.changed_at if state else None,
                                           changed_by=state.changed_by if state else None))
                continue
            lockdown = Lockdown.from_json(json.loads(state.lockdown))
            added = [str(d.get("name")) for d in lockdown.created.get("deny", [])]
            if lockdown.created.get("group_id"):
                added.append(f"group {lockdown.created['group_id']}")
            result.append(TargetStatus(
                name, target.cloud, True, state.changed_at, state.changed_by, tuple(added),
                tuple(f"{r.ref}: {r.summary}" for r in lockdown.removed), active,
                state.checked_at, tuple(json.loads(state.problems or "[]"))))
        return result

    def check_posture(self) -> dict[str, list[str]]:
        """Check every enabled target; new problems are alerted once. Returns all found."""
        found: dict[str, list[str]] = {}
        for name in sorted(self.service.policy.targets):
            state = self._state(name)
            if state is None or not state.enabled or state.lockdown is None:
                continue
            target = self.service.policy.targets[name]
            lockdown = Lockdown.from_json(json.loads(state.lockdown))
            try:
                problems = self._provider(target).posture(target, lockdown)
            except ProviderError as exc:
                problems = [f"the posture check failed: {exc}"]
            before = set(json.loads(state.problems or "[]"))
            with self.service.store.transaction() as session:
                row = session.get(TargetState, name)
                if row is not None:
                    row.checked_at = self.service.clock.now()
                    row.problems = json.dumps(problems)
            for problem in problems:
                if problem not in before:
                    self.service.alert(f"posture of {name}: {problem}")
            found[name] = problems
        return found

    # ---- helpers ------------------------------------------------------------------------

    def _target(self, name: str) -> Target:
        target = self.service.policy.targets.get(name)
        if target is None:
            known = ", ".join(sorted(self.service.policy.targets)) or "none"
            raise UnknownTarget(f"no target {name!r} in the policy (targets: {known})")
        return target

    def _provider(self, target: Target) -> LockdownProvider:
        provider = self.service.providers.get(target.cloud)
        lockdowns = provider.lockdowns() if provider is not None else None
        if lockdowns is None:
            raise ProviderError(f"{target.name} is on {target.cloud}, which this jit cannot "
                                "enable")
        return lockdowns

    def _state(self, name: str) -> TargetState | None:
        with self.service.store.read() as session:
            state = session.get(TargetState, name)
            if state is not None:
                session.expunge(state)
            return state



