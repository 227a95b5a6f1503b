"""The node's database plumbing: declarative base, engine set-up, schema, transactions.

SQLite is tuned here for a durable multi-writer queue; PostgreSQL works unchanged.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import DateTime, Dialect, Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

__all__ = [
    "SQLITE_BEGIN",
    "Base",
    "Clock",
    "UTCDateTime",
    "aware_utc",
    "create_schema",
    "is_configured",
    "make_engine",
    "make_sessionmaker",
    "read_session",
    "utc_now",
    "write_session",
]

SQLITE_BEGIN: Final = "pacsnode_sqlite_begin"
"""Execution option naming the SQLite ``BEGIN`` mode of a connection's transactions."""

_BEGIN_MODES: Final = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})

Clock = Callable[[], datetime]
"""Returns the current time, UTC-aware; stores take one so tests can fix the time."""


def utc_now() -> datetime:
    """The current time, UTC-aware: the stores' default clock."""
    return datetime.now(UTC)


def aware_utc(moment: datetime, what: str) -> datetime:
    """``moment`` in UTC; ``what`` names it in the error for a naive one."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no timezone type, so it stores naive UTC and this type puts UTC back on
    the way out; PostgreSQL gets ``timestamptz``. Naive datetimes are refused on the
    way in: they are the bug this type exists to prevent.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = aware_utc(value, "a stored time")
        # Naive UTC text sorts chronologically, so SQLite's comparisons stay correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table of the node; ``datetime`` maps to UTC-aware."""

    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 (SQLAlchemy's API)


def make_engine(url: str | URL, *, busy_timeout_ms: int = 30_000, **kwargs: Any) -> Engine:
    """An engine for the node's database, with SQLite set up for safe concurrent use.

    On SQLite every connection gets write-ahead logging (readers do not block the
    writer), ``synchronous=FULL`` (a committed job survives power loss), a busy timeout
    (writers queue instead of failing) and foreign keys. SQLAlchemy then emits
    ``BEGIN`` itself instead of the ``sqlite3`` module, which would defer it to the
    first write and so let two workers read the same "free" job; see
    :func:`write_session`.

    Parameters
    ----------
    url
        An SQLAlchemy URL.
    busy_timeout_ms
        How long a SQLite writer waits for the lock before failing, in milliseconds.
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.
    """
    if make_url(url).get_backend_name() != "sqlite":
        # A database server restarts now and then; test each pooled connection before use
        # so a restart costs a reconnect, not one failed job per stale connection.
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, int(busy_timeout_ms))
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # None hands transaction control to the begin hook below (SQLAlchemy's
        # documented recipe for pysqlite); it also lets the PRAGMAs run outside one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # The timeout first: switching to WAL takes a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            _enter_wal(cursor, busy_timeout_ms / 1000)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _sqlite_begin)


def _enter_wal(cursor: Any, wait_s: float) -> None:
    """Switch the database to write-ahead logging, waiting up to ``wait_s`` for the lock.

    The busy timeout does not cover this switch: two connections that both hold a read
    lock and want the write lock to change the journal would deadlock, so SQLite fails
    one of them at once with "database is locked" instead of waiting. That happens when
    several processes open a new database together; the loser tries again here.
    """
    deadline = time.monotonic() + wait_s
    pause = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    if mode not in _BEGIN_MODES:
        raise ValueError(f"{SQLITE_BEGIN}={mode!r}; expected one of {sorted(_BEGIN_MODES)}")
    connection.exec_driver_sql(f"BEGIN {mode}")


def is_configured(engine: Engine) -> bool:
    """Whether ``engine`` came from :func:`make_engine` or needs none of its set-up."""
    return engine.dialect.name != "sqlite" or event.contains(engine, "begin", _sqlite_begin)


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest schema: create it when empty, else migrate it.

    Runs the Alembic migrations (:func:`pacsnode.migrations.upgrade`); a database made by
    pacsnode 0.1.0, before migrations, is recognised and upgraded in place. Processes
    starting together on one database take turns: the first migrates, the others then
    find nothing to do.
    """
    # Imported here: the migrations import this module.
    from pacsnode.migrations import upgrade

    upgrade(engine)


def make_sessionmaker(bind: Engine | sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for the node's stores, checked to lock as the queue needs.

    Raises
    ------
    ValueError
        For a SQLite engine not made by :func:`make_engine`: its transactions would
        not lock, and two workers could claim the same job.
    """
    sessions = bind if isinstance(bind, sessionmaker) else sessionmaker(bind)
    engine = sessions.kw.get("bind")
    if not isinstance(engine, Engine):
        raise ValueError("the sessionmaker must be bound to an Engine")
    if not is_configured(engine):
        raise ValueError("SQLite engines must come from pacsnode.db.make_engine")
    return sessions


@contextmanager
def write_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction that commits on success and rolls back on error.

    On SQLite the transaction begins with ``BEGIN IMMEDIATE``, taking the database's
    write lock before the first read, so a read-then-update (claim a job, count an
    attempt) cannot interleave with another writer's. Elsewhere, lock rows with
    ``with_for_update``.
    """
    with sessions.begin() as session:
        # Options apply when the session first takes a connection, i.e. before BEGIN.
        session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})
        yield session


@contextmanager
def read_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction that sees one consistent snapshot and locks nothing."""
    with sessions.begin() as session:
        yield session
