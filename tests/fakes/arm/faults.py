"""Switches that make the ARM emulator misbehave the way ARM does: 429, 409, failures."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from tests.fakes.arm.errors import ArmError, Json


@dataclass
class Failure:
    status: int
    code: str
    message: str | None = None  # None: ARM's wording for the code


@dataclass
class _Throttle:
    remaining: int
    retry_after: float
    writes_only: bool


class Faults:
    """Switches that make the emulator misbehave the way ARM does; thread-safe, live.

    Writes are PUT and DELETE of an NSG or one of its rules. Azure-core's RetryPolicy retries
    by itself any answer carrying `Retry-After`, and 408/429/500/502/503/504 (and >= 506) for
    PUT/DELETE/GET: by default three retries, so one SDK call makes up to 4 raw requests, with
    backoff sleeps of 0, 1.6 and 3.2 s (retry_backoff_factor=0.8) unless Retry-After is given.
    None of the 409/412/423 answers below carries Retry-After, so the SDK does not retry them.
    """

    def __init__(self, lock: threading.RLock, seed: int | None) -> None:
        self._lock = lock
        self._random = random.Random(seed)
        self._conflicts = 0
        self._conflict_rate = 0.0
        self._throttles: list[_Throttle] = []
        self._failed_operations: list[Json] = []
        self._failed_writes: list[Failure] = []
        self._broken: dict[str, Failure] = {}

    def conflict_next(self, n: int = 1) -> None:
        """The next `n` writes answer 409 AnotherOperationInProgress and change nothing."""
        with self._lock:
            self._conflicts += n

    @property
    def conflict_rate(self) -> float:
        with self._lock:
            return self._conflict_rate

    @conflict_rate.setter
    def conflict_rate(self, rate: float) -> None:
        """That fraction of writes (seeded random) answer 409 AnotherOperationInProgress."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"conflict_rate must be within [0, 1], not {rate}")
        with self._lock:
            self._conflict_rate = rate

    def throttle_next(self, n: int = 1, retry_after: float = 1.0, *,
                      writes_only: bool = False) -> None:
        """The next `n` requests (any method, polls included; or writes only) answer 429.

        The answer is ARM's SubscriptionRequestsThrottled with `Retry-After: <retry_after>`,
        which azure-core sleeps for and then retries (three times by default).
        """
        with self._lock:
            self._throttles.append(_Throttle(n, retry_after, writes_only))

    def fail_next_operations(self, n: int = 1, code: str = "InternalServerError",
                             message: str = "An error occurred.") -> None:
        """The next `n` accepted writes end `Failed` with this error on their status URL.

        A failed PUT leaves the rule (and the NSG) in provisioningState "Failed"; a failed
        DELETE leaves the rule in place, "Failed".
        """
        with self._lock:
            self._failed_operations.extend({"code": code, "message": message} for _ in range(n))

    def fail_writes_next(self, n: int = 1, status: int = 500, code: str = "InternalServerError",
                         message: str = "An error occurred.") -> None:
        """The next `n` writes (raw requests) answer `status` with this error, changing nothing.

        With status 500 azure-core retries by itself: n=4 makes one SDK call fail, fewer are
        absorbed by its retries (slowly, unless the client sets a small retry_backoff_factor).
        """
        with self._lock:
            self._failed_writes.extend(Failure(status, code, message) for _ in range(n))

    def break_deletes(self, status: int = 409, code: str = "AnotherOperationInProgress",
                      message: str | None = None) -> None:
        """Every DELETE answers this error until `heal()`: azure-core does not retry it.

        The default is what a long operation by someone else on the NSG looks like.
        """
        with self._lock:
            self._broken["DELETE"] = Failure(status, code, message)

    def break_puts(self, status: int = 409, code: str = "AnotherOperationInProgress",
                   message: str | None = None) -> None:
        """Every PUT answers this error until `heal()`."""
        with self._lock:
            self._broken["PUT"] = Failure(status, code, message)

    def heal(self) -> None:
        """Every fault off: broken methods, pending one-shot faults, conflict_rate."""
        with self._lock:
            self._conflicts = 0
            self._conflict_rate = 0.0
            self._throttles.clear()
            self._failed_operations.clear()
            self._failed_writes.clear()
            self._broken.clear()

    # -- used by the emulator, under its lock --------------------------------------------

    def take_throttle(self, write: bool) -> float | None:
        for throttle in self._throttles:
            if throttle.writes_only and not write:
                continue
            throttle.remaining -= 1
            if throttle.remaining <= 0:
                self._throttles.remove(throttle)
            return throttle.retry_after
        return None

    def take_write_failure(self, method: str) -> Failure | None:
        if method in self._broken:
            return self._broken[method]
        if self._failed_writes:
            return self._failed_writes.pop(0)
        return None

    def take_conflict(self) -> bool:
        if self._conflicts > 0:
            self._conflicts -= 1
            return True
        return self._conflict_rate > 0 and self._random.random() < self._conflict_rate

    def take_operation_failure(self) -> Json | None:
        return self._failed_operations.pop(0) if self._failed_operations else None


def throttled(retry_after: float, method: str, subscription: str) -> ArmError:
    """ARM's SubscriptionRequestsThrottled, which azure-core sleeps `Retry-After` for."""
    kind = {"PUT": "write", "DELETE": "delete"}.get(method, "read")
    return ArmError(429, "SubscriptionRequestsThrottled",
                    f"Number of '{kind}' requests for subscription '{subscription}' actioned "
                    f"by 'arm-emulator' exceeded. Please try again after '{retry_after:g}' "
                    "seconds after the additional tokens are available. Refer to "
                    "https://aka.ms/arm-throttling", gateway=True,
                    headers=[("Retry-After", f"{retry_after:g}")])
