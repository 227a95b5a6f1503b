"""Schema migrations on a real PostgreSQL server (tests/integration/conftest.py starts one;
skipped where PostgreSQL is not installed): a database made by pacsnode 0.1.0 upgrades in
place with its rows and its append-only triggers, and a fresh one matches the models.

The same checks on SQLite are in tests/unit/test_migrations.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from pacsnode.db import create_schema, make_engine
from pacsnode.jobs import DeliveryStatus, JobQueue, JobStatus
from pacsnode.jobs.owner import ProcessOwner
from pacsnode.migrations import BASELINE, current, head, upgrade
from tests.together import run_together
from tests.unit.test_leases import claimed_by, dead_process
from tests.unit.test_migrations import LEGACY_ROWS, schema_differences

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@pytest.fixture
def engine(fresh_postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_postgres_url)
    yield engine
    engine.dispose()


def make_legacy(engine: Engine) -> None:
    """The tables, triggers and rows pacsnode 0.1.0's ``create_all`` left on PostgreSQL."""
    ddl = (SCHEMAS / "0001-baseline.postgresql.sql").read_text()
    body = ddl.split("\n\n", 1)[1]  # past the header comment
    # Statements end with ";" at a line's end; the function body's own ";" are inside $$.
    statements, pending = [], []
    for line in body.splitlines():
        pending.append(line)
        joined = "\n".join(pending).strip()
        if joined.endswith(";") and joined.count("$$") % 2 == 0:
            statements.append(joined.rstrip(";"))
            pending = []
    with engine.begin() as connection:
        for statement in statements:
            if statement.strip():
                connection.exec_driver_sql(statement)
        for statement in LEGACY_ROWS:
            connection.exec_driver_sql(
                statement.replace("'2025-03-01 08:00:00.000000'", "'2025-03-01 08:00:00+00'")
            )
        for table in ("jobs", "deliveries", "audit_log"):
            connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100)"
            )


def assert_audit_is_append_only(engine: Engine) -> None:
    for statement in (
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(SQLAlchemyError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))


def test_a_database_made_before_migrations_upgrades_in_place(engine: Engine) -> None:
    make_legacy(engine)
    assert current(engine) == BASELINE
    assert upgrade(engine) == (BASELINE, head())
    assert schema_differences(engine) == []
    assert_audit_is_append_only(engine)

    queue = JobQueue(engine)
    running = queue.get(1)
    assert running is not None and running.status is JobStatus.RUNNING
    assert running.priority == 0 and running.lease_host is None
    assert [d.status for d in queue.list_deliveries()] == [
        DeliveryStatus.PENDING,
        DeliveryStatus.SENT,
    ]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_log")).scalar() == 2
    new = queue.enqueue(
        sop_instance_uid="1.2.3.9",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.0",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        calling_ae="ER_DX1",
        spool_path="/spool/9.dcm",
        priority=100,
    )
    claimed = queue.claim("w", 30)
    assert claimed is not None and claimed.id == new.job.id  # STAT first
    assert upgrade(engine) == (head(), head())


def test_a_fresh_database_matches_the_models_and_migrates_once(fresh_postgres_url: str) -> None:
    def start_up() -> None:
        own = make_engine(fresh_postgres_url)
        try:
            create_schema(own)
        finally:
            own.dispose()

    assert run_together(start_up, 4) == []
    engine = make_engine(fresh_postgres_url)
    try:
        assert current(engine) == head()
        assert schema_differences(engine) == []
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO audit_log (time, event, outcome, actor) "
                    "VALUES (now(), 'node_started', 'success', 'test')"
                )
            )
        assert_audit_is_append_only(engine)
    finally:
        engine.dispose()


def test_a_dead_processes_lease_is_reclaimed_on_postgresql(engine: Engine) -> None:
    create_schema(engine)
    queue = JobQueue(engine)
    pid, start = dead_process()
    job_id = claimed_by(queue, dataclasses.replace(ProcessOwner.current(), pid=pid, start=start))
    assert queue.claim("other", 30) is None
    assert [job.id for job in queue.reclaim_orphans().jobs] == [job_id]
    again = queue.claim("other", 30)
    assert again is not None and (again.id, again.attempts, again.interruptions) == (job_id, 1, 1)
