"""One tick of the engine: lapse unanswered requests, warn holders whose grant is about to
end, close what is due, and retry closes and opens that stalled (a crash, a cloud error).

The database decides what is due; replicas split it between them because every claim is
a conditional update (and, on PostgreSQL, `SKIP LOCKED`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from jitcore.closing import CLOSABLE, Closer
from jitcore.domain import CloseReason, EventKind, Status, format_duration
from jitcore.engine import EngineSettings, SweepReport
from jitcore.errors import InvalidTransition
from jitcore.opening import Opener
from jitcore.store import repository as repo
from jitcore.store.deadlines import in_callers_context
from jitcore.unit_of_work import ENGINE_ACTOR, UnitOfWork


class Sweep:
    def __init__(self, uow: UnitOfWork, settings: EngineSettings, opener: Opener,
                 closer: Closer) -> None:
        self.uow = uow
        self.settings = settings
        self.opener = opener
        self.closer = closer
        self._stopping = threading.Event()

    def run(self) -> SweepReport:
        """One pass of the engine: lapse, warn, expire, retry closes, finish stalled opens."""
        report = SweepReport()
        report.lapsed = self.lapse_pending()
        self.warn_expiring()
        self.expire_due(report)
        self._retry_stalled(report)
        return report

    def stop(self) -> None:
        """Ask a running sweep to finish the batches in hand (the one closing and, in a
        backlog, the one claimed ahead of it) and return (at shutdown): what is still
        due is left for the next process, or another replica."""
        self._stopping.set()

    def expire_due(self, report: SweepReport) -> None:
        """Claim and close due grants a batch at a time. In a backlog, the next batch is
        claimed while the cloud calls of the one before run (one batch closing, one
        claimed: no more), so the claims cost no time of their own."""
        if self._stopping.is_set():
            return
        claimed = self._claim_due()
        if len(claimed) < self.settings.batch:  # the usual case: no thread hand-off
            self.closer.close(claimed, report)
            return

        def close(batch: list[int]) -> None:
            self.closer.close(batch, report)

        close_there = in_callers_context(close)
        with ThreadPoolExecutor(1, thread_name_prefix="jit-expire") as closing:
            running = closing.submit(close_there, claimed)
            while len(claimed) == self.settings.batch and not self._stopping.is_set():
                claimed = self._claim_due()
                running.result()
                running = closing.submit(close_there, claimed)
            running.result()

    def _claim_due(self) -> list[int]:
        return self.closer.claim(None, CloseReason.EXPIRED, ENGINE_ACTOR)

    def _retry_stalled(self, report: SweepReport) -> None:
        now = self.uow.clock.now()
        with self.uow.store.transaction() as session:
            closes = repo.take_leases(session, repo.due_for_retry(
                session, CLOSABLE, now, self.settings.batch), now, now + self.settings.lease)
            opens = repo.due_for_retry(session, (Status.APPROVED, Status.OPENING), now,
                                       self.settings.batch)
        self.closer.close(closes, report)
        for gid in opens:
            try:
                view = self.opener.open(gid)
            except InvalidTransition:
                continue  # another worker took it
            (report.opened if view.status is Status.ACTIVE else report.failed).append(gid)

    def warn_expiring(self) -> list[int]:
        """Tell holders whose grant ends within `warn_before` (once per end time)."""
        if self.settings.warn_before is None:
            return []
        now = self.uow.clock.now()
        with self.uow.begin() as work:
            due = repo.due_for_warning(work.db, now + self.settings.warn_before,
                                       self.settings.batch, after=now)
            rows = repo.transition_many(work.db, due, Status.ACTIVE, Status.ACTIVE,
                                        warned_at=now)
            for row in rows:
                left = (row.expires_at - now) if row.expires_at else timedelta(0)
                self.uow.record(work, row, ENGINE_ACTOR, EventKind.EXPIRING,
                                left=format_duration(max(left, timedelta(seconds=1))))
        return [row.id for row in rows]

    def lapse_pending(self) -> list[int]:
        """PENDING -> LAPSED for requests no approver answered in time."""
        now = self.uow.clock.now()
        with self.uow.begin() as work:
            due = repo.due_to_lapse(work.db, now, self.settings.batch)
            rows = repo.transition_many(work.db, due, Status.PENDING, Status.LAPSED,
                                        decided_at=now)
            for row in rows:
                self.uow.record(work, row, ENGINE_ACTOR, EventKind.LAPSED)
        return [row.id for row in rows]
