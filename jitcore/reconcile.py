"""Orphans: rules that carry jit's marker with no live grant behind them (DESIGN.md §2.3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jitcore.domain import Status
from jitcore.policy import Target
from jitcore.ports import OwnedRule, Provider
from jitcore.store import Store
from jitcore.store import repository as repo

# A grant still opening has created its rule but not yet recorded it.
_IN_FLIGHT = (Status.APPROVED, Status.OPENING)


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


def find_orphans(store: Store, targets: Iterable[Target],
                 providers: Mapping[str, Provider]) -> list[tuple[Target, OwnedRule]]:
    """Each marked rule once (targets may share a group), unless a live grant holds it."""
    found: list[tuple[Target, OwnedRule]] = []
    seen: set[tuple[str, str]] = set()
    for target in targets:
        provider = providers.get(target.cloud)
        if provider is None:
            continue
        rules = [r for r in provider.list_owned_rules(target) if (r.scope, r.ref) not in seen]
        seen.update((r.scope, r.ref) for r in rules)
        with store.read() as session:
            held = {(scope, ref) for scope in {r.scope for r in rules}
                    for ref in repo.holders_of(session, scope,
                                               [r.ref for r in rules if r.scope == scope])}
            marked = repo.statuses_of(session, [r.grant_id for r in rules
                                                if r.grant_id is not None])
        found.extend(
            (target, rule) for rule in rules
            if (rule.scope, rule.ref) not in held
            and (rule.grant_id is None or marked.get(rule.grant_id) not in _IN_FLIGHT)
        )
    return found
