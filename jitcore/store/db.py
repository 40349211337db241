"""Engine, transactions and migrations. Nothing here runs at import time."""

from __future__ import annotations

import fcntl
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from jitcore.errors import StoreError
from jitcore.store.deadlines import Watchdog, checkout_patience, within

if TYPE_CHECKING:
    from jitcore.store.watch import CommitWatch

DEFAULT_DATABASE_URL = "sqlite:///./jit.db"
_READ_ONLY = "jit_read_only"


def make_engine(url: str = DEFAULT_DATABASE_URL, **kwargs: Any) -> Engine:
    """An engine with the settings jit relies on for each backend."""
    try:
        return _make_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise StoreError(f"{redacted_url(url)} is not a usable database URL: use sqlite:///PATH "
                         "or postgresql+psycopg://USER:PASSWORD@HOST/DB") from exc


# user:password@ in a URL SQLAlchemy cannot read (a bad port, say).
_PASSWORD_IN_URL = re.compile(r"(://[^/:@]*:)([^@/]*)@")


def redacted_url(url: str) -> str:
    """The URL with its password masked, fit for a message or a log line."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unreadable: still mask what looks like a password
        return repr(_PASSWORD_IN_URL.sub(r"\1***@", url))


def url_password(url: str) -> str:
    """The password in a database URL ("" if none), found by its shape if unreadable."""
    try:
        return make_url(url).password or ""
    except (ArgumentError, ValueError):
        found = _PASSWORD_IN_URL.search(url)
        return found.group(2) if found else ""


def _make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ArgumentError(f"unsupported database {parsed.get_backend_name()!r}")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _tune_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # The bare scheme would pick psycopg2, which jit does not ship.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    deadline = kwargs.pop("statement_deadline", STATEMENT_DEADLINE)
    # Room for the request threads, the engine's close workers and the cross-process rule
    # locks (each held on a connection of its own while a cloud call runs); a checkout
    # waits a bounded time for one, as everything else on a hung database does.
    kwargs = {"pool_size": 10, "max_overflow": 20, "pool_timeout": POOL_TIMEOUT,
              "poolclass": _PatientPool, **kwargs}
    # An unreachable or hung server fails a connect in 2 s (libpq's least), not at the OS's
    # TCP timeout.
    kwargs["connect_args"] = {"connect_timeout": 2, **kwargs.get("connect_args", {})}
    engine = create_engine(url, **kwargs)
    watchdog = Watchdog(deadline)
    watchdog.attach(engine)
    _ping_when_idle(engine, watchdog)
    return engine


# PostgreSQL statements end after this long unless `within()` says otherwise: a hung database
# fails the sweep, which the next tick runs again, instead of wedging the engine.
STATEMENT_DEADLINE = 10.0  # s
POOL_TIMEOUT = 1.5  # s a checkout waits for a pooled connection (the ack path's budget)


class _PatientPool(QueuePool):
    """A checkout waits `pool_timeout`, or longer in a `patient()` block: a hundred opens
    after a burst of approvals queue for the pool's thirty connections instead of failing
    (and waiting for the sweep) because the audit chain makes their commits take turns."""

    def _do_get(self) -> ConnectionPoolEntry:
        until = time.monotonic() + checkout_patience()
        while True:
            try:
                return super()._do_get()
            except SQLAlchemyTimeout:
                if time.monotonic() >= until:
                    raise


# A pooled PostgreSQL connection unused for this long is tested before it is handed out.
_IDLE_BEFORE_PING = 10.0  # s


def _ping_when_idle(engine: Engine, watchdog: Watchdog) -> None:
    """Pessimistic disconnect handling, without a round trip on every checkout.

    A connection that sat in the pool may have been cut (a database restart or failover, an
    idle timeout on the way): it is tested with a ping first, and a dead one is replaced
    before any statement of ours runs on it. A connection back in the pool only moments
    ago (every checkout under load) is not tested: `pool_pre_ping` would add a round trip
    to every transaction, a seventh on the /jit path. A disconnect on a busy connection is
    still detected by SQLAlchemy, which then replaces every connection in the pool.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["jit_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("jit_idle_since")
        if idle_since is None or time.monotonic() - idle_since < _IDLE_BEFORE_PING:
            return  # new, or just used
        ended = watchdog.ended
        try:
            with watchdog.bounded(dbapi_connection):  # a hung server must not hang the ping
                engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if watchdog.ended != ended:  # hung, not restarted: another connection would hang
                raise  # too, so no retry (the caller gets a DBAPIError at once)
            # The pool discards this connection and checks out another (up to 3 tries).
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


_WAL_BACKSTOP_PAGES = 16_000  # 64 MB of 4 KB pages


def _tune_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE so writers queue instead of failing."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # A committing writer copies the WAL back into the database (with an fsync) once
        # the WAL holds this many pages; SQLite's 1,000 put that stall (100+ ms on a slow
        # disk) into a request every few hundred commits. A long-running jit calls
        # Store.checkpoint() in the background instead; this is the backstop.
        cursor.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers must not queue behind (or block) writers: only writers take the lock early.
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Store:
    """The database: sessions and transactions. One per process, shared by threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readers = sessionmaker(engine.execution_options(**{_READ_ONLY: True}),
                                     expire_on_commit=False)
        # SQLite has one writer at a time and its busy handler lets newcomers overtake
        # sleepers (waits of seconds under load); our own threads queue here in order
        # instead. Other processes still meet the busy timeout.
        self._writer: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext())

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any exception."""
        with self._writer, self._sessions.begin() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """`transaction` without an ORM session, for the engine's units of work: Core
        statements on the Connection, committed on success, rolled back on any exception.
        A Session's own bookkeeping cost more than the statements of a transition."""
        with self._writer, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; on SQLite it does not take the write lock."""
        with self._readers() as session:
            yield session

    @contextmanager
    def exclusive(self, names: Iterable[str]) -> Iterator[None]:
        """Hold these named locks against other processes until the block ends.

        PostgreSQL: session advisory locks on a connection of their own, taken in one global
        order (so two replicas cannot deadlock), released at the end, and released by the
        server if this process dies. SQLite: one process owns the database, so there is
        nobody to exclude (the caller's thread locks do the rest).
        """
        keys = sorted({_lock_key(name) for name in names})
        if self.dialect != "postgresql" or not keys:
            yield
            return
        # Autocommit: the locks are the session's, and no transaction (with its snapshot)
        # stays open while the cloud call runs.
        # Waiting for another replica's cloud call is the point here: no deadline.
        with within(None), self.autocommit() as conn:
            try:
                for key in keys:
                    conn.execute(_ADVISORY_LOCK, {"space": _NAMED_LOCKS, "key": key})
                yield
            finally:
                try:
                    conn.execute(_ADVISORY_UNLOCK_ALL)
                except DBAPIError:  # the connection is gone, and its locks with it
                    conn.invalidate()

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection whose statements each commit on their own (PostgreSQL): for work
        that is a single statement, atomic by itself, with no BEGIN and COMMIT round trips.
        Not for SQLite, whose writers must queue on `transaction`."""
        if self.dialect == "sqlite":
            raise ValueError("SQLite writes go through Store.transaction")
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    def ping(self, deadline: float | None = None) -> None:
        """Raise StoreError unless the database answers a trivial query now (within
        `deadline` s, on PostgreSQL, when given)."""
        try:
            with within(deadline) if deadline else nullcontext(), self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise StoreError(f"cannot reach the database: {exc.orig}") from exc
        except SQLAlchemyTimeout as exc:
            raise StoreError(f"cannot reach the database: {exc}") from exc

    def claim_engine(self) -> Callable[[], None]:
        """SQLite: make this the one process running the engine on this database file, or
        raise StoreError naming the problem. Returns the release. PostgreSQL: any number
        of processes may run the engine (they split the work); nothing to claim."""
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            return lambda: None
        path = f"{database}-engine.lock"
        handle = open(path, "a")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(
                f"another process is already running jit's engine on {database}: SQLite "
                "serves one process. Stop it, or run replicas on PostgreSQL "
                "(JIT_DATABASE_URL=postgresql+psycopg://...)") from None
        return handle.close  # closing the file releases the lock (so does dying)

    def checkpoint(self) -> tuple[int, int]:
        """SQLite: copy the WAL into the database now, off the request path (a PASSIVE
        checkpoint waits for nobody and blocks no writer). Returns the WAL's frames and
        how many of them are now in the database. Elsewhere: nothing to do, (0, 0)."""
        if self.dialect != "sqlite":
            return 0, 0
        connection = self.engine.raw_connection()  # outside any transaction: no BEGIN
        try:
            cursor = connection.cursor()
            row = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            cursor.close()
        finally:
            connection.close()
        return int(row[1]), int(row[2])

    def watch_commits(self) -> CommitWatch:
        """A watch that tells when anyone commits (store/watch.py); close() it when done."""
        from jitcore.store.watch import PostgresWatch, SqliteWatch

        connection = self.engine.raw_connection()
        if self.dialect == "postgresql":
            return PostgresWatch(connection)
        return SqliteWatch(connection)

    def check_schema(self) -> None:
        """Raise StoreError unless the database is reachable and migrated to head."""
        try:
            with self.engine.connect() as conn:
                current = _current_revision(conn)
        except OperationalError as exc:
            raise StoreError(f"cannot reach the database: {exc.orig}") from exc
        head = SCHEMA_REVISION
        if current != head:
            raise StoreError(
                f"the database schema is at {current or 'nothing'}, not {head}: "
                "run `jit db upgrade`"
            )

    def dispose(self) -> None:
        self.engine.dispose()


# Named cross-process locks: PostgreSQL's two-int advisory lock space (apart from the
# audit chain's one-bigint lock), this constant, and 32 bits of the name's hash.
_NAMED_LOCKS = 0x6A6974  # "jit"
_ADVISORY_LOCK = text("SELECT pg_advisory_lock(:space, :key)")
_ADVISORY_UNLOCK_ALL = text("SELECT pg_advisory_unlock_all()")


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


# The newest migration. Kept here so a start-up check need not load Alembic (a test pins it
# to Alembic's own head).
SCHEMA_REVISION = "0008"
_alembic_version = Table("alembic_version", MetaData(), Column("version_num", String(32)))


def _current_revision(conn: Any) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(select(_alembic_version.c.version_num)).scalar()  # type: ignore[no-any-return]


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("jitcore.store").joinpath("migrations"))
    )
    config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    """The head revision according to Alembic's scripts."""
    from alembic.script import ScriptDirectory

    config = _alembic_config(create_engine("sqlite://"))
    return ScriptDirectory.from_config(config).get_current_head()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database to `revision`; returns the revision it is at afterwards.
    A database already at head costs one read: Alembic is not even imported."""
    if revision == "head":
        try:
            with engine.connect() as conn:
                if _current_revision(conn) == SCHEMA_REVISION:
                    return SCHEMA_REVISION
        except OperationalError:
            pass  # no such database yet, or unreachable: Alembic says which below
    from alembic import command

    try:
        with within(None):  # a migration takes as long as it takes
            command.upgrade(_alembic_config(engine), revision)
        # Connections opened before read the schema and SQLite's statistics as they were.
        engine.dispose()
        with engine.connect() as conn:
            return _current_revision(conn)
    except OperationalError as exc:
        raise StoreError(f"cannot reach the database: {exc.orig}") from exc
