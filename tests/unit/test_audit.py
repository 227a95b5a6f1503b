"""The audit log: entries go in and come back filtered, and the database refuses edits.

UPDATE and DELETE are tried with raw SQL, past the API, as a careless admin script would.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, text, update
from sqlalchemy.exc import SQLAlchemyError

from pacsnode.audit import AuditEvent, AuditLog, AuditRecord, Outcome
from pacsnode.db import create_schema, make_engine

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def audit(engine: Engine, clock: FakeClock) -> AuditLog:
    return AuditLog(engine, clock=clock)


def fill(audit: AuditLog, clock: FakeClock) -> None:
    audit.record(AuditEvent.NODE_STARTED, actor="os-user alice")
    clock.advance(1)
    audit.record(
        AuditEvent.INSTANCE_RECEIVED,
        actor="AE MODALITY1 @ 10.0.0.5:4242",
        sop_instance_uid="1.2.3.1",
        study_instance_uid="1.2.3",
        job_id=1,
        details={"bytes": 1_048_576, "transfer_syntax": "1.2.840.10008.1.2.1"},
    )
    clock.advance(1)
    audit.record(
        AuditEvent.INSTANCE_REFUSED,
        Outcome.FAILURE,
        actor="AE MODALITY2 @ 10.0.0.6:104",
        sop_instance_uid="1.2.3.2",
        study_instance_uid="1.2.3",
        reason="SOP class not accepted by the filter",
    )
    clock.advance(1)
    audit.record(
        AuditEvent.JOB_FAILED,
        Outcome.WARNING,
        actor="worker w1",
        sop_instance_uid="1.2.3.1",
        study_instance_uid="1.2.3",
        job_id=1,
        reason="timeout",
    )


def test_an_entry_comes_back_as_recorded(audit: AuditLog, clock: FakeClock) -> None:
    entry = audit.record(
        AuditEvent.RESULT_SENT,
        actor="sender s1",
        sop_instance_uid="2.25.7",
        study_instance_uid="2.25.1",
        job_id=7,
        reason="C-STORE success",
        details={"destination": "pacs", "kind": "SEG", "nested": {"frames": [1, 2]}},
    )
    assert entry.time == START and entry.outcome is Outcome.SUCCESS
    (read,) = audit.query()
    assert read == entry
    assert read.details == {"destination": "pacs", "kind": "SEG", "nested": {"frames": [1, 2]}}
    assert read.time.tzinfo is UTC


def test_query_filters(audit: AuditLog, clock: FakeClock) -> None:
    fill(audit, clock)
    events = [entry.event for entry in audit.query()]
    assert events == [
        AuditEvent.JOB_FAILED,
        AuditEvent.INSTANCE_REFUSED,
        AuditEvent.INSTANCE_RECEIVED,
        AuditEvent.NODE_STARTED,
    ]
    assert [e.event for e in audit.query(limit=2)] == events[:2]
    assert [e.event for e in audit.query(since=START + timedelta(seconds=2))] == events[:2]
    (refused,) = audit.query(event=AuditEvent.INSTANCE_REFUSED)
    assert refused.outcome is Outcome.FAILURE
    assert refused.reason == "SOP class not accepted by the filter"
    # A UID matches the instance or its study.
    assert [e.event for e in audit.query(uid="1.2.3.1")] == [events[0], events[2]]
    assert len(audit.query(uid="1.2.3")) == 3
    assert [e.event for e in audit.query(job_id=1, event=AuditEvent.JOB_FAILED)] == events[:1]
    assert audit.query(uid="9.9") == ()
    with pytest.raises(ValueError, match="timezone-aware"):
        audit.query(since=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    "statement",
    [
        text("UPDATE audit_log SET actor = 'someone else'"),
        update(AuditRecord).values(reason="rewritten"),
        text("DELETE FROM audit_log"),
        delete(AuditRecord).where(AuditRecord.id == 1),
    ],
    ids=["raw-update", "orm-update", "raw-delete", "orm-delete"],
)
def test_the_database_refuses_changes(
    audit: AuditLog, clock: FakeClock, engine: Engine, statement: object
) -> None:
    fill(audit, clock)
    before = audit.query()
    with pytest.raises(SQLAlchemyError, match="append-only"), engine.begin() as connection:
        connection.execute(statement)  # type: ignore[call-overload]
    assert audit.query() == before


def test_the_guard_survives_a_second_schema_creation(
    audit: AuditLog, clock: FakeClock, engine: Engine
) -> None:
    fill(audit, clock)
    create_schema(engine)  # start-up runs it every time; it must neither fail nor unguard
    with pytest.raises(SQLAlchemyError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log"))
    assert len(audit.query()) == 4


def test_there_is_no_api_to_change_entries(audit: AuditLog) -> None:
    public = {name for name in dir(audit) if not name.startswith("_")}
    assert public == {"record", "query"}


@pytest.mark.parametrize(
    "details",
    [
        {"PatientName": "DOE^JANE"},
        {"patient_id": "12345"},
        {"dataset": {"ReferringPhysicianName": "WHO^DR"}},
        {"rows": [{"Patients Birth Date": "19700101"}]},
    ],
)
def test_patient_data_is_refused(audit: AuditLog, details: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="patient data"):
        audit.record(AuditEvent.INSTANCE_RECEIVED, actor="AE X", details=details)
    assert audit.query() == ()


def test_details_must_be_json(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="JSON"):
        audit.record(AuditEvent.ADMIN_ACTION, actor="os-user bob", details={"when": START})
    with pytest.raises(ValueError, match="JSON"):
        audit.record(AuditEvent.ADMIN_ACTION, actor="os-user bob", details={"x": float("nan")})
    with pytest.raises(ValueError, match="actor"):
        audit.record(AuditEvent.ADMIN_ACTION, actor="  ")


def test_vocabulary_values_are_stable() -> None:
    # Stored values: renaming one would orphan every existing entry of that kind.
    assert {event.value for event in AuditEvent} == {
        "association_accepted",
        "association_rejected",
        "association_aborted",
        "instance_received",
        "instance_refused",
        "instance_ignored",
        "job_claimed",
        "job_succeeded",
        "job_failed",
        "job_dead",
        "job_released",
        "result_sent",
        "result_failed",
        "film_deleted",
        "result_deleted",
        "admin_action",
        "node_started",
        "node_stopped",
    }
    assert [outcome.value for outcome in Outcome] == ["success", "failure", "warning"]
