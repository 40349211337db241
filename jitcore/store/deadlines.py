"""Client-side deadlines for PostgreSQL statements: a hung database cannot hang jit.

PostgreSQL's own `statement_timeout` is enforced by the server; a server that accepts a
connection and never answers (a hung host, a stuck proxy, a network that drops without a
reset) never enforces it, and libpq then waits for ever. So each statement runs under a
deadline kept here: one watchdog thread, woken at the earliest deadline, shuts the socket
of a statement still running past its own. libpq reads the end of the connection,
psycopg raises OperationalError, SQLAlchemy discards the connection, and the caller gets
the usual "database unavailable" error within its budget.

The deadline of a statement is the innermost `within(seconds)` of its thread (None: no
deadline, for the waits that are meant to be long: an advisory lock held by another
replica during a cloud call, a migration), else the engine's default.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, copy_context
from typing import Any, TypeVar

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")
_UNSET = object()
_TICK = 0.1  # s: how late past its deadline a statement may be ended
_within: ContextVar[object] = ContextVar("jit_statement_deadline", default=_UNSET)
_patience: ContextVar[float] = ContextVar("jit_checkout_patience", default=0.0)


@contextlib.contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Statements of this thread in this block get `seconds` each (None: no deadline)."""
    token = _within.set(seconds)
    try:
        yield
    finally:
        _within.reset(token)


@contextlib.contextmanager
def patient(seconds: float) -> Iterator[None]:
    """Checkouts of this thread in this block wait up to `seconds` for a pooled connection.

    For work nobody is waiting on (an open after its approval was acknowledged, the engine's
    sweep): a burst of it may want more connections than the pool holds at once, and each
    should queue for one rather than fail at the ack path's short budget.
    """
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


def checkout_patience() -> float:
    """How long this thread's checkouts may wait in all (0: the pool's own timeout)."""
    return _patience.get()


def in_callers_context(work: Callable[[_T], _R]) -> Callable[[_T], _R]:
    """`work`, run on another thread with the caller's context variables (its checkout
    patience, its statement deadline), each call in a copy of its own."""
    context = copy_context()
    return lambda item: context.copy().run(work, item)


class Watchdog:
    """Ends the statements of one engine that outlive their deadline."""

    def __init__(self, default: float | None) -> None:
        self.default = default
        self._due: list[tuple[float, int]] = []  # (monotonic deadline, ticket), a heap
        self._running: dict[int, int] = {}  # ticket -> socket fd of the statement's connection
        self._tickets = itertools.count()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self.ended = 0  # statements ended by the watchdog, for tests and logs

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._on_error)

    def _deadline(self) -> float | None:
        chosen = _within.get()
        return self.default if chosen is _UNSET else chosen  # type: ignore[return-value]

    @contextlib.contextmanager
    def bounded(self, dbapi_connection: Any) -> Iterator[None]:
        """A call on the raw connection (a ping on checkout), under the same deadline."""
        ticket = self._start(_fd(dbapi_connection))
        try:
            yield
        finally:
            if ticket is not None:
                with self._lock:
                    self._running.pop(ticket, None)

    def _before(self, conn: Any, _cursor: Any, _statement: str, _params: Any,
                context: Any, _many: bool) -> None:
        if context is not None:
            context.jit_deadline_ticket = self._start(_socket_of(conn))

    def _start(self, fd: int | None) -> int | None:
        seconds = self._deadline()
        if seconds is None or fd is None:
            return None
        with self._lock:
            ticket = next(self._tickets)
            self._running[ticket] = fd
            heapq.heappush(self._due, (time.monotonic() + seconds, ticket))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="jit-db-deadlines",
                                                daemon=True)
                self._thread.start()
            elif self._due[0][1] == ticket:
                self._lock.notify()  # the earliest deadline now: the watchdog waits less
        return ticket

    def _after(self, _conn: Any, _cursor: Any, _statement: str, _params: Any,
               context: Any, _many: bool) -> None:
        self._done(context)

    def _on_error(self, exception_context: Any) -> None:
        self._done(exception_context.execution_context)

    def _done(self, context: Any) -> None:
        ticket = getattr(context, "jit_deadline_ticket", None)
        if ticket is not None:
            with self._lock:
                self._running.pop(ticket, None)  # its heap entry is skipped when due

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._due:
                    self._lock.wait()
                # Woken at most every _TICK, not at each statement's deadline: under load
                # thousands of statements a second finish in time, and each wake-up would
                # take the GIL from the requests.
                self._lock.wait(max(self._due[0][0] - time.monotonic(), _TICK))
                ended = 0
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    _, ticket = heapq.heappop(self._due)
                    fd = self._running.pop(ticket, None)
                    if fd is not None:  # still running past its deadline
                        # Under the lock: the statement cannot finish (and its socket be
                        # reused) between the check and the shutdown.
                        _shut(fd)
                        ended += 1
                self.ended += ended
            if ended:
                log.error("%s database statement(s) ran past their deadline: their "
                          "connections were closed (the database does not answer)", ended)


def _socket_of(conn: Any) -> int | None:
    """The file descriptor of a SQLAlchemy connection's psycopg socket, or None."""
    try:
        return _fd(conn.connection.dbapi_connection)
    except AttributeError:
        return None


def _fd(dbapi_connection: Any) -> int | None:
    try:
        return int(dbapi_connection.pgconn.socket)
    except (AttributeError, TypeError, ValueError, OSError):
        return None
    except Exception:  # noqa: BLE001 (psycopg raises its own when the connection is closed)
        return None


def _shut(fd: int) -> None:
    """Shut the socket down under libpq's feet: its wait ends with the connection."""
    try:
        duplicate = os.dup(fd)
    except OSError:
        return  # already closed
    with socket.socket(fileno=duplicate) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
