"""Orphans: rules that carry jit's marker with no live grant behind them (DESIGN.md §2.3):
found by listing each firewall, checked again under the rule's lock, then removed."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from jitcore.closing import UseCase
from jitcore.domain import EventKind, Status
from jitcore.errors import ProviderError
from jitcore.policy import Target
from jitcore.ports import Clock, OwnedRule, Provider
from jitcore.store import Store
from jitcore.store import repository as repo
from jitcore.unit_of_work import ENGINE_ACTOR

log = logging.getLogger("jitcore.service")

# A grant still opening has created its rule but not yet recorded it.
_IN_FLIGHT = (Status.APPROVED, Status.OPENING)
# A grant in these states has its rules removed by the sweep; reconcile leaves them to it.
_CLOSED_BY_SWEEP = (Status.CLOSING, Status.CLOSE_FAILED)


@dataclass(frozen=True, slots=True)
class Orphan:
    target: str
    scope: str
    ref: str
    grant_id: int | None
    port: int
    source: str
    removed: bool = False
    error: str = ""

    @classmethod
    def of(cls, target: Target, rule: OwnedRule) -> Orphan:
        return cls(target.name, rule.scope, rule.ref, rule.grant_id, rule.port, rule.source)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A marked rule no live grant held when its firewall was listed, at `listed_at`."""

    target: Target
    rule: OwnedRule
    listed_at: datetime


def find_orphans(store: Store, targets: Iterable[Target], providers: Mapping[str, Provider],
                 clock: Clock) -> list[Candidate]:
    """Each marked rule once (targets may share a group), unless a live grant holds it."""
    found: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    for target in targets:
        provider = providers.get(target.cloud)
        if provider is None:
            continue
        listed_at = clock.now()  # before the listing: a close recorded after it is newer
        rules = [r for r in provider.list_owned_rules(target) if (r.scope, r.ref) not in seen]
        seen.update((r.scope, r.ref) for r in rules)
        found.extend(Candidate(target, rule, listed_at) for rule in _unheld(store, rules))
    return found


def _unheld(store: Store, rules: list[OwnedRule]) -> list[OwnedRule]:
    """The rules no live grant holds and no grant is opening right now."""
    by_scope: dict[str, list[str]] = defaultdict(list)
    for rule in rules:
        by_scope[rule.scope].append(rule.ref)
    with store.read() as session:
        held = {(scope, ref) for scope, refs in by_scope.items()
                for ref in repo.holders_of(session, scope, refs)}
        marked = repo.statuses_of(session, [r.grant_id for r in rules
                                            if r.grant_id is not None])
    return [rule for rule in rules if (rule.scope, rule.ref) not in held
            and (rule.grant_id is None or marked.get(rule.grant_id) not in _IN_FLIGHT)]


@dataclass(frozen=True, slots=True)
class Recheck:
    """A candidate as it stands under its rule's lock, just before reconcile acts on it."""

    adopted: bool = False  # a grant bound to the rule meanwhile: kept, and reported so
    skip: str = ""  # why it is no orphan after all (a close or an open accounts for it)


def recheck(store: Store, candidate: Candidate) -> Recheck:
    """Read under the rule's lock (the one closes and opens take): a close that removed
    the rule after the listing has either recorded it (the handle removed, the marked
    grant CLOSED since) or not yet (a holder or the marked grant still closing)."""
    rule, since = candidate.rule, candidate.listed_at
    with store.read() as session:
        holding = repo.holding_statuses(session, rule.scope, rule.ref)
        if holding - set(_CLOSED_BY_SWEEP):
            return Recheck(adopted=True)
        if holding:
            return Recheck(skip="a grant holding it is being closed")
        if repo.removed_since(session, rule.scope, rule.ref, since):
            return Recheck(skip="its handle was removed since the listing")
        state = repo.close_state(session, rule.grant_id) if rule.grant_id is not None else None
    if state is None:
        return Recheck()
    status, closed_at = state
    if status in _CLOSED_BY_SWEEP:
        return Recheck(skip=f"its grant #{rule.grant_id} is {status.value}")
    if status is Status.CLOSED and closed_at is not None and closed_at >= since:
        return Recheck(skip=f"its grant #{rule.grant_id} was closed since the listing")
    if status in _IN_FLIGHT:
        return Recheck(skip=f"its grant #{rule.grant_id} is being opened")
    return Recheck()


def sweep_owes_closes(store: Store, due_before: datetime) -> bool:
    """Whether a grant due before `due_before` is still ACTIVE, or a close is under way:
    until neither, reconcile would race the sweep over the same rules."""
    with store.read() as session:
        return repo.owes_close(session, due_before)


class Reconciler(UseCase):
    """Removes orphans, each under the lock opens and closes of its rule take."""

    def run(self, dry_run: bool = False) -> list[Orphan]:
        """Find rules carrying jit's marker with no live grant behind them; remove them.
        A candidate the sweep closed meanwhile, or one already gone, is no orphan: left out."""
        found = find_orphans(self.uow.store, self.policy.targets.values(), self.providers,
                             self.uow.clock)
        if dry_run:
            return [Orphan.of(c.target, c.rule) for c in found]
        return [orphan for candidate in found
                if (orphan := self._remove(candidate)) is not None]

    def remove_left_by(self, target: Target, grant_id: int) -> list[Orphan]:
        """After an open failed: remove a rule the cloud made for the grant all the same
        (its answer lost, say), now rather than at the next reconcile. A listing that fails
        leaves it to that reconcile."""
        listed_at = self.uow.clock.now()
        try:
            rules = self.providers[target.cloud].list_owned_rules(target)
        except ProviderError as exc:
            log.warning("#%s: cannot look for a rule its failed open left (%s); reconcile "
                        "will", grant_id, exc)
            return []
        return [orphan for rule in rules if rule.grant_id == grant_id
                if (orphan := self._remove(Candidate(target, rule, listed_at))) is not None]

    def _remove(self, candidate: Candidate) -> Orphan | None:
        target, rule = candidate.target, candidate.rule
        orphan = Orphan.of(target, rule)
        where = f"{rule.ref} ({rule.source} -> port {rule.port}) in {rule.scope} on {target.name}"
        # Under the lock opens and closes take (in this process and in other replicas): a
        # grant that bound to the rule meanwhile keeps it, a close that took it is seen.
        with self.locks.held([(target.name, rule.port, rule.protocol, rule.source)]):
            check = recheck(self.uow.store, candidate)
            if check.adopted:
                return replace(orphan, error="adopted by a grant meanwhile: kept")
            if check.skip:
                log.debug("reconcile: %s is no orphan: %s", where, check.skip)
                return None
            try:
                answer = self.providers[target.cloud].close_rules(target, rule.scope,
                                                                  [rule.ref])
            except ProviderError as exc:
                self.uow.alert(f"orphan rule {where} could not be removed: {exc}")
                return replace(orphan, error=str(exc))
        # No answer for the rule is taken as removed: an orphan is never hidden.
        if not answer.get(rule.ref, True):
            log.info("reconcile: %s was already gone: nothing removed", where)
            return None
        self._record(rule, target)
        self.uow.alert(f"removed orphan rule {where}: no active grant was behind it")
        return replace(orphan, removed=True)

    def _record(self, rule: OwnedRule, target: Target) -> None:
        now = self.uow.clock.now()
        with self.uow.begin() as work:
            handle = repo.live_handle(work.db, rule.scope, rule.ref)
            if handle is not None:
                repo.mark_removed(work.db, [handle.id], now)
            work.chain.add(at=now, actor=ENGINE_ACTOR, action=EventKind.ORPHAN_REMOVED.value,
                           grant_id=rule.grant_id, target=target.name, port=rule.port,
                           source=rule.source, details={"scope": rule.scope, "rule": rule.ref})
