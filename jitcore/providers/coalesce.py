"""Changes to one cloud resource written together: one write carries every change waiting.

ARM takes one write per NSG (and per firewall) at a time, and each takes seconds. Writing
grant by grant, the hundredth person approved during an incident waits a hundred writes.
Here whoever finds no write in progress on a resource becomes its writer: it takes every
change waiting, hands them to `write` as one batch (one read, one PUT of the whole resource),
and gives each caller its own outcome. Callers arriving meanwhile queue for the next batch;
when a batch ends, the first of them writes it. So a burst costs about two writes, however
many people are in it.

`write(key, changes)` returns one outcome per change, in order: a value, or an exception
that is raised to that change's caller alone. If `write` itself raises, every change in the
batch gets that exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")

# Per kind of resource, in this process: batches written and the changes they carried (for
# the metrics: jit_cloud_writes and jit_cloud_write_changes).
_totals: dict[str, tuple[int, int]] = {}
_totals_lock = threading.Lock()


def totals() -> dict[str, tuple[int, int]]:
    """(batches, changes) written so far in this process, per kind of resource."""
    with _totals_lock:
        return dict(_totals)


@dataclass(eq=False, slots=True)
class _Waiting(Generic[C, R]):
    change: C
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to write the next batch, not with an outcome
    result: R | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class _Queue(Generic[C, R]):
    waiting: list[_Waiting[C, R]] = field(default_factory=list)
    writing: bool = False


class Coalescer(Generic[C, R]):
    """Batches of changes per resource key, at most one batch in flight per key (in this
    process; other writers are kept apart by the resource's ETag). `max_batch` bounds a
    batch (a resource's size limit); the rest waits for the next one. `kind` names the
    resources in the process's totals ("nsg", "firewall")."""

    def __init__(self, write: Callable[[str, Sequence[C]], Sequence[R | BaseException]],
                 max_batch: int = 500, kind: str = "resource") -> None:
        self._write = write
        self._kind = kind
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue[C, R]] = {}
        self.batches = 0  # batches written, for tests and benchmarks

    def submit(self, key: str, change: C) -> R:
        """Queue the change and wait for its outcome (raised, if it is an exception)."""
        me: _Waiting[C, R] = _Waiting(change)
        with self._lock:
            queue = self._queues.setdefault(key, _Queue())
            queue.waiting.append(me)
            lead = not queue.writing
            queue.writing = True
        while True:
            if lead:
                self._write_batch(key, queue)
            me.done.wait()
            if not me.lead:
                break
            me.lead, lead = False, True
            me.done.clear()
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]  # R, set with done

    def _write_batch(self, key: str, queue: _Queue[C, R]) -> None:
        with self._lock:
            batch = queue.waiting[:self._max_batch]
            del queue.waiting[:len(batch)]
            self.batches += 1
        with _totals_lock:
            batches, changes = _totals.get(self._kind, (0, 0))
            _totals[self._kind] = (batches + 1, changes + len(batch))
        try:
            outcomes: Sequence[R | BaseException] = self._write(key, [w.change for w in batch])
            if len(outcomes) != len(batch):
                raise AssertionError(f"{len(outcomes)} outcomes for {len(batch)} changes")
        except BaseException as exc:  # noqa: BLE001 - every caller is owed this answer
            outcomes = [exc] * len(batch)
        with self._lock:
            if queue.waiting:  # the first of those who came meanwhile writes the next batch
                queue.waiting[0].lead = True
                queue.waiting[0].done.set()
            else:
                queue.writing = False
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiting.error = outcome
            else:
                waiting.result = outcome
            waiting.done.set()
