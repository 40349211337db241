"""A cloud firewall kept in memory, behind jit's `Provider` port: the service's unit tests
run their whole lifecycle on it in milliseconds.

It answers as the real adapters do (jitcore/providers/aws.py and azure.py):

- Rules are kept per firewall (the scope: the target's security group id, or its NSG's
  resource id). A grant's rule is named `jit-<grant id>` and carries jit's marker.
- Without slots (like AWS): a rule with the same protocol, port and source already in the
  firewall is a duplicate; `open_rule` shares it (`created=False`), marked or not, as AWS's
  `InvalidPermission.Duplicate` handling does. A retry of the same grant finds its own rule
  the same way: same ref, `created=False`, `owned=True`.
- With slots (like Azure priorities): every rule holds one slot of the pool; `open_rule`
  needs the slot the service reserved, raises `SlotTaken` when another rule holds it, and
  writes the grant's rule by name (a retry rewrites it: same ref, `created=True`).
- `close_rules` answers True for a rule removed now and False for one already gone
  (NotFound on close); `present_rules` reads the firewall back.

Faults on demand: `fail_next` (once, or a few times; optionally after the call took effect,
as when the cloud's answer is lost), `fail_always`, `heal`; `keep_on_close` makes a rule
survive a close that reports it removed, so that the read-back finds it. Every call is logged
in `calls`.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from jitcore.errors import JitError, ProviderError, RuleLimitExceeded, SlotTaken
from jitcore.policy import AwsLocation, AzureLocation, Target
from jitcore.ports import OpenedRule, OwnedRule, RuleSpec, SlotPool

METHODS = frozenset({"warm", "placement", "used_slots", "open_rule", "close_rules",
                     "present_rules", "list_owned_rules", "lockdowns"})
RULE_PREFIX = "jit-"


@dataclass(slots=True)
class MemoryRule:
    """One inbound allow rule as the firewall holds it."""

    scope: str
    ref: str
    port: int
    protocol: str
    source: str
    marked: bool  # carries jit's marker (a tag on AWS, the `jit-` name on Azure)
    grant_id: int | None = None  # the grant the marker names
    slot: int | None = None  # its priority, in a firewall with slots


@dataclass(frozen=True, slots=True)
class Call:
    """One call the service made: which method, on which firewall, about what."""

    method: str
    scope: str = ""
    refs: tuple[str, ...] = ()
    grant_id: int | None = None
    slot: int | None = None


@dataclass(slots=True)
class _Fault:
    error: JitError | Exception
    after_effect: bool = False  # the call takes effect, then fails (the answer is lost)


@dataclass(slots=True)
class _Faults:
    once: dict[str, deque[_Fault]] = field(default_factory=dict)
    always: dict[str, _Fault] = field(default_factory=dict)

    def take(self, method: str) -> _Fault | None:
        queued = self.once.get(method)
        if queued:
            return queued.popleft()
        return self.always.get(method)


class MemoryProvider:
    """An in-memory firewall per scope that jit opens and closes rules in.

    `cloud` is the name the service's providers mapping and the policy's targets use.
    `slots`, when given, is the pool every rule takes a numbered place from (Azure's
    priority band); `rule_limit` is how many rules a firewall holds before it is full.
    """

    def __init__(self, cloud: str = "aws", *, slots: tuple[int, int] | None = None,
                 rule_limit: int | None = None) -> None:
        self.cloud = cloud
        self.slots = slots
        self.rule_limit = rule_limit
        self.calls: list[Call] = []
        self._rules: dict[str, dict[str, MemoryRule]] = {}
        self._kept: set[tuple[str, str]] = set()  # (scope, ref): survives a close
        self._faults = _Faults()
        self._foreign_refs = itertools.count(1)
        self._lock = threading.RLock()  # the service closes several firewalls at once

    # ---- the Provider port --------------------------------------------------------------

    def warm(self, target: Target) -> None:
        """Nothing to build; a fault set on `warm` is raised."""
        self._called(Call("warm", self.scope_of(target)))

    def placement(self, target: Target) -> SlotPool | None:
        """The pool of `slots` in the target's firewall; None without slots."""
        scope = self.scope_of(target)
        self._called(Call("placement", scope))
        if self.slots is None:
            return None
        low, high = self.slots
        return SlotPool(scope=scope, low=low, high=high,
                        full=f"no free priority in band {low}-{high} of {scope}: every one is "
                             "held by an active grant or another rule")

    def used_slots(self, target: Target) -> set[int]:
        """The slots held in the target's firewall now, by any rule."""
        scope = self.scope_of(target)
        self._called(Call("used_slots", scope))
        with self._lock:
            return {r.slot for r in self._rules.get(scope, {}).values() if r.slot is not None}

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        scope = self.scope_of(spec.target)
        fault = self._called(Call("open_rule", scope, grant_id=spec.grant_id, slot=spec.slot),
                             defer=True)
        with self._lock:
            opened = self._open(scope, spec)
        if fault is not None:
            raise fault.error
        return opened

    def close_rules(self, target: Target, scope: str, refs: Sequence[str]) -> dict[str, bool]:
        """Per rule: True if removed now, False if already gone. A rule marked with
        `keep_on_close` is reported removed and stays."""
        fault = self._called(Call("close_rules", scope, tuple(refs)), defer=True)
        with self._lock:
            rules = self._rules.get(scope, {})
            answer = {ref: ref in rules for ref in refs}
            for ref in refs:
                if ref in rules and (scope, ref) not in self._kept:
                    del rules[ref]
        if fault is not None:
            raise fault.error
        return answer

    def present_rules(self, target: Target, scope: str, refs: Sequence[str]) -> set[str]:
        self._called(Call("present_rules", scope, tuple(refs)))
        with self._lock:
            return set(refs) & set(self._rules.get(scope, {}))

    def list_owned_rules(self, target: Target) -> list[OwnedRule]:
        scope = self.scope_of(target)
        self._called(Call("list_owned_rules", scope))
        with self._lock:
            return [OwnedRule(scope=r.scope, ref=r.ref, grant_id=r.grant_id, port=r.port,
                              protocol=r.protocol, source=r.source)
                    for r in self._rules.get(scope, {}).values() if r.marked]

    def lockdowns(self) -> None:
        """None: this firewall has no `jit enable`/`disable` support."""
        self._called(Call("lockdowns"))
        return None

    # ---- what the tests see and set -----------------------------------------------------

    @staticmethod
    def scope_of(target: Target) -> str:
        """The firewall a target's rules live in, named as the real adapter names it."""
        location = target.location
        if isinstance(location, AzureLocation):
            return location.nsg_id
        if isinstance(location, AwsLocation) and location.security_group_id:
            return location.security_group_id
        return f"{RULE_PREFIX}{target.name}"  # AWS: the group jit keeps for an instance

    def rules(self, target: Target | str) -> dict[str, MemoryRule]:
        """The rules of a firewall (a target's, or a scope), by ref: a copy."""
        scope = target if isinstance(target, str) else self.scope_of(target)
        with self._lock:
            return {ref: replace(rule) for ref, rule in self._rules.get(scope, {}).items()}

    def add_rule(self, target: Target | str, port: int, source: str, *, protocol: str = "tcp",
                 grant_id: int | None = None, marked: bool | None = None,
                 slot: int | None = None, ref: str | None = None) -> MemoryRule:
        """Put a rule in a firewall behind jit's back: someone's standing rule (unmarked,
        the default without a grant id), or a marked one that no grant recorded."""
        scope = target if isinstance(target, str) else self.scope_of(target)
        marked = grant_id is not None if marked is None else marked
        if ref is None:
            ref = (f"{RULE_PREFIX}{grant_id}" if marked and grant_id is not None
                   else f"rule-{next(self._foreign_refs)}")
        rule = MemoryRule(scope, ref, port, protocol, source, marked, grant_id, slot)
        with self._lock:
            self._rules.setdefault(scope, {})[ref] = rule
        return replace(rule)

    def remove_rule(self, scope: str, ref: str) -> None:
        """Delete a rule behind jit's back (someone in the console)."""
        with self._lock:
            self._rules.get(scope, {}).pop(ref, None)

    def keep_on_close(self, scope: str, ref: str, keep: bool = True) -> None:
        """Make a rule survive closes that report it removed (or stop doing so)."""
        with self._lock:
            if keep:
                self._kept.add((scope, ref))
            else:
                self._kept.discard((scope, ref))

    def fail_next(self, method: str, error: JitError | Exception, *, times: int = 1,
                  after_effect: bool = False) -> None:
        """The next `times` calls of `method` raise `error`; with `after_effect`, each
        call changes the firewall first (the cloud did it, the answer was lost)."""
        with self._lock:
            queue = self._faults.once.setdefault(_known(method), deque())
            queue.extend(_Fault(error, after_effect) for _ in range(times))

    def fail_always(self, method: str, error: JitError | Exception) -> None:
        """Every call of `method` raises `error`, until `heal`."""
        with self._lock:
            self._faults.always[_known(method)] = _Fault(error)

    def heal(self, method: str | None = None) -> None:
        """Forget the faults of `method`, or of every method."""
        with self._lock:
            for table in (self._faults.once, self._faults.always):
                if method is None:
                    table.clear()
                else:
                    table.pop(_known(method), None)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == _known(method)]

    # ---- inside -------------------------------------------------------------------------

    def _called(self, call: Call, *, defer: bool = False) -> _Fault | None:
        """Log the call; raise its fault now, or hand back one that takes effect first."""
        with self._lock:
            self.calls.append(call)
            fault = self._faults.take(call.method)
        if fault is None:
            return None
        if defer and fault.after_effect:
            return fault
        raise fault.error

    def _open(self, scope: str, spec: RuleSpec) -> OpenedRule:
        rules = self._rules.setdefault(scope, {})
        name = f"{RULE_PREFIX}{spec.grant_id}"
        protocol, port = str(spec.port.protocol), spec.port.port
        if self.slots is None:
            same = next((r for r in rules.values() if (r.port, r.protocol, r.source)
                         == (port, protocol, spec.source)), None)
            if same is not None:
                return OpenedRule(scope, same.ref, created=False, owned=same.marked)
        else:
            self._check_slot(scope, spec, name)
        if name not in rules and self.rule_limit is not None and len(rules) >= self.rule_limit:
            raise RuleLimitExceeded(f"{scope} is full: it already holds {len(rules)} rules")
        rules[name] = MemoryRule(scope, name, port, protocol, spec.source, True, spec.grant_id,
                                 spec.slot)
        return OpenedRule(scope, name, created=True, owned=True)

    def _check_slot(self, scope: str, spec: RuleSpec, name: str) -> None:
        assert self.slots is not None
        low, high = self.slots
        if spec.slot is None or not low <= spec.slot <= high:
            raise ProviderError(f"#{spec.grant_id}: no slot of {low}-{high} reserved in {scope}")
        holder = next((r for r in self._rules[scope].values()
                       if r.slot == spec.slot and r.ref != name), None)
        if holder is not None:
            raise SlotTaken(spec.slot, f"{scope}: rule {holder.ref} already has priority "
                                       f"{spec.slot}")


def _known(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"the Provider port has no method {method!r}")
    return method
