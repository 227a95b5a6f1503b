"""Alembic's environment for pacsnode: runs on the connection :mod:`pacsnode.migrations`
hands it, inside that caller's transaction and lock.

``alembic revision --autogenerate`` from a checkout works too: with no connection given
it opens ``sqlalchemy.url`` (or ``PACSNODE_DATABASE__URL``) itself.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from pacsnode.db import Base, make_engine


def _run(connection: Connection) -> None:
    # The models register their tables on Base: autogenerate compares against them.
    import pacsnode.audit.log
    import pacsnode.jobs.models  # noqa: F401

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters most things only by copying the table: batch mode does that.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("PACSNODE_DATABASE__URL") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("set sqlalchemy.url or PACSNODE_DATABASE__URL")
    engine = make_engine(url)
    try:
        with engine.connect() as own:
            _run(own)
            own.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("pacsnode's migrations run online only: use `pacsnode db upgrade`")
_main()
