"""Schema migrations on SQLite: a fresh database, one made by pacsnode 0.1.0 (before
migrations), the append-only audit triggers through an upgrade, `db` commands and
`serve --no-migrate`.

The 0.1.0 database is made from the DDL its ``create_all`` wrote, kept verbatim in
tests/integration/schemas/; tests/integration/test_migrations_postgres.py runs the same
upgrade on a real PostgreSQL server.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from pacsnode.audit import AuditEvent, AuditLog
from pacsnode.cli.main import main
from pacsnode.config import load_settings
from pacsnode.db import Base, create_schema, make_engine
from pacsnode.errors import SchemaError
from pacsnode.jobs import DeliveryStatus, JobQueue, JobStatus
from pacsnode.migrations import BASELINE, check_current, current, head, upgrade
from pacsnode.node import Node, Role
from tests.together import run_together

SCHEMAS = Path(__file__).resolve().parents[1] / "integration" / "schemas"
TIME = "2025-03-01 08:00:00.000000"

# Rows a 0.1.0 node leaves behind: a job mid-analysis, a sent and an unsent delivery,
# audit entries. Column lists as 0.1.0 had them.
LEGACY_ROWS = (
    "INSERT INTO jobs (id, sop_instance_uid, study_instance_uid, series_instance_uid, "
    "sop_class_uid, calling_ae, spool_path, status, attempts, max_attempts, not_before, "
    "lease_owner, lease_expires, last_error, created_at, updated_at) VALUES "
    f"(1, '1.2.3.1', '1.2.3', '1.2.3.0', '1.2.840.10008.5.1.4.1.1.1.1', 'MODALITY1', "
    f"'/spool/1.dcm', 'running', 1, 3, '{TIME}', 'old:1:analysis-0', '{TIME}', NULL, "
    f"'{TIME}', '{TIME}'), "
    f"(2, '1.2.3.2', '1.2.3', '1.2.3.0', '1.2.840.10008.5.1.4.1.1.1.1', 'MODALITY1', "
    f"'/spool/2.dcm', 'succeeded', 1, 3, '{TIME}', NULL, NULL, NULL, '{TIME}', '{TIME}')",
    "INSERT INTO deliveries (id, job_id, destination, kind, sop_instance_uid, path, status, "
    "attempts, max_attempts, not_before, lease_owner, lease_expires, last_error, created_at, "
    "updated_at) VALUES "
    f"(1, 2, 'pacs', 'SEG', '2.25.1', '/out/1.dcm', 'sent', 1, 30, '{TIME}', NULL, NULL, "
    f"NULL, '{TIME}', '{TIME}'), "
    f"(2, 2, 'pacs', 'SR', '2.25.2', '/out/2.dcm', 'pending', 0, 30, '{TIME}', NULL, NULL, "
    f"NULL, '{TIME}', '{TIME}')",
    "INSERT INTO audit_log (id, time, event, outcome, actor, sop_instance_uid, "
    "study_instance_uid, job_id, reason, details) VALUES "
    f"(1, '{TIME}', 'instance_received', 'success', 'AE MODALITY1', '1.2.3.1', '1.2.3', 1, "
    "NULL, '{\"bytes\": 1}'), "
    f"(2, '{TIME}', 'job_succeeded', 'success', 'worker:old', '1.2.3.2', '1.2.3', 2, NULL, "
    "NULL)",
)


def legacy_database(path: Path) -> Path:
    """A SQLite file as pacsnode 0.1.0 made it, with rows in every table."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript((SCHEMAS / "0001-baseline.sqlite.sql").read_text())
        for statement in LEGACY_ROWS:
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()
    return path


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'pacsnode.db'}")
    yield engine
    engine.dispose()


def schema_differences(engine: Engine) -> list[object]:
    """What Alembic's autogenerate finds between the database and the models: nothing,
    when the migrations build exactly what the code declares."""
    import pacsnode.audit.log
    import pacsnode.jobs.models  # noqa: F401

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def assert_audit_is_append_only(engine: Engine) -> None:
    AuditLog(engine).record(AuditEvent.NODE_STARTED, actor="test")  # a row to refuse on
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with (
            pytest.raises((IntegrityError, OperationalError), match="append-only"),
            engine.begin() as connection,
        ):
            connection.execute(text(statement))


# --- a fresh database ---------------------------------------------------------------------


def test_a_fresh_database_is_migrated_to_the_models(engine: Engine) -> None:
    assert current(engine) is None
    assert upgrade(engine) == (None, head())
    assert current(engine) == head()
    assert schema_differences(engine) == []
    assert {"jobs", "deliveries", "audit_log", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    assert_audit_is_append_only(engine)
    assert upgrade(engine) == (head(), head())  # every start runs it: nothing to do


def test_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"

    def start_up() -> None:
        own = make_engine(url)
        try:
            create_schema(own)
        finally:
            own.dispose()

    assert run_together(start_up, 4) == []
    engine = make_engine(url)
    try:
        assert current(engine) == head()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


# --- a database made by pacsnode 0.1.0 ---------------------------------------------------


def test_a_database_made_before_migrations_upgrades_in_place(tmp_path: Path) -> None:
    path = legacy_database(tmp_path / "old.db")
    engine = make_engine(f"sqlite:///{path}")
    try:
        assert current(engine) == BASELINE  # recognised, though it records no revision
        assert upgrade(engine) == (BASELINE, head())
        assert schema_differences(engine) == []

        queue = JobQueue(engine)
        running = queue.get(1)
        assert running is not None and running.status is JobStatus.RUNNING
        assert running.priority == 0 and running.lease_pid is None  # new columns, defaults
        assert running.lease_owner == "old:1:analysis-0"
        # Nothing cascaded away while the tables were altered.
        assert [d.status for d in queue.list_deliveries()] == [
            DeliveryStatus.PENDING,
            DeliveryStatus.SENT,
        ]
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM audit_log")).scalar() == 2
            assert connection.execute(text("SELECT count(*) FROM jobs")).scalar() == 2
            triggers = connection.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            ).scalars()
            assert list(triggers) == ["audit_log_no_delete", "audit_log_no_update"]
            foreign_keys = connection.execute(text("PRAGMA foreign_keys")).scalar()
            assert foreign_keys == 1  # set back on after the migration
        assert_audit_is_append_only(engine)

        # The old node's lease is honoured (no owner recorded: it waits out its expiry),
        # and the queue works on the upgraded tables.
        assert queue.reclaim_orphans() == ((), (), ())
        job = queue.claim("new", 30)
        assert job is not None and job.id == 1 and job.lease_pid is not None
    finally:
        engine.dispose()


def test_a_database_of_an_unknown_newer_revision_is_refused(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match=r"9999.*newer version"):
        upgrade(engine)
    with pytest.raises(SchemaError, match="9999"):
        check_current(engine)


# --- the commands ------------------------------------------------------------------------


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "pacsnode.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n\n[node]\nhost = "127.0.0.1"\nport = 11999\n'
    )
    return config


def test_db_upgrade_and_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PACSNODE_DATABASE__URL", "PACSNODE_STORAGE__DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    config = write_config(tmp_path)
    assert main(["db", "current", "--config", str(config)]) == 1
    assert "no database" in capsys.readouterr().err

    (tmp_path / "data").mkdir()
    legacy_database(tmp_path / "data" / "pacsnode.db")
    assert main(["db", "current", "--config", str(config), "--json"]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert (shown["current"], shown["head"]) == (BASELINE, head())

    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert f"upgraded from {BASELINE} to {head()}" in capsys.readouterr().out
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert "already at revision" in capsys.readouterr().out
    assert main(["db", "current", "--config", str(config)]) == 0


def test_serve_without_migrating_refuses_an_old_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PACSNODE_DATABASE__URL", "PACSNODE_STORAGE__DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(write_config(tmp_path))
    settings.storage.data_dir.mkdir(parents=True)
    legacy_database(settings.storage.data_dir / "pacsnode.db")

    node = Node(settings, Role.RECEIVER, migrate=False)
    with pytest.raises(SchemaError, match="pacsnode db upgrade"):
        node.start()
    node.stop()
    engine = make_engine(settings.database.url)
    try:
        assert current(engine) == BASELINE  # left as it was
        upgrade(engine)
        check_current(engine)  # now it would start
    finally:
        engine.dispose()
