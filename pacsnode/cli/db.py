"""``pacsnode db``: the database's schema revision, and its migration to the newest one.

Alembic and SQLAlchemy are imported inside the commands, so ``pacsnode --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pacsnode.cli._args import config_parent
from pacsnode.errors import PacsnodeError

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["add_db_commands"]

EXIT_OK, EXIT_ERROR = 0, 1


def add_db_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``db upgrade`` and ``db current`` to the ``pacsnode`` parser."""
    config = config_parent()
    parent = sub.add_parser("db", help="show or migrate the database's schema")
    verbs = parent.add_subparsers(dest="db_command", metavar="ACTION")
    verbs.required = True
    up = verbs.add_parser(
        "upgrade",
        parents=[config],
        help="migrate the database to the newest schema (creates it when empty)",
        description=(
            "Run the schema migrations (Alembic) up to the newest revision this pacsnode "
            "ships, in one transaction; a database made before migrations (pacsnode 0.1.0) "
            "is recognised and upgraded in place. `pacsnode serve` does the same at start "
            "unless given --no-migrate. Nodes sharing the database may stay up: they take "
            "turns on a lock."
        ),
    )
    up.set_defaults(func=_cmd_upgrade)
    cu = verbs.add_parser(
        "current",
        parents=[config],
        help="the database's schema revision, and the newest this pacsnode knows",
        description="The exit status is 1 when the database is not at the newest revision.",
    )
    cu.add_argument("--json", action="store_true", help="machine-readable JSON")
    cu.set_defaults(func=_cmd_current)


def _engine(args: argparse.Namespace, *, create: bool) -> tuple[Engine, str]:
    """The node's database; ``create`` makes the folder of a SQLite file that is missing
    (as ``pacsnode serve`` does), else a missing file is an error naming it."""
    from sqlalchemy.engine import make_url

    from pacsnode.config.settings import load_settings
    from pacsnode.db import make_engine

    settings = load_settings(args.config)
    url = settings.database.url
    parsed = make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        if not create:
            raise PacsnodeError(
                f"no database at {database} (has the node run with this configuration? "
                "see --config and PACSNODE_*)"
            )
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return make_engine(url), url


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from pacsnode.migrations import upgrade

    engine, url = _engine(args, create=True)
    try:
        before, after = upgrade(engine)
    except SQLAlchemyError as exc:
        raise PacsnodeError(f"database {_shown(url)}: {getattr(exc, 'orig', None) or exc}") from exc
    finally:
        engine.dispose()
    if before == after:
        print(f"{_shown(url)}: already at revision {after} (the newest)")
    else:
        print(f"{_shown(url)}: upgraded from {before or 'an empty database'} to {after}")
    return EXIT_OK


def _cmd_current(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from pacsnode.migrations import current, head

    engine, url = _engine(args, create=False)
    try:
        found = current(engine)
    except SQLAlchemyError as exc:
        raise PacsnodeError(f"database {_shown(url)}: {getattr(exc, 'orig', None) or exc}") from exc
    finally:
        engine.dispose()
    newest = head()
    if args.json:
        print(json.dumps({"database": _shown(url), "current": found, "head": newest}))
    else:
        state = "the newest" if found == newest else f"the newest is {newest}"
        print(f"{_shown(url)}: revision {found or 'none (empty)'} ({state})")
    return EXIT_OK if found == newest else EXIT_ERROR
