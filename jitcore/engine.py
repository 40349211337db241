"""How the engine works through its grants: its settings, and what one pass did."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


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
