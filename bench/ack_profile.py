"""The jit-bot that bench.ack runs with --profile or --what-if: bot.main.main() in a child
process, with diagnostics patched into that process only (nothing in bot/ or jitcore/ changes).

JIT_BENCH_WHAT_IF: candidate fixes to patch in first (WHAT_IFS). JIT_BENCH_PROFILE: a file to
write, when jit-bot stops, the wall time of each step between a request's arrival and its ack
(the bolt handler, the listener, JitService.request, write-lock waits, the audit append) and a
pyinstrument profile of every thread, grouped by what the threads do, beside a session file
(`.pyisession`, for `pyinstrument --load=FILE` or `-r html`).

pyinstrument profiles the thread it is started in: every thread started from here on runs
under a Profiler of its own, started and stopped in that thread; when jit-bot stops, its
thread pools are shut down so that their workers end, and with them their profiles.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from bench.common import percentile

PROFILE_ENV = "JIT_BENCH_PROFILE"  # these two: read by instrumented_bot() only
WHAT_IF_ENV = "JIT_BENCH_WHAT_IF"
WHAT_IFS = {
    "switch=S": "sys.setswitchinterval(S) instead of 0.005",
    "no-notifier": "diagnostic, not a fix: the Slack sender never starts (posts stay owed), "
                   "to show what its CPU costs the acks (no approval cards are posted)",
}
SAMPLE_INTERVAL = 0.001  # s: pyinstrument's default


class _Timings:
    """Wall times per label; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, label: str, seconds: float) -> None:
        with self._lock:
            self.samples[label].append(seconds)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - t0)

        setattr(owner, name, timed)

    def lines(self) -> Iterator[str]:
        yield f"{'(milliseconds)':<58} {'n':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        for label, values in sorted(self.samples.items()):
            figures = [percentile(values, q) * 1e3 for q in (50, 90, 99)]
            yield (f"{label:<58} {len(values):>6} "
                   + " ".join(f"{v:8.2f}" for v in [*figures, max(values) * 1e3]))


def _role(name: str) -> str:
    """Threads grouped by what they do (bolt's listener pool is the first executor)."""
    if "process_request_thread" in name:
        return "HTTP request threads"
    if name.startswith("ThreadPoolExecutor-0_"):
        return "bolt listener executor (ThreadPoolExecutor-0, 5 workers)"
    if name.startswith("ThreadPoolExecutor-"):
        return f"{name.split('_')[0]} (apscheduler / engine)"
    return re.sub(r"\d+", "N", name)


def _instrument(timings: _Timings) -> None:
    """Wrap (in this process only) the steps between a request's arrival and its ack."""
    from collections.abc import Generator
    from contextlib import contextmanager

    import slack_bolt.adapter.wsgi as wsgi
    import slack_bolt.context.ack.ack as ack
    import slack_bolt.listener.thread_runner as runner
    from sqlalchemy.engine import Connection

    import jitcore.store.db as db
    from jitcore import audit
    from jitcore.service import JitService

    timings.wrap(wsgi.SlackRequestHandler, "__call__", "1 bolt WSGI handler, whole request")
    timings.wrap(JitService, "request", "4 JitService.request (checks + one transaction)")
    flush_links = audit.ChainWriter.flush

    def timed_flush(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return flush_links(self, *args, **kwargs)
        finally:
            role = _role(threading.current_thread().name).split(" (")[0]
            timings.add(f"9 audit append, {role}: (PG: lock wait +) head, INSERT(s)",
                        time.perf_counter() - t0)

    audit.ChainWriter.flush = timed_flush  # type: ignore[method-assign]

    run_listener = runner.ThreadListenerRunner.run
    call_ack = ack.Ack.__call__
    begin = Connection.begin
    transaction = db.Store.transaction
    local = threading.local()

    def timed_run(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        request.context["bench_t0"] = t0
        request.context.ack.bench_t0 = t0
        try:
            return run_listener(self, request, *args, **kwargs)
        finally:
            timings.add("2 bolt runner: start -> response handed back",
                        time.perf_counter() - t0)

    def timed_ack(self: Any, *args: Any, **kwargs: Any) -> Any:
        now = time.perf_counter()
        if getattr(self, "bench_t0", None) is not None:
            self.bench_acked = now
            timings.add("5 bolt runner: start -> ack() called", now - self.bench_t0)
        return call_ack(self, *args, **kwargs)

    def timed_begin(self: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return begin(self)
        finally:
            waited = time.perf_counter() - t0
            local.begin_wait = getattr(local, "begin_wait", 0.0) + waited

    @contextmanager
    def timed_transaction(self: Any) -> Generator[Any]:
        role = _role(threading.current_thread().name).split(" (")[0]
        local.begin_wait = 0.0
        t0 = time.perf_counter()
        with transaction(self) as session:
            yield session
        whole = time.perf_counter() - t0
        timings.add(f"7 write txn, {role}: BEGIN (IMMEDIATE) wait", local.begin_wait)
        timings.add(f"8 write txn, {role}: held (whole - BEGIN wait)", whole - local.begin_wait)

    runner.ThreadListenerRunner.run = timed_run  # type: ignore[method-assign]
    ack.Ack.__call__ = timed_ack  # type: ignore[method-assign]
    Connection.begin = timed_begin  # type: ignore[method-assign]
    db.Store.transaction = timed_transaction  # type: ignore[method-assign]


class ThreadProfiles:
    """A pyinstrument Profiler in every thread started from `start()` on, per thread role."""

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._sessions: dict[str, list[Session]] = defaultdict(list)
        self._cpu: dict[str, float] = defaultdict(float)
        self._pools: weakref.WeakSet[ThreadPoolExecutor] = weakref.WeakSet()

    def start(self) -> None:
        run, pool_init = threading.Thread.run, ThreadPoolExecutor.__init__
        profiles = self

        def profiled_run(thread: threading.Thread) -> None:
            profiler = Profiler(interval=profiles._interval, async_mode="disabled")
            cpu = time.thread_time()
            profiler.start()
            try:
                run(thread)
            finally:
                profiles._add(_role(thread.name), profiler.stop(), time.thread_time() - cpu)

        def tracked_init(pool: ThreadPoolExecutor, *args: Any, **kwargs: Any) -> None:
            pool_init(pool, *args, **kwargs)
            profiles._pools.add(pool)

        threading.Thread.run = profiled_run  # type: ignore[method-assign,assignment]
        ThreadPoolExecutor.__init__ = tracked_init  # type: ignore[method-assign,assignment]

    def _add(self, role: str, session: Session, cpu: float) -> None:
        with self._lock:
            self._sessions[role].append(session)
            self._cpu[role] += cpu

    def stop(self, timeout: float = 10.0) -> list[str]:
        """End every thread pool's workers (their profiles end with them); the names of the
        threads still running after `timeout`, whose profiles are missing."""
        for pool in list(self._pools):
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        others = [t for t in threading.enumerate() if t is not threading.current_thread()]
        for thread in others:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in others if thread.is_alive()]

    def lines(self, dump: Path, top: int = 25) -> Iterator[str]:
        """Per thread role: CPU seconds and pyinstrument's call tree (wall time); every
        session combined is saved to `dump`."""
        with self._lock:
            sessions = {role: list(found) for role, found in self._sessions.items()}
            cpu = dict(self._cpu)
        combined = {role: _combine(found) for role, found in sessions.items()}
        yield "CPU seconds per thread role (time.thread_time):"
        for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
            yield f"  {seconds:8.2f} s  {role} ({len(sessions[role])} threads)"
        if combined:
            _combine(list(combined.values())).save(dump)
            yield f"(every thread's profile in {dump}: pyinstrument --load={dump} [-r html])"
        flat = ConsoleRenderer(flat=True, time="percent_of_total")
        tree = ConsoleRenderer(time="percent_of_total")
        for role, session in sorted(combined.items(), key=lambda kv: -cpu[kv[0]]):
            yield ""
            yield (f"== {role}: {session.sample_count} samples, "
                   f"{session.duration:.1f} s of wall time")
            yield f"-- top {top} functions by own time"
            yield from flat.render(session).splitlines()[:top + 6]
            yield "-- call tree"
            yield from tree.render(session).splitlines()


def _combine(sessions: list[Session]) -> Session:
    combined = sessions[0]
    for session in sessions[1:]:
        combined = Session.combine(combined, session)
    return combined


def _apply_what_if(fixes: list[str]) -> None:
    """Candidate changes, patched into this (the benchmark's jit-bot) process only."""
    for fix in fixes:
        name, _, value = fix.partition("=")
        if name == "switch":
            sys.setswitchinterval(float(value))
        elif name == "no-notifier":
            import bot.delivery

            bot.delivery.Delivery.start = lambda self: None  # type: ignore[method-assign]


def instrumented_bot() -> None:
    """jit-bot's own main(), run by bench.ack (never by bot/ itself) with --what-if or
    --profile: see the module docstring."""
    import bot.main

    _apply_what_if([f for f in os.environ.get(WHAT_IF_ENV, "").split(",") if f])
    if not os.environ.get(PROFILE_ENV):
        bot.main.main()
        return
    out = Path(os.environ[PROFILE_ENV])
    timings = _Timings()
    _instrument(timings)
    profiles = ThreadProfiles()
    profiles.start()
    t0 = time.perf_counter()
    try:
        bot.main.main()
    finally:
        ran = time.perf_counter() - t0
        missing = profiles.stop()
        lines = [f"jit-bot ran {ran:.1f}s", "", *timings.lines(), "",
                 *profiles.lines(out.with_suffix(".pyisession"))]
        if missing:
            lines += ["", f"still running at exit, not profiled: {', '.join(missing)}"]
        out.write_text("\n".join(lines) + "\n")
