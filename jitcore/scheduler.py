"""APScheduler wiring. APScheduler is only the alarm clock: every tick reads what is due
from the database, so nothing is lost when the process was down (its own job store would
drop a revocation that came due meanwhile, by its misfire rules)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from jitcore.errors import JitError
from jitcore.reconcile import sweep_owes_closes
from jitcore.service import JitService
from jitcore.store.watch import CommitWatch

log = logging.getLogger(__name__)


def _nothing() -> None:
    pass


class Engine:
    """The expiry engine: a sweep every `interval`, a reconcile every `reconcile_every`, and
    a posture check of the enabled targets every `posture_every`.

    Between ticks an alarm (`Alarm`) sleeps until the next thing due (an end, a lapse, a
    retry, a warning), waking early when anyone commits, and then sweeps at once: a grant
    is closed at its time, not at the next tick. The tick stays, as the backstop.

    Reconcile starts only once the sweep has caught up after start (nothing due left
    ACTIVE, no close under way): listing the firewalls while the sweep drains what came due
    during an outage would take the rules it is closing for orphans."""

    def __init__(self, service: JitService, interval: timedelta = timedelta(seconds=1),
                 reconcile_every: timedelta | None = timedelta(minutes=10),
                 posture_every: timedelta | None = timedelta(minutes=5)) -> None:
        self.service = service
        self.interval = interval
        self.reconcile_every = reconcile_every
        self.posture_every = posture_every
        self._scheduler: BackgroundScheduler | None = None
        self._release: Callable[[], None] = _nothing
        self.last_sweep_at: datetime | None = None  # when the last sweep completed
        self.sweep_started_at: datetime | None = None  # when the latest one began
        self._caught_up = threading.Event()  # set once a sweep left nothing due unclosed
        self.alarm: Alarm | None = None

    def start(self) -> None:
        """Start ticking; the first sweep runs at once, closing whatever came due while down.
        On SQLite, raises StoreError if another process runs the engine on the same file."""
        self._release = self.service.store.claim_engine()
        self._caught_up.clear()
        scheduler = BackgroundScheduler(timezone=UTC)
        now = datetime.now(UTC)
        scheduler.add_job(self.sweep, "interval", id="sweep", next_run_time=now,
                          seconds=self.interval.total_seconds(), max_instances=1,
                          coalesce=True, misfire_grace_time=None)
        if self.service.store.dialect == "sqlite":
            scheduler.add_job(self.checkpoint, "interval", id="checkpoint",
                              seconds=self.interval.total_seconds(), max_instances=1,
                              coalesce=True, misfire_grace_time=None)
        if self.posture_every is not None:
            scheduler.add_job(self.posture, "interval", id="posture",
                              next_run_time=now + 2 * self.interval,
                              seconds=self.posture_every.total_seconds(), max_instances=1,
                              coalesce=True, misfire_grace_time=None)
        self._scheduler = scheduler  # before the first sweep can find it caught up
        scheduler.start()
        self.alarm = Alarm(self, cap=self.interval)
        self.alarm.start()

    def sweep(self) -> None:
        self.sweep_started_at = datetime.now(UTC)
        due = self.service.clock.now()  # what this sweep must have closed to be caught up
        try:
            report = self.service.sweep()
        except Exception:  # the next tick reads the database again; never stop ticking
            log.exception("sweep failed; retrying at the next tick")
            return
        self.last_sweep_at = datetime.now(UTC)
        if self.alarm is not None:
            self.alarm.swept.set()
        if report.busy:
            log.info("sweep: closed %d, failed %d, opened %d, lapsed %d", len(report.closed),
                     len(report.failed), len(report.opened), len(report.lapsed))
        if not self._caught_up.is_set():
            self._catch_up(due)

    @property
    def caught_up(self) -> bool:
        """Whether a sweep since start has left nothing due unclosed (reconcile may run)."""
        return self._caught_up.is_set()

    def _catch_up(self, due: datetime) -> None:
        """Once nothing due by `due` is left ACTIVE and no close is under way (another
        replica's included), start reconciling; until then, ask again after each sweep."""
        try:
            if sweep_owes_closes(self.service.store, due):
                return
        except Exception:  # as for sweep: asked again after the next one
            log.exception("cannot tell whether the sweep has caught up; asking again")
            return
        self._caught_up.set()
        log.info("sweep caught up: nothing due left unclosed%s",
                 "; reconcile starts" if self.reconcile_every is not None else "")
        if self.reconcile_every is not None and self._scheduler is not None:
            self._scheduler.add_job(self.reconcile, "interval", id="reconcile",
                                    next_run_time=datetime.now(UTC),
                                    seconds=self.reconcile_every.total_seconds(),
                                    max_instances=1, coalesce=True, misfire_grace_time=None,
                                    replace_existing=True)

    def reconcile(self) -> None:
        if not self._caught_up.is_set():  # it would race the sweep over the same rules
            log.debug("reconcile waits until the sweep has caught up")
            return
        try:
            orphans = self.service.reconcile()
        except JitError as exc:  # a cloud refused or is unreachable: say which, try later
            log.warning("reconcile failed: %s; retrying at the next run", exc)
            return
        except Exception:  # as for sweep: logged, and tried again next time
            log.exception("reconcile failed; retrying at the next run")
            return
        if orphans:
            log.warning("reconcile: %d orphan rule(s) found", len(orphans))

    def checkpoint(self) -> None:
        try:
            self.service.store.checkpoint()
        except Exception:  # SQLite checkpoints again by itself at the backstop size
            log.exception("WAL checkpoint failed; retrying at the next tick")

    def posture(self) -> None:
        from jitcore.lockdown import Lockdowns

        try:
            found = Lockdowns(self.service).check_posture()
        except Exception:  # as for sweep: logged, and tried again next time
            log.exception("posture check failed; retrying at the next run")
            return
        for target, problems in found.items():
            for problem in problems:
                log.warning("posture of %s: %s", target, problem)

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def sweep_now(self) -> None:
        """Run the sweep job at once (after the one running, if any; never two at a time)."""
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.modify_job("sweep", next_run_time=datetime.now(UTC))

    def shutdown(self, wait: bool = True) -> None:
        if self.alarm is not None:
            self.alarm.stop()
            self.alarm = None
        if self._scheduler is not None and self._scheduler.running:
            self.service.stop()  # a sweep in a burst ends after its batch, not the burst
            self._scheduler.shutdown(wait=wait)
        self._release()
        self._release = _nothing

    def run_until(self, stop: threading.Event) -> None:
        """Run until `stop` is set (by a signal handler, say), then shut down cleanly."""
        self.start()
        try:
            stop.wait()
        finally:
            self.shutdown()


class Alarm:
    """Sleeps until the earliest due time the database holds (at most `cap`), waking early
    when anyone commits (store/watch.py), and has the engine sweep when that time comes.
    Only an alarm: the sweep reads what is due; a missed wake-up costs at most the tick."""

    def __init__(self, engine: Engine, cap: timedelta) -> None:
        self._engine = engine
        self._cap = cap.total_seconds()
        self._stopping = threading.Event()
        self.swept = threading.Event()  # set by each sweep's end
        self._kicked: datetime | None = None  # the due time the last sweep was run for
        self._thread = threading.Thread(target=self._run, name="jit-alarm", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        watch: CommitWatch | None = None
        while not self._stopping.is_set():
            try:
                if watch is None:
                    watch = self._engine.service.store.watch_commits()
                self._once(watch)
            except Exception as exc:  # noqa: BLE001 - the database is away: the tick sweeps
                log.debug("the engine's alarm cannot read the database: %s", exc)
                watch = self._closed(watch)
                self._stopping.wait(self._cap)
        self._closed(watch)

    @staticmethod
    def _closed(watch: CommitWatch | None) -> None:
        if watch is not None:
            with suppress(Exception):  # its connection may be gone with the database
                watch.close()

    def _once(self, watch: CommitWatch) -> None:
        service = self._engine.service
        due = service.next_due()
        wait = self._cap if due is None else min(
            self._cap, (due - service.clock.now()).total_seconds())
        if wait > 0:
            watch.wait(wait)  # a commit: read the next due time again
            return
        assert due is not None  # (with nothing due, the wait above is the whole cap)
        if due == self._kicked:
            # Asked for a sweep already and it is still due: a sweep draining a burst (its
            # batches commit one after another), or a step that keeps failing. Wait for the
            # next sweep to end, not for each commit.
            self.swept.clear()
            self.swept.wait(self._cap)
            return
        self._kicked = due
        self.swept.clear()
        self._engine.sweep_now()
        self.swept.wait(self._cap)  # then look again (what was due is done, or retrying)
