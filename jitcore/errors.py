"""Every error jit raises on purpose, in one tree. Each carries a message fit to show a person.

    JitError
    ├── PolicyError              the policy file is missing, unreadable or invalid
    │   └── PolicyProblems       problems one validator found, each at its path (a ValueError
    │                            too: pydantic turns it into a validation error)
    ├── SettingsError            a missing or malformed setting in the environment
    ├── NotFound                 no such request/grant
    ├── UnknownTarget            the policy names no such target
    ├── NotAllowed               policy or identity refuses the action (carries the Decision)
    ├── InvalidTransition        the request is no longer in a state that allows the action
    ├── InvalidTransitionOnTarget  lockdown: already enabled, or not enabled, on the target
    ├── LockdownRefused          lockdown would leave a rule open ahead of jit (no --take-over)
    ├── StoreError               the database is unreachable or not migrated
    │   └── AuditChainError      the database did not extend the audit chain as jit hashes it
    ├── Undeliverable            a post owed to Slack that can never be sent as it stands
    ├── RequestRefused           an HTTP request turned away before anything parses it
    └── ProviderError            a cloud call failed (raised only inside providers)
        ├── RuleLimitExceeded    the security group / NSG (or its priority band) is full
        ├── SlotTaken            a rule jit did not reserve holds the slot (Azure: priority)
        ├── TargetNotFound       the group, NSG or instance named by policy does not exist
        ├── AccessDenied         the cloud refused jit's credentials
        └── TransientProviderError  throttling, conflicts or network trouble: retry later
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jitcore.domain import Status
    from jitcore.policy import Decision


class JitError(Exception):
    """Base of every error jit raises on purpose."""


class PolicyError(JitError):
    """The policy file is missing, unreadable or invalid."""


class PolicyProblems(PolicyError, ValueError):
    """Several problems found by one validator of the policy, each at a path below the value
    it checked. A ValueError too, so that pydantic reports it as a validation error."""

    def __init__(self, problems: list[tuple[tuple[Hashable, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


class SettingsError(JitError):
    """A missing or malformed setting in the environment (JIT_LEASE=...): the message names it
    and says how to fix it."""


class NotFound(JitError):
    """No request or grant with that id."""


class UnknownTarget(JitError):
    """The policy names no such target."""


class NotAllowed(JitError):
    """Policy or identity refuses the action."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.detail)
        self.decision = decision


class InvalidTransition(JitError):
    """The request is no longer in a state that allows the action (someone got there first)."""

    def __init__(self, grant_id: int, current: Status, action: str) -> None:
        state = current.value.lower().replace("_", " ")
        # A pending request has not moved on yet: "already pending" would mislead.
        settled = current.value != "PENDING"
        super().__init__(f"#{grant_id} is {'already ' if settled else ''}{state}; "
                         f"cannot {action} it")
        self.grant_id = grant_id
        self.current = current
        self.action = action


class InvalidTransitionOnTarget(JitError):
    """The target is not in a state that allows the lockdown action (already enabled, not
    enabled)."""


class LockdownRefused(JitError):
    """Enabling lockdown would leave a rule open ahead of jit, and --take-over was not given."""


class StoreError(JitError):
    """The database is unreachable or not migrated."""


class AuditChainError(StoreError):
    """The database did not extend the chain as jit hashes it. Raised before COMMIT, so a
    transaction that meets it is rolled back; a statement in autocommit (a request on
    PostgreSQL) is already written when it is raised."""


class Undeliverable(JitError):
    """A post owed to Slack that can never be sent as it stands (its card is gone, say):
    failed for good."""


class RequestRefused(JitError):
    """Why an HTTP request does not reach the Slack layer (unsigned, malformed, too large):
    the HTTP status to answer and a reason safe to log."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ProviderError(JitError):
    """A cloud call failed."""


class RuleLimitExceeded(ProviderError):
    """The security group or NSG cannot take another rule."""


class SlotTaken(ProviderError):
    """The firewall refused a rule because another rule holds the slot jit reserved for it
    (Azure: another rule of the NSG has its priority and direction)."""

    def __init__(self, slot: int, message: str) -> None:
        super().__init__(message)
        self.slot = slot


class TargetNotFound(ProviderError):
    """The group, NSG or instance named by the policy does not exist."""


class AccessDenied(ProviderError):
    """The cloud refused jit's credentials for this call."""


class TransientProviderError(ProviderError):
    """Throttling, conflicts or network trouble that outlasted the retries: try again later."""
