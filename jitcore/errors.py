"""The errors jitcore raises. Each one carries a message fit to show a person.

    JitError
    ├── PolicyError              the policy file is missing, unreadable or invalid
    ├── SettingsError            a malformed setting in the environment
    ├── NotFound                 no such request/grant
    ├── NotAllowed               policy or identity refuses the action (carries the Decision)
    ├── InvalidTransition        the request is no longer in a state that allows the action
    ├── StoreError               the database is unreachable or not migrated
    └── ProviderError            a cloud call failed (raised only inside providers)
        ├── RuleLimitExceeded    the security group / NSG (or its priority band) is full
        ├── SlotTaken            a rule jit did not reserve holds the slot (Azure: priority)
        ├── TargetNotFound       the group, NSG or instance named by policy does not exist
        ├── AccessDenied         the cloud refused jit's credentials
        └── TransientProviderError  throttling, conflicts or network trouble: retry later
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jitcore.domain import Status
    from jitcore.policy import Decision


class JitError(Exception):
    """Base of every error jitcore raises on purpose."""


class PolicyError(JitError):
    """The policy file is missing, unreadable or invalid."""


class SettingsError(JitError):
    """A malformed setting in the environment (JIT_LEASE=...): the message names it."""


class NotFound(JitError):
    """No request or grant with that id."""


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


class StoreError(JitError):
    """The database is unreachable or not migrated."""


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
