"""Knowing that someone committed: the engine's alarm wakes when the database changes, so a
grant whose end was just written (here, by another process or another replica) is closed at
its time rather than at the next tick.

SQLite: `PRAGMA data_version` on a connection of the watch's own changes whenever any other
connection commits, this process's included; it is read every few milliseconds (a few
microseconds each). PostgreSQL: writing transactions send `NOTIFY jit_due` (`notify`), which
the watch's own connection hears with `LISTEN`. Either way the watch is only an alarm: what
is due is read from the database, and a lost notification costs at most the engine's tick.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

CHANNEL = "jit_due"
_NOTIFY = text(f"NOTIFY {CHANNEL}")
_POLL = 0.01  # s between two looks at SQLite's data_version


class CommitWatch(Protocol):
    def wait(self, timeout: float) -> bool:
        """Up to `timeout` s; True as soon as someone committed, False if nobody did."""
        ...

    def close(self) -> None: ...


def notify(db: Session | Connection) -> None:
    """In a writing transaction on PostgreSQL: wake the watches when it commits (NOTIFY is
    delivered at commit, and not at all on rollback). Nothing on SQLite."""
    dialect = db.dialect if isinstance(db, Connection) else db.get_bind().dialect
    if dialect.name == "postgresql":
        db.execute(_NOTIFY)


class SqliteWatch:
    def __init__(self, connection: Any) -> None:
        self._connection = connection  # a pooled DB-API connection, kept until close()
        self._version = self._read()

    def _read(self) -> int:
        cursor = self._connection.cursor()
        try:
            return int(cursor.execute("PRAGMA data_version").fetchone()[0])
        finally:
            cursor.close()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            version = self._read()
            if version != self._version:
                self._version = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_POLL, left))

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:  # noqa: BLE001 - as for PostgresWatch.close
            self._connection.invalidate()


class PostgresWatch:
    def __init__(self, connection: Any) -> None:
        self._pooled = connection
        self._connection = connection.driver_connection  # psycopg's own connection
        self._connection.autocommit = True
        self._connection.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        heard = False
        for _ in self._connection.notifies(timeout=max(timeout, 0.0), stop_after=1):
            heard = True
        if heard:  # drain what else arrived meanwhile: one wake-up is enough for all
            for _ in self._connection.notifies(timeout=0.0):
                pass
        return heard

    def close(self) -> None:
        try:
            self._connection.execute(f"UNLISTEN {CHANNEL}")
            self._connection.autocommit = False
        except Exception:  # noqa: BLE001 - the connection is gone (the database went away)
            self._pooled.invalidate()  # dropped, not handed back to the pool to reset
            return
        self._pooled.close()
