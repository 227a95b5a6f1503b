"""The node's schema migrations (Alembic), shipped inside the package so that an installed
node can upgrade its own database: ``pacsnode db upgrade``, or ``pacsnode serve`` at start.

One revision per schema change under ``versions/``; ``0001`` is the schema of pacsnode
0.1.0, which made its tables with ``create_all`` and recorded no revision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, inspect, text

from pacsnode.db import SQLITE_BEGIN
from pacsnode.errors import SchemaError

__all__ = ["BASELINE", "check_current", "current", "head", "upgrade"]

log = logging.getLogger(__name__)

# Alembic narrates each start at INFO (plugins, dialect, "assume non-transactional DDL"):
# noise in the node's log at every start. What changed is logged below instead.
logging.getLogger("alembic").setLevel(logging.WARNING)

BASELINE: Final = "0001"
"""The revision of a database made by pacsnode 0.1.0's ``create_all``."""

_LOCK: Final = 0x7061_6373_6E6F_6465
"""PostgreSQL advisory lock key ("pacsnode" in ASCII) held while migrating; the same key
``create_schema`` held before migrations, so an old and a new node never interleave."""

_HERE: Final = Path(__file__).resolve().parent


def head() -> str:
    """The newest revision this code knows."""
    revision = _scripts().get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The database's revision; :data:`BASELINE` for one made before migrations, None
    for an empty one."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
        if revision is None and _made_before_migrations(connection):
            return BASELINE
        return revision


def check_current(engine: Engine) -> None:
    """Refuse a database whose schema is not this code's newest.

    Raises
    ------
    SchemaError
        It is empty, older (run ``pacsnode db upgrade``) or newer than this code.
    """
    found, wanted = current(engine), head()
    if found == wanted:
        return
    if found is None:
        raise SchemaError(f"the database is empty; run `pacsnode db upgrade` (to {wanted})")
    if not _known(found):
        raise SchemaError(
            f"the database is at revision {found}, which this pacsnode does not know: "
            "a newer version migrated it"
        )
    raise SchemaError(f"the database is at revision {found}; run `pacsnode db upgrade` to {wanted}")


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision`` (the newest by default), creating it if empty.

    Processes starting together on one database take turns: one transaction holds a lock
    for the whole run (an advisory lock on PostgreSQL, the write lock on SQLite), so the
    first migrates and the others then find nothing to do. DDL is transactional on both,
    so a failed migration leaves the schema as it was.

    Returns
    -------
    tuple
        The revision before (None for an empty database) and after.

    Raises
    ------
    SchemaError
        The database is at a revision this code does not know.
    """
    from alembic import command

    with _migrating(engine) as connection:
        before = _revision(connection)
        if before is None and _made_before_migrations(connection):
            # A 0.1.0 database: its tables are the baseline's, only the record is missing.
            command.stamp(_config(connection), BASELINE)
            before = BASELINE
        if before is not None and not _known(before):
            raise SchemaError(
                f"the database is at revision {before}, which this pacsnode does not know: "
                "a newer version migrated it"
            )
        command.upgrade(_config(connection), revision)
        after = _revision(connection)
        if connection.dialect.name == "sqlite":
            _check_foreign_keys(connection)
    assert after is not None
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "nothing", after)
    return before, after


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one locked transaction, committed when the block ends."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode copies a table and drops the old one; with foreign keys on, the
            # drop would cascade (deleting every delivery with its job). The pragma is a
            # no-op inside a transaction, so it is set before BEGIN, and set back after.
            _pragma(connection, "foreign_keys=OFF")
        try:
            connection.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
                yield connection
        finally:
            if sqlite:
                _pragma(connection, "foreign_keys=ON")


def _pragma(connection: Connection, setting: str) -> None:
    # On the DBAPI connection: through SQLAlchemy it would autobegin a transaction.
    cursor: Any = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA {setting}")
    finally:
        cursor.close()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise SchemaError(f"the migration broke {len(broken)} foreign keys, e.g. {broken[0]}")


def _revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _made_before_migrations(connection: Connection) -> bool:
    tables = set(inspect(connection).get_table_names())
    return "alembic_version" not in tables and "jobs" in tables


def _config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(_HERE))
