"""The ports the service needs from the outside world: clouds, notifications, time, people."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from jitcore.domain import Entry, GrantEvent
from jitcore.policy import PortPolicy, Target


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One allow rule for one grant: this source, this port, this target."""

    grant_id: int
    target: Target
    port: PortPolicy
    source: str  # canonical CIDR, e.g. 203.0.113.7/32
    description: str
    slot: int | None = None  # the slot reserved for the grant when `placement` names a pool


@dataclass(frozen=True, slots=True)
class OpenedRule:
    """What the cloud holds for a grant once `open_rule` returns."""

    scope: str  # the firewall: an AWS security group id or an Azure NSG resource id
    ref: str  # the rule within it: a security group rule id or an Azure rule name
    created: bool  # False when an identical rule already existed and is shared
    owned: bool  # True when the rule carries jit's marker (jit may remove it)
    entry: Entry | None = None  # where the requester connects, when the rule is a DNAT


@dataclass(frozen=True, slots=True)
class OwnedRule:
    """A rule carrying jit's marker, as listed for reconcile."""

    scope: str
    ref: str
    grant_id: int | None
    port: int
    protocol: str
    source: str


@dataclass(frozen=True, slots=True)
class SlotPool:
    """Numbered places a firewall gives its rules, of which each grant needs its own:
    Azure NSG priorities in the target's band today, a firewall's mapped ports tomorrow.
    The service reserves the lowest free one in the database before the rule is written;
    a provider that finds it held by a rule jit did not reserve raises `SlotTaken`."""

    scope: str  # what the numbers are unique within (an NSG resource id)
    low: int
    high: int
    full: str  # for people, when every one is taken: what is full and what to do

    def __contains__(self, slot: int) -> bool:
        return self.low <= slot <= self.high


class Provider(Protocol):
    """A cloud firewall that jit can open and close rules in. Calls are idempotent; every
    capability the service may use is declared here (none is found by `getattr`)."""

    cloud: str

    def warm(self, target: Target) -> None:
        """Build what the first call for this target needs (clients, credentials), so a
        request does not pay for it. Raises ProviderError when that cannot be done."""
        ...

    def placement(self, target: Target) -> SlotPool | None:
        """The pool a rule for this target takes a numbered slot from; None if none."""
        ...

    def used_slots(self, target: Target) -> set[int]:
        """The slots of `placement(target)` the firewall holds now, by any rule (one read).
        Empty for a provider without placement."""
        ...

    def open_rule(self, spec: RuleSpec) -> OpenedRule: ...

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        """Remove these rules of one firewall, in as few calls as the cloud allows.

        Per rule: True if it was removed now, False if it was already gone. Raises
        ProviderError when the cloud refuses; nothing is reported removed then.
        """
        ...

    def present_rules(self, target: Target, scope: str, refs: Sequence[str]) -> set[str]:
        """Of these rules, the ones the firewall still holds (read back after a close)."""
        ...

    def list_owned_rules(self, target: Target) -> list[OwnedRule]: ...

    def lockdowns(self) -> LockdownProvider | None:
        """This cloud's `jit enable`/`disable` support, or None when it has none."""
        ...


@dataclass(frozen=True, slots=True)
class FirewallRule:
    """A rule as the cloud holds it, kept whole so that it can be put back exactly."""

    scope: str  # the security group id / the NSG resource id
    ref: str  # the security group rule id / the rule name
    summary: str  # for people: what it lets in
    body: Mapping[str, Any]  # the cloud's own description of it: what a restore sends back


@dataclass(frozen=True, slots=True)
class LockdownPlan:
    """What enabling jit on a target would change, shown before anything changes."""

    target: str
    remove: tuple[FirewallRule, ...]  # standing rules that open a managed port: snapshot, remove
    add: tuple[str, ...]  # what jit puts in place (deny rules, a group of its own), for people
    blockers: tuple[FirewallRule, ...] = ()  # rules only --take-over may remove
    details: Mapping[str, Any] = field(default_factory=dict)  # for the provider's apply step


@dataclass(frozen=True, slots=True)
class Lockdown:
    """What enabling did, kept in the database so that disabling can undo it exactly."""

    removed: tuple[FirewallRule, ...]
    created: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"removed": [dict(scope=r.scope, ref=r.ref, summary=r.summary, body=r.body)
                            for r in self.removed], "created": dict(self.created)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lockdown:
        return cls(tuple(FirewallRule(r["scope"], r["ref"], r["summary"], r["body"])
                         for r in data.get("removed", [])), dict(data.get("created", {})))


class LockdownProvider(Protocol):
    """A cloud that can keep a target's managed ports closed by default (jit enable)."""

    def plan_lockdown(self, target: Target) -> LockdownPlan: ...

    def lock_down(self, target: Target, plan: LockdownPlan, take_over: bool) -> Lockdown:
        """Snapshot and remove `plan.remove` (and `plan.blockers` when taking over), then
        put jit's closing rules in place."""
        ...

    def lift_lockdown(self, target: Target, lockdown: Lockdown) -> list[str]:
        """Remove what jit created, restore every removed rule exactly, read the firewall
        back: the differences found (empty when it is as it was)."""
        ...

    def posture(self, target: Target, lockdown: Lockdown) -> list[str]:
        """What is wrong with an enabled target now: missing deny rules, new openings."""
        ...


class Notifier(Protocol):
    """Told what happened, after the transaction commits. What an event owes people in
    Slack is already an outbox row by then (jitcore.outbox): a notifier logs, counts, or
    wakes the sender; it is never the only record."""

    def publish(self, event: GrantEvent) -> None: ...

    def alert(self, message: str) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Directory(Protocol):
    """Resolves @usergroup handles named by the policy to the user ids in them."""

    def members(self, handle: str) -> frozenset[str]: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class NoDirectory:
    """No usergroups: only explicit user ids and `*` match."""

    def members(self, handle: str) -> frozenset[str]:
        return frozenset()


class LogNotifier:
    """The CLI's notifier. The service already logs every event (at INFO, or WARNING for
    an alert), so events go out here at DEBUG only; free-standing alerts at WARNING."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("jit.events")

    def publish(self, event: GrantEvent) -> None:
        grant = event.grant
        self._log.log(
            logging.DEBUG, "jit %s %s %s %s %s/%s by %s%s", grant.label, event.kind.value,
            grant.service, grant.target, grant.source, grant.protocol, event.actor,
            f": {event.detail}" if event.detail else "",
        )

    def alert(self, message: str) -> None:
        self._log.warning("jit alert: %s", message)
